"""Video inference: whole video, per clip with IFC's clip tracking, and test-time augmentation (Sec. 3.2).

Every mode first produces a `QueryResult`: all Q queries' class probabilities (as the class head was
trained: sigmoid for focal, softmax without the "no object" column for softmax) and mask logits on the
stride-4 grid of the padded input. Per clip, each clip's top instances are tracked as IFC tracks them
(App. A.1: Hungarian matching on soft mask IoU over the frames shared with earlier clips, a new track
at 0.05 or below; `ClipTracker`), so a per-clip result holds tracks rather than queries. TTA matches
every pass to a pivot pass with the Eq. 4 cost and averages class and mask probabilities, the masks
on the finest pass's grid, the pivot drawn at random (seeded by the run's seed and the video id,
Sec. 3.2) or the largest un-flipped pass. `postprocess` then keeps the top-k (query, class) pairs and
brings their masks to the original resolution.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ifrvis.config import Config, DataConfig, InferenceConfig, InferenceMode, LossConfig
from ifrvis.data.datasets import padded_batch, padded_shape
from ifrvis.modeling.matcher import HungarianMatcher, hungarian
from ifrvis.modeling.meta_arch import concat_features
from ifrvis.modeling.point_sampling import point_sample

MODES = typing.get_args(InferenceMode)


@dataclass
class Prediction:
    label: int  # contiguous class index (position in YTVIS.category_ids)
    score: float
    masks: np.ndarray  # (T, H0, W0) bool at the original resolution


@dataclass
class QueryResult:
    """All queries of one pass over a video."""

    probs: Tensor  # (Q, K) class probabilities (`VISModel.class_probabilities`: no "no object" column)
    mask_logits: Tensor  # (Q, T, Hp / 4, Wp / 4) on the padded input's stride-4 grid
    image_size: tuple[int, int]  # (h, w) of the resized frames inside the padded input
    padded_size: tuple[int, int]  # (Hp, Wp)
    flipped: bool = False  # frames were flipped horizontally before the model


class ResizedFrames:
    """`frames` rescaled so that the short side is `short_side` (for TTA when the caller cannot
    reload the video at another size): `len()`, `[t] -> (3, h, w)`, `.size`, `.orig_size`."""

    def __init__(self, frames, short_side: int):
        self.frames = frames
        h, w = frames.size
        scale = short_side / min(h, w)
        self.size = (round(h * scale), round(w * scale))
        self.orig_size = frames.orig_size

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, t: int) -> Tensor:
        frame = self.frames[t][None].float()
        return F.interpolate(frame, size=self.size, mode="bilinear", align_corners=False)[0]


def model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def padded_size(size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) -> (Hp, Wp) as training clips are padded (`collate_clips`)."""
    return padded_shape(*size)


def load_chunk(frames, indices: Sequence[int], flip: bool, pad_value: Tensor) -> Tensor:
    """Frames `indices` -> `(N, 3, Hp, Wp)` on `pad_value`'s device, padded at the bottom and right
    with `pad_value` (the model's `pixel_mean`, 3 values) as training batches are."""
    h, w = frames.size
    hp, wp = padded_size((h, w))
    batch = padded_batch((len(indices), 3, hp, wp), pad_value)
    for i, t in enumerate(indices):
        frame = frames[t].to(batch.device)
        if tuple(frame.shape[-2:]) != (h, w):
            raise ValueError(f"frame {t} has size {tuple(frame.shape[-2:])}, the video's .size is {(h, w)}")
        batch[i, :, :h, :w] = frame.flip(-1) if flip else frame
    return batch


def run_frames(model, frames, indices: Sequence[int], chunk_frames: int, flip: bool = False) -> QueryResult:
    """Backbone + encoder over chunks of `chunk_frames` frames, then the decoder over all `indices`."""
    if chunk_frames < 1:
        raise ValueError(f"inference.chunk_frames must be >= 1, got {chunk_frames}")
    indices = list(indices)
    chunks = [
        model.encode(load_chunk(frames, indices[i : i + chunk_frames], flip, model.pixel_mean))
        for i in range(0, len(indices), chunk_frames)
    ]
    outputs = model.decode(concat_features(chunks), 1, len(indices))
    return QueryResult(
        probs=model.class_probabilities(outputs["pred_logits"][0].float()),
        mask_logits=outputs["pred_masks"][0].float(),
        image_size=tuple(frames.size),
        padded_size=padded_size(tuple(frames.size)),
        flipped=flip,
    )


