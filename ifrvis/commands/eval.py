"""`ifrvis eval --gt GT.json --results RESULTS.json [--json OUT.json] [--tracking]`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ifrvis.evaluation.results import load_ground_truth
from ifrvis.evaluation.tracking import tracking_metrics
from ifrvis.evaluation.ytvis_eval import evaluate_ytvis, format_table
from ifrvis.metric_names import TRACKING_KEYS, scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ifrvis eval", description="YouTube-VIS AP/AR of a results file.")
    parser.add_argument("--gt", required=True, help="YouTube-VIS ground-truth JSON")
    parser.add_argument("--results", required=True, help="results JSON in the official format")
    parser.add_argument("--json", help="also write the metrics (fractions) to this JSON file")
    parser.add_argument(
        "--tracking", action="store_true", help="also compute the Sec. 4.4 tracking metrics and HOTA"
    )
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="tracks: results with score >= this"
    )
    args = parser.parse_args(argv)
    gt = load_ground_truth(args.gt)  # a file that is not YouTube-VIS: ResultsError, one line (ifrvis.cli)
    stats = evaluate_ytvis(gt, args.results)
    track = tracking_metrics(gt, args.results, args.score_threshold) if args.tracking else None
    names = {int(c["id"]): c.get("name", "") for c in gt["categories"]}
    print(format_table(stats, names))
    if track is not None:
        print(f"\ntracking (score >= {args.score_threshold:g}):")
        print(" ".join(f"{k:>6}" for k in TRACKING_KEYS))
        print(" ".join(_format_tracking(k, track[k]) for k in TRACKING_KEYS))
    if args.json:
        out = dict(stats, per_category_AP={str(k): v for k, v in stats["per_category_AP"].items()})
        if track is not None:
            out["tracking"] = dict(track, per_video={str(k): v for k, v in track["per_video"].items()})
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def _format_tracking(key: str, value) -> str:
    if isinstance(value, int):
        return f"{value:>6d}"
    return f"{scale(key) * value:>6.1f}"
