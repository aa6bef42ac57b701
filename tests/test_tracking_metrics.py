"""Sec. 4.4 tracking metrics: hand-built tracks with hand-computed IDF1/IDs/MOTA and HOTA/DetA/AssA,
the IoU distance against motmetrics' own box IoU, the TUD-Campus / TUD-Stadtmitte MOTChallenge devkit
numbers through our IoU-distance code path, and HOTA against TrackEval's own YouTube-VIS pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import motmetrics as mm
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ifrvis.commands.eval import main as eval_main
from ifrvis.data.masks import encode_rle, mask_bbox
from ifrvis.evaluation import tracking_metrics
from ifrvis.evaluation.tracking import HOTA_KEYS, accumulate, iou_distance, summarize

H, W, T = 60, 80, 10
# two objects far apart: box IoU between them is 0
BOX_A = (5, 20, 5, 25)
BOX_B = (35, 55, 50, 75)


def box_mask(box):
    mask = np.zeros((H, W), dtype=bool)
    mask[box[0] : box[1], box[2] : box[3]] = True
    return mask


def track(frames, compressed=True):
    """Per frame (y0, y1, x0, x1), an (H, W) bool mask or None -> official segmentations list."""
    out = []
    for frame in frames:
        if frame is None:
            out.append(None)
            continue
        mask = frame if isinstance(frame, np.ndarray) else box_mask(frame)
        out.append(encode_rle(mask, compressed))
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


def test_crowd_ground_truth_is_a_track_like_any_other():
    """Unlike AP, the tracking metrics have no crowd rule (the module's stated choice: crowd ground truth
    included): a crowd annotation nobody predicts is T misses, and a track on it is T hits."""
    gt = make_gt({1: [[BOX_A] * T, [BOX_B] * T]})
    gt["annotations"][1]["iscrowd"] = 1
    missed = tracking_metrics(gt, [result(1, [BOX_A] * T)])
    assert missed["FN"] == T and missed["FP"] == 0 and missed["MOTA"] == pytest.approx(0.5)
    found = tracking_metrics(gt, [result(1, [BOX_A] * T), result(1, [BOX_B] * T)])
    assert found["FN"] == 0 and found["IDF1"] == pytest.approx(1.0) and found["MOTA"] == pytest.approx(1.0)


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


# HOTA (Luiten et al. 2021, as TrackEval computes it): per alpha in 0.05, 0.10, ..., 0.95 (19 values),
# TP / FN / FP are frame-level matches with mask IoU >= alpha, DetA = TP / (TP + FN + FP), and
# AssA = mean over TPs c of TPA(c) / (TPA(c) + FNA(c) + FPA(c)), where for the pair (gt track, pred
# track) of c, TPA counts their matched frames, FNA the other frames of the gt track and FPA the other
# frames of the pred track: A(c) = TPA / (|gt track| + |pred track| - TPA). HOTA_alpha =
# sqrt(DetA_alpha AssA_alpha), and each reported value is the mean over the 19 alphas. With masks
# equal to the ground truth's (IoU 1), every alpha gives the same numbers.


def hota_of(out):
    return tuple(out[key] for key in ("HOTA", "DetA", "AssA"))


def test_hota_perfect_tracker():
    gt = make_gt({1: [[BOX_A] * T, [BOX_B] * T]})
    out = tracking_metrics(gt, [result(1, [BOX_A] * T), result(1, [BOX_B] * T)])
    assert hota_of(out) == pytest.approx((1.0, 1.0, 1.0)) and out["LocA"] == pytest.approx(1.0)
    assert out["per_video"][1]["HOTA"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "k, assa",
    [
        # TP pairs (A, p), (B, q): k frames each, A = k / (T + T - k) = 5 / 15;
        # (A, q), (B, p): T - k = 5 frames each, A = 5 / 15. AssA = (10 * 1/3 + 10 * 1/3) / 20 = 1/3
        (5, 1 / 3),
        # k = 3: (A, p), (B, q): 3 frames, A = 3 / 17; (A, q), (B, p): 7 frames, A = 7 / 13.
        # AssA = (2 * 3 * 3/17 + 2 * 7 * 7/13) / 20 = (18/17 + 98/13) / 20
        (3, (18 / 17 + 98 / 13) / 20),
    ],
)
def test_hota_identity_swap_at_frame_k(k, assa):
    """The tracks of test_identity_swap_at_frame_k: every frame is detected perfectly (DetA = 1),
    association is what suffers: HOTA = sqrt(1 * AssA)."""
    gt = make_gt({1: [[BOX_A] * T, [BOX_B] * T]})
    p = [BOX_A] * k + [BOX_B] * (T - k)
    q = [BOX_B] * k + [BOX_A] * (T - k)
    out = tracking_metrics(gt, [result(1, p), result(1, q)])
    assert hota_of(out) == pytest.approx((assa**0.5, 1.0, assa))


def test_hota_tracker_missing_half_the_frames():
    """One object over T = 10 frames, predicted in the first 5 only: TP = 5, FN = 5, FP = 0, so
    DetA = 5 / 10; the one pair has TPA = 5, |gt| = 10, |pred| = 5: A = 5 / (10 + 5 - 5) = 1/2, so
    AssA = 1/2 and HOTA = sqrt(1/4) = 1/2."""
    gt = make_gt({1: [[BOX_A] * T]})
    out = tracking_metrics(gt, [result(1, [BOX_A] * (T // 2) + [None] * (T - T // 2))])
    assert hota_of(out) == pytest.approx((0.5, 0.5, 0.5))


def test_hota_no_prediction_is_zero():
    """Nothing above the score threshold: TP = 0, DetA = AssA = HOTA = 0 (LocA: 1, TrackEval's value
    where nothing matches)."""
    gt = make_gt({1: [[BOX_A] * T, [BOX_B] * T]})
    out = tracking_metrics(gt, [result(1, [BOX_A] * T, score=0.1)])
    assert hota_of(out) == (0.0, 0.0, 0.0) and out["LocA"] == 1.0


def test_hota_is_on_masks_over_alpha_thresholds():
    """A prediction that is the ground truth's 10 x 10 square with a 6 x 6 hole: box IoU 1 (MOTP 0)
    but mask IoU 64 / 100. It matches for the 12 alphas 0.05 .. 0.60 (DetA = AssA = HOTA = 1) and
    for none of the 7 alphas 0.65 .. 0.95 (all 0): HOTA = DetA = AssA = 12 / 19. LocA: 0.64 at the 12,
    1 at the 7 where nothing matches (TrackEval's convention): (12 * 0.64 + 7) / 19."""
    square = (10, 20, 10, 20)
    hollow = box_mask(square) & ~box_mask((12, 18, 12, 18))
    gt = make_gt({1: [[square] * T]})
    out = tracking_metrics(gt, [result(1, [hollow] * T)])
    assert out["MOTP"] == 0.0 and out["IDF1"] == 1.0
    assert hota_of(out) == pytest.approx((12 / 19, 12 / 19, 12 / 19))
    assert out["LocA"] == pytest.approx((12 * 0.64 + 7) / 19)


def test_hota_follows_the_score_threshold():
    """A false track scored 0.6: above the default threshold, TP = T, FP = T: DetA = 1/2, AssA = 1,
    HOTA = sqrt(1/2); above 0.7 it is no track and HOTA = 1."""
    gt = make_gt({1: [[BOX_A] * T]})
    results = [result(1, [BOX_A] * T), result(1, [BOX_B] * T, score=0.6)]
    assert hota_of(tracking_metrics(gt, results)) == pytest.approx((0.5**0.5, 0.5, 1.0))
    assert hota_of(tracking_metrics(gt, results, score_threshold=0.7)) == pytest.approx((1.0, 1.0, 1.0))


def test_hota_overall_combines_videos_not_their_mean():
    """Video 1 perfect, video 2's object missed: per video HOTA 1 and 0. Overall (TrackEval's
    combine_sequences): TP = T, FN = T, DetA = 1/2, AssA = TP-weighted = 1, HOTA = sqrt(1/2), not 1/2;
    a video with neither side has HOTA 0."""
    gt = make_gt({1: [[BOX_A] * T], 2: [[BOX_B] * T], 3: []})
    out = tracking_metrics(gt, [result(1, [BOX_A] * T)])
    assert [out["per_video"][v]["HOTA"] for v in (1, 2, 3)] == pytest.approx([1.0, 0.0, 0.0])
    assert hota_of(out) == pytest.approx((0.5**0.5, 0.5, 1.0))


def test_without_trackeval_hota_keys_are_nan(monkeypatch):
    """An environment without the `hota` extra (a None entry in sys.modules makes the import fail):
    the other metrics as before, the HOTA keys NaN overall and per video, and a warning."""
    monkeypatch.setitem(sys.modules, "trackeval", None)
    monkeypatch.setitem(sys.modules, "trackeval.metrics", None)
    gt = make_gt({1: [[BOX_A] * T]})
    with pytest.warns(UserWarning, match="trackeval is not installed"):
        out = tracking_metrics(gt, [result(1, [BOX_A] * T)])
    assert out["IDF1"] == 1.0
    assert all(np.isnan(out[key]) and np.isnan(out["per_video"][1][key]) for key in HOTA_KEYS)


def test_eval_cli_prints_and_writes_hota(tmp_path, capsys):
    """`ifrvis eval --tracking` on the half-missing tracker: HOTA, DetA, AssA 50.0 on the table's
    line (in %), the fractions in the JSON, overall and per video."""
    gt, results = tmp_path / "gt.json", tmp_path / "results.json"
    gt.write_text(json.dumps(make_gt({1: [[BOX_A] * T]})))
    results.write_text(json.dumps([result(1, [BOX_A] * (T // 2) + [None] * (T - T // 2))]))
    out = tmp_path / "metrics.json"
    assert eval_main(["--gt", str(gt), "--results", str(results), "--json", str(out), "--tracking"]) == 0
    header, values = capsys.readouterr().out.strip().splitlines()[-2:]
    row = dict(zip(header.split(), values.split()))
    assert (row["HOTA"], row["DetA"], row["AssA"], row["IDs"]) == ("50.0", "50.0", "50.0", "0")
    written = json.loads(out.read_text())["tracking"]
    assert written["HOTA"] == pytest.approx(0.5) and written["per_video"]["1"]["AssA"] == pytest.approx(0.5)


def random_tracks(rng, n_tracks):
    """Rectangles drifting over the T frames, each track absent in a random frame or two."""
    tracks = []
    for _ in range(n_tracks):
        y, x = rng.integers(0, H - 20), rng.integers(0, W - 20)
        h, w = (int(v) for v in rng.integers(6, 20, size=2))
        frames = []
        for _ in range(T):
            y = int(np.clip(y + rng.integers(-2, 3), 0, H - h))
            x = int(np.clip(x + rng.integers(-2, 3), 0, W - w))
            frames.append((y, y + h, x, x + w))
        for t in rng.choice(T, size=rng.integers(0, 3), replace=False):
            frames[t] = None
        tracks.append(frames)
    return tracks


def jitter(rng, frames):
    """A prediction of a track: boxes moved and resized by a few pixels, some frames dropped."""
    out = []
    for box in frames:
        if box is None or rng.random() < 0.1:
            out.append(None)
            continue
        y0, y1, x0, x1 = (int(v) + int(d) for v, d in zip(box, rng.integers(-3, 4, size=4)))
        y0, x0 = max(y0, 0), max(x0, 0)
        out.append((y0, max(y1, y0 + 2), x0, max(x1, x0 + 2)))
    return out


def trackeval_youtube_vis_hota(tmp_path, gt, results):
    """TrackEval's whole YouTube-VIS pipeline (dataset class, per-class preprocessing, HOTA,
    sequences combined): one category's COMBINED_SEQ HOTA, DetA, AssA, LocA (means over alpha)."""
    import trackeval

    gt_dir = tmp_path / "gt" / "youtube_vis_val"
    tracker_dir = tmp_path / "trackers" / "youtube_vis_val" / "ours" / "data"
    gt_dir.mkdir(parents=True)
    tracker_dir.mkdir(parents=True)
    (gt_dir / "gt.json").write_text(json.dumps(gt))
    (tracker_dir / "results.json").write_text(json.dumps(results))
    dataset = trackeval.datasets.YouTubeVIS(
        {
            "GT_FOLDER": str(tmp_path / "gt") + "/",
            "TRACKERS_FOLDER": str(tmp_path / "trackers") + "/",
            "OUTPUT_FOLDER": str(tmp_path / "out"),
            "SPLIT_TO_EVAL": "val",
            "PRINT_CONFIG": False,
        }
    )
    quiet = (
        "PRINT_RESULTS",
        "PRINT_CONFIG",
        "TIME_PROGRESS",
        "OUTPUT_SUMMARY",
        "OUTPUT_DETAILED",
        "PLOT_CURVES",
    )
    evaluator = trackeval.Evaluator(dict.fromkeys(quiet, False))
    output, _ = evaluator.evaluate([dataset], [trackeval.metrics.HOTA({"PRINT_CONFIG": False})])
    res = output["YouTubeVIS"]["ours"]["COMBINED_SEQ"]["thing"]["HOTA"]
    return {key: float(np.mean(res[key])) for key in HOTA_KEYS}


def test_hota_matches_trackeval_youtube_vis_pipeline(tmp_path):
    """Random tracks (jittered predictions, swapped identities, dropped frames, false tracks) in three
    videos of one category, every prediction above the score threshold and no empty mask: where our
    choices and TrackEval's YouTubeVIS class coincide, the numbers must too. TrackEval reads its
    own format: uncompressed-RLE ground truth with heights, widths, areas and file names."""
    rng = np.random.default_rng(3)
    gt_tracks = {vid: random_tracks(rng, n) for vid, n in ((1, 3), (2, 2), (3, 4))}
    results = []
    for vid, tracks in gt_tracks.items():
        preds = [jitter(rng, frames) for frames in tracks]
        cut = int(rng.integers(2, T - 2))  # the first two predictions swap identities at `cut`
        preds[0], preds[1] = preds[0][:cut] + preds[1][cut:], preds[1][:cut] + preds[0][cut:]
        preds += random_tracks(rng, 1)  # a false track
        results += [result(vid, p, score=float(rng.uniform(0.5, 1))) for p in preds]
    ours = tracking_metrics(make_gt(gt_tracks), results)

    te_gt = make_gt(gt_tracks)
    for video in te_gt["videos"]:
        video["file_names"] = [f"video{video['id']}/{t:05d}.jpg" for t in range(T)]
    for ann, frames in zip(te_gt["annotations"], [f for tracks in gt_tracks.values() for f in tracks]):
        ann.update(height=H, width=W, segmentations=track(frames, compressed=False))
        ann["areas"] = [None if f is None else int(box_mask(f).sum()) for f in frames]
    theirs = trackeval_youtube_vis_hota(tmp_path, te_gt, results)
    assert 0.2 < theirs["HOTA"] < 0.9  # a case that exercises both detection and association errors
    for key in HOTA_KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key


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