def clip_starts(num_frames: int, clip_frames: int, overlap: int) -> list[int]:
    """First frames of the clips covering `num_frames`, consecutive clips sharing >= `overlap` frames."""
    if clip_frames < 1 or not 0 <= overlap < clip_frames:
        raise ValueError(
            f"inference.clip_frames must be >= 1 and 0 <= inference.clip_overlap < clip_frames, "
            f"got {clip_frames} and {overlap}"
        )
    last = max(num_frames - clip_frames, 0)
    starts = list(range(0, last + 1, clip_frames - overlap))
    if starts[-1] != last:
        starts.append(last)
    return starts


def soft_iou(a: Tensor, b: Tensor) -> Tensor:
    """Soft IoU of mask probabilities `a (Qa, N)`, `b (Qb, N)` -> `(Qa, Qb)`."""
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / union.clamp(min=1e-6)


# IFC's clip tracking: a clip's instance continues a track when their soft IoU over the frames they share
# exceeds this (IFC `Videos.match_threshold`); otherwise it starts a new track.
TRACK_IOU_THRESHOLD = 0.05
# A frame's mask logit for a track that no clip showing that frame held: empty (IFC: 0 / 0, below 0).
NO_MASK_LOGIT = -100.0


@dataclass
class FinalFrames:
    """Frames that no later clip reaches, as `ClipTracker.add` hands them back: the mask logits
    `(L, N, h4, w4)` of the tracks `(L,)` that some clip showed in them; every other track is empty."""

    tracks: Tensor
    mask_logits: Tensor


@dataclass
class TrackedClip:
    """One clip of `ClipTracker`'s window: its first frame, its instances' tracks `(n,)` and mask
    probabilities `(n, Tc, h4, w4)`."""

    start: int
    tracks: Tensor
    mask_probs: Tensor

    @property
    def stop(self) -> int:
        return self.start + self.mask_probs.shape[1]


