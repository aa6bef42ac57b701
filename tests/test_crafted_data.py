"""Files from elsewhere (annotation files, results files) crafted or fuzzed to break the readers: each is
one clear error naming the file, the video and the entry, never a crash, a hang or an allocation
without bound. pycocotools trusts the runs of an RLE (its decoder writes past the mask) and rasterises
polygons by their coordinates, so nothing crafted may reach it; the end-to-end check of `ifrvis eval`
runs in a child process, so that a regression fails this test instead of killing pytest."""

from __future__ import annotations

import json
import random
import re
import resource
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ifrvis.cli import main as cli_main
from ifrvis.config import DataConfig
from ifrvis.data.masks import (
    MAX_POLYGON_POINTS,
    compressed_rle_counts,
    compressed_rles_valid,
    decode_segmentation,
    encode_rle,
    segmentation_problem,
)
from ifrvis.data.splits import load_splits
from ifrvis.data.synthetic import argument_problem, generate
from ifrvis.data.ytvis import DataError, find_problems, load_ytvis, read_json
from ifrvis.evaluation import evaluate_ytvis
from ifrvis.evaluation.results import ResultsError, load_results, read_ground_truth

H, W, T = 20, 30, 3


def encode_values(values: list[int]) -> str:
    """Numbers -> a compressed RLE string as pycocotools' rleToString writes them (5 bits a character
    from '0', continuation bit 0x20, the last character's bit 0x10 the sign), whatever they are."""
    out = []
    for x in values:
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(c + (0x20 if more else 0) + 48))
    return "".join(out)


def box_mask(y0=2, y1=8, x0=3, x1=12, height=H, width=W) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def gt_dict(segmentations=None) -> dict:
    segs = segmentations or [encode_rle(box_mask())] * T
    return {
        "videos": [{"id": 5, "height": H, "width": W, "length": T}],
        "annotations": [{"id": 1, "video_id": 5, "category_id": 2, "iscrowd": 0, "segmentations": segs}],
        "categories": [{"id": 2, "name": "dog"}],
    }


def result(counts: str, frame: int = 1, size=(H, W)) -> dict:
    segs = [encode_rle(box_mask())] * T
    segs[frame] = {"size": list(size), "counts": counts}
    return {"video_id": 5, "category_id": 2, "score": 0.5, "segmentations": segs}


# What the audit found crashing or hanging `ifrvis eval`, and more of the kind: (counts, why refused).
VALID = encode_rle(box_mask())["counts"]
CRAFTED_COUNTS = [
    ("@@@bad", "the string ends inside a number"),  # read past the end: heap corruption
    ("ob", "the string ends inside a number"),
    ("!!!x", "characters outside '0'..'o'"),
    ("0\x00" + VALID, "characters outside '0'..'o'"),
    ("0" + "é" * 3, "characters outside '0'..'o'"),
    ("", f"runs sum to 0, not height * width = {H * W}"),
    (encode_rle(np.ones((2 * H, W), bool))["counts"], f"runs sum to {2 * H * W}"),  # overflows the mask
    (encode_values([0, 700, -200, 100]), "a negative run length"),
    (encode_values([0, 10, 590, -15, 15]), "a negative run length"),  # the 4th run: 10 - 15 < 0
    (encode_values([0, 2**31, 0]), "a number of more than 6 characters"),
    (encode_values([0] * (H * W + 1) + [H * W]), "more than height * width + 1"),
]


@pytest.mark.parametrize("counts, why", CRAFTED_COUNTS)
def test_crafted_compressed_rle_in_results_is_one_error_naming_file_entry_video_frame(tmp_path, counts, why):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([result(VALID), result(counts, frame=2)]))
    with pytest.raises(ResultsError) as err:
        load_results(path, gt_dict())
    message = str(err.value)
    assert message.startswith(f"{path}[1]: video 5: segmentations[2]: ") and why in message, message
    assert "\n" not in message


