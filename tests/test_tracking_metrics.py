"""Sec. 4.4 tracking metrics: hand-built tracks with hand-computed IDF1/IDs/MOTA, the IoU distance
against motmetrics' own box IoU, and the TUD-Campus / TUD-Stadtmitte MOTChallenge devkit numbers
through our IoU-distance code path."""

from __future__ import annotations

from pathlib import Path

import motmetrics as mm
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ifrvis.data.masks import encode_rle, mask_bbox
from ifrvis.evaluation import tracking_metrics
from ifrvis.evaluation.tracking import accumulate, iou_distance, summarize

H, W, T = 60, 80, 10
# two objects far apart: box IoU between them is 0
BOX_A = (5, 20, 5, 25)
BOX_B = (35, 55, 50, 75)


def track(boxes):
    """Per frame (y0, y1, x0, x1) or None -> official segmentations list."""
    out = []
    for box in boxes:
        if box is None:
            out.append(None)
            continue
        mask = np.zeros((H, W), dtype=bool)
        mask[box[0] : box[1], box[2] : box[3]] = True
        out.append(encode_rle(mask))
    return out


def make_gt(tracks_by_video):
    videos, anns = [], []
    for vid, tracks in tracks_by_video.items():
        videos.append({"id": vid, "height": H, "width": W, "length": T})
        for boxes in tracks:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "video_id": vid,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentations": track(boxes),
                }
            )
    return {"videos": videos, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}


def result(vid, boxes, score=0.9):
    return {"video_id": vid, "category_id": 1, "score": score, "segmentations": track(boxes)}


def test_perfect_tracker():
    gt = make_gt({1: [[BOX_A] * T, [BOX_B] * T]})
    out = tracking_metrics(gt, [result(1, [BOX_A] * T), result(1, [BOX_B] * T)])
    assert out["IDF1"] == 1.0 and out["MOTA"] == 1.0 and out["IDs"] == 0
    assert out["FP"] == 0 and out["FN"] == 0 and out["MOTP"] == 0.0
    assert out["num_objects"] == 2 * T and out["num_predictions"] == 2 * T


@pytest.mark.parametrize("k", [3, 6])
def test_identity_swap_at_frame_k(k):
    """Track p follows A before frame k and B from k on, q the other way round. Both switch at k:
    IDs = 2. Best one-to-one track assignment: A-p and B-q (2k frames) or A-q and B-p (2(T - k));
    IDF1 = 2 IDTP / (num_gt + num_pred) = max(2k, 2(T - k)) / (2T)."""
    gt = make_gt({1: [[BOX_A] * T, [BOX_B] * T]})
    p = [BOX_A] * k + [BOX_B] * (T - k)
    q = [BOX_B] * k + [BOX_A] * (T - k)
    out = tracking_metrics(gt, [result(1, p), result(1, q)])
    assert out["IDs"] == 2
    idtp = max(2 * k, 2 * (T - k))
    assert out["IDF1"] == pytest.approx(2 * idtp / (2 * T + 2 * T))
    assert out["IDP"] == pytest.approx(idtp / (2 * T)) and out["IDR"] == pytest.approx(idtp / (2 * T))
    assert out["MOTA"] == pytest.approx(1 - 2 / (2 * T))  # the two switches are the only errors


def test_missed_object():
    gt = make_gt({1: [[BOX_A] * T, [BOX_B] * T]})
    out = tracking_metrics(gt, [result(1, [BOX_A] * T)])
    assert out["FN"] == T and out["FP"] == 0 and out["IDs"] == 0
    assert out["IDR"] == pytest.approx(0.5) and out["IDP"] == pytest.approx(1.0)
    assert out["IDF1"] == pytest.approx(2 * T / (2 * T + T))
    assert out["MOTA"] == pytest.approx(0.5)


