"""The λ_e ablation launcher end to end on a tiny grid: runs per (λ_e, seed), then Figure 4."""

import subprocess
import sys

from conftest import ROOT, write_run_config

from ifrvis import tracking
from ifrvis.config import load_config


def test_ablation_sweeps_lambda_e_and_draws_figure4(tmp_path, tiny_data):
    config = write_run_config(tmp_path, tiny_data, max_iters=2)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "ablate_lambda_e.py"),
            "--config",
            str(config),
            "--lambdas",
            "0",
            "0.3",
            "--seeds",
            "2",
            "--max-parallel",
            "2",
            "--out",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cfg = load_config(config)
    mlflow = tracking.client(cfg.logging.mlflow_uri)
    children = tracking.find_runs(mlflow, cfg.logging.experiment, sweep="ablation_lambda_e")
    lambdas = sorted(r.data.tags["lambda_e"] for r in children if "sweep_parent" not in r.data.tags)
    assert lambdas == ["0.0", "0.0", "0.3", "0.3"]
    figure = tmp_path / "results" / "ablation_lambda_e"
    assert sorted(p.suffix for p in figure.glob("figure4*")) == [".pdf", ".png"]
    parent = tracking.find_runs(mlflow, cfg.logging.experiment, sweep="ablation_lambda_e", sweep_parent="1")
    assert any("figure4" in a.path for a in _all_artifacts(mlflow, parent[0].info.run_id))


def _all_artifacts(mlflow, run_id, path=None):
    for entry in mlflow.list_artifacts(run_id, path):
        yield from _all_artifacts(mlflow, run_id, entry.path) if entry.is_dir else [entry]
