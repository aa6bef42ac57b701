"""Results files: validation on load, the server's zip, per-video predictions -> official dicts."""

from __future__ import annotations

import json
import math
import zipfile
from collections import namedtuple

import numpy as np
import pytest

from ifrvis.data.masks import decode_segmentation, encode_rle
from ifrvis.evaluation import (
    ResultsError,
    encode_video_predictions,
    evaluate_ytvis,
    load_results,
    write_results,
)

H, W, T = 20, 30, 3


def gt_dict():
    mask = np.zeros((H, W), dtype=bool)
    mask[2:8, 3:12] = True
    segs = [encode_rle(mask)] * T
    return {
        "videos": [{"id": 5, "height": H, "width": W, "length": T}],
        "annotations": [
            {"id": 1, "video_id": 5, "category_id": 2, "iscrowd": 0, "areas": [54] * T, "segmentations": segs}
        ],
        "categories": [{"id": 2, "name": "dog"}, {"id": 7, "name": "cat"}],
    }


def good_result(**changes):
    gt = gt_dict()
    entry = {
        "video_id": 5,
        "category_id": 2,
        "score": 0.8,
        "segmentations": gt["annotations"][0]["segmentations"],
    }
    entry.update(changes)
    return entry


def test_valid_results_load_from_list_and_path(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([good_result()]))
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt_dict()))
    from_list = load_results([good_result()], gt_dict())
    assert load_results(path, gt_path) == from_list
    assert from_list[0]["video_id"] == 5 and from_list[0]["score"] == 0.8


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"video_id": 99}, "video_id 99 is not in the ground truth"),
        ({"category_id": 3}, "category_id 3 is not in the ground truth"),
        ({"segmentations": [None] * (T + 1)}, f"has {T + 1} frames, video 5 has {T}"),
        (
            {"segmentations": [encode_rle(np.ones((H + 1, W), bool))] + [None] * (T - 1)},
            rf"video 5: segmentations\[0\]: mask size {H + 1}x{W} differs from the video's {H}x{W}",
        ),
        ({"score": float("nan")}, "finite number"),
        ({"score": math.inf}, "finite number"),
        ({"score": "0.5"}, "finite number"),
        ({"segmentations": [{"size": [H, W], "counts": [0, H * W]}] * T}, "compressed RLE"),
    ],
)
def test_bad_results_raise_clear_errors(changes, message):
    with pytest.raises(ResultsError, match=message) as err:
        load_results([good_result(), good_result(**changes)], gt_dict())
    assert "results[1]" in str(err.value)


def test_missing_field_is_named():
    entry = good_result()
    del entry["score"]
    with pytest.raises(ResultsError, match=r"results\[0\]: missing field\(s\) score"):
        load_results([entry], gt_dict())


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ResultsError, match="bad.json"):
        load_results(path, gt_dict())
    with pytest.raises(ResultsError, match="annotations"):
        load_results([], {"videos": [], "categories": []})


def test_loading_does_not_modify_the_input():
    entries = [good_result()]
    before = json.dumps(entries)
    load_results(entries, gt_dict())
    assert json.dumps(entries) == before


def test_write_results_json_and_zip(tmp_path):
    results = [good_result(), good_result(score=0.3, segmentations=[None] * T)]
    json_path, zip_path = write_results(results, tmp_path / "out")
    assert json.loads(json_path.read_text()) == results
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == ["results.json"]
        assert json.loads(archive.read("results.json")) == results


def test_encode_video_predictions_round_trip():
    Prediction = namedtuple("Prediction", "label score masks")
    masks = np.zeros((T, H, W), dtype=bool)
    masks[0, 1:5, 1:5] = True
    masks[2, 10:15, 3:20] = True  # frame 1 empty -> null
    out = encode_video_predictions(5, [Prediction(1, 0.7, masks), (0, 0.4, masks[::-1])], category_ids=[2, 7])
    assert [o["category_id"] for o in out] == [7, 2]
    assert out[0]["segmentations"][1] is None and isinstance(out[0]["segmentations"][0]["counts"], str)
    decoded = np.stack([decode_segmentation(s, H, W) for s in out[0]["segmentations"]])
    np.testing.assert_array_equal(decoded, masks)
    assert load_results(out, gt_dict())[0]["score"] == 0.7
    json.dumps(out)  # serialisable as is


def test_ground_truth_turned_into_results_scores_one_and_perturbed_less(tmp_path):
    gt = gt_dict()
    masks = np.stack([decode_segmentation(s, H, W) for s in gt["annotations"][0]["segmentations"]])
    json_path, _ = write_results(encode_video_predictions(5, [(0, 1.0, masks)], [2, 7]), tmp_path)
    assert evaluate_ytvis(gt, json_path)["AP"] == pytest.approx(1.0)
    shifted = np.roll(masks, 2, axis=2)  # 9 px wide, shifted by 2: IoU 7 / 11 = 0.64
    assert evaluate_ytvis(gt, encode_video_predictions(5, [(0, 1.0, shifted)], [2, 7]))[
        "AP"
    ] == pytest.approx(0.3)


def test_bad_ground_truth_annotations_raise_clear_errors():
    gt = gt_dict()
    gt["annotations"][0]["segmentations"] = gt["annotations"][0]["segmentations"][:-1]
    with pytest.raises(
        ResultsError,
        match=rf"annotations\[0\] \(id 1\): video 5: 'segmentations' has {T - 1} frames, the video {T}",
    ):
        evaluate_ytvis(gt, [])
    gt = gt_dict()
    gt["annotations"][0]["video_id"] = 6
    with pytest.raises(ResultsError, match="video_id 6 is not among the videos"):
        evaluate_ytvis(gt, [])


def test_eval_cli_prints_table_and_writes_json(tmp_path, capsys):
    from ifrvis.cli import main as cli_main
    from ifrvis.commands.eval import main

    gt_path, results_path, out_path = tmp_path / "gt.json", tmp_path / "results.json", tmp_path / "m.json"
    gt_path.write_text(json.dumps(gt_dict()))
    results_path.write_text(json.dumps([good_result()]))
    assert (
        main(["--gt", str(gt_path), "--results", str(results_path), "--json", str(out_path), "--tracking"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "100.0" in printed and "dog" in printed and "IDF1" in printed
    metrics = json.loads(out_path.read_text())
    assert metrics["AP"] == pytest.approx(1.0) and metrics["per_category_AP"] == {"2": pytest.approx(1.0)}
    assert metrics["tracking"]["IDF1"] == 1.0
    results_path.write_text(json.dumps([good_result(video_id=99)]))
    assert cli_main(["eval", "--gt", str(gt_path), "--results", str(results_path)]) == 2
    error = capsys.readouterr().err
    assert (
        error.startswith("ifrvis eval: error: ") and "video_id 99" in error and len(error.splitlines()) == 1
    )
