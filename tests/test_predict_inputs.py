"""`ifrvis predict` on inputs as users bring them: frame folders as ffmpeg and macOS leave them, mistakes on
the command line, batches with a bad input, interruptions. Small generated frames and videos only."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from test_predict import CHECKPOINT, CONFIG, SMALL, predict_cli, synthetic_frames, write_video

from ifrvis import predict
from ifrvis.video_io import probe, read_frames


@pytest.fixture
def clip(tmp_path_factory):
    """A 6-frame mp4 of moving shapes, 64 x 96 px."""
    return write_video(tmp_path_factory.mktemp("videos") / "shapes.mp4", synthetic_frames(30)[:6])


def flat_frame(value: int, height: int = 16, width: int = 24) -> np.ndarray:
    """(H, W, 3) uint8 of one grey level: a frame that says which it is after a lossless round trip."""
    return np.full((height, width, 3), value, np.uint8)


def test_frame_folders_are_read_in_natural_order_without_hidden_files(tmp_path):
    """ffmpeg's default `%d.png` names: 1, 2, ..., 12 (text order would read 1, 10, 11, 12, 2, ...);
    macOS's `._1.png` resource fork (not an image) and `.DS_Store` are no frames."""
    for t in range(1, 13):
        Image.fromarray(flat_frame(10 * t)).save(tmp_path / f"{t}.png")
    (tmp_path / "._1.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    source = probe(tmp_path)
    assert [p.name for p in source.images] == [f"{t}.png" for t in range(1, 13)]
    assert [int(frame[0, 0, 0]) for frame in read_frames(source)] == [10 * t for t in range(1, 13)]


def test_zero_padded_and_prefixed_names_keep_their_order(tmp_path):
    names = ["frame_9.png", "frame_10.png", "frame_00011.png", "frame_100.png"]
    for value, name in enumerate(names):
        Image.fromarray(flat_frame(value)).save(tmp_path / name)
    assert [p.name for p in probe(tmp_path).images] == names


@pytest.mark.parametrize(
    "case, message",
    [
        ("fps 0", "--fps 0: give a frame rate above 0"),
        ("fps nan", "--fps nan: give a frame rate above 0"),
        ("out is a file", "a file, not a folder"),
        ("out under a file", "is a file, not a folder"),
        ("read-only out", "is not writable"),
        ("cuda without a GPU", "device cuda: PyTorch sees no CUDA GPU"),
    ],
)
def test_options_out_and_device_are_checked_before_the_model_loads(
    case, message, clip, tmp_path, capsys, monkeypatch
):
    def no_loading(*args):
        raise AssertionError("the model was loaded before the command line was checked")

    monkeypatch.setattr(predict, "load_trained_model", no_loading)
    out, options = tmp_path / "out", []
    if case == "out is a file":
        out.write_text("a user's file")
    elif case == "out under a file":
        (tmp_path / "notes").write_text("a user's file")
        out = tmp_path / "notes" / "out"
    elif case.startswith("fps"):
        options = ["--fps", case.split()[1]]
    elif case == "read-only out":
        if os.geteuid() == 0:
            pytest.skip("root writes in read-only folders")
        out.mkdir()
        out.chmod(0o555)
    else:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        options = ["--device", "cuda"]
    before = sorted(tmp_path.rglob("*"))
    code, _, err = predict_cli([str(CONFIG), str(CHECKPOINT), str(clip), "--out", str(out), *options], capsys)
    assert code == 2
    assert err.startswith("ifrvis predict: error:") and err.count("\n") == 1 and message in err, err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "signum, status, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")]
)
def test_a_signal_mid_run_removes_the_unfinished_folder_and_keeps_the_finished(
    signum, status, name, tmp_path
):
    """Two inputs; SIGTERM (a scheduler, `kill`) or SIGINT (Ctrl-C) once the second's temporary folder
    exists: that folder goes, the first input's stays, and the command says so in one line."""
    loop = synthetic_frames(30)
    short = write_video(tmp_path / "short.mp4", loop[:4])
    long = write_video(tmp_path / "long.mp4", np.concatenate([loop, loop[::-1]] * 10))  # 600 frames
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ifrvis.cli", "predict", str(CONFIG), str(CHECKPOINT), str(short)]
    command += [str(long), "--out", str(out), "--no-progress", *SMALL]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A process started with SIGINT ignored keeps ignoring it (Python installs no KeyboardInterrupt then),
    # and pytest-xdist's workers ignore it: the command starts as from a terminal, with SIGINT's default.
    terminal = {"preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **terminal
    ) as run:
        deadline = time.monotonic() + 120
        while not list(out.glob(".long.partial-*")) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        run.send_signal(signum)
        stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == status, stderr
    assert stderr.count("\n") == 1 and f"stopped by {name}: 1 of 2 inputs done" in stderr, stderr
    assert "short.mp4: 4 frames" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["short"]
    assert (out / "short" / "results.json").is_file()


def test_a_failed_input_does_not_stop_the_batch(clip, tmp_path, capsys):
    """A folder whose third frame has another size fails midway between two good inputs: both are
    written, the bad one leaves nothing, a table lists all three and the exit status is 1."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder, crop in ((good, 0), (bad, 2)):
        folder.mkdir()
        for t, frame in enumerate(synthetic_frames(5, seed=2)):
            Image.fromarray(frame[: frame.shape[0] - crop] if t == 2 else frame).save(folder / f"{t}.png")
    out = tmp_path / "out"
    argv = [str(CONFIG), str(CHECKPOINT), str(clip), str(bad), str(good), "--out", str(out), *SMALL]
    code, stdout, err = predict_cli(argv, capsys)
    assert code == 1
    assert err.count("\n") == 1 and "2.png: frame of 62x96 px" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["good", "shapes"]
    table = stdout.splitlines()[-4:]
    assert table[0].split()[:4] == ["input", "status", "frames", "tracks"]
    assert [row.split()[:3] for row in table[1:]] == [
        [str(clip), "ok", "6"],
        [str(bad), "failed", "-"],
        [str(good), "ok", "5"],
    ]
    assert table[1].endswith(str(out / "shapes")) and table[2].endswith(
        "frame of 62x96 px, the folder's first is 64x96"
    )
