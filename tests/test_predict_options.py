"""`ifrvis predict`'s options for long videos and focused results: --no-overlay, --start/--end/--stride,
--classes, on small generated videos."""

import json
import re

import numpy as np
import pytest
from test_predict import CHECKPOINT, CONFIG, SMALL, decode, predict_cli, synthetic_frames, write_video
from test_predict_video import frame_times

from ifrvis import predict

NAMES = ["disc", "square", "triangle", "cross", "ring"]


@pytest.fixture
def video(tmp_path_factory):
    """12 frames of moving shapes at 12 frames/s."""
    return write_video(tmp_path_factory.mktemp("videos") / "shapes.mp4", synthetic_frames(12))


def run(video, out, *options, capsys) -> tuple[int, str, str]:
    argv = [str(CONFIG), str(CHECKPOINT), str(video), "--out", str(out), *SMALL, *options]
    return predict_cli(argv, capsys)


def test_no_overlay_writes_the_results_alone(video, tmp_path, capsys):
    code, stdout, err = run(video, tmp_path / "out", "--no-overlay", "--score-threshold", "0", capsys=capsys)
    assert code == 0 and "12 frames" in stdout, err
    assert [p.name for p in (tmp_path / "out" / "shapes").iterdir()] == ["results.json"]
    results = json.loads((tmp_path / "out" / "shapes" / "results.json").read_text())
    assert len(results) == 10 and all(len(r["segmentations"]) == 12 for r in results)


def test_start_end_and_stride_pick_the_frames_predicted_and_drawn(video, tmp_path, capsys):
    """Frames 2, 5 and 8 of 12: the results hold 3 frames, the overlay those three frames (no track
    drawn at threshold 1.1) a quarter of a second apart, as in the input."""
    picked = ["--start", "2", "--end", "9", "--stride", "3"]
    code, stdout, err = run(video, tmp_path / "all", *picked, "--score-threshold", "0", capsys=capsys)
    assert code == 0 and "3 frames" in stdout, err
    results = json.loads((tmp_path / "all" / "shapes" / "results.json").read_text())
    assert results and all(len(r["segmentations"]) == 3 for r in results)
    code, _, err = run(video, tmp_path / "none", *picked, "--score-threshold", "1.1", capsys=capsys)
    assert code == 0, err
    overlay = tmp_path / "none" / "shapes" / "overlay.mp4"
    assert frame_times(overlay) == [0, 250, 500]
    frames, _, _ = decode(overlay)
    decoded, _, _ = decode(video)
    for t, frame in zip((2, 5, 8), frames):
        errors = [np.abs(frame.astype(int) - other).mean() for other in decoded]
        assert int(np.argmin(errors)) == t


def test_classes_keep_the_tracks_of_those_classes(video, tmp_path, capsys):
    """The training annotations name the classes; --classes takes names or ids."""
    (tmp_path / "train.json").write_text(
        json.dumps({"categories": [{"id": i, "name": n} for i, n in enumerate(NAMES, 1)]})
    )
    options = ["--no-overlay", "--score-threshold", "0", f"data.root={tmp_path}"]
    code, _, err = run(video, tmp_path / "all", *options, capsys=capsys)
    assert code == 0, err
    every = json.loads((tmp_path / "all" / "shapes" / "results.json").read_text())
    wanted = {r["category_id"] for r in every[:2]}  # two classes that have tracks
    assert len({r["category_id"] for r in every}) > len(wanted)
    named = ",".join(NAMES[c - 1] if c % 2 else str(c) for c in sorted(wanted))  # names and ids
    code, _, err = run(video, tmp_path / "some", *options, "--classes", named, capsys=capsys)
    assert code == 0, err
    some = json.loads((tmp_path / "some" / "shapes" / "results.json").read_text())
    assert some == [r for r in every if r["category_id"] in wanted]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--start", "-1"], "--start -1: give a frame index, 0 or more"),
        (["--start", "4", "--end", "4"], "--end 4: give a frame index above start (4)"),
        (["--stride", "0"], "--stride 0: give 1 (every frame) or more"),
        (["--classes", "horse"], "--classes horse: not a class of this model: 1, 2, 3, 4, 5"),
        (["--classes", "9"], "--classes 9: not a class of this model"),
    ],
)
def test_options_out_of_range_are_one_line(options, message, video, tmp_path, capsys):
    """Without the training annotations (data.root elsewhere) the classes are ids 1..5."""
    code, _, err = run(video, tmp_path / "out", *options, f"data.root={tmp_path / 'absent'}", capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"ifrvis predict: error: {message}"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"fps": 0.0}, "fps=0: give a frame rate from 0.01 to 1000"),
        ({"fps": float("nan")}, "fps=nan: give a frame rate"),
        ({"score_threshold": float("inf")}, "score_threshold=inf: give a number"),
        ({"start": -1}, "start=-1: give a frame index, 0 or more"),
        ({"start": 3, "end": 2}, "end=2: give a frame index above start (3)"),
        ({"start": 2000000, "end": 1234567}, "end=1234567: give a frame index above start (2000000)"),
        ({"stride": 0}, "stride=0: give 1 (every frame) or more"),
    ],
)
def test_options_from_python_are_checked_as_the_command_lines(fields, message):
    """`predict.predict` called from Python took any frame rate (one of 0 failed in the encoder, after
    the whole prediction) and any frame range."""
    with pytest.raises(predict.OptionError, match=re.escape(message)):
        predict.Options(**fields)


def test_a_start_past_the_end_fails_that_input_alone(video, tmp_path, capsys):
    code, _, err = run(video, tmp_path / "out", "--start", "20", capsys=capsys)
    assert code == 1 and err == f"ifrvis predict: error: {video}: no frame at 20 or after (--start): " + (
        "the input ends before\n"
    )
    assert not (tmp_path / "out").exists()


def test_no_track_above_the_threshold_says_the_best_score_and_the_option(video, tmp_path, capsys):
    code, _, err = run(video, tmp_path / "all", "--no-overlay", "--score-threshold", "0", capsys=capsys)
    assert code == 0, err
    best = json.loads((tmp_path / "all" / "shapes" / "results.json").read_text())[0]["score"]
    code, stdout, err = run(
        video, tmp_path / "none", "--no-overlay", "--score-threshold", "1.1", capsys=capsys
    )
    assert code == 0, err
    assert (
        f"0 tracks (none scored 1.1 or more; the best {best:.3f}: --score-threshold lowers the bar)" in stdout
    )
