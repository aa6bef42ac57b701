"""Tracking metrics of the paper's Section 4.4 / Table 3 (IDF1, MOTA, IDP, IDR, IDs, ...).

Method (Sec. 4.4): in every frame, the tight bounding box of each ground-truth and predicted mask
is an object / hypothesis; py-motmetrics accumulates them with an IoU distance (1 - box IoU) and a
0.5 IoU threshold. Ground-truth tracks are the annotations (crowd ones included, class-agnostic);
predicted tracks are the results with score >= score_threshold (class-agnostic). Track ids are the
index of the annotation in the ground truth's list and of the entry in the results list. A frame
where a mask is null or empty has no box for that track.

motmetrics 1.4.0's own `distances.iou_matrix` calls `np.asfarray`, removed in NumPy 2, so the IoU
distance matrix is computed here (`iou_distance`) and fed to its accumulator, which works.
MOTP is motmetrics' value: the mean IoU distance (1 - IoU) of matched pairs (lower is better).

Beyond the paper: HOTA, DetA, AssA and LocA (Luiten et al., "HOTA: A Higher Order Metric for
Evaluating Multi-Object Tracking", IJCV 2021), computed by TrackEval's own `metrics.HOTA` class
(PyPI `trackeval` 1.3, the `hota` extra) on the same tracks as the metrics above:
- Matching basis: per-frame mask IoU (pycocotools, no crowd rule), the similarity of TrackEval's
  YouTubeVIS dataset class and of the VIS literature, not the tight boxes of Table 3's metrics.
- Class-agnostic, on the predictions with score >= score_threshold, crowd ground truth included, a
  null or empty mask absent: the tracks of IDF1 / MOTA, so that DetA / AssA decompose the numbers
  beside them. TrackEval's YouTubeVIS class differs here: it scores every prediction whatever its
  score (scores only matter to its TrackMAP), matches within each category only and averages over
  categories (by class and by detection); an empty mask is a detection there.
- Each video is one sequence (`eval_sequence`); the overall values combine the videos as TrackEval
  does (`combine_sequences`: TP / FN / FP summed, AssA weighted by TP, per alpha), so they are not
  the mean of the per-video values. Each value is the mean over alpha = 0.05, 0.10, ..., 0.95, as
  TrackEval reports it; where nothing matches at some alpha, LocA counts 1 there (its convention).
Without `trackeval` those four keys are NaN and a warning says why.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import motmetrics as mm
import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils

from ifrvis.evaluation.results import GroundTruth, load_results, read_ground_truth
from ifrvis.evaluation.ytvis_eval import _to_rle, frame_areas

# our key -> motmetrics metric name; IDF1, IDP and IDR are derived from the identity counts (`_row`)
_MM_METRICS = {
    "IDTP": "idtp",
    "IDFP": "idfp",
    "IDFN": "idfn",
    "MOTA": "mota",
    "IDs": "num_switches",
    "MOTP": "motp",
    "FP": "num_false_positives",
    "FN": "num_misses",
    "num_objects": "num_objects",
    "num_predictions": "num_predictions",
}
_COUNT_KEYS = ("IDTP", "IDFP", "IDFN", "IDs", "FP", "FN", "num_objects", "num_predictions")
HOTA_KEYS = ("HOTA", "DetA", "AssA", "LocA")


def iou_distance(gt_boxes: np.ndarray, pred_boxes: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """IoU distance of boxes [x, y, w, h]: gt (N, 4), pred (K, 4) -> (N, K) 1 - IoU, NaN (do not
    pair) where IoU < iou_threshold. Same convention as motmetrics' iou_matrix(max_iou=1 - thr)."""
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(gt_boxes[:, None, :2], pred_boxes[None, :, :2])
    hi = np.minimum(
        gt_boxes[:, None, :2] + gt_boxes[:, None, 2:], pred_boxes[None, :, :2] + pred_boxes[None, :, 2:]
    )
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    union = np.prod(gt_boxes[:, 2:], axis=-1)[:, None] + np.prod(pred_boxes[:, 2:], axis=-1)[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)
    dist = 1.0 - iou
    return np.where(dist > 1.0 - iou_threshold, np.nan, dist)


def accumulate(frames: Iterable[tuple], iou_threshold: float = 0.5) -> mm.MOTAccumulator:
    """frames: (frame id, gt ids, gt boxes (N, 4), pred ids, pred boxes (K, 4)) per frame -> accumulator.
    Ids must be numbers (motmetrics 1.4.0 stores them as floats under pandas 3)."""
    acc = mm.MOTAccumulator(auto_id=False)
    for frame_id, gt_ids, gt_boxes, pred_ids, pred_boxes in frames:
        dist = iou_distance(gt_boxes, pred_boxes, iou_threshold)
        acc.update(list(gt_ids), list(pred_ids), dist, frameid=frame_id)
    return acc


