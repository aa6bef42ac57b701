"""YouTube-VIS AP/AR: hand-computed cases, and a line-by-line transcription of the official ytvoseval
(on decoded masks, loops everywhere) as an independent reference on random cases."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest

from ifrvis.data.masks import encode_rle
from ifrvis.evaluation import evaluate_ytvis, format_table
from ifrvis.evaluation.ytvis_eval import METRIC_KEYS, video_iou_matrix

H, W = 40, 50


def box_masks(length, boxes, height=H, width=W):
    """boxes: per frame (y0, y1, x0, x1) or None -> (T, H, W) bool."""
    masks = np.zeros((length, height, width), dtype=bool)
    for t, box in enumerate(boxes):
        if box is not None:
            y0, y1, x0, x1 = box
            masks[t, y0:y1, x0:x1] = True
    return masks


def segs(masks):
    return [encode_rle(m) if m.any() else None for m in masks]


def make_gt(videos, instances, categories=(1, 2, 3)):
    """videos: {id: (length, height, width)}; instances: (video_id, category_id, masks, iscrowd)."""
    anns = []
    for i, (vid, cat, masks, crowd) in enumerate(instances):
        areas = [int(m.sum()) if m.any() else None for m in masks]
        anns.append(
            {
                "id": i + 1,
                "video_id": vid,
                "category_id": cat,
                "iscrowd": crowd,
                "areas": areas,
                "segmentations": segs(masks),
            }
        )
    return {
        "videos": [{"id": v, "length": t, "height": h, "width": w} for v, (t, h, w) in videos.items()],
        "annotations": anns,
        "categories": [{"id": c, "name": f"cat{c}"} for c in categories],
    }


def pred(vid, cat, score, masks):
    return {"video_id": vid, "category_id": cat, "score": score, "segmentations": segs(masks)}


def gt_as_results(gt, score=1.0):
    return [
        {
            "video_id": a["video_id"],
            "category_id": a["category_id"],
            "score": score - 0.01 * i,
            "segmentations": a["segmentations"],
        }
        for i, a in enumerate(gt["annotations"])
    ]


# ---------------------------------------------------------------- hand-computed cases


def test_perfect_predictions_give_one():
    masks_a = box_masks(3, [(0, 10, 0, 10), (2, 12, 2, 12), None])
    masks_b = box_masks(3, [(20, 30, 20, 40)] * 3)
    gt = make_gt({1: (3, H, W), 2: (3, H, W)}, [(1, 1, masks_a, 0), (1, 2, masks_b, 0), (2, 1, masks_b, 0)])
    stats = evaluate_ytvis(gt, gt_as_results(gt))
    for key in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100", "ARs"):
        assert stats[key] == pytest.approx(1.0), key
    for key in ("APm", "APl", "ARm", "ARl"):  # no ground truth that large
        assert stats[key] == -1
    assert stats["per_category_AP"] == pytest.approx({1: 1.0, 2: 1.0})


def test_perturbed_results_score_below_one():
    masks_a = box_masks(4, [(0, 10, 0, 10), (2, 12, 2, 12), None, (5, 15, 5, 15)])
    masks_b = box_masks(4, [(20, 30, 20, 40)] * 4)
    gt = make_gt({1: (4, H, W)}, [(1, 1, masks_a, 0), (1, 2, masks_b, 0)])
    results = gt_as_results(gt)
    shrunk = box_masks(4, [(20, 30, 20, 31)] * 4)  # IoU 0.55 with masks_b
    results[1]["segmentations"] = segs(shrunk)
    stats = evaluate_ytvis(gt, results)
    assert stats["AP50"] == pytest.approx(1.0)
    assert stats["AP"] < 1.0
    assert stats["per_category_AP"][2] == pytest.approx(0.2)  # matched at 0.50 and 0.55 only


@pytest.mark.parametrize(
    "inside, thresholds_met",
    [(49, 0), (52, 1), (57, 2), (63, 3), (68, 4), (73, 5), (79, 6), (84, 7), (88, 8), (93, 9), (96, 10)],
)
def test_one_prediction_around_each_threshold(inside, thresholds_met):
    """GT: 50 px in frame 0 and 50 px in frame 1; the prediction covers `inside` of those 100 px
    (split over both frames) and nothing else, so the video IoU is inside / 100."""
    gt_masks = box_masks(2, [(0, 5, 0, 10), (10, 15, 10, 20)])
    p = np.zeros_like(gt_masks)
    for t, count in enumerate((min(inside, 50), inside - min(inside, 50))):
        ys, xs = np.nonzero(gt_masks[t])
        p[t, ys[:count], xs[:count]] = True
    gt = make_gt({1: (2, H, W)}, [(1, 1, gt_masks, 0)])
    stats = evaluate_ytvis(gt, [pred(1, 1, 0.9, p)])
    assert stats["AP"] == pytest.approx(thresholds_met / 10)
    assert stats["AP50"] == pytest.approx(1.0 if inside >= 50 else 0.0)
    assert stats["AP75"] == pytest.approx(1.0 if inside >= 75 else 0.0)
    assert stats["AR100"] == pytest.approx(thresholds_met / 10)


def test_frame_with_only_a_prediction_adds_to_the_union():
    """GT 100 px in frame 0, absent in frame 1; prediction = 80 px of it in frame 0 plus 20 px in
    frame 1: video IoU = 80 / (100 + 20) = 0.667 (a per-frame mean would give 0.4)."""
    gt_masks = box_masks(2, [(0, 10, 0, 10), None])
    p = box_masks(2, [(0, 8, 0, 10), (20, 22, 0, 10)])
    gt = make_gt({1: (2, H, W)}, [(1, 1, gt_masks, 0)])
    assert evaluate_ytvis(gt, [pred(1, 1, 0.9, p)])["AP"] == pytest.approx(0.4)  # thresholds 0.50..0.65


def test_instance_absent_in_some_frames():
    gt_masks = box_masks(4, [(0, 10, 0, 10), None, None, (5, 15, 5, 15)])
    gt = make_gt({1: (4, H, W)}, [(1, 1, gt_masks, 0)])
    assert evaluate_ytvis(gt, [pred(1, 1, 0.9, gt_masks)])["AP"] == pytest.approx(1.0)
    # the same masks plus 100 px in an absent frame: IoU = 200 / 300 -> thresholds 0.50..0.65 met
    extra = gt_masks.copy()
    extra[1, 20:30, 20:30] = True
    assert evaluate_ytvis(gt, [pred(1, 1, 0.9, extra)])["AP"] == pytest.approx(0.4)


def test_higher_scored_false_positive_before_true_positive():
    gt_masks = box_masks(2, [(0, 10, 0, 10)] * 2)
    wrong = box_masks(2, [(20, 30, 20, 30)] * 2)
    gt = make_gt({1: (2, H, W)}, [(1, 1, gt_masks, 0)])
    stats = evaluate_ytvis(gt, [pred(1, 1, 0.9, wrong), pred(1, 1, 0.8, gt_masks)])
    # precision after the TP is 1/2 at recall 1, interpolated back to recall 0
    assert stats["AP"] == pytest.approx(0.5)
    assert stats["AR1"] == 0.0  # the top-1 detection is the false positive
    assert stats["AR10"] == pytest.approx(1.0)
    # swapped scores: the TP first -> AP 1
    assert evaluate_ytvis(gt, [pred(1, 1, 0.8, wrong), pred(1, 1, 0.9, gt_masks)])["AP"] == pytest.approx(1.0)


def test_two_categories_and_category_without_ground_truth():
    a = box_masks(2, [(0, 10, 0, 10)] * 2)
    b = box_masks(2, [(20, 30, 20, 30)] * 2)
    gt = make_gt({1: (2, H, W)}, [(1, 1, a, 0), (1, 2, b, 0)])
    results = [pred(1, 1, 0.9, a), pred(1, 1, 0.8, b)]  # b predicted with the wrong category
    stats = evaluate_ytvis(gt, results)
    assert stats["per_category_AP"] == pytest.approx({1: 1.0, 2: 0.0})
    assert stats["AP"] == pytest.approx(0.5)
    # a prediction in category 3, which has no ground truth, changes nothing and 3 is left out
    stats3 = evaluate_ytvis(gt, results + [pred(1, 3, 0.95, b)])
    assert set(stats3["per_category_AP"]) == {1, 2}
    assert stats3["AP"] == pytest.approx(0.5)


def test_crowd_ground_truth_is_ignored():
    a = box_masks(2, [(0, 10, 0, 10)] * 2)
    crowd = box_masks(2, [(20, 35, 20, 45)] * 2)
    gt = make_gt({1: (2, H, W)}, [(1, 1, a, 0), (1, 1, crowd, 1)])
    # two predictions on the crowd region (both ignored, the crowd absorbs several) above the TP
    results = [pred(1, 1, 0.95, crowd), pred(1, 1, 0.9, crowd), pred(1, 1, 0.8, a)]
    stats = evaluate_ytvis(gt, results)
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AR1"] == 0.0  # top-1 is ignored: no true positive among kept detections
    # without the crowd flag the first is a TP, the second a FP: recall 1/2 then 1 at precision 2/3
    not_crowd = copy.deepcopy(gt)
    not_crowd["annotations"][1]["iscrowd"] = 0
    assert evaluate_ytvis(not_crowd, results)["AP"] == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)
    # a category whose only ground truth is a crowd is left out
    crowd_only = make_gt({1: (2, H, W)}, [(1, 1, a, 0), (1, 2, crowd, 1)])
    stats = evaluate_ytvis(crowd_only, [pred(1, 1, 0.9, a), pred(1, 2, 0.8, crowd)])
    assert set(stats["per_category_AP"]) == {1}


def test_small_medium_large_split():
    """300 x 300 frames; GT small (10 x 10 = 100 px) and large (260 x 260 = 67600 px > 256^2);
    only the small one is predicted, plus a small false positive."""
    size = (2, 300, 300)
    small = box_masks(2, [(0, 10, 0, 10)] * 2, 300, 300)
    large = box_masks(2, [(40, 300, 40, 300)] * 2, 300, 300)
    fp = box_masks(2, [(0, 10, 20, 30)] * 2, 300, 300)
    gt = make_gt({1: size}, [(1, 1, small, 0), (1, 1, large, 0)])
    stats = evaluate_ytvis(gt, [pred(1, 1, 0.9, small), pred(1, 1, 0.5, fp)])
    assert stats["AP"] == pytest.approx(51 / 101)  # recall 1/2 at precision 1, then a FP
    # small range: the large GT is ignored, the small FP comes after the TP that reached recall 1
    assert stats["APs"] == pytest.approx(1.0)
    assert stats["APl"] == 0.0  # small detections, unmatched, are ignored: no detection at all
    assert stats["APm"] == -1 and stats["ARm"] == -1
    assert stats["ARs"] == pytest.approx(1.0) and stats["ARl"] == 0.0
    assert stats["AR100"] == pytest.approx(0.5)


def test_area_is_the_mean_of_the_nonempty_frames_from_the_gt_areas_field():
    """The `areas` field decides the range (as ytvoseval): frames 100 and 300 px, one null -> 200 px.
    Set the field to say 20000 px (medium) and the same instance moves to medium."""
    masks = box_masks(3, [(0, 10, 0, 10), None, (0, 10, 0, 30)])
    gt = make_gt({1: (3, H, W)}, [(1, 1, masks, 0)])
    results = [pred(1, 1, 0.9, masks)]
    assert evaluate_ytvis(gt, results)["APs"] == pytest.approx(1.0)
    gt["annotations"][0]["areas"] = [20000, None, 20000]
    stats = evaluate_ytvis(gt, results)
    assert stats["APs"] == -1
    # the prediction's own area (200 px, from its masks) is small: matched, so it counts for medium
    assert stats["APm"] == pytest.approx(1.0)


def test_only_the_100_best_predictions_of_a_video_and_category_count():
    """ytvoseval keeps maxDets[-1] = 100 detections per (video, category), best score first. 100 false
    positives above the true positive push it out: AP = AR100 = 0. With 99 the true positive is the
    100th: recall 1 at precision 1/100, so AP = 101 x 0.01 / 101 = 0.01 and AR100 = 1."""
    gt_masks = box_masks(1, [(0, 10, 0, 10)])
    wrong = box_masks(1, [(20, 30, 20, 30)])
    gt = make_gt({1: (1, H, W)}, [(1, 1, gt_masks, 0)])
    true_positive = pred(1, 1, 0.5, gt_masks)

    def scores(false_positives):
        results = [pred(1, 1, 0.9 - 1e-4 * i, wrong) for i in range(false_positives)] + [true_positive]
        return evaluate_ytvis(gt, results)

    pushed_out = scores(100)
    assert pushed_out["AP"] == 0 and pushed_out["AR100"] == 0
    last_kept = scores(99)
    assert last_kept["AP"] == pytest.approx(0.01) and last_kept["AR100"] == pytest.approx(1.0)
    assert last_kept["AR10"] == 0


def test_area_range_bounds_are_inclusive_on_both_sides():
    """ytvoseval ignores a ground truth when its area < lo or > hi, over its ranges [0, 128^2],
    [128^2, 256^2], [256^2, 1e10]: a mean area of exactly 128^2 px is small and medium at once, and
    exactly 256^2 px medium and large."""
    for side, ranges in ((128, ("APs", "APm")), (256, ("APm", "APl"))):
        masks = box_masks(1, [(0, side, 0, side)], 300, 300)
        gt = make_gt({1: (1, 300, 300)}, [(1, 1, masks, 0)])
        stats = evaluate_ytvis(gt, [pred(1, 1, 0.9, masks)])
        assert all(stats[key] == pytest.approx(1.0) for key in ranges), side
        assert [key for key in ("APs", "APm", "APl") if stats[key] == -1] == [
            key for key in ("APs", "APm", "APl") if key not in ranges
        ]


def test_order_of_results_does_not_matter():
    rng = np.random.default_rng(3)
    gt, results = random_case(rng, num_videos=3, length=3)
    expected = evaluate_ytvis(gt, results)
    shuffled = list(results)
    random.Random(0).shuffle(shuffled)
    assert evaluate_ytvis(gt, shuffled) == expected


def test_empty_results_give_zeros():
    gt = make_gt({1: (2, H, W)}, [(1, 1, box_masks(2, [(0, 10, 0, 10)] * 2), 0)])
    stats = evaluate_ytvis(gt, [])
    assert all(stats[k] in (0.0, -1.0) for k in METRIC_KEYS)
    assert stats["AP"] == 0.0 and stats["per_category_AP"] == {1: 0.0}


def test_video_with_predictions_and_no_ground_truth():
    """Video 2 has no ground truth: its prediction is a false positive ranked above video 1's true
    positive. Precision is 1/2 at the only recall level (1), so AP = 0.5; recall is 1."""
    a = box_masks(2, [(0, 10, 0, 10)] * 2)
    gt = make_gt({1: (2, H, W), 2: (2, H, W)}, [(1, 1, a, 0)])
    stats = evaluate_ytvis(gt, [pred(1, 1, 0.9, a), pred(2, 1, 0.95, a)])
    assert stats["AP"] == pytest.approx(0.5) and stats["AP50"] == pytest.approx(0.5)
    assert stats["AR1"] == pytest.approx(1.0) and stats["AR10"] == pytest.approx(1.0)


def test_video_with_ground_truth_and_no_predictions():
    """Two ground truths, one found: precision 1 up to recall 0.5, i.e. at 51 of the 101 recall
    thresholds (0, 0.01, ..., 0.5): AP = 51/101, AR = 0.5."""
    a = box_masks(2, [(0, 10, 0, 10)] * 2)
    gt = make_gt({1: (2, H, W), 2: (2, H, W)}, [(1, 1, a, 0), (2, 1, a, 0)])
    stats = evaluate_ytvis(gt, [pred(1, 1, 0.9, a)])
    assert stats["AP"] == pytest.approx(51 / 101)
    assert stats["AR10"] == pytest.approx(0.5)


def test_category_with_predictions_only_and_videos_without_anything():
    """Category 2 has predictions but no ground truth anywhere: left out of AP; video 3 has neither."""
    a = box_masks(2, [(0, 10, 0, 10)] * 2)
    gt = make_gt({1: (2, H, W), 2: (2, H, W), 3: (2, H, W)}, [(1, 1, a, 0)])
    stats = evaluate_ytvis(gt, [pred(1, 1, 0.9, a), pred(2, 2, 0.99, a), pred(1, 2, 0.98, a)])
    assert stats["per_category_AP"] == pytest.approx({1: 1.0})
    assert stats["AP"] == pytest.approx(1.0)


def test_empty_results_list_and_no_ground_truth_at_all():
    gt = make_gt({1: (2, H, W)}, [])
    assert all(evaluate_ytvis(gt, [])[k] == -1.0 for k in METRIC_KEYS)
    a = box_masks(2, [(0, 10, 0, 10)] * 2)
    stats = evaluate_ytvis(gt, [pred(1, 1, 0.9, a)])  # predictions, no ground truth: undefined
    assert all(stats[k] == -1.0 for k in METRIC_KEYS) and stats["per_category_AP"] == {}


def test_table_prints_percentages():
    gt = make_gt({1: (2, H, W)}, [(1, 1, box_masks(2, [(0, 10, 0, 10)] * 2), 0)])
    table = format_table(evaluate_ytvis(gt, gt_as_results(gt)), {1: "person"})
    assert "100.0" in table and "person" in table


def test_evaluation_prints_nothing(capsys):
    gt = make_gt({1: (2, H, W)}, [(1, 1, box_masks(2, [(0, 10, 0, 10)] * 2), 0)])
    evaluate_ytvis(gt, gt_as_results(gt))
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- video IoU against dense masks


def test_video_iou_matrix_matches_dense_computation():
    rng = np.random.default_rng(0)
    length = 4
    dts = [random_track(rng, length, H, W) for _ in range(5)]
    gts = [random_track(rng, length, H, W) for _ in range(3)]
    from ifrvis.evaluation.ytvis_eval import _to_rle

    got = video_iou_matrix(
        [[_to_rle(s, H, W) for s in segs(d)] for d in dts],
        [[_to_rle(s, H, W) for s in segs(g)] for g in gts],
        H,
        W,
    )
    for i, d in enumerate(dts):
        for j, g in enumerate(gts):
            union = (d | g).sum()
            assert got[i, j] == ((d & g).sum() / union if union else 0.0)


# ---------------------------------------------------------------- official transcription on random cases


def random_track(rng, length, height, width):
    masks = np.zeros((length, height, width), dtype=bool)
    y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
    h, w = rng.integers(4, height), rng.integers(4, width)
    for t in range(length):
        if rng.random() < 0.2:
            continue  # absent in this frame
        dy, dx = rng.integers(-2, 3, size=2)
        masks[t, max(0, y + dy) : y + dy + h, max(0, x + dx) : x + dx + w] = True
        masks[t] &= rng.random((height, width)) > 0.1  # ragged, not a box
    return masks


def random_case(rng, num_videos, length, height=H, width=W):
    instances, results = [], []
    for vid in range(1, num_videos + 1):
        for _ in range(rng.integers(1, 4)):
            cat = int(rng.integers(1, 4))
            masks = random_track(rng, length, height, width)
            instances.append((vid, cat, masks, int(rng.random() < 0.15)))
            if rng.random() < 0.8:  # a noisy copy of it
                noisy = masks & (rng.random(masks.shape) > rng.uniform(0.0, 0.6))
                label = cat if rng.random() < 0.8 else int(rng.integers(1, 4))
                results.append(pred(vid, label, float(rng.random()), noisy))
        for _ in range(rng.integers(0, 4)):  # false positives
            results.append(
                pred(
                    vid,
                    int(rng.integers(1, 4)),
                    float(rng.random()),
                    random_track(rng, length, height, width),
                )
            )
    videos = {v: (length, height, width) for v in range(1, num_videos + 1)}
    return make_gt(videos, instances), results


def official_ytvoseval(gt, results):
    """ytvoseval.py's evaluate/accumulate/summarize transcribed with its loops, on decoded masks."""
    from ifrvis.data.masks import decode_segmentation

    vids = {v["id"]: v for v in gt["videos"]}
    vid_ids, cat_ids = sorted(vids), sorted(c["id"] for c in gt["categories"])
    iou_thrs = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
    rec_thrs = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
    max_dets = [1, 10, 100]
    area_rng = [[0, 1e10], [0, 128**2], [128**2, 256**2], [256**2, 1e10]]

    def decode(ann):
        v = vids[ann["video_id"]]
        return [decode_segmentation(s, v["height"], v["width"]) if s else None for s in ann["segmentations"]]

    gts = [dict(a, masks=decode(a)) for a in gt["annotations"]]
    dts = []
    for i, r in enumerate(results):
        d = dict(r, id=i + 1, iscrowd=0, masks=decode(r))
        d["areas"] = [int(m.sum()) if m is not None else None for m in d["masks"]]
        dts.append(d)
    for a in gts + dts:
        nonzero = [x for x in a["areas"] if x]
        a["avg_area"] = np.array(nonzero).mean() if nonzero else 0
    for g in gts:
        g["ignore"] = "iscrowd" in g and g["iscrowd"]
    _gts, _dts = {}, {}
    for g in gts:
        _gts.setdefault((g["video_id"], g["category_id"]), []).append(g)
    for d in dts:
        _dts.setdefault((d["video_id"], d["category_id"]), []).append(d)

    def iou_seq(ds, gs):
        i = u = 0.0
        for d, g in zip(ds, gs):
            if d is not None and g is not None:
                i += (d & g).sum()
                u += (d | g).sum()
            elif d is None and g is not None:
                u += g.sum()
            elif d is not None and g is None:
                u += d.sum()
        return i / u if u > 0 else 0.0

    def compute_iou(vid, cat):
        g, d = _gts.get((vid, cat), []), _dts.get((vid, cat), [])
        if not g or not d:
            return []
        inds = np.argsort([-x["score"] for x in d], kind="mergesort")
        d = [d[i] for i in inds][: max_dets[-1]]
        ious = np.zeros((len(d), len(g)))
        for i, j in np.ndindex(ious.shape):
            ious[i, j] = iou_seq(d[i]["masks"], g[j]["masks"])
        return ious

    all_ious = {(v, c): compute_iou(v, c) for v in vid_ids for c in cat_ids}

    def evaluate_vid(vid, cat, a_rng, max_det):
        gt_, dt_ = _gts.get((vid, cat), []), _dts.get((vid, cat), [])
        if len(gt_) == 0 and len(dt_) == 0:
            return None
        for g in gt_:
            g["_ignore"] = 1 if (g["ignore"] or g["avg_area"] < a_rng[0] or g["avg_area"] > a_rng[1]) else 0
        gtind = np.argsort([g["_ignore"] for g in gt_], kind="mergesort")
        gt_ = [gt_[i] for i in gtind]
        dtind = np.argsort([-d["score"] for d in dt_], kind="mergesort")
        dt_ = [dt_[i] for i in dtind[0:max_det]]
        iscrowd = [int(o["iscrowd"]) for o in gt_]
        ious = all_ious[vid, cat][:, gtind] if len(all_ious[vid, cat]) > 0 else all_ious[vid, cat]
        T, G, D = len(iou_thrs), len(gt_), len(dt_)
        gtm, dtm = np.zeros((T, G)), np.zeros((T, D))
        gt_ig = np.array([g["_ignore"] for g in gt_])
        dt_ig = np.zeros((T, D))
        if not len(ious) == 0:
            for tind, t in enumerate(iou_thrs):
                for dind, d in enumerate(dt_):
                    iou, m = min([t, 1 - 1e-10]), -1
                    for gind, _ in enumerate(gt_):
                        if gtm[tind, gind] > 0 and not iscrowd[gind]:
                            continue
                        if m > -1 and gt_ig[m] == 0 and gt_ig[gind] == 1:
                            break
                        if ious[dind, gind] < iou:
                            continue
                        iou, m = ious[dind, gind], gind
                    if m == -1:
                        continue
                    dt_ig[tind, dind] = gt_ig[m]
                    dtm[tind, dind] = gt_[m]["id"]
                    gtm[tind, m] = d["id"]
        a = np.array([d["avg_area"] < a_rng[0] or d["avg_area"] > a_rng[1] for d in dt_]).reshape(
            (1, len(dt_))
        )
        dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, np.repeat(a, T, 0)))
        return {"dtMatches": dtm, "dtScores": [d["score"] for d in dt_], "gtIgnore": gt_ig, "dtIgnore": dt_ig}

    eval_imgs = [evaluate_vid(v, c, a, max_dets[-1]) for c in cat_ids for a in area_rng for v in vid_ids]
    T, R, K, A, M = len(iou_thrs), len(rec_thrs), len(cat_ids), len(area_rng), len(max_dets)
    precision, recall = -np.ones((T, R, K, A, M)), -np.ones((T, K, A, M))
    I0, A0 = len(vid_ids), len(area_rng)
    for k in range(K):
        for a in range(A):
            for m, max_det in enumerate(max_dets):
                E = [eval_imgs[k * A0 * I0 + a * I0 + i] for i in range(I0)]
                E = [e for e in E if e is not None]
                if len(E) == 0:
                    continue
                dt_scores = np.concatenate([e["dtScores"][0:max_det] for e in E])
                inds = np.argsort(-dt_scores, kind="mergesort")
                dtm = np.concatenate([e["dtMatches"][:, 0:max_det] for e in E], axis=1)[:, inds]
                dt_ig = np.concatenate([e["dtIgnore"][:, 0:max_det] for e in E], axis=1)[:, inds]
                gt_ig = np.concatenate([e["gtIgnore"] for e in E])
                npig = np.count_nonzero(gt_ig == 0)
                if npig == 0:
                    continue
                tps = np.logical_and(dtm, np.logical_not(dt_ig))
                fps = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))
                tp_sum = np.cumsum(tps, axis=1).astype(float)
                fp_sum = np.cumsum(fps, axis=1).astype(float)
                for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                    nd = len(tp)
                    rc = tp / npig
                    pr = (tp / (fp + tp + np.spacing(1))).tolist()
                    q = [0.0] * R
                    recall[t, k, a, m] = rc[-1] if nd else 0
                    for i in range(nd - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    for ri, pi in enumerate(np.searchsorted(rc, rec_thrs, side="left")):
                        if pi >= nd:
                            break
                        q[ri] = pr[pi]
                    precision[t, :, k, a, m] = np.array(q)

    def summarize(ap, iou_thr=None, area=0, max_det=100):
        mind = max_dets.index(max_det)
        s = precision if ap else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == iou_thrs)[0]]
        s = s[:, :, :, area, mind] if ap else s[:, :, area, mind]
        return -1 if len(s[s > -1]) == 0 else np.mean(s[s > -1])

    stats = [
        summarize(1),
        summarize(1, 0.5),
        summarize(1, 0.75),
        summarize(1, area=1),
        summarize(1, area=2),
        summarize(1, area=3),
        summarize(0, max_det=1),
        summarize(0, max_det=10),
        summarize(0),
        summarize(0, area=1),
        summarize(0, area=2),
        summarize(0, area=3),
    ]
    return dict(zip(METRIC_KEYS, stats))