@pytest.mark.parametrize("counts, why", CRAFTED_COUNTS[:4])
def test_crafted_compressed_rle_in_ground_truth_names_the_annotation(tmp_path, counts, why):
    segs = [encode_rle(box_mask())] * T
    segs[1] = {"size": [H, W], "counts": counts}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt_dict(segs)))
    with pytest.raises(ResultsError) as err:
        read_ground_truth(path)
    assert str(err.value).startswith(f"{path}: annotations[0] (id 1): video 5: segmentations[1]: ")
    assert why in str(err.value)
    raw = gt_dict(segs)  # the same check in check-data / training (ytvis.find_problems)
    raw["videos"][0]["file_names"] = [f"v/{t}.jpg" for t in range(T)]
    raw["categories"][0]["name"] = "dog"
    problems = find_problems(raw, "gt.json")
    assert len(problems) == 1 and "field 'annotations[id=1].segmentations[1]'" in problems[0]


def test_the_first_bad_frame_is_reported_whichever_check_finds_it():
    """Compressed RLE runs are checked many at once, after the other checks: an earlier frame's bad
    runs still come before a later frame's wrong size."""
    entry = result("@@@bad", frame=0)
    entry["segmentations"][2] = {"size": [H + 1, W], "counts": VALID}
    with pytest.raises(ResultsError, match=r"results\[0\]: video 5: segmentations\[0\]: bad compressed"):
        load_results([entry], gt_dict())


def test_fuzzed_compressed_rle_is_refused_or_decodes_to_exactly_the_frame():
    """Random strings (and valid ones with a character changed): the batched check agrees with the
    one-by-one check, and whatever it accepts pycocotools decodes to a (H, W) mask whose area is the
    sum of the odd runs."""
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(44, 116)]
    texts = [encode_rle(np.random.default_rng(i).random((H, W)) < 0.3)["counts"] for i in range(40)]
    texts += [
        VALID,
        encode_rle(np.zeros((H, W), bool))["counts"],
        encode_rle(np.ones((H, W), bool))["counts"],
    ]
    for text in list(texts):
        for _ in range(20):
            chars = list(text)
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            texts.append("".join(chars))
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(2000)]
    rng.shuffle(texts)
    valid = compressed_rles_valid(texts, [H * W] * len(texts))
    assert 40 < valid.sum() < len(texts) - 1000
    for text, ok in zip(texts, valid):
        problem = segmentation_problem({"size": [H, W], "counts": text}, H, W)
        assert (problem is None) == ok, (text, problem)
        if ok:
            decoded = mask_utils.decode({"size": [H, W], "counts": text.encode("ascii")})
            runs = compressed_rle_counts(text)
            assert decoded.shape == (H, W) and int(decoded.sum()) == int(runs[1::2].sum())


def test_compressed_rle_runs_match_pycocotools_encoder():
    rng = np.random.default_rng(1)
    for _ in range(50):
        height, width = (int(s) for s in rng.integers(1, 40, 2))
        mask = rng.random((height, width)) < rng.random()
        runs = compressed_rle_counts(encode_rle(mask)["counts"])
        assert runs.tolist() == encode_rle(mask, compressed=False)["counts"]
        assert (
            encode_values(runs[:3].tolist() + np.subtract(runs[3:], runs[1:-2]).tolist())
            == encode_rle(mask)["counts"]
        )


def test_uncompressed_counts_must_be_integers_and_bounded():
    assert "must be integers" in segmentation_problem({"size": [H, W], "counts": [0.5, H * W - 0.5]}, H, W)
    assert "negative" in segmentation_problem({"size": [H, W], "counts": [-5, H * W + 5]}, H, W)
    assert "runs sum to" in segmentation_problem({"size": [H, W], "counts": [10**400]}, H, W)
    assert len(segmentation_problem({"size": [H, W], "counts": [10**400]}, H, W)) < 200
    assert "more than height * width + 1" in segmentation_problem(
        {"size": [H, W], "counts": [0] * (H * W + 1) + [H * W]}, H, W
    )


_EVAL_CHILD = textwrap.dedent(
    """
    import sys
    from ifrvis.cli import main
    gt, *files = sys.argv[1:]
    for path in files:
        print(path, main(["eval", "--gt", gt, "--results", path, "--tracking"]), flush=True)
    """
)


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))