class ClipTracker:
    """IFC's clip tracking [13] (its `Videos`), the paper's per-clip inference (App. A.1), fed the
    clips in order of their first frame. A clip's instances are the queries of its `top_k` best
    (query, class) pairs (ours: IFC keeps the queries whose arg-max class is not "no object", a rule
    of its softmax head that IFR's sigmoid head has no counterpart of). Each instance is matched to the
    tracks by Hungarian matching on soft mask IoU over the frames the clip shares with the clips
    before it, averaged over the last clips that showed the track there (IFC's window: as many clips
    as the clip has frames); a pair at or below `TRACK_IOU_THRESHOLD` does not match, and an unmatched
    instance starts a new track. With no shared frame (`clip_overlap = 0`) the clip's first frame is
    compared with the frame before it (ours; IFC would start a new track for every instance). A
    track's class probabilities are averaged over the clips that held it, its mask logits per frame
    over the clips that held it there (IFC `get_result`). Memory does not grow with the video: the
    running sums cover only the frames a later clip can reach, and `add` hands back the others."""

    def __init__(self, top_k: int):
        self.top_k = top_k
        self.num_tracks = 0
        self.prob_sum: Tensor | None = None  # (R, K) over the clips that held each track
        self.clip_count: Tensor | None = None  # (R,)
        self.window: list[TrackedClip] = []
        self.first = 0  # video index of the first frame of the running sums
        self.live = torch.zeros(0, dtype=torch.long)  # (L,) tracks with a mask in the running frames
        self.logit_sum: Tensor | None = None  # (L, W, h4, w4) over the clips that held them there
        self.held: Tensor | None = None  # (L, W) clips that held each live track in each running frame

    def add(self, start: int, clip: QueryResult) -> FinalFrames:
        """Track `clip` (the pass over frames `start, start + 1, ...`) -> the frames before `start`."""
        _, queries, _ = top_pairs(clip.probs, self.top_k)
        queries = list(dict.fromkeys(queries.tolist()))  # distinct, best first
        probs, mask_logits = clip.probs[queries], clip.mask_logits[queries]  # (n, K), (n, Tc, h4, w4)
        if self.prob_sum is None:
            self.prob_sum, self.clip_count = probs.new_zeros((0, probs.shape[1])), probs.new_zeros(0)
            self.logit_sum = mask_logits.new_zeros((0, 0, *mask_logits.shape[2:]))
            self.held, self.first = mask_logits.new_zeros((0, 0)), start
        final = self._finalize(start)
        tracks = self._match(start, mask_logits.sigmoid())
        new = int((tracks >= self.num_tracks).sum())
        self.num_tracks += new
        self.prob_sum = torch.cat([self.prob_sum, self.prob_sum.new_zeros((new, probs.shape[1]))])
        self.clip_count = torch.cat([self.clip_count, self.clip_count.new_zeros(new)])
        self.prob_sum[tracks] += probs
        self.clip_count[tracks] += 1
        self._accumulate(start, tracks, mask_logits)
        clips = [*self.window, TrackedClip(start, tracks, mask_logits.sigmoid())]
        self.window = clips[-mask_logits.shape[1] :]
        return final

    def finish(self) -> tuple[Tensor, FinalFrames]:
        """(class probabilities `(R, K)` of the tracks, the frames not yet handed back)."""
        return self.prob_sum / self.clip_count[:, None], self._finalize(self.first + self.held.shape[1])

    def _match(self, start: int, masks: Tensor) -> Tensor:
        """The track of each of the clip's instances `masks (n, Tc, h4, w4)`: the one it matches (IFC
        `Videos.update`), else a new one, numbered from `num_tracks` on in the clip's order."""
        tracks = torch.full((len(masks),), -1, dtype=torch.long)
        if self.window:
            seen = self.window[-1].stop
            shared = [(f, f) for f in range(start, min(seen, start + masks.shape[1]))]
            iou = self.window_iou(shared or [(start - 1, start)], start, masks).cpu()
            iou = iou * (iou > TRACK_IOU_THRESHOLD)  # IFC: pairs at or below the threshold weigh nothing
            rows, cols = hungarian(-iou)
            matched = iou[rows, cols] > 0
            tracks[cols[matched]] = rows[matched]
        new = tracks < 0
        tracks[new] = self.num_tracks + torch.arange(int(new.sum()))
        return tracks

    def window_iou(self, pairs: list[tuple[int, int]], start: int, masks: Tensor) -> Tensor:
        """Soft IoU `(R, n)` of every track with the clip's instances over `pairs` (a held frame, the
        clip's frame compared with it), per window clip that held the track, averaged over those clips
        (IFC `Videos.get_siou`); 0 for a track no window clip held."""
        iou_sum = masks.new_zeros((self.num_tracks, len(masks)))
        clips_held = masks.new_zeros(self.num_tracks)
        for held in self.window:
            frames = [(f - held.start, g - start) for f, g in pairs if held.start <= f < held.stop]
            if frames:
                saved = torch.stack([held.mask_probs[:, f] for f, _ in frames], 1).flatten(1)
                shown = torch.stack([masks[:, g] for _, g in frames], 1).flatten(1)
                iou_sum[held.tracks] += soft_iou(saved, shown)
                clips_held[held.tracks] += 1
        return iou_sum / clips_held.clamp(min=1)[:, None]

    def _accumulate(self, start: int, tracks: Tensor, mask_logits: Tensor) -> None:
        """Add the clip's mask logits `(n, Tc, h4, w4)` of `tracks` to the running sums."""
        live = self.live.tolist()
        added = [track for track in tracks.tolist() if track not in live]
        self.live = torch.cat([self.live, torch.tensor(added, dtype=torch.long)])
        live += added
        wider = max(0, start + mask_logits.shape[1] - self.first - self.held.shape[1])
        self.logit_sum = F.pad(self.logit_sum, (0, 0, 0, 0, 0, wider, 0, len(added)))
        self.held = F.pad(self.held, (0, wider, 0, len(added)))
        rows = torch.tensor([live.index(track) for track in tracks.tolist()], dtype=torch.long)
        frames = slice(start - self.first, start - self.first + mask_logits.shape[1])
        self.logit_sum[rows, frames] += mask_logits
        self.held[rows, frames] += 1

    def _finalize(self, stop: int) -> FinalFrames:
        """Hand back the running frames before `stop`, and drop the tracks not held after them."""
        done = stop - self.first
        held, logit_sum = self.held[:, :done, None, None], self.logit_sum[:, :done]
        final = FinalFrames(self.live, torch.where(held > 0, logit_sum / held.clamp(min=1), NO_MASK_LOGIT))
        keep = self.held[:, done:].sum(1) > 0
        self.live, self.held = self.live[keep.cpu()], self.held[keep, done:]  # track ids stay on the CPU
        self.logit_sum, self.first = self.logit_sum[keep, done:], stop
        return final


