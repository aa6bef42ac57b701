"""`ifrvis eval --gt GT.json --results RESULTS.json [--json OUT.json] [--tracking]`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ifrvis.cli import ArgumentParser
from ifrvis.errors import UserError
from ifrvis.evaluation.results import load_results, read_ground_truth
from ifrvis.evaluation.tracking import tracking_metrics
from ifrvis.evaluation.ytvis_eval import evaluate_ytvis, format_table
from ifrvis.metric_names import TRACKING_KEYS, scale


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="ifrvis eval", description="YouTube-VIS AP/AR of a results file.")
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
    if args.json:
        check_output_path(Path(args.json))  # before the evaluation, not after it
    # Both files are read and checked once, here (ResultsError naming the file, entry and field: one
    # line, ifrvis.cli); the evaluators take them as checked.
    gt = read_ground_truth(args.gt)
    results = load_results(args.results, gt)
    stats = evaluate_ytvis(gt, results)
    track = tracking_metrics(gt, results, args.score_threshold) if args.tracking else None
    names = {c["id"]: c.get("name", "") for c in gt.data["categories"]}
    print(format_table(stats, names))
    if track is not None:
        print(f"\ntracking (score >= {args.score_threshold:g}):")
        print(" ".join(f"{k:>6}" for k in TRACKING_KEYS))
        print(" ".join(_format_tracking(k, track[k]) for k in TRACKING_KEYS))
    if args.json:
        out = dict(stats, per_category_AP={str(k): v for k, v in stats["per_category_AP"].items()})
        if track is not None:
            out["tracking"] = dict(track, per_video={str(k): v for k, v in track["per_video"].items()})
        try:
            Path(args.json).write_text(json.dumps(out, indent=1))
        except OSError as error:
            raise UserError(f"--json {args.json}: cannot write: {error.strerror or error}") from None
    return 0


def check_output_path(path: Path) -> None:
    """UserError when the metrics cannot be written to `path`: its folder missing or not writable, or
    the path a folder."""
    folder = path.parent
    if path.is_dir():
        raise UserError(f"--json {path}: is a folder, not a file")
    if not folder.is_dir():
        raise UserError(f"--json {path}: no such folder {folder}")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"--json {path}: not writable")


def _format_tracking(key: str, value) -> str:
    if isinstance(value, int):
        return f"{value:>6d}"
    return f"{scale(key) * value:>6.1f}"
