"""`ifrvis check-data`: a clean folder of each layout, a folder with many problems (all reported in one
run, each once, naming file, video and field), usage errors, and the split files of a config."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from conftest import ROOT
from real_layout import write_release

from ifrvis.cli import main

CONFIGS = ROOT / "experiments" / "configs"


def check(capsys, *args) -> tuple[int, str, str]:
    status = main(["check-data", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(
    "layout, name, train_file",
    [
        ("2019", "YouTube-VIS 2019 layout", "train.json"),
        ("2021", "YouTube-VIS 2021 layout", "train/instances.json"),
        ("flat", "flat layout", "train.json"),
    ],
)
def test_a_clean_folder_of_each_layout(capsys, tmp_path, layout, name, train_file):
    write_release(tmp_path, layout)
    status, out, _ = check(capsys, tmp_path)
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0] == f"{tmp_path} ({name})" and lines[-1] == "no problems found"
    assert f"train: {train_file}, frames in " in out
    assert "  3 videos, 11 frames, 6 instances" in lines
    assert "  2 videos, 7 frames, no annotations" in lines
    # the category table: name, id, instances, three categories a row
    assert re.search(r"ape +3 +2 \| bear +7 +2 \| cat +12 +2$", out, re.MULTILINE)
    assert "problem" not in out.replace("no problems found", "")


def test_frames_of_another_size_than_declared(capsys, tmp_path):
    write_release(tmp_path, "2021")
    valid = tmp_path / "valid" / "instances.json"
    video = json.loads(valid.read_text())["videos"][0]
    _edit(valid, lambda data: data["videos"][0].update(width=video["width"] + 1))
    status, out, _ = check(capsys, tmp_path)
    declared = f"{video['width'] + 1}x{video['height']} declared, but {video['file_names'][0]} is"
    assert status == 1 and f"video {video['id']}: field 'width'/'height': {declared}" in out
    assert f"{video['width']}x{video['height']}" in out


def _edit(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_every_problem_of_a_broken_folder_is_reported_once(capsys, tmp_path):
    splits = write_release(tmp_path, "2021")
    train_json, valid_json = tmp_path / "train" / "instances.json", tmp_path / "valid" / "instances.json"
    frames = tmp_path / "train" / "JPEGImages"
    (frames / splits["train"]["videos"][1]["file_names"][1]).unlink()  # video 9
    shutil.rmtree(tmp_path / "valid" / "JPEGImages" / "4ab5cd6ef7")  # video 11's folder

    def break_train(data):
        anns = {ann["id"]: ann for ann in data["annotations"]}
        anns[100]["segmentations"].pop()  # video 4: 3 entries for 4 frames
        rle = anns[101]["segmentations"][3]  # video 4, frame 3: uncompressed RLE
        rle["size"] = rle["size"][::-1]
        anns[110]["category_id"] = 99  # video 9
        anns[111]["id"] = 110  # video 9: a second annotation id 110
        anns[120]["segmentations"][2]["counts"] += "zz"  # video 17, frame 2: compressed RLE
        anns[120]["segmentations"][0]["counts"][-1] += 5  # video 17, frame 0: uncompressed RLE
        anns[121]["areas"] = anns[121]["areas"][:2]
        data["videos"][2]["length"] = 7  # video 17

    def break_valid(data):
        data["videos"].append(dict(data["videos"][0]))  # 2 twice
        data["categories"][0]["name"] = "aardvark"

    _edit(train_json, break_train)
    _edit(valid_json, break_valid)
    status, out, _ = check(capsys, tmp_path)
    assert status == 1
    expected = [
        (train_json, 9, "file_names[1]", "frame file .*00005.jpg is missing"),
        (train_json, 17, "length", "7 but 4 file_names"),
        (train_json, 4, "annotations[id=100].segmentations", "3 entries for a video of 4 frames"),
        (
            train_json,
            4,
            "annotations[id=101].segmentations[3]",
            "mask size 128x72 differs from the video's 72x128",
        ),
        (train_json, 9, "annotations[id=110].category_id", "unknown category id 99"),
        (train_json, 9, "annotations[id=110].id", "duplicate annotation id"),
        (train_json, 17, "annotations[id=120].segmentations[0]", "bad uncompressed RLE counts: runs sum to"),
        (
            train_json,
            17,
            "annotations[id=120].segmentations[2]",
            "bad compressed RLE counts: characters outside",
        ),
        (train_json, 17, "annotations[id=121].areas", "2 entries for a video of 4 frames"),
        (valid_json, 2, "videos.id", "duplicate video id"),
        (valid_json, 11, "file_names[0]", "frame folder .*/valid/JPEGImages/4ab5cd6ef7 is missing"),
        (valid_json, None, "categories", f"differ from {train_json}'s"),
    ]
    problems = [line for line in out.splitlines() if line.startswith("  problem: ")]
    for path, video, field, text in expected:
        where = re.escape(
            f"{path}: " + (f"video {video}: " if video is not None else "") + f"field '{field}'"
        )
        matching = [p for p in problems if re.search(where + ": " + text, p)]
        assert len(matching) == 1, (path, video, field, problems)
    assert len(problems) == len(expected), problems  # nothing reported twice, nothing cascading
    assert out.splitlines()[-1] == f"{len(expected)} problems found (train 9, valid 3)"


def test_training_needs_annotations(capsys, tmp_path):
    write_release(tmp_path, "2019")
    _edit(tmp_path / "train.json", lambda data: data.update(annotations=None))
    status, out, _ = check(capsys, tmp_path)
    assert status == 1
    assert f"  problem: {tmp_path / 'train.json'}: field 'annotations': null or missing, but training" in out
    assert "  3 videos, 11 frames, no annotations" in out
    assert out.splitlines()[-1] == "1 problem found (train 1)"


def test_an_unreadable_file_is_a_problem_and_the_other_splits_are_still_checked(capsys, tmp_path):
    write_release(tmp_path, "2019")
    (tmp_path / "valid.json").write_text('{"videos": [')
    status, out, _ = check(capsys, tmp_path)
    assert status == 1 and f"problem: {tmp_path / 'valid.json'}: not a readable JSON file" in out
    assert "  3 videos, 11 frames, 6 instances" in out


def test_usage_errors_exit_2(capsys, tmp_path):
    status, _, err = check(capsys, tmp_path / "nothere")
    assert status == 2 and f"{tmp_path / 'nothere'}: no such folder" in err
    status, _, err = check(capsys, tmp_path)
    assert status == 2 and "no YouTube-VIS layout found" in err
    write_release(tmp_path, "2019")
    status, _, err = check(capsys, tmp_path, "--config", tmp_path / "none.yaml")
    assert status == 2 and "config file not found" in err


def test_the_split_files_of_a_config(capsys, tmp_path):
    write_release(tmp_path, "2019")
    status, out, _ = check(capsys, tmp_path, "--config", CONFIGS / "base" / "ytvis2019.yaml")
    assert status == 1  # the paper's 40 categories
    assert out.splitlines()[0] == f"{tmp_path} ({CONFIGS / 'base' / 'ytvis2019.yaml'})"
    assert f"{tmp_path / 'train.json'}: field 'categories': 3 categories, but the config's" in out
    assert out.splitlines()[-1] == "1 problem found (train 1)"
    status, out, _ = check(capsys, tmp_path, "--config", CONFIGS / "base" / "ytvis2021.yaml")
    assert status == 1  # a 2019 folder read with the 2021 layout
    assert f"problem: {tmp_path / 'train' / 'instances.json'}: file not found" in out
    assert f"problem: {tmp_path / 'valid' / 'instances.json'}: file not found" in out


def test_a_config_holding_out_validation_videos_reads_no_validation_file(capsys, tmp_path):
    write_release(tmp_path / "data", "2019")
    (tmp_path / "data" / "valid.json").write_text("not JSON")
    config = tmp_path / "holdout.yaml"
    base = CONFIGS / "base" / "ytvis2019.yaml"
    config.write_text(f"_base_: {base}\ndata:\n  holdout_videos: 1\nmodel:\n  num_classes: 3\n")
    status, out, _ = check(capsys, tmp_path / "data", "--config", config)
    assert status == 0 and out.splitlines()[-1] == "no problems found"
    assert [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")][1:-1] == ["train"]


def test_empty_and_unreadable_frames_are_problems_not_tracebacks(capsys, tmp_path):
    splits = write_release(tmp_path, "2019")
    train_json, valid_json = tmp_path / "train.json", tmp_path / "valid.json"
    train, valid = tmp_path / "train" / "JPEGImages", tmp_path / "valid" / "JPEGImages"
    empty = splits["train"]["videos"][1]["file_names"][1]  # video 9, not its first frame
    (train / empty).write_bytes(b"")
    jpeg_start = splits["train"]["videos"][2]["file_names"][0]  # video 17: JPEG magic, then garbage
    (train / jpeg_start).write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)
    html = splits["valid"]["videos"][1]["file_names"][0]  # video 11: an error page saved as a frame
    (valid / html).write_text("<html><body>403 Forbidden</body></html>")
    status, out, err = check(capsys, tmp_path)
    assert status == 1 and err == ""
    expected = [
        (train_json, 9, "file_names[1]", f"frame file {train / empty} is empty \\(0 bytes\\)"),
        (train_json, 17, "file_names[0]", f"frame file {train / jpeg_start} cannot be opened as an image"),
        (
            valid_json,
            11,
            "file_names[0]",
            f"frame file {valid / html} is not an image \\(it starts with b'<html><b'\\)",
        ),
    ]
    problems = [line for line in out.splitlines() if line.startswith("  problem: ")]
    for path, video, field, text in expected:
        where = re.escape(f"{path}: video {video}: field '{field}': ")
        assert len([p for p in problems if re.search(where + text, p)]) == 1, (video, problems)
    assert len(problems) == len(expected), problems  # the first frames are not also measured
    assert out.splitlines()[-1] == "3 problems found (train 2, valid 1)"