def test_false_track_and_score_threshold():
    gt = make_gt({1: [[BOX_A] * T]})
    results = [result(1, [BOX_A] * T), result(1, [BOX_B] * T, score=0.6)]
    out = tracking_metrics(gt, results)
    assert out["FP"] == T and out["FN"] == 0
    assert out["IDP"] == pytest.approx(0.5) and out["IDR"] == pytest.approx(1.0)
    assert out["MOTA"] == pytest.approx(1 - T / T)
    # below the score threshold the false track is not a track
    assert tracking_metrics(gt, results, score_threshold=0.7)["FP"] == 0


def test_partial_overlap_and_absent_frames():
    """A prediction with box IoU 0.6 matches at the 0.5 threshold and not at 0.7; frames where the
    ground truth is absent (null) hold no object."""
    gt_boxes = [(0, 10, 0, 10)] * 4 + [None] * (T - 4)
    pred_boxes = [(0, 10, 0, 6)] * 4 + [None] * (T - 4)  # IoU 60 / 100
    gt = make_gt({1: [gt_boxes]})
    out = tracking_metrics(gt, [result(1, pred_boxes)])
    assert out["num_objects"] == 4 and out["FN"] == 0 and out["MOTP"] == pytest.approx(0.4)
    strict = tracking_metrics(gt, [result(1, pred_boxes)], iou_threshold=0.7)
    assert strict["FN"] == 4 and strict["FP"] == 4


def test_per_video_and_overall():
    gt = make_gt({1: [[BOX_A] * T], 2: [[BOX_B] * T], 3: []})
    out = tracking_metrics(gt, [result(1, [BOX_A] * T)])
    assert out["per_video"][1]["IDF1"] == 1.0
    assert out["per_video"][2]["FN"] == T and out["per_video"][2]["IDF1"] == 0.0
    assert out["per_video"][3]["num_objects"] == 0
    assert out["num_objects"] == 2 * T and out["FN"] == T
    assert out["MOTA"] == pytest.approx(0.5) and out["MOTP"] == 0.0  # not NaN despite unmatched videos


def test_no_prediction_above_the_threshold_gives_defined_zero_identity_scores():
    """IDTP = 0, IDFN = 2T, IDFP = 0: IDP = 0 / max(1, 0) = 0 (motmetrics: NaN), IDR = IDF1 = 0,
    MOTA = 1 - 2T / 2T = 0; a video with neither side scores 0 too."""
    gt = make_gt({1: [[BOX_A] * T, [BOX_B] * T], 2: []})
    out = tracking_metrics(gt, [result(1, [BOX_A] * T, score=0.1)])
    assert (out["IDP"], out["IDR"], out["IDF1"], out["MOTA"], out["IDs"]) == (0.0, 0.0, 0.0, 0.0, 0)
    assert out["num_predictions"] == 0 and out["IDFN"] == 2 * T
    assert out["per_video"][2]["IDP"] == out["per_video"][2]["IDF1"] == 0.0


def test_boxes_from_rle_equal_tight_mask_boxes():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.zeros((H, W), dtype=bool)
        for _ in range(3):
            y, x = rng.integers(0, H - 5), rng.integers(0, W - 5)
            mask[y : y + rng.integers(1, 20), x : x + rng.integers(1, 20)] = True
        rle = encode_rle(mask)
        rle = {"size": rle["size"], "counts": rle["counts"].encode()}
        assert mask_utils.toBbox(rle).tolist() == mask_bbox(mask)


def test_iou_distance_matches_motmetrics_box_iou():
    rng = np.random.default_rng(1)
    gt = np.concatenate([rng.uniform(0, 50, (6, 2)), rng.uniform(8, 30, (6, 2))], axis=1)
    near = gt[:4, :2] + rng.uniform(-1, 1, (4, 2))
    hyp = np.concatenate([near, gt[:4, 2:] * rng.uniform(0.9, 1.1, (4, 2))], axis=1)
    hyp = np.concatenate([hyp, rng.uniform(0, 50, (3, 4)) + [0, 0, 1, 1]])
    expected = 1 - mm.distances.boxiou(gt[:, None], hyp[None, :])
    expected = np.where(expected > 0.5, np.nan, expected)
    np.testing.assert_allclose(iou_distance(gt, hyp, 0.5), expected)
    assert np.isfinite(iou_distance(gt, hyp, 0.5)).sum() >= 3  # some pairs do match
    assert iou_distance(np.zeros((0, 4)), hyp).shape == (0, len(hyp))


