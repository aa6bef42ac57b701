"""End of a run: inference on the validation split, results files, AP/AR and tracking metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ifrvis import run_folder, runstore
from ifrvis.config import Config
from ifrvis.data.ytvis import YTVIS
from ifrvis.evaluation import evaluate_ytvis, tracking_metrics, write_results
from ifrvis.inference import run_inference
from ifrvis.metric_names import AP_KEYS, TRACKING_KEYS
from ifrvis.visualize import draw_video_strip, load_predictions


def flat_metrics(ap: dict, track: dict, category_names: dict[int, str]) -> dict[str, float]:
    """The MLflow metric names of docs/architecture.md from the evaluators' outputs."""
    metrics = {key: float(ap[key]) for key in AP_KEYS}
    metrics.update({f"AP_cat/{category_names[cat]}": float(v) for cat, v in ap["per_category_AP"].items()})
    metrics.update({key: float(track[key]) for key in TRACKING_KEYS})
    return metrics


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module, valid_set: YTVIS, cfg: Config, out_dir: Path, logger: runstore.RunLogger | None
) -> dict:
    """Predict every validation video, write results.json (+ the server's zip), and when the split has
    ground truth compute AP/AR and tracking metrics. Logs the files as artifacts."""
    model.eval()
    results = run_inference(model, valid_set, cfg, progress=cfg.logging.progress)
    json_path, zip_path = write_results(results, out_dir)
    metrics: dict = {}
    if valid_set.has_annotations:
        names = {c["id"]: c["name"] for c in valid_set.categories}
        ap = evaluate_ytvis(valid_set.raw, results)
        track = tracking_metrics(valid_set.raw, results)
        metrics = flat_metrics(ap, track, names)
        (out_dir / "tracking_per_video.json").write_text(
            json.dumps(track["per_video"], indent=1, default=str)
        )
    if logger:
        logger.log_artifact(json_path)
        if not valid_set.has_annotations:
            logger.log_artifact(zip_path)
        if cfg.logging.visualize and valid_set.has_annotations:
            logger.log_artifact(_visualize_first_video(valid_set, results, out_dir), run_folder.VIS)
    return metrics


def _visualize_first_video(valid_set: YTVIS, results: list[dict], out_dir: Path) -> Path:
    """Ground truth above predictions for the first validation video: the strip PNG."""
    video = valid_set.videos[0]
    frames = [
        np.asarray(Image.open(valid_set.frame_path(video, t)).convert("RGB"))
        for t in range(len(video["file_names"]))
    ]
    ground_truth = [
        {"label": ann["category_id"], "masks": valid_set.decode_instance(ann)[0]}
        for ann in valid_set.annotations_of(video["id"])
    ]
    names = {c["id"]: c["name"] for c in valid_set.categories}
    out_path = out_dir / run_folder.VIS / f"video_{video['id']}.png"
    predictions = load_predictions(results, video)
    # at least 240 px high: the MLflow UI shows the strip at its panel's width
    draw_video_strip(frames, ground_truth, predictions, out_path, names, gif=False, min_height=240)
    return out_path
