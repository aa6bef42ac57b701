"""`ifrvis eval` on the synthetic validation split: ground truth as results scores 1.0, perturbed < 1."""

import json
import subprocess
import sys

import numpy as np

from ifrvis.data.masks import decode_segmentation, encode_rle


def ground_truth_as_results(gt: dict, shift: int = 0) -> list[dict]:
    """Every ground-truth instance as a prediction (score 1), its masks shifted right by `shift` px."""
    videos = {v["id"]: v for v in gt["videos"]}
    results = []
    for ann in gt["annotations"]:
        video = videos[ann["video_id"]]
        segmentations = []
        for seg in ann["segmentations"]:
            if seg is None:
                segmentations.append(None)
                continue
            mask = np.roll(decode_segmentation(seg, video["height"], video["width"]), shift, axis=1)
            segmentations.append(encode_rle(mask) if mask.any() else None)
        results.append(
            {
                "video_id": ann["video_id"],
                "category_id": ann["category_id"],
                "score": 1.0,
                "segmentations": segmentations,
            }
        )
    return results


def run_eval(tmp_path, tiny_data, results):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "metrics.json"
    command = [
        sys.executable,
        "-m",
        "ifrvis.cli",
        "eval",
        "--gt",
        str(tiny_data / "valid.json"),
        "--results",
        str(path),
        "--json",
        str(out),
        "--tracking",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "AP50" in done.stdout
    return json.loads(out.read_text())


def test_ground_truth_scores_one_and_perturbed_results_less(tmp_path, tiny_data):
    gt = json.loads((tiny_data / "valid.json").read_text())
    perfect = run_eval(tmp_path, tiny_data, ground_truth_as_results(gt))
    assert perfect["AP"] == 1.0 and perfect["AR10"] == 1.0
    shifted = run_eval(tmp_path, tiny_data, ground_truth_as_results(gt, shift=4))
    assert 0.0 <= shifted["AP"] < 1.0