def merged_events(accumulators: Iterable[mm.MOTAccumulator]) -> pd.DataFrame:
    """One events table of several accumulators, frame ids shifted to stay apart. Object and
    hypothesis ids must already be unique across them. (motmetrics 1.4.0's own
    `merge_event_dataframes` calls `DataFrame.append`, gone since pandas 2.)"""
    tables, offset = [], 0
    for acc in accumulators:
        events = acc.events
        if len(events):
            frame_ids = events.index.get_level_values("FrameId").to_numpy() + offset
            index = pd.MultiIndex.from_arrays(
                [frame_ids, events.index.get_level_values("Event")], names=["FrameId", "Event"]
            )
            tables.append(events.set_axis(index))
            offset = int(frame_ids.max()) + 1
    return pd.concat(tables) if tables else mm.MOTAccumulator.new_event_dataframe()


def summarize(per_video: dict) -> dict:
    """{name: accumulator} -> our keys overall and `per_video` (name -> the same keys).

    The overall numbers are computed on all videos' events together (`merged_events`): motmetrics'
    `generate_overall` would turn MOTP into NaN as soon as one video has no match."""
    names = list(per_video)
    metrics = list(_MM_METRICS.values())
    host = mm.metrics.create()
    overall = merged_events(per_video[n] for n in names)
    out = _row(host.compute(overall, metrics=metrics, name="OVERALL"), "OVERALL")
    out["per_video"] = {}
    if names:
        summary = host.compute_many(
            [per_video[n] for n in names], metrics=metrics, names=[str(n) for n in names]
        )
        out["per_video"] = {n: _row(summary, str(n)) for n in names}
    return out


def _row(summary, label) -> dict:
    values = summary.loc[label]
    row = {key: _clean(values[name], key in _COUNT_KEYS) for key, name in _MM_METRICS.items()}
    return {**identity_rates(row["IDTP"], row["IDFP"], row["IDFN"]), **row}


def identity_rates(idtp: int, idfp: int, idfn: int) -> dict[str, float]:
    """IDP, IDR, IDF1 from the identity counts, 0 where nothing is counted (no prediction for IDP, no
    ground truth for IDR, neither for IDF1), as TrackEval's Identity metric divides by max(1, .):
    a method that predicts nothing has defined, zero, identity scores (motmetrics gives NaN)."""
    return {
        "IDF1": 2 * idtp / max(1, 2 * idtp + idfp + idfn),
        "IDP": idtp / max(1, idtp + idfp),
        "IDR": idtp / max(1, idtp + idfn),
    }


def _clean(value, is_count: bool):
    return int(value) if is_count else float(value)


def _video_rles(segmentations: list, height: int, width: int) -> list:
    """Per frame: the compressed RLE of the mask, or None for a null or empty mask."""
    rles = [_to_rle(s, height, width) for s in segmentations]
    areas = frame_areas([rles])[0]
    return [rle if area > 0 else None for rle, area in zip(rles, areas)]


def _boxes(rles: list) -> list:
    """Per frame: [x, y, w, h] of the tight box of the mask, or None where the RLE is None."""
    present = [t for t, r in enumerate(rles) if r is not None]
    boxes: list = [None] * len(rles)
    if present:
        for t, box in zip(present, mask_utils.toBbox([rles[t] for t in present])):
            boxes[t] = box.tolist()
    return boxes


def hota_sequence(gt_tracks: list[list], pred_tracks: list[list]) -> dict:
    """One video's input to TrackEval's `HOTA.eval_sequence`: tracks as per-frame RLE or None ->
    per frame the ids present (the tracks present somewhere, numbered 0.. per side, as TrackEval's
    datasets relabel them) and their (gt, pred) mask IoU."""
    gt_tracks = [t for t in gt_tracks if any(r is not None for r in t)]
    pred_tracks = [t for t in pred_tracks if any(r is not None for r in t)]
    length = len(gt_tracks[0]) if gt_tracks else len(pred_tracks[0]) if pred_tracks else 0
    data: dict = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for t in range(length):
        gt_ids = [i for i, track in enumerate(gt_tracks) if track[t] is not None]
        pred_ids = [i for i, track in enumerate(pred_tracks) if track[t] is not None]
        data["gt_ids"].append(np.array(gt_ids, dtype=int))
        data["tracker_ids"].append(np.array(pred_ids, dtype=int))
        data["similarity_scores"].append(
            mask_iou([gt_tracks[i][t] for i in gt_ids], [pred_tracks[i][t] for i in pred_ids])
        )
    data["num_gt_ids"], data["num_tracker_ids"] = len(gt_tracks), len(pred_tracks)
    data["num_gt_dets"] = sum(len(ids) for ids in data["gt_ids"])
    data["num_tracker_dets"] = sum(len(ids) for ids in data["tracker_ids"])
    return data