def dense_masks(parts: Sequence[FinalFrames], num_tracks: int) -> Tensor:
    """The frames `ClipTracker` handed back, in order -> mask logits `(R, T, h4, w4)` of every track,
    empty where no clip held it."""
    blocks = []
    for part in parts:
        _, num_frames, *grid = part.mask_logits.shape
        block = part.mask_logits.new_full((num_tracks, num_frames, *grid), NO_MASK_LOGIT)
        block[part.tracks] = part.mask_logits
        blocks.append(block)
    return torch.cat(blocks, 1)


def predict_clips(model, frames, cfg: InferenceConfig) -> QueryResult:
    """Clips of `clip_frames` frames (`clip_starts`) tracked by a `ClipTracker`. The result holds every
    frame: memory is linear in the video length."""
    num_frames = len(frames)
    tracker, parts = ClipTracker(cfg.top_k), []
    for start in clip_starts(num_frames, cfg.clip_frames, cfg.clip_overlap):
        clip = run_frames(
            model, frames, range(start, min(start + cfg.clip_frames, num_frames)), cfg.chunk_frames
        )
        parts.append(tracker.add(start, clip))
    probs, last = tracker.finish()
    return QueryResult(
        probs=probs,
        mask_logits=dense_masks([*parts, last], tracker.num_tracks),
        image_size=clip.image_size,
        padded_size=clip.padded_size,
    )


def align_masks(result: QueryResult, pivot: QueryResult) -> Tensor:
    """`result`'s mask logits on `pivot`'s grid, undoing a horizontal flip and a different input size
    -> `(Q, T, h4, w4)` of the pivot. Each pivot cell centre is mapped to the same place of the image in
    `result`'s grid and read bilinearly (one resampling; cell centres map to cell centres under a flip
    of an unpadded input, so that case is exact)."""
    same_grid = (result.image_size, result.padded_size) == (pivot.image_size, pivot.padded_size)
    if same_grid and result.flipped == pivot.flipped:
        return result.mask_logits
    num_queries, num_frames = result.mask_logits.shape[:2]
    grid_h, grid_w = pivot.mask_logits.shape[-2:]
    (ph, pw), (php, pwp) = pivot.image_size, pivot.padded_size
    (h, w), (hp, wp) = result.image_size, result.padded_size
    device = result.mask_logits.device
    ys = (torch.arange(grid_h, device=device) + 0.5) * (php / grid_h) / ph  # fraction of the image height
    xs = (torch.arange(grid_w, device=device) + 0.5) * (pwp / grid_w) / pw
    if result.flipped != pivot.flipped:
        xs = 1 - xs
    yy, xx = torch.meshgrid(ys * h / hp, xs * w / wp, indexing="ij")  # fractions of result's padded grid
    coords = torch.stack([xx, yy], dim=-1).view(1, -1, 2).expand(num_queries, -1, -1)
    values = point_sample(result.mask_logits, coords, padding_mode="border")  # (Q, T, grid_h * grid_w)
    return values.view(num_queries, num_frames, grid_h, grid_w)


def unflipped(result: QueryResult) -> QueryResult:
    """`result` with its masks flipped back horizontally on the same grid (itself when not flipped)."""
    if not result.flipped:
        return result
    target = replace(result, flipped=False)
    return replace(target, mask_logits=align_masks(result, target))


