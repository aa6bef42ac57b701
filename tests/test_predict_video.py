"""`ifrvis predict` on video files as cameras and editors write them: odd sizes, rotation tags, variable
frame rates, truncated files. Each test writes its own small video with PyAV."""

import json
from pathlib import Path

import av
import numpy as np
from test_predict import CHECKPOINT, CONFIG, SMALL, decode, predict_cli, synthetic_frames


def encode(
    path: Path, frames: np.ndarray, codec: str = "libx264", pix_fmt: str = "yuv420p", **kwargs
) -> Path:
    """Write (T, H, W, 3) uint8 frames at 12 frames/s; `kwargs`: the container's options."""
    with av.open(str(path), "w", options=kwargs) as container:
        stream = container.add_stream(codec, rate=12)
        stream.height, stream.width, stream.pix_fmt = *frames.shape[1:3], pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_odd_sizes_are_kept(tmp_path, capsys):
    """An H.264 video of 63 x 95 px (4:4:4: its 4:2:0 needs even sides) and an MPEG-4 one: results,
    overlay and all stay at 63 x 95, not padded to 64 x 96."""
    frames = synthetic_frames(6)[:, :63, :95]
    inputs = [
        encode(tmp_path / "h264.mp4", frames, pix_fmt="yuv444p"),
        encode(tmp_path / "mpeg4.avi", frames, "mpeg4"),
    ]
    out = tmp_path / "out"
    argv = [
        str(CONFIG),
        str(CHECKPOINT),
        *map(str, inputs),
        "--out",
        str(out),
        "--score-threshold",
        "0",
        *SMALL,
    ]
    code, _, err = predict_cli(argv, capsys)
    assert code == 0, err
    for name, suffix, codec in (("h264", ".mp4", "h264"), ("mpeg4", ".avi", "mpeg4")):
        results = json.loads((out / name / "results.json").read_text())
        assert results and all(
            s is None or s["size"] == [63, 95] for r in results for s in r["segmentations"]
        )
        overlay, _, written = decode(out / name / f"overlay{suffix}")
        assert (len(overlay), overlay[0].shape, written) == (6, (63, 95, 3), codec)