def mask_iou(gt_rles: list, pred_rles: list) -> np.ndarray:
    """(N, K) IoU of N ground-truth and K predicted compressed RLEs (no crowd rule)."""
    if not gt_rles or not pred_rles:
        return np.zeros((len(gt_rles), len(pred_rles)))
    return np.asarray(mask_utils.iou(gt_rles, pred_rles, [False] * len(pred_rles))).reshape(
        len(gt_rles), len(pred_rles)
    )


def _hota_metric():
    """TrackEval's HOTA metric, or None (with a warning) when the `hota` extra is not installed."""
    try:
        from trackeval.metrics import HOTA
    except ImportError:
        warnings.warn(
            "trackeval is not installed (pip install 'ifrvis[hota]'): HOTA, DetA, AssA, LocA are NaN",
            stacklevel=3,
        )
        return None
    return HOTA()


def hota_summary(metric, sequences: dict) -> dict:
    """{video id: `hota_sequence` data} -> HOTA_KEYS overall (videos combined by TrackEval) and
    `per_video`; each value the mean over TrackEval's alpha thresholds."""
    per_video = {vid: metric.eval_sequence(data) for vid, data in sequences.items()}
    # TrackEval cannot combine zero sequences: no video scores as one empty sequence
    overall = metric.combine_sequences(per_video or {None: metric.eval_sequence(hota_sequence([], []))})
    return {**_hota_row(overall), "per_video": {vid: _hota_row(res) for vid, res in per_video.items()}}


def _hota_row(res: dict) -> dict[str, float]:
    return {key: float(np.mean(res[key])) for key in HOTA_KEYS}


def tracking_metrics(gt, results, score_threshold: float = 0.5, iou_threshold: float = 0.5) -> dict:
    """IDF1, MOTA, IDP, IDR, IDs, MOTP, FP, FN, IDTP, IDFP, IDFN, num_objects, num_predictions and
    HOTA, DetA, AssA, LocA overall and per video (`per_video`: video id -> the same keys) by the
    method of Sec. 4.4 and HOTA's (module docstring).

    gt: YouTube-VIS ground-truth path, dict or `read_ground_truth`'s GroundTruth; results: path or list
    in the official format; both checked first (`read_ground_truth`, `load_results`).
    Rates are fractions; IDF1, IDP and IDR are 0 where their denominator is (`identity_rates`).
    iou_threshold is the box metrics' only: HOTA integrates over its own mask-IoU thresholds."""
    truth: GroundTruth = read_ground_truth(gt)
    results = load_results(results, truth)
    videos = truth.videos
    index_of = {id(ann): index for index, ann in enumerate(truth.data["annotations"])}
    gt_tracks = {
        vid: [(index_of[id(ann)], ann["segmentations"]) for ann in anns]
        for vid, anns in truth.by_video.items()
    }
    pred_tracks: dict = {vid: [] for vid in videos}
    for index, res in enumerate(results):
        if res["score"] >= score_threshold:
            pred_tracks[res["video_id"]].append((index, res["segmentations"]))

    hota = _hota_metric()
    accumulators, sequences = {}, {}
    for vid in sorted(videos):
        info = videos[vid]
        gt_rles = [(tid, _video_rles(segs, info.height, info.width)) for tid, segs in gt_tracks[vid]]
        pred_rles = [(tid, _video_rles(segs, info.height, info.width)) for tid, segs in pred_tracks[vid]]
        gt_boxes = [(tid, _boxes(rles)) for tid, rles in gt_rles]
        pred_boxes = [(tid, _boxes(rles)) for tid, rles in pred_rles]
        accumulators[vid] = accumulate(_frames(info.length, gt_boxes, pred_boxes), iou_threshold)
        if hota is not None:
            sequences[vid] = hota_sequence([r for _, r in gt_rles], [r for _, r in pred_rles])
    out = summarize(accumulators)
    if hota is None:
        missing = dict.fromkeys(HOTA_KEYS, float("nan"))
        hota_out = {**missing, "per_video": {vid: missing for vid in accumulators}}
    else:
        hota_out = hota_summary(hota, sequences)
    for vid, row in out["per_video"].items():
        row.update(hota_out["per_video"][vid])
    out.update({key: hota_out[key] for key in HOTA_KEYS})
    return out


def _frames(length: int, gt_boxes: list, pred_boxes: list):
    for t in range(length):
        g = [(tid, boxes[t]) for tid, boxes in gt_boxes if boxes[t] is not None]
        p = [(tid, boxes[t]) for tid, boxes in pred_boxes if boxes[t] is not None]
        yield (
            t,
            [i for i, _ in g],
            np.array([b for _, b in g]),
            [i for i, _ in p],
            np.array([b for _, b in p]),
        )
