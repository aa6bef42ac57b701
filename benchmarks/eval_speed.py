"""Evaluation speed: `evaluate_ytvis` and `tracking_metrics` on synthetic YouTube-VIS-sized data,
and the vectorised video IoU against a straightforward per-pair loop (the official ytvoseval's
`iou_seq`: for every (prediction, ground truth) pair of a (video, category) and every frame, one
RLE merge for the intersection and one for the union).

The default is the full case: 300 videos x 36 frames of 720 x 1280, 3 ground-truth and 10
predicted instances per video (~45 s on 2 cores; masks are moving polygons rasterised straight to
RLE, so the case holds no dense 720p arrays and needs little memory). `--dense-videos` videos are
also timed with a loop over decoded masks. It also times decoding every RLE of every video once
(`frame_areas` of all tracks), which any IoU method built on pycocotools' RLE decoder must at least
do: the floor of the speed-up over the per-pair loop.

    python benchmarks/eval_speed.py [--videos N] [--frames T] [--height H] [--width W] [--dense-videos K]
"""

from __future__ import annotations

import time

import numpy as np
from pycocotools import mask as mask_utils

from ifrvis.cli import ArgumentParser, non_negative_int, positive_int
from ifrvis.evaluation import evaluate_ytvis, tracking_metrics
from ifrvis.evaluation.ytvis_eval import _to_rle, frame_areas, video_iou_matrix

NUM_CATEGORIES = 40


def polygon_track(rng, frames, height, width, jitter=0.0, base=None):
    """A moving, slowly deforming polygon: (frames,) compressed RLE dicts (str counts).

    base: (centre, radii, velocity) to follow another track with noise `jitter` (fraction of size)."""
    if base is None:
        centre = rng.uniform([0.2 * width, 0.2 * height], [0.8 * width, 0.8 * height])
        radii = rng.uniform(0.03, 0.2, size=12) * min(height, width)
        velocity = rng.uniform(-4, 4, size=2)
        base = (centre, radii, velocity)
    centre, radii, velocity = base
    angles = np.linspace(0, 2 * np.pi, len(radii), endpoint=False)
    segs = []
    for t in range(frames):
        if rng.random() < 0.05:  # occluded / out of view in this frame
            segs.append(None)
            continue
        r = radii * (1 + jitter * rng.standard_normal(len(radii)))
        c = centre + velocity * t + jitter * rng.standard_normal(2) * radii.mean()
        xs = np.clip(c[0] + r * np.cos(angles), 0, width - 1)
        ys = np.clip(c[1] + r * np.sin(angles), 0, height - 1)
        rle = mask_utils.frPyObjects([np.stack([xs, ys], 1).ravel().tolist()], height, width)[0]
        segs.append({"size": [height, width], "counts": rle["counts"].decode("ascii")})
    return segs, base


def build_case(num_videos, frames, height, width, gt_per_video=3, preds_per_video=10, seed=0):
    rng = np.random.default_rng(seed)
    videos, anns, results = [], [], []
    for vid in range(1, num_videos + 1):
        videos.append({"id": vid, "height": height, "width": width, "length": frames})
        tracks = []
        for _ in range(gt_per_video):
            segs, base = polygon_track(rng, frames, height, width)
            cat = int(rng.integers(1, NUM_CATEGORIES + 1))
            areas = [int(mask_utils.area(_to_rle(s, height, width))) if s else None for s in segs]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "video_id": vid,
                    "category_id": cat,
                    "iscrowd": 0,
                    "areas": areas,
                    "segmentations": segs,
                }
            )
            tracks.append((cat, base))
        for p in range(preds_per_video):
            if p < 2 * len(tracks):  # two noisy copies of every ground truth, sometimes mislabelled
                cat, base = tracks[p % len(tracks)]
                segs, _ = polygon_track(rng, frames, height, width, jitter=0.05 * (1 + p), base=base)
                if rng.random() < 0.2:
                    cat = int(rng.integers(1, NUM_CATEGORIES + 1))
            else:  # false positives, half of them in a category of the video
                segs, _ = polygon_track(rng, frames, height, width)
                cat = int(rng.integers(1, NUM_CATEGORIES + 1))
                if rng.random() < 0.5:
                    cat = tracks[int(rng.integers(len(tracks)))][0]
            results.append(
                {"video_id": vid, "category_id": cat, "score": float(rng.random()), "segmentations": segs}
            )
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, NUM_CATEGORIES + 1)]
    return {"videos": videos, "annotations": anns, "categories": categories}, results


def loop_video_iou(d_seq, g_seq):
    """The official per-pair video IoU: a Python loop over frames with RLE merges."""
    inter = union = 0.0
    for d, g in zip(d_seq, g_seq):
        if d and g:
            inter += mask_utils.area(mask_utils.merge([d, g], intersect=True))
            union += mask_utils.area(mask_utils.merge([d, g], intersect=False))
        elif g:
            union += mask_utils.area(g)
        elif d:
            union += mask_utils.area(d)
    return inter / union if union > 0 else 0.0


def prepare_videos(gt, results):
    """Per video: prediction and ground-truth RLEs and categories, as the evaluator holds them."""
    out = []
    for info in gt["videos"]:
        vid, h, w = info["id"], info["height"], info["width"]
        gts = [a for a in gt["annotations"] if a["video_id"] == vid]
        dts = [r for r in results if r["video_id"] == vid]
        g_rles = [[_to_rle(s, h, w) for s in a["segmentations"]] for a in gts]
        d_rles = [[_to_rle(s, h, w) for s in r["segmentations"]] for r in dts]
        out.append((d_rles, g_rles, [r["category_id"] for r in dts], [a["category_id"] for a in gts], h, w))
    return out