def test_eval_command_on_crafted_results_exits_2_with_one_line(tmp_path):
    """The audit's cases end to end, in a child process capped at 4 GB: a results file whose RLE
    strings end inside a number (heap corruption), one whose runs are a larger frame's (a hang), a
    ground truth of the kind."""
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(gt_dict()))
    files = []
    for name, counts in [
        ("open_end", "@@@bad"),
        ("overflow", encode_rle(np.ones((10 * H, 10 * W), bool))["counts"]),
        (
            "fuzz",
            "".join(
                random.Random(5).choice("0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[") for _ in range(7)
            ),
        ),
    ]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps([result(counts, frame=t) for t in range(T)] * 20))
        files.append(path)
    bad_gt = tmp_path / "bad_gt.json"
    bad_gt.write_text(json.dumps(gt_dict([{"size": [H, W], "counts": "@@@bad"}] * T)))
    good = tmp_path / "good.json"
    good.write_text(json.dumps([result(VALID)]))
    script = tmp_path / "child.py"
    script.write_text(_EVAL_CHILD)
    runs = [[str(gt), *map(str, files)], [str(bad_gt), str(good)]]
    for args in runs:
        child = subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=_limit_memory,
        )
        assert child.returncode == 0, child.stderr[-2000:]
        assert [line.rsplit(" ", 1)[1] for line in child.stdout.splitlines()] == ["2"] * (len(args) - 1)
        errors = child.stderr.splitlines()
        assert len(errors) == len(args) - 1 and all(e.startswith("ifrvis eval: error: ") for e in errors)
        assert "Traceback" not in child.stderr
    assert "bad_gt.json: annotations[0] (id 1): video 5: segmentations[0]: bad compressed" in errors[0]


# ---------------------------------------------------------------- polygons


