"""The paper's path end to end at full width: `ifrvis train experiments/configs/ytvis19_r50.yaml` with only
the frame size, the iterations, the clips per iteration and the device changed (and where the data, the
checkpoint and the outputs lie), from a checkpoint in the published detectron2 layout of Mask2Former's
COCO R50 model, on a folder in the 2019 release's layout with its 40 categories. Two clips per
iteration instead of 16: one full-width iteration of 16 clips takes a 2-core CPU about a minute, and
the batch size changes no code path. 1-2 minutes on 2 cores."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from conftest import ROOT
from published_checkpoints import published_shapes
from real_layout import CATEGORIES, VALID_VIDEOS, write_release

from ifrvis import run_folder
from ifrvis.config import load_config
from ifrvis.engine.checkpoint import load_checkpoint

CONFIG = ROOT / "experiments" / "configs" / "ytvis19_r50.yaml"
YTVIS19_CATEGORIES = 40


def published_r50_values(seed: int = 0) -> dict[str, np.ndarray]:
    """float32 values for every key of Mask2Former's COCO R50 checkpoint: small random weights, FrozenBN
    statistics that keep activations finite (variance 1 +- a little), each tensor distinct."""
    rng = np.random.default_rng(seed)
    values = {}
    for key, shape in published_shapes("resnet50").items():
        if key.endswith("running_var"):
            values[key] = (1 + 0.1 * rng.random(shape)).astype(np.float32)
        elif key.endswith(("norm.weight", "running_mean")) or ".norm." in key:
            values[key] = (0.1 * rng.standard_normal(shape) + key.endswith("weight")).astype(np.float32)
        else:
            values[key] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
    return values


@pytest.fixture
def paper_run(tmp_path):
    """The 2019 release layout with YouTube-VIS 2019's 40 category ids (the split's videos use 3 of them)
    and the COCO R50 checkpoint as detectron2 pickles it (protocol 2, arrays under "model")."""
    data = tmp_path / "data"
    write_release(data, "2019")
    names = {c["id"]: c["name"] for c in CATEGORIES}
    categories = [
        {"supercategory": "object", "id": i, "name": names.get(i, f"class{i}")}
        for i in range(1, YTVIS19_CATEGORIES + 1)
    ]
    for split in ("train.json", "valid.json"):
        raw = json.loads((data / split).read_text())
        (data / split).write_text(json.dumps(raw | {"categories": categories}))
    weights = published_r50_values()
    checkpoint = tmp_path / "model_final_3c8ec9.pkl"
    with checkpoint.open("wb") as handle:
        pickle.dump({"model": weights, "__author__": "Mask2Former"}, handle, protocol=2)
    overrides = [
        f"data.root={data}",
        f"model.weights={checkpoint}",
        "data.train_short_sides=[64]",
        "data.test_short_side=64",
        "solver.max_iters=2",
        "solver.batch_size=2",
        "device=cpu",
        f"logging.output_dir={tmp_path / 'outputs'}",
        f"logging.mlflow_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    return overrides, weights


def module_percentages(report: str) -> dict[str, tuple[int, int]]:
    """The weights report's per-module lines (`  backbone   265/265  100%`) -> {module: (loaded, total)}."""
    found = re.findall(r"^\s+(backbone|pixel_decoder|decoder)\s+(\d+)/(\d+)\s+\d+%$", report, re.MULTILINE)
    return {module: (int(done), int(total)) for module, done, total in found}


def test_train_runs_the_r50_paper_config_at_full_width_from_a_published_checkpoint(paper_run):
    overrides, weights = paper_run
    cfg = load_config(CONFIG, overrides)
    assert (cfg.model.backbone, cfg.model.hidden_dim, cfg.model.num_queries) == ("resnet50", 256, 100)
    assert (cfg.model.enc_layers, cfg.model.dec_layers, cfg.loss.num_points) == (6, 9, 12544)
    assert load_config(CONFIG).solver.batch_size == 16 and cfg.inference.mode == "video"

    done = subprocess.run(
        [sys.executable, "-m", "ifrvis.cli", "train", str(CONFIG), *overrides, "logging.progress=false"],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    out = run_folder.run_dir(cfg)
    report = (out / "weights_report.txt").read_text()
    modules = module_percentages(report)
    for module in ("backbone", "pixel_decoder"):
        loaded, total = modules[module]
        assert loaded == total > 0, report
    assert re.search(r"^missing: 0$", report, re.MULTILINE), report
    assert re.search(r"^mismatched: 0$", report, re.MULTILINE), report

    # The file's values are in the trained model: FrozenBN statistics are buffers, training leaves them.
    state = load_checkpoint(out / "checkpoint.pt")["model"]
    for published, ours in [
        ("backbone.stem.conv1.norm.running_mean", "backbone.bn1.running_mean"),
        ("backbone.res5.2.conv3.norm.running_var", "backbone.layer4.2.bn3.running_var"),
    ]:
        assert torch.equal(state[ours], torch.from_numpy(weights[published])), ours

    with zipfile.ZipFile(out / "results.zip") as archive:
        results = json.loads(archive.read("results.json"))
    assert {entry["video_id"] for entry in results} == {video[0] for video in VALID_VIDEOS}
    for video_id, _, (height, width), length in VALID_VIDEOS:  # whole videos at their own size
        entries = [entry for entry in results if entry["video_id"] == video_id]
        assert len(entries) == cfg.inference.top_k
        assert all(len(entry["segmentations"]) == length for entry in entries)
        sizes = {tuple(s["size"]) for entry in entries for s in entry["segmentations"] if s is not None}
        assert sizes <= {(height, width)}