def merge_tta(results: list[QueryResult], pivot_index: int = 0) -> QueryResult:
    """TTA (Sec. 3.2): `results[pivot_index]` is the pivot R_p (flipped back if it was flipped); every
    other result's queries are matched to the pivot's by the Eq. 4 cost on the pivot's grid (pivot
    queries as ground truth: arg-max class, mask probability > 0.5; paper weights λ_c = 2,
    λ_m = λ_d = 5), then class and mask probabilities are averaged, the masks on the finest pass's grid
    (un-flipped): a random pivot of a coarse pass would otherwise coarsen every mask."""
    pivot = unflipped(results[pivot_index])
    finest = max(results, key=lambda result: result.mask_logits[0, 0].numel())
    grid = replace(finest, flipped=False)  # the geometry the masks are averaged on
    matcher = HungarianMatcher(LossConfig(num_points=0))  # dense masks, the paper's weights
    labels = pivot.probs.argmax(1)
    pivot_masks = pivot.mask_logits > 0
    prob_sum, mask_sum = torch.zeros_like(pivot.probs), torch.zeros_like(grid.mask_logits)
    for index, result in enumerate(results):
        if index == pivot_index:
            order = torch.arange(len(pivot.probs))
        else:
            cost = matcher.cost_matrix(result.probs, align_masks(result, pivot), labels, pivot_masks)
            rows, cols = hungarian(cost)
            order = torch.empty_like(rows)
            order[cols] = rows  # pivot query j <- result query order[j]
        order = order.to(result.probs.device)
        prob_sum += result.probs[order]
        mask_sum += align_masks(result, grid)[order].sigmoid()
    n = len(results)
    return QueryResult(
        probs=prob_sum / n,
        mask_logits=torch.logit(mask_sum / n, eps=1e-6),
        image_size=grid.image_size,
        padded_size=grid.padded_size,
    )


def tta_augmentations(cfg: InferenceConfig) -> list[tuple[int, bool]]:
    """(short side, flip) pairs; the first is un-flipped at the largest side (the finest stride-4
    grid), the pivot of `tta_pivot="largest"`."""
    if not cfg.tta_short_sides:
        raise ValueError("inference.tta_short_sides is empty: TTA needs at least one input size")
    flips = (False, True) if cfg.tta_flip else (False,)
    sides = sorted(cfg.tta_short_sides, reverse=True)
    return [(side, flip) for flip in flips for side in sides]


def tta_pivot_index(num_passes: int, cfg: InferenceConfig, seed: Sequence[int]) -> int:
    """Which of the `tta_augmentations` passes is the pivot: "random" (Sec. 3.2: "we randomly choose one
    result R_p as the pivot") draws it with a generator seeded by `seed` (the run's seed and the video
    id: reproducible, independent of the global RNG); "largest" takes the first pass."""
    if cfg.tta_pivot == "largest":
        return 0
    if cfg.tta_pivot == "random":
        return int(np.random.default_rng(list(seed)).integers(num_passes))
    raise ValueError(f"inference.tta_pivot must be 'random' or 'largest', got {cfg.tta_pivot!r}")


def tta_max_long_side(short_side: int, data_cfg: DataConfig) -> int:
    """The long-side cap of a TTA pass: `data.max_long_side` scaled with the pass's short side, so that
    every size stays distinct (one fixed cap of 768 turns both 432 and 480 into 432 x 768 at 16:9)."""
    return round(data_cfg.max_long_side * short_side / data_cfg.test_short_side)


