"""`ifrvis predict` on small synthetic videos (moving shapes of ifrvis.data.synthetic, written with PyAV)
with the shipped tiny model: the Mask2Former-VIS decoder with the focal head, which the image-level
pretrained file fills entirely. Frames of 64 x 96 px: the whole file runs in seconds."""

import functools
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from ifrvis import cli, run_folder
from ifrvis.config import dump_config, load_config
from ifrvis.data.datasets import frame_tensor, resized_shape
from ifrvis.data.masks import encode_rle
from ifrvis.data.synthetic import make_video
from ifrvis.evaluation.results import encode_video_predictions
from ifrvis.inference import clip_starts, predict_video
from ifrvis.predict import (
    Frames,
    Options,
    categories,
    clip_results,
    load_trained_model,
    sliding_clips,
    track_styles,
    write_overlay,
)
from ifrvis.video_io import probe

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "synthetic_tiny_mask2former_focal.yaml"
CHECKPOINT = ROOT / "checkpoints" / "synthetic_tiny_pretrained.pth"
HEIGHT, WIDTH = 64, 96
SMALL = ["data.test_short_side=48", "data.max_long_side=72"]  # the model sees 48 x 72 frames
OPTIONS = Options(fps=10, progress=False)


@functools.cache
def synthetic_frames(num_frames: int, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: moving, scaling, occluding shapes on a panning textured background."""
    return make_video(np.random.default_rng(seed), num_frames, HEIGHT, WIDTH, crossing=False).frames


def write_video(path: Path, frames: np.ndarray, fps: int = 12, codec: str = "libx264") -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def decode(path: Path) -> tuple[list[np.ndarray], Fraction, str]:
    """(frames, average frame rate, codec) of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.average_rate, stream.codec_context.name


def predict_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["predict", *argv, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("videos") / "shapes.mp4", synthetic_frames(30)[:12])


@pytest.fixture(scope="module")
def model():
    return load_trained_model(load_config(CONFIG, SMALL), CHECKPOINT)


def test_predict_writes_tracks_overlay_and_strip(mp4, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(synthetic_frames(9, seed=1)):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    out = tmp_path / "out"
    argv = [str(CONFIG), str(CHECKPOINT), str(mp4), str(folder), "--out", str(out), *SMALL]
    code, stdout, _ = predict_cli([*argv, "--clip-frames", "4", "--score-threshold", "0"], capsys)
    assert code == 0 and stdout.count("tracks ->") == 2
    assert sorted(p.name for p in out.iterdir()) == ["frames", "shapes"]  # no temporary folder left
    for name, num_frames, fps in (("shapes", 12, 12), ("frames", 9, 10)):
        results = json.loads((out / name / "results.json").read_text())
        assert len(results) == 10  # inference.top_k, none dropped at threshold 0
        assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
        for r in results:
            assert set(r) == {"video_id", "category_id", "score", "segmentations"}
            assert len(r["segmentations"]) == num_frames  # one entry per frame, None where absent
            assert all(s is None or s["size"] == [HEIGHT, WIDTH] for s in r["segmentations"])
        frames, rate, codec = decode(out / name / "overlay.mp4")
        assert (len(frames), frames[0].shape, rate, codec) == (num_frames, (HEIGHT, WIDTH, 3), fps, "h264")
        with Image.open(out / name / "strip.png") as strip:
            assert strip.size == (8 * 360, 240)  # 8 frames, cells 240 px high


def test_a_run_folder_stands_for_config_and_checkpoint(mp4, tmp_path, capsys):
    run = tmp_path / "outputs" / "synthetic_tiny-abc"
    run.mkdir(parents=True)
    dump_config(load_config(CONFIG), run / run_folder.CONFIG)
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)["model"]
    torch.save({"model": state, "iteration": 10}, run / run_folder.CHECKPOINT)  # as the trainer writes
    code, stdout, err = predict_cli([str(run), str(mp4), "--out", str(tmp_path / "out"), *SMALL], capsys)
    assert code == 0 and "12 frames" in stdout, err
    results = json.loads((tmp_path / "out" / "shapes" / "results.json").read_text())
    assert all(r["score"] >= 0.5 for r in results)  # the default threshold


@pytest.mark.parametrize(
    "clip_frames, overlap, num_frames, score_with_mask",
    [(4, 1, 11, False), (3, 0, 7, True), (5, 2, 3, False), (2, 1, 6, True)],
)
def test_streamed_clips_equal_per_clip_inference(model, clip_frames, overlap, num_frames, score_with_mask):
    """Decoding, predicting and encoding clip by clip gives predict_video's "clip" results exactly."""
    cfg = load_config(
        CONFIG,
        [
            *SMALL,
            "inference.mode=clip",
            f"inference.clip_frames={clip_frames}",
            f"inference.clip_overlap={overlap}",
            f"inference.score_with_mask={score_with_mask}",
        ],
    )
    size, ids = resized_shape(HEIGHT, WIDTH, 48, 72), [1, 2, 3, 4, 5]
    frames = [frame_tensor(Image.fromarray(f), size) for f in synthetic_frames(num_frames)]
    streamed, count = clip_results(model, iter(frames), size, (HEIGHT, WIDTH), cfg.inference, 7, ids)
    whole = predict_video(model, Frames(frames, size, (HEIGHT, WIDTH)), cfg.inference)
    expected = encode_video_predictions(7, whole, ids)
    assert count == num_frames
    assert [(r["category_id"], r["segmentations"]) for r in streamed] == [
        (r["category_id"], r["segmentations"]) for r in expected
    ]
    assert [r["score"] for r in streamed] == pytest.approx([r["score"] for r in expected], rel=1e-5)


@pytest.mark.parametrize("num_frames", [1, 3, 4, 5, 9, 10, 23])
@pytest.mark.parametrize("clip_frames, overlap", [(4, 1), (4, 0), (1, 0), (5, 3)])
def test_sliding_clips_are_the_clips_of_clip_starts(num_frames, clip_frames, overlap):
    clips = list(sliding_clips(iter(range(num_frames)), clip_frames, overlap))
    starts = clip_starts(num_frames, clip_frames, overlap)
    assert [start for start, _ in clips] == starts
    assert [items for _, items in clips] == [list(range(s, min(s + clip_frames, num_frames))) for s in starts]


def test_each_track_keeps_its_colour_in_every_frame(tmp_path):
    """Two squares passing each other on a grey video, drawn losslessly (PNG in QuickTime): in every
    frame each track's outline is in its own colour (but where its label's text lies), never in the
    other's."""
    num_frames, side = 6, 14
    folder = tmp_path / "grey"
    folder.mkdir()
    for t in range(num_frames):
        Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128)).save(folder / f"{t}.png")
    masks = np.zeros((2, num_frames, HEIGHT, WIDTH), bool)
    for t in range(num_frames):
        masks[0, t, 20 : 20 + side, 5 + 10 * t : 5 + 10 * t + side] = True
        masks[1, t, 40 : 40 + side, 75 - 10 * t : 75 - 10 * t + side] = True
    tracks = [
        {"category_id": c, "score": s, "segmentations": [encode_rle(m) for m in track]}
        for c, s, track in ((2, 0.9, masks[0]), (4, 0.7, masks[1]))
    ]
    video = tmp_path / "overlay.mov"
    names = {2: "square", 4: "cross"}
    write_overlay(probe(folder), tracks, names, num_frames, video, "png", tmp_path / "strip.png", OPTIONS)
    colours, labels = track_styles(tracks, names)
    assert labels == ["#1 square 0.90", "#2 cross 0.70"] and len(set(colours)) == 2
    frames, _, _ = decode(video)
    assert len(frames) == num_frames
    for t, frame in enumerate(frames):
        for n, track in enumerate(masks):
            inner = np.zeros_like(track[t])
            inner[1:-1, 1:-1] = (
                track[t, :-2, 1:-1] & track[t, 2:, 1:-1] & track[t, 1:-1, :-2] & track[t, 1:-1, 2:]
            )
            outline = frame[track[t] & ~inner]  # (N, 3): the label's anti-aliased text covers a few
            assert (outline == colours[n]).all(1).mean() > 0.6
            assert not (outline == colours[1 - n]).all(1).any()


