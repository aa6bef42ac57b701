"""Evaluation: YouTube-VIS AP/AR (official-equivalent), tracking metrics (Table 3), results files."""

from ifrvis.evaluation.results import (
    ResultsError,
    encode_video_predictions,
    load_ground_truth,
    load_results,
    write_results,
)
from ifrvis.evaluation.tracking import tracking_metrics
from ifrvis.evaluation.ytvis_eval import evaluate_ytvis, format_table

__all__ = [
    "ResultsError",
    "encode_video_predictions",
    "evaluate_ytvis",
    "format_table",
    "load_ground_truth",
    "load_results",
    "tracking_metrics",
    "write_results",
]