@pytest.mark.parametrize(
    "polygons, why",
    [
        ([[-1e300, -5, 1e308, 3, 7, 1e308]], "outside the frame by more than the frame's size"),
        ([[0, 0, 10, 0, 10**400, 5]], "outside the frame"),
        ([[0, 0, 10, 0, float("nan"), 5]], "outside the frame"),
        ([[0, 0, 10, 0, 3 * W, 5]], "outside the frame"),
        ([[0, 0, 10, 0, 10, True]], "must be numbers"),
        (
            [[0, 0, 1, 0, 1, 1] * (MAX_POLYGON_POINTS // 3 + 1)],
            f"more than {MAX_POLYGON_POINTS} polygon points",
        ),
        ([[0, 0, W - 1, H - 1] * 100], "polygon boundary"),  # 200 edges of ~29 px: ~6000 > 100 x 50
    ],
)
def test_polygons_that_would_rasterise_without_bound_are_refused(polygons, why):
    problem = segmentation_problem(polygons, H, W)
    assert problem is not None and why in problem
    segs = [encode_rle(box_mask())] * T
    segs[2] = polygons
    with pytest.raises(ResultsError, match=r"annotations\[0\] \(id 1\): video 5: segmentations\[2\]: "):
        read_ground_truth(gt_dict(segs))


def test_a_polygon_a_little_outside_the_frame_is_fine():
    polygon = [[-W + 1, -5, 2 * W - 1, 3, 7, 2 * H - 1]]
    assert segmentation_problem(polygon, H, W) is None
    rle = mask_utils.merge(mask_utils.frPyObjects(polygon, H, W))
    assert mask_utils.decode(rle).shape == (H, W)


@pytest.fixture
def small_data(tmp_path):
    generate(tmp_path, seed=0, train_videos=2, valid_videos=1, size=32, frames=3, progress=False)
    return tmp_path


def _edit(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_check_data_and_training_refuse_a_huge_polygon(capsys, small_data):
    def huge(data):
        ann = data["annotations"][0]
        t = next(t for t, s in enumerate(ann["segmentations"]) if s is not None)
        ann["segmentations"][t] = [[-1e300, -5, 1e308, 3, 7, 1e308]]

    _edit(small_data / "train.json", huge)
    assert cli_main(["check-data", str(small_data)]) == 1
    out = capsys.readouterr().out
    assert "outside the frame by more than the frame's size" in out and "no problems found" not in out
    with pytest.raises(DataError, match="outside the frame"):
        load_ytvis(small_data / "train.json", small_data / "JPEGImages")


# ---------------------------------------------------------------- JSON nested too deeply, huge numbers


@pytest.mark.parametrize(
    "text, why",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("[" + "9" * 5000 + "]", "not a readable JSON file"),
    ],
)
def test_unreadable_json_is_one_line_in_every_reader(capsys, tmp_path, small_data, text, why):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(DataError, match=why):
        read_json(bad)
    with pytest.raises(ResultsError, match=why):
        load_results(bad, small_data / "valid.json")
    for args in (
        ["eval", "--gt", str(bad), "--results", str(bad)],
        ["eval", "--gt", str(small_data / "valid.json"), "--results", str(bad)],
    ):
        assert cli_main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ifrvis eval: error: {bad}: ") and why in err and len(err.splitlines()) == 1
    (small_data / "train.json").write_text(text)
    assert cli_main(["check-data", str(small_data)]) == 1
    out, err = capsys.readouterr()
    assert f"problem: {small_data / 'train.json'}: not a readable JSON file" in out and err == ""


def test_a_field_too_deep_to_copy_is_one_error_when_holding_out_videos(small_data):
    """JSON reads ~1000 levels, a deep copy ~300: a held-out split copies the file's other fields."""
    _edit(small_data / "train.json", lambda data: data.update(info=json.loads("[" * 600 + "]" * 600)))
    train = load_ytvis(small_data / "train.json", small_data / "JPEGImages")
    with pytest.raises(DataError, match="field 'info': nested too deeply"):
        train.holdout_split(1, seed=0)


def test_ground_truth_fields_that_would_crash_the_evaluator_are_refused():
    cases = [
        (lambda g: g.update(videos=[{"id": 5, "height": 10**12, "width": W, "length": T}]), "height"),
        (lambda g: g.update(videos=[{"id": 5, "height": "20", "width": W, "length": T}]), "height"),
        (lambda g: g.update(videos=[{"id": 5, "height": H, "width": W, "length": 10**15}]), "'length'"),
        (lambda g: g.update(videos=[{"id": 10**400, "height": H, "width": W, "length": T}]), "integer 'id'"),
        (lambda g: g.update(categories=["dog"]), "categories[0]"),
        (lambda g: g["annotations"][0].update(category_id="2"), "category_id '2' is not an integer"),
        (lambda g: g["annotations"][0].update(areas=[float("nan")] * T), "'areas': an entry nan"),
        (lambda g: g["annotations"][0].update(areas=["big"] * T), "'areas': an entry 'big'"),
        (lambda g: g["annotations"].append(None), "annotations[1]: not an object"),
    ]
    for change, why in cases:
        gt = gt_dict()
        change(gt)
        with pytest.raises(ResultsError) as err:
            read_ground_truth(gt)
        assert why in str(err.value), (why, str(err.value))


def test_unhashable_category_ids_are_problems_in_check_data(capsys, small_data):
    _edit(small_data / "train.json", lambda data: data["annotations"][0].update(category_id=[1]))
    assert cli_main(["check-data", str(small_data)]) == 1
    out, err = capsys.readouterr()
    assert "annotations[id=1].category_id': unknown category id [1]" in out and err == ""


def test_checked_inputs_are_read_once_and_score_the_same():
    gt, results = gt_dict(), [result(VALID), {**result(VALID), "score": 0.25}]
    truth = read_ground_truth(gt)
    checked = load_results(results, truth)
    assert load_results(checked, truth) is checked and load_results(checked, gt) is checked
    assert load_results(checked, gt_dict()) is not checked  # another ground truth: checked again
    assert evaluate_ytvis(truth, checked) == evaluate_ytvis(gt, results)
    assert decode_segmentation([], H, W).shape == (H, W)  # no polygon: an empty mask


def test_a_ground_truth_file_that_is_not_an_object(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text("[1, 2]")
    with pytest.raises(ResultsError, match=r"gt.json: the ground-truth JSON must be an object, not list"):
        read_ground_truth(path)


def test_results_ids_that_are_not_integers(tmp_path):
    for changes, why in [
        ({"video_id": "5"}, "video_id '5' is not in the ground truth"),
        ({"video_id": 10**400}, "video_id <an integer of more than 40 digits>"),
        ({"category_id": 2.5}, "category_id 2.5 is not in the ground truth"),
        ({"score": 10**400}, "score must be a finite number, got <an integer of more than 40 digits>"),
    ]:
        entry = {**result(VALID), **changes}
        with pytest.raises(ResultsError, match=why):
            load_results([entry], gt_dict())


# ---------------------------------------------------------------- ifrvis synth


@pytest.mark.parametrize(
    "args, why",
    [
        (
            ["--size", "100000", "--frames", "1", "--train-videos", "1", "--valid-videos", "1"],
            "--size 100000",
        ),
        (["--frames", "100000"], "--frames must be in 1..1000"),
        (["--train-videos", "10000000"], "more annotations than a split may hold"),
        (["--size", "8"], "--size must be >= 16"),
        (["--seed", "-1"], "--seed must be >= 0"),
    ],
)
def test_synth_refuses_arguments_out_of_bounds_before_creating_the_folder(
    capsys, monkeypatch, tmp_path, args, why
):
    def must_not_run(*_, **__):
        raise AssertionError("generate() called with arguments out of bounds")

    monkeypatch.setattr("ifrvis.commands.synth.generate", must_not_run)
    out = tmp_path / "synth"
    seed = [] if "--seed" in args else ["--seed", "0"]
    assert cli_main(["synth", "--out", str(out), *seed, *args, "--no-progress"]) == 2
    stdout, err = capsys.readouterr()
    assert (
        stdout == "" and err.startswith("ifrvis synth: error: ") and why in err and len(err.splitlines()) == 1
    )
    assert not out.exists()
    assert argument_problem(0, 300, 50, 96, None, "default") is None  # the defaults are within bounds


def test_synth_out_that_is_a_file(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    for out in (afile, afile / "sub"):
        args = ["--seed", "0", "--train-videos", "1", "--valid-videos", "1", "--size", "16", "--frames", "1"]
        assert cli_main(["synth", "--out", str(out), *args, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ifrvis synth: error: --out {out}: ") and len(err.splitlines()) == 1


# ---------------------------------------------------------------- ifrvis eval --json


def test_eval_json_output_path_is_checked_before_evaluating(capsys, monkeypatch, tmp_path):
    gt, results = tmp_path / "gt.json", tmp_path / "results.json"
    gt.write_text(json.dumps(gt_dict()))
    results.write_text(json.dumps([result(VALID)]))

    def must_not_run(*_, **__):
        raise AssertionError("evaluated before the output path was checked")

    monkeypatch.setattr("ifrvis.commands.eval.evaluate_ytvis", must_not_run)
    for out, why in [(tmp_path / "no" / "dir" / "m.json", "no such folder"), (tmp_path, "is a folder")]:
        assert cli_main(["eval", "--gt", str(gt), "--results", str(results), "--json", str(out)]) == 2
        stdout, err = capsys.readouterr()
        assert stdout == "" and err.startswith(f"ifrvis eval: error: --json {out}: {why}")
        assert len(err.splitlines()) == 1


# ---------------------------------------------------------------- training preflight


def test_training_preflight_refuses_a_zero_byte_frame(capsys, small_data):
    """engine.train.preflight reads the splits with data.splits.load_splits (load_ytvis, every frame
    listed): a frame of 0 bytes is refused there, before a run is created, as check-data reports it."""
    video = json.loads((small_data / "train.json").read_text())["videos"][1]
    frame = small_data / "JPEGImages" / video["file_names"][2]
    frame.write_bytes(b"")
    where = re.escape(f"video {video['id']}: field 'file_names[2]': frame file {frame} is empty (0 bytes)")
    data = DataConfig(root=str(small_data), train_images="JPEGImages", valid_images="JPEGImages")
    with pytest.raises(DataError, match=where):
        load_splits(data)
    load_ytvis(small_data / "train.json", small_data / "JPEGImages", check_files=False)  # frames not read
    assert cli_main(["check-data", str(small_data)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if "problem:" in line]
    assert len(problems) == 1 and re.search(where, problems[0])
