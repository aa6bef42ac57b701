"""`ifrvis predict`: a trained model on a user's own videos, as Mask2Former's demo_video (the command is
ifrvis.commands.predict).

Per input (a video file or a folder of frames, `ifrvis.video_io`), under `<out>/<stem>/`:

    results.json   the tracks in the YouTube-VIS results format, best first: track n is entry n
                   (n = 1, 2, ...), its `segmentations` one compressed RLE or null per frame, its
                   `video_id` the input's place on the command line (1, 2, ...); with
                   `Options.start/end/stride`, segmentation t is frame start + t * stride
    overlay.<ext>  the input with each track's masks, outline and "#n class score" in a colour of the
                   track's own (the best drawn last), in the input's container and codec family where
                   they can be written, else H.264 in mp4 (`output_format`), each frame at its time in
                   the input (a variable frame rate kept; mp4 at --fps for a folder), its sound copied;
                   not written with `Options.overlay` False
    strip.png      up to 8 overlay frames side by side, each stamped with its frame index

Frames are resized as the config's test frames are (`data.test_short_side`, `data.max_long_side`). In
the "clip" mode (clips of `inference.clip_frames` frames tracked by a `ClipTracker`) the video is
decoded and predicted clip by clip, every track's masks spilled as RLE to a temporary file until the
top k are known: memory does not grow with the video's length.
"video" and "tta" decode the whole video first (`predict_video`). A second decoding pass draws the
overlay, each frame encoded as it is drawn. A video's folder is written under a temporary name and
renamed when complete; the output folder, device, inputs (the overlay's format among them) and
checkpoint are checked before anything is created. An input that fails midway loses its folder and
the next inputs still run; a video's undecodable packets are skipped and a video that cannot be read
past some frame keeps the frames before it (`read_timed_frames`), with a warning.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import islice
from pathlib import Path
from typing import TextIO

import av
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from ifrvis import run_folder
from ifrvis.config import Config, InferenceConfig
from ifrvis.data.datasets import frame_tensor, resized_shape
from ifrvis.data.masks import decode_segmentation
from ifrvis.engine.distributed import resolve_device
from ifrvis.errors import UserError
from ifrvis.evaluation.results import encode_video_predictions, frame_segmentation, result_entry, results_json
from ifrvis.inference import (
    ClipTracker,
    FinalFrames,
    QueryResult,
    frame_masks,
    predict_video,
    run_frames,
    top_pairs,
    tta_max_long_side,
)
from ifrvis.modeling.meta_arch import VISModel, build_model
from ifrvis.modeling.weights import CheckpointError, load_weights
from ifrvis.video_io import (
    Source,
    VideoError,
    VideoWriter,
    output_format,
    probe,
    read_timed_frames,
)
from ifrvis.visualize import frame_indices, palette, render_tracks, stamp_frame_index

OVERLAY = "overlay"
STRIP = "strip.png"
STRIP_FRAMES = 8
STRIP_HEIGHT = 240  # cell height in pixels, up or down from the video's
MASK_PIXELS = 1 << 24  # mask pixels upsampled at once: bounds a frame's buffers at high resolution
# what one input can raise that says nothing of the next: an unreadable frame, a stream FFmpeg cannot
# decode or encode, a full disk
INPUT_ERRORS = (UserError, av.FFmpegError, OSError)
# --fps's range: a frame every 100 s (a time-lapse) to 1000 a second; a rate of 1e-5 has no time base
# an encoder takes (as a fraction with a 16-bit denominator it is 0)
FPS_RANGE = (0.01, 1000.0)
# a file name's longest on Linux and macOS file systems (bytes): the work folder's name is kept within it
NAME_MAX = 255
# where a run's relative data.root points from (runstore.PROJECT_ROOT, without importing MLflow)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class OptionError(UserError):
    """An `Options` field out of its range: its `name`, its value as `shown`, and the `advice`."""

    def __init__(self, name: str, value: float | int, advice: str):
        shown = f"{value:g}" if isinstance(value, float) else str(value)  # a frame index as typed
        self.name, self.shown, self.advice = name, shown, advice
        super().__init__(f"{name}={self.shown}: {advice}")


@dataclass(frozen=True)
class Options:
    """What the command line sets beside the config; an OptionError for a value out of its range."""

    score_threshold: float = 0.5  # the tracks kept and drawn: score >= this
    fps: float = 10.0  # the overlay's frame rate for a folder of frames
    progress: bool = True  # tqdm bars on stderr
    overlay: bool = True  # overlay video and strip; False: results.json alone
    start: int = 0  # the frames predicted, of every input: from start (0: the first) ...
    end: int | None = None  # ... to end, excluded (None: the last) ...
    stride: int = 1  # ... every stride-th
    classes: frozenset[int] | None = None  # the category ids of the tracks kept; None: all

    def __post_init__(self):
        low, high = FPS_RANGE
        if not low <= self.fps <= high:  # NaN too
            advice = f"give a frame rate from {low:g} to {high:g} (the overlay's for a folder of frames)"
            raise OptionError("fps", self.fps, advice)
        if not math.isfinite(self.score_threshold):  # above 1 keeps no track, which a user may want
            raise OptionError("score_threshold", self.score_threshold, "give a number (scores are 0 to 1)")
        if self.start < 0:
            raise OptionError("start", self.start, "give a frame index, 0 or more")
        if self.end is not None and self.end <= self.start:
            raise OptionError("end", self.end, f"give a frame index above start ({self.start})")
        if self.stride < 1:
            raise OptionError("stride", self.stride, "give 1 (every frame) or more")

    def count(self, num_frames: int | None) -> int | None:
        """How many of `num_frames` frames are picked (None: unknown)."""
        return None if num_frames is None else len(range(num_frames)[self.start : self.end : self.stride])


class Frames:
    """Resized frames `(3, h, w)` float32 RGB in [0, 255] with the `.size` (h, w) and `.orig_size`
    (H, W) that the inference functions read (`VideoFrames`'s interface)."""

    def __init__(self, frames: Sequence[Tensor], size: tuple[int, int], orig_size: tuple[int, int]):
        self.frames, self.size, self.orig_size = frames, size, orig_size

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, t: int) -> Tensor:
        return self.frames[t]


