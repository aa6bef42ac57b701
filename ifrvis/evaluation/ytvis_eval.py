"""YouTube-VIS AP/AR, number for number the official `ytvoseval` (youtubevos fork of cocoapi).

The rules of the official evaluator, reproduced here:
- video IoU of a prediction d and a ground truth g = sum_t |d_t & g_t| / sum_t |d_t | g_t|; a frame
  where only one side has a mask adds its area to the union only;
- area of an instance = mean of its non-empty per-frame areas (ground truth: the file's `areas`;
  predictions: computed from the masks); ranges all [0, 1e10], small [0, 128^2],
  medium [128^2, 256^2], large [256^2, 1e10], bounds inclusive;
- per (video, category): ground truth sorted so that ignored ones come last (stable), predictions
  sorted by score descending (stable, so ties keep the results-list order) and cut to maxDet;
- COCO's greedy matching per IoU threshold 0.50:0.05:0.95, preferring non-ignored ground truth;
  a prediction matched to an ignored ground truth is ignored, an unmatched prediction outside the
  area range is ignored;
- precision made monotone and sampled at 101 recall points (searchsorted 'left'), recall = the
  final tp / number of non-ignored ground truths; a category without non-ignored ground truth
  stays -1 and is left out of the means.
- `iscrowd`: ytvoseval sets `ignore = iscrowd` on the ground truth. A crowd instance is thus an
  ignored ground truth: it counts in no denominator, a prediction matching it is ignored, and
  (as COCO) it may absorb several predictions. Its IoU is the ordinary video IoU (ytvoseval does
  not use COCO's crowd IoU).

Where this evaluator is stricter than ytvoseval (which would run on or crash later): results are
validated first (`load_results`: unknown video or category, wrong frame count or mask size, RLE runs
that do not cover the frame, non-finite score raise ResultsError), and so is the ground truth
(`read_ground_truth`: every segmentation a mask of its video's size, as `masks.segmentation_problem`
checks it; pycocotools' decoder trusts the runs and writes past the mask). A ground truth without
`areas` gets them from its masks.

The video IoU of the same-category pairs of a video is computed with one batched pycocotools RLE
intersection per (category, frame), with the per-frame areas computed once per video, instead of
two RLE merges per (prediction, ground truth, frame). benchmarks/README.md has the measured speed.
"""

from __future__ import annotations

import functools

import numpy as np
from pycocotools import mask as mask_utils

from ifrvis.evaluation.results import GroundTruth, load_results, read_ground_truth

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {
    "all": (0.0, 1e10),
    "small": (0.0, 128.0**2),
    "medium": (128.0**2, 256.0**2),
    "large": (256.0**2, 1e10),
}
_AREA_BATCH = 255
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# key -> (precision (1) or recall (0), IoU threshold or None for the mean, area range, maxDet)
_SUMMARY = {
    "AP": (1, None, "all", 100),
    "AP50": (1, 0.5, "all", 100),
    "AP75": (1, 0.75, "all", 100),
    "APs": (1, None, "small", 100),
    "APm": (1, None, "medium", 100),
    "APl": (1, None, "large", 100),
    "AR1": (0, None, "all", 1),
    "AR10": (0, None, "all", 10),
    "AR100": (0, None, "all", 100),
    "ARs": (0, None, "small", 100),
    "ARm": (0, None, "medium", 100),
    "ARl": (0, None, "large", 100),
}


def _to_rle(seg, height: int, width: int) -> dict | None:
    """One ground-truth or result frame -> compressed RLE for pycocotools, None when absent."""
    if not seg:  # None, or an empty polygon list
        return None
    if isinstance(seg, list):  # polygons
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg["counts"], list):  # uncompressed RLE
        return mask_utils.frPyObjects(seg, height, width)
    counts = seg["counts"]
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _mean_nonempty_area(areas) -> float:
    """Mean of the non-null, non-zero per-frame areas; 0 when there are none (ytvoseval's avg_area).
    Ground truth passes its file's `areas` (as ytvoseval; the masks' areas when the field is absent)."""
    values = [a for a in areas if a]
    return float(np.mean(values)) if values else 0.0


@functools.lru_cache(maxsize=8)
def _empty_rle(height: int, width: int) -> dict:
    return mask_utils.frPyObjects({"size": [height, width], "counts": [height * width]}, height, width)


def frame_areas(tracks: list[list]) -> np.ndarray:
    """Per-frame mask areas of N tracks of T compressed RLEs or None -> (N, T) float64 (0 for None),
    with batched pycocotools calls."""
    length = len(tracks[0]) if tracks else 0
    present = [(n, t) for n, track in enumerate(tracks) for t, rle in enumerate(track) if rle is not None]
    areas = np.zeros((len(tracks), length))
    if present:
        rows, cols = zip(*present)
        rles = [tracks[n][t] for n, t in present]
        # pycocotools 2.0.11's area() raises OverflowError on 256 or more RLEs at once
        chunk = _AREA_BATCH
        areas[rows, cols] = np.concatenate(
            [mask_utils.area(rles[i : i + chunk]) for i in range(0, len(rles), chunk)]
        )
    return areas