def test_iou_distance_threshold_is_inclusive():
    """IoU exactly 0.5 pairs (motmetrics: distance > max_iou is NaN)."""
    dist = iou_distance(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 5, 10]]), 0.5)
    assert dist[0, 0] == 0.5


def _frames(gt, hyp):
    """MOTChallenge frames -> (frame, gt ids, gt boxes, hyp ids, hyp boxes)."""
    cols = ["X", "Y", "Width", "Height"]
    frame_ids = sorted(set(gt.index.get_level_values(0)) | set(hyp.index.get_level_values(0)))
    gt_frames = set(gt.index.get_level_values(0))
    hyp_frames = set(hyp.index.get_level_values(0))
    for f in frame_ids:
        g = gt.loc[f] if f in gt_frames else gt.iloc[:0].droplevel(0)
        h = hyp.loc[f] if f in hyp_frames else hyp.iloc[:0].droplevel(0)
        yield f, g.index.values, g[cols].values, h.index.values, h[cols].values


@pytest.mark.parametrize(
    "name, expected",
    [
        ("TUD-Campus", {"IDF1": 55.8, "IDP": 73.0, "IDR": 45.1, "FP": 13, "FN": 150, "IDs": 7, "MOTA": 52.6}),
        (
            "TUD-Stadtmitte",
            {"IDF1": 64.5, "IDP": 82.0, "IDR": 53.1, "FP": 45, "FN": 452, "IDs": 7, "MOTA": 56.4},
        ),
    ],
)
def test_motchallenge_devkit_numbers(name, expected):
    """motmetrics' bundled sequences through our IoU distance and summary: the devkit's numbers.
    Catches a motmetrics / NumPy / pandas change that breaks the accumulator or the metrics."""
    data = Path(mm.__file__).parent / "data" / name
    gt = mm.io.loadtxt(str(data / "gt.txt"), fmt="mot15-2D", min_confidence=1)
    hyp = mm.io.loadtxt(str(data / "test.txt"), fmt="mot15-2D")
    acc = accumulate(_frames(gt, hyp), iou_threshold=0.5)
    out = summarize({name: acc})
    for key, value in expected.items():
        got = out[key] if isinstance(value, int) else round(100 * out[key], 1)
        assert got == value, key
    assert out["per_video"][name]["IDF1"] == out["IDF1"]


def test_overall_over_several_sequences_adds_up():
    """The merged overall table: counts add up, and IDF1 = 2 IDTP / (objects + predictions) with
    each sequence's IDTP recovered from its own IDF1."""
    accs, singles = {}, {}
    for offset, name in ((0, "TUD-Campus"), (10_000, "TUD-Stadtmitte")):
        data = Path(mm.__file__).parent / "data" / name
        gt = mm.io.loadtxt(str(data / "gt.txt"), fmt="mot15-2D", min_confidence=1)
        hyp = mm.io.loadtxt(str(data / "test.txt"), fmt="mot15-2D")
        # ids unique across sequences, as tracking_metrics makes them
        frames = [(f, gi + offset, gb, hi + offset, hb) for f, gi, gb, hi, hb in _frames(gt, hyp)]
        accs[name] = accumulate(frames)
        singles[name] = summarize({name: accs[name]})
    out = summarize(accs)
    for key in ("FP", "FN", "IDs", "num_objects", "num_predictions"):
        assert out[key] == sum(s[key] for s in singles.values()), key
    idtp = sum(s["IDF1"] * (s["num_objects"] + s["num_predictions"]) / 2 for s in singles.values())
    assert out["IDF1"] == pytest.approx(2 * idtp / (out["num_objects"] + out["num_predictions"]))
    assert out["per_video"]["TUD-Campus"]["FP"] == 13