def resized(frames: Iterable[np.ndarray], size: tuple[int, int]) -> Iterator[Tensor]:
    """Frames (H, W, 3) uint8 -> `(3, h, w)` float32 at `size`, as the data sets' test frames."""
    for frame in frames:
        yield frame_tensor(Image.fromarray(frame), size)


def sliding_clips(items: Iterable, clip_frames: int, overlap: int) -> Iterator[tuple[int, list]]:
    """(first index, items) of the clips `clip_starts(len(items), clip_frames, overlap)` lists, read
    from an iterator whose length is known only at its end: at most `clip_frames` items are held."""
    window: deque = deque(maxlen=clip_frames)
    next_start, last_start, count = 0, None, 0
    for item in items:
        window.append(item)
        count += 1
        if count == next_start + clip_frames:
            yield next_start, list(window)
            last_start, next_start = next_start, next_start + clip_frames - overlap
    if count and last_start != max(count - clip_frames, 0):  # the last clip ends at the last frame
        yield max(count - clip_frames, 0), list(window)


class TrackMasks:
    """Every track's masks at the original resolution, frame after frame, as RLE in `spill` (a text
    file, one JSON object per frame from track to segmentation, the tracks with a mask there: kept out
    of memory until the last clip tells which are the top k), with the sums `postprocess` scores by
    with `score_with_mask` (probability inside each mask, area)."""

    def __init__(self, spill: TextIO, geometry: QueryResult, orig_size: tuple[int, int], threshold: float):
        self.inside: dict[int, float] = {}
        self.area: dict[int, float] = {}
        self.spill, self.num_frames = spill, 0
        self.geometry, self.orig_size, self.threshold = geometry, orig_size, threshold

    def add(self, final: FinalFrames) -> None:
        """The next frames that `ClipTracker` handed back."""
        tracks = final.tracks.tolist()
        step = max(1, MASK_PIXELS // (self.orig_size[0] * self.orig_size[1]))
        for t in range(final.mask_logits.shape[1]):
            segmentations = {}
            for first in range(0, len(tracks), step):
                binary, inside, area = frame_masks(
                    final.mask_logits[first : first + step, t],
                    self.geometry.image_size,
                    self.geometry.padded_size,
                    self.orig_size,
                    self.threshold,
                )
                for track, mask, track_inside, track_area in zip(
                    tracks[first : first + step], binary.cpu().numpy(), inside.tolist(), area.tolist()
                ):
                    self.inside[track] = self.inside.get(track, 0.0) + track_inside
                    self.area[track] = self.area.get(track, 0.0) + track_area
                    segmentations[track] = frame_segmentation(mask)
            self.spill.write(json.dumps({str(track): seg for track, seg in segmentations.items()}) + "\n")
            self.num_frames += 1

    def mask_score(self, tracks: Sequence[int]) -> Tensor:
        """Each track's mean mask probability inside its mask over the video `(k,)`."""
        return torch.tensor([self.inside.get(t, 0.0) / max(self.area.get(t, 0.0), 1.0) for t in tracks])

    def segmentations(self, tracks: Sequence[int]) -> list[list[dict | None]]:
        """The per-frame segmentations of `tracks` (None where a track has no mask), from `spill`."""
        picked: dict[int, list] = {track: [] for track in tracks}
        self.spill.seek(0)
        for line in self.spill:
            frame = json.loads(line)
            for track, segmentations in picked.items():
                segmentations.append(frame.get(str(track)))
        return [picked[track] for track in tracks]


@torch.no_grad()
def clip_results(
    model: VISModel,
    frames: Iterable[Tensor],
    size: tuple[int, int],
    orig_size: tuple[int, int],
    cfg: InferenceConfig,
    video_id: int,
    category_ids: Sequence[int],
) -> tuple[list[dict], int]:
    """Per-clip inference over `frames` (`(3, h, w)` at `size`, read once, in order) -> (the top-k
    results in the official format, number of frames), as `predict_video` in the "clip" mode gives
    them, holding one clip of frames and the tracker's window at a time."""
    tracker, masks = ClipTracker(cfg.top_k), None
    with tempfile.TemporaryFile("w+") as spill:
        for start, clip in sliding_clips(frames, cfg.clip_frames, cfg.clip_overlap):
            result = run_frames(model, Frames(clip, size, orig_size), range(len(clip)), cfg.chunk_frames)
            final = tracker.add(start, result)
            if masks is None:
                masks = TrackMasks(spill, result, orig_size, cfg.mask_threshold)
            masks.add(final)
        if masks is None:
            raise VideoError("the video holds no frames")
        probs, last = tracker.finish()
        masks.add(last)
        scores, tracks, labels = top_pairs(probs, cfg.top_k)
        if cfg.score_with_mask:
            scores = scores * masks.mask_score(tracks.tolist()).to(scores.device)
        segmentations = masks.segmentations(tracks.tolist())
    results = [
        result_entry(video_id, category_ids[label], score, track)
        for score, label, track in zip(scores.tolist(), labels.tolist(), segmentations)
    ]
    return results, masks.num_frames


def whole_video_results(
    model: VISModel,
    source: Source,
    cfg: Config,
    video_id: int,
    category_ids: Sequence[int],
    options: Options,
    warn: Callable[[str], None],
) -> tuple[list[dict], int]:
    """`predict_video` on the whole decoded video ("video" or "tta"; TTA decodes it again at each of
    its sizes) -> (the top-k results in the official format, number of frames). `warn`: as
    `read_frames`'s."""

    def frames_at(short_side: int, max_long_side: int) -> Frames:
        size = resized_shape(*source.size, short_side, max_long_side)
        decoded = (frame for _, frame in picked_frames(source, options, "decode", warn))
        return Frames(list(resized(decoded, size)), size, source.size)

    frames = frames_at(cfg.data.test_short_side, cfg.data.max_long_side)
    predictions = predict_video(
        model,
        frames,
        cfg.inference,
        lambda side: frames_at(side, tta_max_long_side(side, cfg.data)),
        (cfg.seed, video_id),
    )
    return encode_video_predictions(video_id, predictions, category_ids), len(frames)


def select_tracks(
    results: list[dict], score_threshold: float, classes: frozenset[int] | None = None
) -> list[dict]:
    """The results scoring at least `score_threshold`, of a category in `classes` (None: any), best
    first: track n is entry n - 1."""
    kept = (
        r
        for r in results
        if r["score"] >= score_threshold and (classes is None or r["category_id"] in classes)
    )
    return sorted(kept, key=lambda r: -r["score"])


def class_ids(requested: Sequence[str], category_ids: Sequence[int], names: dict[int, str]) -> frozenset[int]:
    """The category ids that `--classes` names, each by its name (as the training annotations give
    it) or its id; a UserError names one that is neither."""
    by_name = {name.lower(): category for category, name in names.items()}
    ids = set()
    for item in requested:
        if item.lower() in by_name:
            ids.add(by_name[item.lower()])
        elif item.isdigit() and int(item) in category_ids:
            ids.add(int(item))
        else:
            known = ", ".join(f"{c} ({names[c]})" if c in names else str(c) for c in category_ids)
            raise UserError(f"--classes {item}: not a class of this model: {known}")
    return frozenset(ids)


def track_styles(tracks: list[dict], names: dict[int, str]) -> tuple[list[tuple[int, int, int]], list[str]]:
    """(colour, label "#n class score") of each track: fixed by its number, the same in every frame."""
    labels = []
    for n, track in enumerate(tracks, 1):
        name = names.get(track["category_id"], f"class {track['category_id']}")
        labels.append(f"#{n} {name} {track['score']:.2f}")
    return palette(len(tracks)), labels


def write_overlay(
    source: Source,
    tracks: list[dict],
    names: dict[int, str],
    num_frames: int,
    video_path: Path,
    codec: str,
    strip_path: Path,
    options: Options = Options(),
) -> None:
    """Decode `source` again (the frames `options.frames` picks) and encode each frame with the tracks
    drawn (`render_tracks`) into `video_path` as it is drawn, at the frame's presentation time in the
    input (a folder's frames 1/fps apart), with the input's sound; `strip_path` gets up to STRIP_FRAMES
    of them side by side."""
    height, width = source.size
    colours, labels = track_styles(tracks, names)
    picked = set(frame_indices(num_frames, STRIP_FRAMES))
    cell = (max(1, round(width * STRIP_HEIGHT / height)), STRIP_HEIGHT)
    cells = []
    frames = picked_frames(source, options, "overlay")
    fps, time_base = overlay_timing(source, options)
    # the sound as it is (copied, not re-encoded) when every frame is drawn: other frames would cut it
    whole = (options.start, options.end, options.stride) == (0, None, 1)
    audio_from = source.path if whole and not source.images else None
    with VideoWriter(video_path, codec, fps, source.size, time_base, audio_from) as writer:
        for t, (time, frame) in zip(range(num_frames), frames):
            masks = [decode_segmentation(track["segmentations"][t], height, width) for track in tracks]
            writer.write(np.asarray(render_tracks(frame, masks, colours, labels, (width, height))), time)
            if t in picked:
                cells.append(render_tracks(frame, masks, colours, labels, cell))
                stamp_frame_index(cells[-1], t, cell)
    strip = Image.new("RGB", (cell[0] * len(cells), cell[1]))
    for column, image in enumerate(cells):
        strip.paste(image, (column * cell[0], 0))
    strip.save(strip_path)


def overlay_timing(source: Source, options: Options) -> tuple[Fraction, Fraction]:
    """(average frame rate, time base) of the overlay of `source`: a video's own (its frames keep their
    times), the rate divided by --stride; a folder's frames 1/--fps apart."""
    fps = Fraction(options.fps).limit_denominator(65535)
    return (source.fps or fps) / options.stride, source.time_base or 1 / fps


def picked_frames(
    source: Source, options: Options, stage: str, warn: Callable[[str], None] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(time, frame) of the frames of `source` that `options` picks (`read_timed_frames`; the frames
    before its start are decoded and dropped), counted by a tqdm bar (frames/s) on stderr. A
    VideoError when it picks none (a start past the end)."""
    frames = islice(read_timed_frames(source, warn), options.start, options.end, options.stride)
    total, off = options.count(source.num_frames), not options.progress
    empty = True
    for item in tqdm(frames, f"{source.stem}: {stage}", total, unit="frame", disable=off, leave=False):
        empty = False
        yield item
    if empty:
        raise VideoError(
            f"{source.path}: no frame at {options.start} or after (--start): the input ends before"
        )


def load_trained_model(cfg: Config, checkpoint: str | Path) -> VISModel:
    """The config's model with every tensor from `checkpoint` (a run's checkpoint.pt, or a state dict),
    in eval mode on `cfg.device`. A file that leaves any tensor at its initialisation (another model's,
    an image-level pretrained file) raises a CheckpointError, unless `model.partial_weights`."""
    if not Path(checkpoint).is_file():
        raise CheckpointError(f"{checkpoint}: no such checkpoint file")
    model = build_model(replace(cfg.model, weights=""), cfg.loss.class_loss)
    report = load_weights(model, checkpoint, cfg.model.ifr_init, cfg.model.extra_queries, quiet=True)
    if len(report.loaded) < len(report.model_keys) and not cfg.model.partial_weights:
        raise CheckpointError(
            f"{report.summary()}: predicting needs every tensor of the config's model (`ifrvis weights "
            "CONFIG CHECKPOINT` lists them; model.partial_weights=true predicts anyway)"
        )
    return model.to(resolve_device(cfg.device)).eval()


def categories(cfg: Config, checkpoint: str | Path) -> tuple[list[int], dict[int, str]]:
    """(category id of each class index, names): those the training run stored beside its checkpoint
    (`run_folder.CATEGORIES`), else the training annotations the config names when they are on this
    machine, in either case only with `model.num_classes` categories; else ids 1..K (YouTube-VIS's and
    the synthetic set's numbering) without names (labels read "class <id>")."""
    root = Path(cfg.data.root)
    if not root.is_absolute() and not root.exists():
        root = PROJECT_ROOT / root
    for source in (Path(checkpoint).parent / run_folder.CATEGORIES, root / cfg.data.train_json):
        try:
            found = json.loads(source.read_text())
            found = found["categories"] if isinstance(found, dict) else found
            ids = sorted(int(c["id"]) for c in found)
            names = {int(c["id"]): str(c["name"]) for c in found}
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if len(ids) == cfg.model.num_classes:
            return ids, names
    return list(range(1, cfg.model.num_classes + 1)), {}


def check_out_dir(out_dir: Path) -> None:
    """`--out` is a folder, or a path one can be made at, that this process may write in; else a
    UserError (the check an existing file, a read-only folder or file system fails at mkdir). A folder
    is made and removed in the deepest existing one: what permissions do not tell (root may write
    anywhere but in /proc or /sys) shows there, before the model loads."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: a file, not a folder")
    existing = next(folder for folder in (out_dir.absolute(), *out_dir.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise UserError(f"--out {out_dir}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):  # False on a read-only file system too (EROFS)
        raise UserError(f"--out {out_dir}: {existing} is not writable")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ifrvis-check-", dir=existing))
    except OSError as error:
        raise UserError(f"--out {out_dir}: {existing} refuses a new folder ({error.strerror})") from None


def check_device(name: str) -> None:
    """A UserError when the device `name` asks for ("cpu", "cuda", "auto") is not on this machine."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "device cuda: PyTorch sees no CUDA GPU on this machine (--device cpu or auto run here)"
        )


def check_inputs(
    paths: Sequence[str | Path], out_dir: Path, options: Options = Options()
) -> list[tuple[Source, tuple[str, str] | None]]:
    """Each input probed (`probe`: it exists, is readable and holds frames) with its overlay's (file
    suffix, encoder) (`output_format`; None without an overlay); its output folder `out_dir/<stem>` its
    own, and new, empty or an earlier prediction (replaced when the new one is complete), never the
    input itself. Raises a VideoError naming the first problem."""
    sources = [probe(path) for path in paths]
    formats = [output_format(s, *overlay_timing(s, options)) if options.overlay else None for s in sources]
    seen: dict[str, Path] = {}
    for source in sources:
        final = out_dir / source.stem
        if source.stem in seen:
            raise VideoError(f"{seen[source.stem]} and {source.path} would share the output folder {final}")
        seen[source.stem] = source.path
        if final.resolve() == source.path.resolve() or final.resolve() in source.path.resolve().parents:
            raise VideoError(
                f"{source.path}: its output folder would be {final}, itself: choose another --out"
            )
        if final.exists() and not _replaceable(final):
            raise VideoError(f"{final} exists and holds no earlier prediction: choose another --out")
    return list(zip(sources, formats))


def _replaceable(folder: Path) -> bool:
    """An empty folder, or one an earlier prediction wrote (it holds results.json)."""
    return folder.is_dir() and (not any(folder.iterdir()) or (folder / run_folder.RESULTS).is_file())


def predict(
    cfg: Config,
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    options: Options = Options(),
) -> Iterator[dict]:
    """Predict each input with `cfg.inference` and `options` and write its folder (module docstring);
    yields one summary per input when its folder is complete (`warning`: what of the video could not be
    decoded, or None), or when it failed (`error`: why, its folder removed; the inputs after it still
    run). Inputs (and the format each overlay can be written in) and checkpoint are checked before the
    first folder is created, and the output folder and device before that."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    check_device(cfg.device)
    sources = check_inputs(inputs, out_dir, options)
    model = load_trained_model(cfg, checkpoint)
    category_ids, names = categories(cfg, checkpoint)
    made = missing_folders(out_dir)
    try:
        yield from _predict_each(sources, out_dir, model, cfg, category_ids, names, options)
    finally:
        remove_if_empty(made)


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist, deepest first: what `mkdir(parents=True)`
    would make."""
    return [f for f in (folder, *folder.parents) if not f.exists()]


def remove_if_empty(folders: Sequence[Path]) -> None:
    """Remove `folders` (deepest first) while they are empty: a run that wrote nothing leaves none of
    the folders it made."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (or never made): it and its parents stay
            return


def work_folder(out_dir: Path, stem: str) -> Path:
    """The temporary folder an input's files are written in, `.<stem>.partial-<pid>` (hidden, this
    process's), its stem cut to keep the name within NAME_MAX bytes: a video's legal 250-byte name
    would not be one with the suffix. The cut stems of two inputs may meet: they are written in turn."""
    suffix = f".partial-{os.getpid()}"
    room = NAME_MAX - len(suffix.encode()) - 1
    return out_dir / f".{stem.encode()[:room].decode(errors='ignore')}{suffix}"


def _predict_each(
    sources: Sequence[tuple[Source, tuple[str, str] | None]],
    out_dir: Path,
    model: VISModel,
    cfg: Config,
    category_ids: Sequence[int],
    names: dict[int, str],
    options: Options,
) -> Iterator[dict]:
    """`predict`'s loop over the checked inputs (with their overlay's format), one summary each."""
    for video_id, (source, overlay) in enumerate(sources, 1):
        final, work = out_dir / source.stem, work_folder(out_dir, source.stem)
        summary = {"input": str(source.path), "out": str(final), "frames": 0, "tracks": 0}
        summary |= {"error": None, "warning": None, "best_score": None}
        try:
            work.mkdir(parents=True, exist_ok=False)
            summary |= _predict_into(
                work, model, source, overlay, cfg, video_id, category_ids, names, options
            )
            if final.exists():  # a run before: replaced only by a complete folder
                shutil.rmtree(final)
            work.rename(final)
        except INPUT_ERRORS as error:  # this input's own problem (a full disk too): the others still run
            shutil.rmtree(work, ignore_errors=True)
            yield {**summary, "error": str(error)}
            continue
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        yield summary


def _predict_into(
    work: Path,
    model: VISModel,
    source: Source,
    overlay: tuple[str, str] | None,
    cfg: Config,
    video_id: int,
    category_ids: Sequence[int],
    names: dict[int, str],
    options: Options,
) -> dict:
    """One video's files into `work` (its overlay's (suffix, encoder) `overlay`, None: no overlay) -> its
    summary's `frames`, `tracks` (kept), `warning` (what of the video could not be decoded, or None)
    and `best_score` (of the top-k of the classes asked for, kept or not: what --score-threshold would
    have to be for one track; None without any). The overlay's decoding pass stops where the
    prediction's did."""
    warnings: list[str] = []
    if cfg.inference.mode == "clip":
        size = resized_shape(*source.size, cfg.data.test_short_side, cfg.data.max_long_side)
        frames = (frame for _, frame in picked_frames(source, options, "predict", warnings.append))
        results, num_frames = clip_results(
            model, resized(frames, size), size, source.size, cfg.inference, video_id, category_ids
        )
    else:
        results, num_frames = whole_video_results(
            model, source, cfg, video_id, category_ids, options, warnings.append
        )
    tracks = select_tracks(results, options.score_threshold, options.classes)
    candidates = select_tracks(results, float("-inf"), options.classes)
    (work / run_folder.RESULTS).write_text(results_json(tracks))
    if overlay is not None:
        suffix, codec = overlay
        write_overlay(
            source, tracks, names, num_frames, work / f"{OVERLAY}{suffix}", codec, work / STRIP, options
        )
    return {
        "frames": num_frames,
        "tracks": len(tracks),
        "warning": warnings[0] if warnings else None,  # TTA's passes say it again
        "best_score": candidates[0]["score"] if candidates else None,
    }