def vectorised_ious(d_rles, g_rles, d_cats, g_cats, h, w):
    """The evaluator's path: per-frame areas once per video, one batched IoU per (category, frame)."""
    d_areas, g_areas = frame_areas(d_rles), frame_areas(g_rles)
    out = {}
    for cat in set(d_cats) & set(g_cats):
        di = [i for i, c in enumerate(d_cats) if c == cat]
        gi = [j for j, c in enumerate(g_cats) if c == cat]
        ious = video_iou_matrix(
            [d_rles[i] for i in di], [g_rles[j] for j in gi], h, w, d_areas[di], g_areas[gi]
        )
        out.update({(i, j): ious[a, b] for a, i in enumerate(di) for b, j in enumerate(gi)})
    return out


def loop_ious(d_rles, g_rles, d_cats, g_cats, h, w):
    """The reference: every same-category pair (as the official evaluator), frame by frame."""
    return {
        (i, j): loop_video_iou(d_rles[i], g_rles[j])
        for i, dc in enumerate(d_cats)
        for j, gc in enumerate(g_cats)
        if dc == gc
    }


def decode_once(d_rles, g_rles, d_cats, g_cats, h, w):
    """Every RLE of the video decoded once by pycocotools (its per-frame areas), nothing else."""
    return frame_areas(d_rles), frame_areas(g_rles)


def dense_loop_ious(d_rles, g_rles, d_cats, g_cats, h, w):
    """A second reference: decoded masks, a NumPy loop over (prediction, ground truth, frame)."""

    def dense(rle):
        return np.zeros((h, w), dtype=bool) if rle is None else mask_utils.decode(rle).astype(bool)

    d_masks = [[dense(r) for r in track] for track in d_rles]
    g_masks = [[dense(r) for r in track] for track in g_rles]
    out = {}
    for i, dc in enumerate(d_cats):
        for j, gc in enumerate(g_cats):
            if dc == gc:
                inter = sum(int((d & g).sum()) for d, g in zip(d_masks[i], g_masks[j]))
                union = sum(int((d | g).sum()) for d, g in zip(d_masks[i], g_masks[j]))
                out[i, j] = inter / union if union else 0.0
    return out


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=positive_int, default=300)
    parser.add_argument("--frames", type=positive_int, default=36)
    parser.add_argument("--height", type=positive_int, default=720)
    parser.add_argument("--width", type=positive_int, default=1280)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--dense-videos", type=non_negative_int, default=3, help="videos timed with the dense-mask loop"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    gt, results = build_case(args.videos, args.frames, args.height, args.width, seed=args.seed)
    print(
        f"case: {args.videos} videos x {args.frames} frames of {args.height}x{args.width}, "
        f"{len(gt['annotations'])} ground truths, {len(results)} predictions "
        f"(built in {time.perf_counter() - start:.1f} s)"
    )

    videos = prepare_videos(gt, results)
    start = time.perf_counter()
    fast = [vectorised_ious(*video) for video in videos]
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = [loop_ious(*video) for video in videos]
    loop_s = time.perf_counter() - start
    num_pairs = sum(len(s) for s in slow)
    mismatches = sum(f != s for f, s in zip(fast, slow))
    print(f"video IoU of {num_pairs} same-category pairs ({num_pairs / args.videos:.1f} per video):")
    print(f"  vectorised:     {fast_s:7.2f} s  {args.videos / fast_s:8.1f} videos/s")
    print(f"  per-pair loop:  {loop_s:7.2f} s  {args.videos / loop_s:8.1f} videos/s")
    print(f"  speed-up {loop_s / fast_s:.1f}x; videos whose IoUs differ: {mismatches}")
    start = time.perf_counter()
    for video in videos:
        decode_once(*video)
    floor_s = time.perf_counter() - start
    print(
        f"  decoding every RLE once: {floor_s:7.2f} s  {args.videos / floor_s:8.1f} videos/s "
        f"(bound: a method decoding each RLE is at most {loop_s / floor_s:.1f}x faster than the loop)"
    )
    if args.dense_videos:
        subset = videos[: args.dense_videos]
        start = time.perf_counter()
        dense = [dense_loop_ious(*video) for video in subset]
        dense_s = (time.perf_counter() - start) / len(subset)
        mismatches += sum(d != s for d, s in zip(dense, slow))
        print(
            f"  dense-mask loop ({len(subset)} videos): {1 / dense_s:8.1f} videos/s, "
            f"vectorised is {dense_s / (fast_s / args.videos):.0f}x faster"
        )

    start = time.perf_counter()
    stats = evaluate_ytvis(gt, results)
    ap_s = time.perf_counter() - start
    print(
        f"evaluate_ytvis:   {ap_s:7.2f} s  {args.videos / ap_s:8.1f} videos/s  "
        f"(AP {100 * stats['AP']:.1f}, AP50 {100 * stats['AP50']:.1f}, AR10 {100 * stats['AR10']:.1f})"
    )
    start = time.perf_counter()
    track = tracking_metrics(gt, results)
    track_s = time.perf_counter() - start
    print(
        f"tracking_metrics: {track_s:7.2f} s  {args.videos / track_s:8.1f} videos/s  "
        f"(IDF1 {100 * track['IDF1']:.1f}, MOTA {100 * track['MOTA']:.1f}, IDs {track['IDs']})"
    )
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