def write_empty_mp4(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        container.start_encoding()


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such video file or frame folder"),
        ("no images", "no frames (.jpg"),
        ("unreadable", "not a readable video"),
        ("empty video", "holds no video"),
        ("same stem", "would share the output folder"),
        ("missing checkpoint", "no such checkpoint file"),
        ("checkpoint of another model", "predicting needs every tensor"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(case, message, mp4, tmp_path, capsys):
    inputs, config, checkpoint = [tmp_path / "missing.mp4"], CONFIG, CHECKPOINT
    if case == "no images":
        inputs = [tmp_path / "empty"]
        inputs[0].mkdir()
        (inputs[0] / "notes.txt").write_text("no frames here")
    elif case == "unreadable":
        inputs = [tmp_path / "junk.mp4"]
        inputs[0].write_bytes(b"\x00\x00\x00 not a video" * 10)
    elif case == "empty video":
        inputs = [tmp_path / "empty.mp4"]
        write_empty_mp4(inputs[0])
    elif case == "same stem":
        (tmp_path / "shapes").mkdir()
        Image.fromarray(synthetic_frames(1)[0]).save(tmp_path / "shapes" / "0.png")
        inputs = [mp4, tmp_path / "shapes"]
    elif case == "missing checkpoint":
        inputs, checkpoint = [mp4], tmp_path / "checkpoint.pt"
    elif case == "checkpoint of another model":  # IFR: the image-level file leaves its recurrent blocks
        inputs, config = [mp4], config.parent / "synthetic_tiny.yaml"
    out = tmp_path / "out"
    code, _, err = predict_cli([str(config), str(checkpoint), *map(str, inputs), "--out", str(out)], capsys)
    assert code == 2
    assert err.startswith("ifrvis predict: error:") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_a_bad_frame_midway_leaves_no_partial_output(tmp_path, capsys):
    """Nor the output folder (and its parents) that the command made."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(synthetic_frames(5)):
        Image.fromarray(frame[:-2] if t == 3 else frame).save(folder / f"{t}.png")
    out = tmp_path / "new" / "out"
    code, _, err = predict_cli([str(CONFIG), str(CHECKPOINT), str(folder), "--out", str(out), *SMALL], capsys)
    assert code == 1 and "3.png: frame of 62x96 px" in err and err.count("\n") == 1  # 1: an input failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_an_output_folder_replaces_an_earlier_prediction_only(mp4, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(synthetic_frames(30)[0]).save(folder / "0.png")
    (tmp_path / "out" / "shapes").mkdir(parents=True)
    (tmp_path / "out" / "shapes" / "mine.txt").write_text("a user's file")
    for inputs, out, message in (
        ([folder], tmp_path, "its output folder would be"),  # DIR/frames is the input itself
        ([mp4], tmp_path / "out", "holds no earlier prediction"),
    ):
        code, _, err = predict_cli(
            [str(CONFIG), str(CHECKPOINT), *map(str, inputs), "--out", str(out)], capsys
        )
        assert code == 2 and message in err
    assert (folder / "0.png").is_file() and (tmp_path / "out" / "shapes" / "mine.txt").is_file()
    (tmp_path / "out" / "shapes" / "mine.txt").unlink()
    argv = [str(CONFIG), str(CHECKPOINT), str(mp4), "--out", str(tmp_path / "out"), *SMALL]
    for threshold in ("0", "1.1"):  # a second run replaces the first's folder
        code, _, err = predict_cli([*argv, "--score-threshold", threshold], capsys)
        assert code == 0, err
    assert json.loads((tmp_path / "out" / "shapes" / "results.json").read_text()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shapes"]


def test_categories_come_from_the_run_folder_else_the_training_annotations(tmp_path):
    """The categories a run stored beside its checkpoint name the classes on a machine without the
    training data; without them the training annotations do, if here; else ids 1..K."""
    names = ["disc", "square", "triangle", "cross", "ring"]
    listed = [{"id": 10 + i, "name": n} for i, n in enumerate(names)]
    (tmp_path / "train.json").write_text(json.dumps({"categories": listed}))
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    here = load_config(CONFIG, [f"data.root={tmp_path}"])
    absent = load_config(CONFIG, [f"data.root={tmp_path / 'absent'}"])
    assert categories(here, checkpoint) == ([10, 11, 12, 13, 14], {10 + i: n for i, n in enumerate(names)})
    assert categories(absent, checkpoint) == ([1, 2, 3, 4, 5], {})
    checkpoint.parent.mkdir()
    stored = [{"id": 20 + i, "name": n.upper()} for i, n in enumerate(names)]
    (checkpoint.parent / "categories.json").write_text(json.dumps(stored))
    assert categories(absent, checkpoint) == (
        [20, 21, 22, 23, 24],
        {20 + i: n.upper() for i, n in enumerate(names)},
    )


MEMORY_SCRIPT = """
import resource, sys, torch
from ifrvis.config import load_config
from ifrvis.predict import Options, predict
torch.set_num_threads(1)  # as conftest: two threads fight on 2 cores
config, checkpoint, out, *videos = sys.argv[1:]
cfg = load_config(config, ["inference.mode=clip", "data.test_short_side=32", "data.max_long_side=48"])
for video in videos:
    (summary,) = predict(cfg, checkpoint, [video], out, Options(progress=False))
    print(summary["frames"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_memory_does_not_grow_with_the_video_length(tmp_path):
    """A 300-frame video after a 30-frame one, in one fresh process: the peak RSS grows by less than
    holding the longer video would take (its frames alone: 300 x 64 x 96 x 3 bytes = 5.5 MiB decoded,
    4 times that as the model's floats; every query's masks: 16 x 300 x 64 x 96 bools = 28 MiB)."""
    loop = synthetic_frames(30)
    short = write_video(tmp_path / "short.mp4", loop)
    long = write_video(tmp_path / "long.mp4", np.concatenate([loop, loop[::-1]] * 5))  # back and forth
    command = [sys.executable, "-c", MEMORY_SCRIPT, str(CONFIG), str(CHECKPOINT), str(tmp_path / "out")]
    run = subprocess.run([*command, str(short), str(long)], capture_output=True, text=True, check=True)
    (short_frames, short_peak), (long_frames, long_peak) = [
        map(int, line.split()) for line in run.stdout.splitlines()
    ]
    assert (short_frames, long_frames) == (30, 300)
    assert (long_peak - short_peak) / 1024 < 12  # MiB (ru_maxrss is in KiB on Linux); mode=video: 57
    overlay, _, _ = decode(tmp_path / "out" / "long" / "overlay.mp4")
    assert len(overlay) == 300
    for result in json.loads((tmp_path / "out" / "long" / "results.json").read_text()):
        assert len(result["segmentations"]) == 300