@pytest.mark.parametrize("seed", range(6))
def test_matches_official_transcription_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    gt, results = random_case(rng, num_videos=4, length=3)
    got = evaluate_ytvis(gt, results)
    expected = official_ytvoseval(gt, results)
    for key in METRIC_KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


def test_matches_official_transcription_across_area_ranges():
    """Frames big enough for medium and large instances (area ranges in play)."""
    rng = np.random.default_rng(25)  # a seed whose case has matches in all three ranges
    gt, results = random_case(rng, num_videos=6, length=2, height=300, width=420)
    got = evaluate_ytvis(gt, results)
    expected = official_ytvoseval(gt, results)
    assert all(got[k] > 0 for k in ("APs", "APm", "APl"))
    for key in METRIC_KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


def test_long_video_beyond_pycocotools_batch_limit():
    """300 frames: more RLEs than pycocotools 2.0.11's area() takes at once (it overflows at 256)."""
    from ifrvis.evaluation import tracking_metrics

    masks = box_masks(300, [(0, 4, t % 5, t % 5 + 4) for t in range(300)], 8, 10)
    gt = make_gt({1: (300, 8, 10)}, [(1, 1, masks, 0)])
    assert evaluate_ytvis(gt, gt_as_results(gt))["AP"] == pytest.approx(1.0)
    assert tracking_metrics(gt, gt_as_results(gt))["num_objects"] == 300