def top_pairs(probs: Tensor, top_k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The `top_k` best (query, class) pairs over the flattened `probs (Q, K)` (Mask2Former-VIS; with a
    softmax head "no object" is not a class: `probs` has no column for it) -> (scores, queries,
    labels), each `(k,)`, best first."""
    num_queries, num_classes = probs.shape
    scores, flat = probs.flatten().topk(min(top_k, num_queries * num_classes))
    return scores, flat // num_classes, flat % num_classes


def frame_masks(
    logits: Tensor,
    image_size: tuple[int, int],
    padded_size: tuple[int, int],
    orig_size: tuple[int, int],
    threshold: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """One frame's mask logits `(k, h4, w4)` on the padded input's stride-4 grid, upsampled to the
    padded input, cropped to the `image_size` image, resized to `orig_size` (H0, W0) and thresholded
    -> (masks `(k, H0, W0)` bool, summed probability inside each mask `(k,)`, mask areas `(k,)`)."""
    (h, w), (h0, w0) = image_size, orig_size
    m = F.interpolate(logits[:, None], size=padded_size, mode="bilinear", align_corners=False)
    m = F.interpolate(m[..., :h, :w], size=(h0, w0), mode="bilinear", align_corners=False)[:, 0]
    probs = m.sigmoid()
    binary = probs > threshold
    return binary, (probs * binary).flatten(1).sum(1), binary.flatten(1).sum(1)


def postprocess(result: QueryResult, orig_size: tuple[int, int], cfg: InferenceConfig) -> list[Prediction]:
    """The `top_pairs` and their masks at `orig_size` (`frame_masks`)."""
    if result.flipped:
        raise ValueError("postprocess expects un-flipped masks; align them to an un-flipped pivot first")
    scores, queries, labels = top_pairs(result.probs, cfg.top_k)
    logits = result.mask_logits[queries]  # (k, T, h4, w4)
    num_frames = logits.shape[1]
    masks = np.zeros((len(queries), num_frames, *orig_size), dtype=bool)
    inside = torch.zeros(len(queries), device=logits.device)  # Σ prob over the binary mask
    area = torch.zeros(len(queries), device=logits.device)
    for t in range(num_frames):
        binary, frame_inside, frame_area = frame_masks(
            logits[:, t], result.image_size, result.padded_size, orig_size, cfg.mask_threshold
        )
        inside += frame_inside
        area += frame_area
        masks[:, t] = binary.cpu().numpy()
    if cfg.score_with_mask:
        scores = scores * inside / area.clamp(min=1)
    return [
        Prediction(label=int(label), score=float(score), masks=masks[i])
        for i, (label, score) in enumerate(zip(labels.tolist(), scores.tolist()))
    ]


@torch.no_grad()
def predict_video(
    model,
    frames,
    inference_cfg: InferenceConfig,
    frames_at: Callable[[int], object] | None = None,
    pivot_seed: Sequence[int] = (0, 0),
) -> list[Prediction]:
    """Predictions of one video (`frames`: a `VideoFrames`, `len()`, `[t] -> (3, h, w)` in [0, 255],
    `.size`, `.orig_size`) in the mode `inference_cfg.mode`. For TTA, `frames_at(short_side)` returns
    the video at another size (without it the given frames are rescaled), and `pivot_seed` (the run's
    seed, the video id) seeds the random pivot."""
    cfg = inference_cfg
    if cfg.mode == "video":
        result = run_frames(model, frames, range(len(frames)), cfg.chunk_frames)
    elif cfg.mode == "clip":
        result = predict_clips(model, frames, cfg)
    elif cfg.mode == "tta":
        load = frames_at or (lambda side: ResizedFrames(frames, side))
        passes = [
            run_frames(model, load(side), range(len(frames)), cfg.chunk_frames, flip=flip)
            for side, flip in tta_augmentations(cfg)
        ]
        result = merge_tta(passes, tta_pivot_index(len(passes), cfg, pivot_seed))
    else:
        raise ValueError(f"inference.mode must be one of {MODES}, got {cfg.mode!r}")
    return postprocess(result, tuple(frames.orig_size), cfg)


def video_id(video) -> int:
    return int(video["id"] if isinstance(video, dict) else video.id)


@torch.no_grad()
def run_inference(model, ytvis, cfg: Config, progress: bool = True) -> list[dict]:
    """Predict every video of `ytvis` with `cfg.inference` -> results in the official format."""
    from tqdm import tqdm

    from ifrvis.data.datasets import VideoFrames
    from ifrvis.evaluation.results import encode_video_predictions

    model.eval()
    results = []
    for video in tqdm(ytvis.videos, desc="inference", disable=not progress, dynamic_ncols=True):
        frames = VideoFrames(ytvis, video, cfg.data.test_short_side, cfg.data.max_long_side)

        def frames_at(side: int, video=video):
            return VideoFrames(ytvis, video, side, tta_max_long_side(side, cfg.data))

        predictions = predict_video(model, frames, cfg.inference, frames_at, (cfg.seed, video_id(video)))
        results.extend(encode_video_predictions(video_id(video), predictions, ytvis.category_ids))
    return results