def video_iou_matrix(
    dt_rles: list[list],
    gt_rles: list[list],
    height: int,
    width: int,
    dt_areas: np.ndarray | None = None,
    gt_areas: np.ndarray | None = None,
) -> np.ndarray:
    """Video IoU of every (prediction, ground truth) pair of one video.

    dt_rles: D lists of T compressed RLEs or None; gt_rles: G such lists; dt_areas (D, T) and
    gt_areas (G, T): their `frame_areas` when already known. Returns (D, G) float64:
    sum_t intersection / sum_t union, 0 where the union is empty. One batched pycocotools call per
    frame where both sides have a mask, instead of a loop over pairs and frames."""
    num_dt, num_gt = len(dt_rles), len(gt_rles)
    if num_dt == 0 or num_gt == 0:
        return np.zeros((num_dt, num_gt))
    dt_areas = frame_areas(dt_rles) if dt_areas is None else dt_areas
    gt_areas = frame_areas(gt_rles) if gt_areas is None else gt_areas
    empty = _empty_rle(height, width)
    inter = np.zeros((num_dt, num_gt))
    crowd = [1] * num_gt  # crowd IoU = |d & g| / |d|, from which the integer |d & g| is exact
    both = np.flatnonzero((dt_areas > 0).any(axis=0) & (gt_areas > 0).any(axis=0))
    for t in both:
        d_frame = [empty if seq[t] is None else seq[t] for seq in dt_rles]
        g_frame = [empty if seq[t] is None else seq[t] for seq in gt_rles]
        ratio = np.asarray(mask_utils.iou(d_frame, g_frame, crowd), dtype=np.float64).reshape(num_dt, num_gt)
        inter += np.rint(ratio * dt_areas[:, t, None])
    union = dt_areas.sum(axis=1)[:, None] + gt_areas.sum(axis=1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match(ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray, dt_area: np.ndarray, area_range):
    """cocoeval's greedy matching of one (video, category, area range).

    ious (D, G) with D sorted by score and G sorted ignored-last; returns dt_matched (T, D) bool and
    dt_ignore (T, D) bool for the T IoU thresholds."""
    num_thr, (num_dt, num_gt) = len(IOU_THRESHOLDS), ious.shape
    gt_matched = np.zeros((num_thr, num_gt), dtype=bool)
    dt_matched = np.zeros((num_thr, num_dt), dtype=bool)
    dt_ignore = np.zeros((num_thr, num_dt), dtype=bool)
    for ti, thr in enumerate(IOU_THRESHOLDS):
        for d in range(num_dt):
            best_iou, best = min(thr, 1 - 1e-10), -1
            for g in range(num_gt):
                if gt_matched[ti, g] and not gt_crowd[g]:
                    continue
                if best > -1 and not gt_ignore[best] and gt_ignore[g]:
                    break  # matched a regular ground truth; the rest are ignored ones
                if ious[d, g] < best_iou:
                    continue
                best_iou, best = ious[d, g], g
            if best == -1:
                continue
            dt_ignore[ti, d] = gt_ignore[best]
            dt_matched[ti, d] = True
            gt_matched[ti, best] = True
    outside = (dt_area < area_range[0]) | (dt_area > area_range[1])
    dt_ignore |= ~dt_matched & outside[None, :]
    return dt_matched, dt_ignore


def _precision_recall(scores, matched, ignored, num_positive: int):
    """101-point interpolated precision (T, R) and final recall (T,) of one accumulation cell."""
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[:, order], ignored[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    num_thr, num_dt = tp.shape
    precision = np.zeros((num_thr, len(RECALL_THRESHOLDS)))
    recall = np.zeros(num_thr)
    for ti in range(num_thr):
        rc = tp[ti] / num_positive
        pr = tp[ti] / (fp[ti] + tp[ti] + np.spacing(1))
        if num_dt:
            recall[ti] = rc[-1]
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # monotone (non-increasing) precision envelope
        idx = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
        valid = idx < num_dt
        precision[ti, valid] = pr[idx[valid]]
    return precision, recall


def _group(items, key):
    groups: dict = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def evaluate_ytvis(gt, results) -> dict:
    """YouTube-VIS AP/AR of `results` against `gt`.

    gt: ground-truth JSON path, dict or `read_ground_truth`'s GroundTruth; results: path or list in the
    official format. Both are checked first (`read_ground_truth`, `load_results`: ResultsError naming
    the entry and field, before pycocotools sees a mask). Returns AP, AP50, AP75, APs, APm, APl, AR1,
    AR10, AR100, ARs, ARm, ARl as fractions in [0, 1] (-1 where undefined) and `per_category_AP`
    {category id: AP} over the categories with ground truth. Prints nothing."""
    truth: GroundTruth = read_ground_truth(gt)
    results = load_results(results, truth)
    videos = truth.videos
    video_ids = sorted(videos)
    cat_ids = truth.category_ids
    gt_by_video = truth.by_video
    dt_by_video = _group(results, lambda r: r["video_id"])

    area_names = list(AREA_RANGES)
    # (category, area range) -> per video: scores (D,), matched (T, D), ignored (T, D), gt_ignore (G,)
    cells: dict = {}
    for vid in video_ids:
        info = videos[vid]
        gts, dts = gt_by_video.get(vid, []), dt_by_video.get(vid, [])
        if not gts and not dts:
            continue
        gt_rles = [[_to_rle(s, info.height, info.width) for s in a["segmentations"]] for a in gts]
        dt_rles = [[_to_rle(s, info.height, info.width) for s in r["segmentations"]] for r in dts]
        dt_frame_areas, gt_frame_areas = frame_areas(dt_rles), frame_areas(gt_rles)
        # explicit dtypes: a video may have no ground truth, or no prediction (empty arrays)
        gt_area = np.array(
            [_mean_nonempty_area(a.get("areas") or fa) for a, fa in zip(gts, gt_frame_areas)],
            dtype=np.float64,
        )
        dt_area = np.array([_mean_nonempty_area(fa) for fa in dt_frame_areas], dtype=np.float64)
        gt_cats = np.array([int(a["category_id"]) for a in gts], dtype=np.int64)
        gt_crowd = np.array([bool(a.get("iscrowd", 0)) for a in gts], dtype=bool)
        dt_cats = np.array([r["category_id"] for r in dts], dtype=np.int64)
        dt_scores = np.array([r["score"] for r in dts], dtype=np.float64)
        for cat in cat_ids:
            g_idx = np.flatnonzero(gt_cats == cat)
            d_idx = np.flatnonzero(dt_cats == cat)
            if g_idx.size == 0 and d_idx.size == 0:
                continue
            d_idx = d_idx[np.argsort(-dt_scores[d_idx], kind="mergesort")][: MAX_DETS[-1]]
            ious = video_iou_matrix(
                [dt_rles[i] for i in d_idx], [gt_rles[j] for j in g_idx], info.height, info.width,
                dt_frame_areas[d_idx], gt_frame_areas[g_idx],
            )  # fmt: skip
            for area_name in area_names:
                lo, hi = AREA_RANGES[area_name]
                ignore = gt_crowd[g_idx] | (gt_area[g_idx] < lo) | (gt_area[g_idx] > hi)
                order = np.argsort(ignore, kind="mergesort")  # ignored ground truth last
                matched, dt_ignored = _match(
                    ious[:, order], ignore[order], gt_crowd[g_idx[order]], dt_area[d_idx], (lo, hi)
                )
                cells.setdefault((cat, area_name), []).append(
                    (dt_scores[d_idx], matched, dt_ignored, ignore[order])
                )

    shape = (len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(cat_ids), len(area_names), len(MAX_DETS))
    precision = -np.ones(shape)
    recall = -np.ones((shape[0], shape[2], shape[3], shape[4]))
    for (cat, area_name), entries in cells.items():
        k, a = cat_ids.index(cat), area_names.index(area_name)
        num_positive = int(sum(np.count_nonzero(~e[3]) for e in entries))
        if num_positive == 0:
            continue
        for m, max_det in enumerate(MAX_DETS):
            scores = np.concatenate([e[0][:max_det] for e in entries])
            matched = np.concatenate([e[1][:, :max_det] for e in entries], axis=1)
            ignored = np.concatenate([e[2][:, :max_det] for e in entries], axis=1)
            precision[:, :, k, a, m], recall[:, k, a, m] = _precision_recall(
                scores, matched, ignored, num_positive
            )
    return _summarize(precision, recall, cat_ids)


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _summarize(precision: np.ndarray, recall: np.ndarray, cat_ids: list[int]) -> dict:
    area_names = list(AREA_RANGES)
    stats: dict = {}
    for key, (is_ap, iou_thr, area_name, max_det) in _SUMMARY.items():
        a, m = area_names.index(area_name), MAX_DETS.index(max_det)
        values = precision[..., a, m] if is_ap else recall[..., a, m]
        if iou_thr is not None:
            values = values[np.where(iou_thr == IOU_THRESHOLDS)[0]]
        stats[key] = _mean_valid(values)
    all_100 = precision[:, :, :, area_names.index("all"), MAX_DETS.index(100)]
    stats["per_category_AP"] = {
        cat: _mean_valid(all_100[:, :, k]) for k, cat in enumerate(cat_ids) if (all_100[:, :, k] > -1).any()
    }
    return stats


def format_table(stats: dict, category_names: dict[int, str] | None = None) -> str:
    """The twelve numbers (and per-category AP) as percentages, as the paper reports them."""
    lines = [" ".join(f"{k:>6}" for k in METRIC_KEYS), " ".join(f"{_pct(stats[k]):>6}" for k in METRIC_KEYS)]
    if stats.get("per_category_AP"):
        lines.append("")
        lines.append("per-category AP:")
        names = category_names or {}
        for cat, value in sorted(stats["per_category_AP"].items()):
            lines.append(f"  {cat:>4} {names.get(cat, ''):<24} {_pct(value):>6}")
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "-1" if value < 0 else f"{100 * value:.1f}"
