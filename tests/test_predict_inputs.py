"""`ifrvis predict` on inputs as users bring them: frame folders as ffmpeg and macOS leave them, mistakes on
the command line, batches with a bad input, interruptions. Small generated frames and videos only."""

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

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
        ("fps 0", "--fps 0: give a frame rate from 0.01 to 1000"),
        ("fps nan", "--fps nan: give a frame rate from 0.01 to 1000"),
        ("fps 1e-5", "--fps 1e-05: give a frame rate from 0.01 to 1000"),  # no time base takes it
        ("score-threshold nan", "--score-threshold nan: give a number (scores are 0 to 1)"),
        ("out is a file", "a file, not a folder"),
        ("out under a file", "is a file, not a folder"),
        ("read-only out", "is not writable"),
        ("out in /proc", "--out /proc/ifrvis-out: /proc"),  # root may write, but mkdir fails there
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
    elif case.startswith(("fps", "score-threshold")):
        options = [f"--{case.split()[0]}", case.split()[1]]
    elif case == "out in /proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc on this system")
        out = Path("/proc/ifrvis-out")
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


def declare_size(path: Path, width: int, height: int) -> Path:
    """Rewrite a PNG's header (IHDR) to declare `width` x `height` px, its checksum made right: a file of
    a few hundred bytes that claims gigabytes once decoded, as a damaged or hostile one may."""
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(data[ihdr : ihdr + 17]))
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("width, height", [(20000, 10000), (9000, 9000)])  # over Pillow's bound; over ours
@pytest.mark.parametrize("first", [True, False])
def test_a_frame_declaring_a_huge_size_is_one_line_naming_it(width, height, first, tmp_path, capsys):
    """The folder's first frame: refused before the model loads (exit 2); a later one: that input fails
    (exit 1), its folder removed. Pillow raised DecompressionBombError (a traceback) above 179 Mpx and
    decoded 81 Mpx whole."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(synthetic_frames(3)):
        Image.fromarray(frame).save(folder / f"{t}.png")
    huge = declare_size(folder / f"{0 if first else 2}.png", width, height)
    out = tmp_path / "out"
    code, _, err = predict_cli([str(CONFIG), str(CHECKPOINT), str(folder), "--out", str(out), *SMALL], capsys)
    assert code == (2 if first else 1)
    assert err.count("\n") == 1 and f"error: {huge}: the image declares more than 67108864 pixels" in err, err
    assert not out.exists()


def test_16_bit_frames_are_scaled_to_8_bits(tmp_path):
    """A 16-bit greyscale PNG (a scientific or depth camera's) at levels 0, 16448 and 65535 reads as 0,
    64 and 255, not clipped to white above 255."""
    levels = np.array([[0, 16448, 65535]], np.uint16).repeat(4, axis=0)
    Image.fromarray(levels).save(tmp_path / "0.png")
    with Image.open(tmp_path / "0.png") as image:
        assert image.mode.startswith("I")  # stored 16-bit
    (frame,) = read_frames(probe(tmp_path))
    assert frame.shape == (4, 3, 3) and frame[0, :, 0].tolist() == [0, 64, 255]


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    """A phone stores a portrait photo landscape, tagged "turn a quarter clockwise" (EXIF orientation 6):
    the frame is read as a viewer shows it, 24 x 16 px high, not 16 x 24."""
    stored = np.zeros((16, 24, 3), np.uint8)
    stored[:, 12:] = 255  # right half white: shown as the bottom half
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "0.jpg", exif=exif, quality=95)
    source = probe(tmp_path)
    (frame,) = read_frames(source)
    assert source.size == (24, 16) and frame.shape == (24, 16, 3)
    assert np.abs(frame.astype(int) - np.rot90(stored, -1)).mean() < 5


def test_a_long_file_name_is_predicted(tmp_path, capsys):
    """A 245-character name is legal (255 bytes at most) but its work folder's, `.<stem>.partial-<pid>`,
    would not be: it is cut, the output folder keeps the whole stem."""
    stem = "v" * 245
    video = write_video(tmp_path / f"{stem}.mp4", synthetic_frames(30)[:4])
    out = tmp_path / "out"
    code, stdout, err = predict_cli(
        [str(CONFIG), str(CHECKPOINT), str(video), "--out", str(out), *SMALL], capsys
    )
    assert code == 0 and "4 frames" in stdout, err
    assert [p.name for p in out.iterdir()] == [stem] and (out / stem / "results.json").is_file()


def test_an_mp4_cut_before_its_index_says_it_may_be_cut_short(tmp_path, capsys):
    """A camera writes the index (moov) last: a recording cut short has none, and FFmpeg says only
    "Invalid data found"."""
    data = write_video(tmp_path / "whole.mp4", synthetic_frames(30)).read_bytes()
    assert data.index(b"mdat") < data.index(b"moov")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    code, _, err = predict_cli(
        [str(CONFIG), str(CHECKPOINT), str(cut), "--out", str(tmp_path / "out")], capsys
    )
    assert code == 2 and err == (
        f"ifrvis predict: error: {cut}: not a readable video: Invalid data found when processing input "
        "(the file may be cut short)\n"
    )
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00 not a video" * 10)  # no MP4 box: no such guess
    code, _, err = predict_cli(
        [str(CONFIG), str(CHECKPOINT), str(tmp_path / "junk.mp4"), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "cut short" not in err
