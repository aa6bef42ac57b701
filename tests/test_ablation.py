"""The ablation launchers end to end on tiny grids: runs per (value, seed), then their figure."""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, write_run_config

from ifrvis import runstore
from ifrvis.config import load_config


def ablate(script: str, config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / script),
            "--config",
            str(config),
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def children(cfg, sweep: str) -> list:
    found = runstore.find_runs(runstore.client(cfg.logging.mlflow_uri), cfg.logging.experiment, sweep=sweep)
    return [run for run in found if "sweep_parent" not in run.data.tags]


def test_ablation_sweeps_lambda_e_and_draws_figure4(tmp_path, tiny_data):
    config = write_run_config(tmp_path, tiny_data, max_iters=2)
    result = ablate(
        "ablate_lambda_e.py",
        config,
        tmp_path / "results",
        "--lambdas",
        "0",
        "0.3",
        "--seeds",
        "2",
        "--max-parallel",
        "2",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cfg = load_config(config)
    runs = children(cfg, "ablation_lambda_e")
    assert sorted(r.data.tags["swept.loss.lambda_e"] for r in runs) == ["0.0", "0.0", "0.3", "0.3"]
    assert sorted(r.info.run_name for r in runs) == [
        f"synthetic_tiny loss.lambda_e={value} s{seed}" for value in ("0.0", "0.3") for seed in (0, 1)
    ]
    figure = tmp_path / "results" / "ablation_lambda_e"
    assert sorted(p.name for p in figure.glob("figure4*")) == [
        f"figure4{suffix}" for suffix in (".pdf", ".png", "_comparisons.csv", "_comparisons.md", "_runs.csv")
    ]
    mlflow = runstore.client(cfg.logging.mlflow_uri)
    parent = runstore.find_runs(mlflow, cfg.logging.experiment, sweep="ablation_lambda_e", sweep_parent="1")
    assert parent[0].data.tags["swept_keys"] == "loss.lambda_e"
    assert any("figure4" in a.path for a in _all_artifacts(mlflow, parent[0].info.run_id))


def test_a_second_ablation_over_the_inference_clip_length(tmp_path, tiny_data):
    """Any config key is a grid line: per-clip inference with T = 1 and 3, its own figure, the runs'
    names and tags carrying T, each run with its log and its run and queue times."""
    config = write_run_config(tmp_path, tiny_data, max_iters=2)
    result = ablate(
        "ablate.py",
        config,
        tmp_path / "results",
        *("--key", "inference.clip_frames", "--values", "1", "3", "--seeds", "1", "--max-parallel", "2"),
        *("--set", "inference.mode=clip", "inference.clip_overlap=0"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "sweep 'ablation_clip_frames' over inference.clip_frames: 2 runs" in result.stdout
    assert "| run time | queued |" in result.stdout
    cfg = load_config(config)
    runs = sorted(children(cfg, "ablation_clip_frames"), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in runs] == [
        "synthetic_tiny inference.clip_frames=1 s0",
        "synthetic_tiny inference.clip_frames=3 s0",
    ]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.params["inference.mode"] == "clip"
        assert 0 <= run.data.metrics["queue_time_s"] < run.data.metrics["run_time_s"]
        assert run.data.metrics["train_time_s"] < run.data.metrics["run_time_s"]  # training, then evaluation
        log = runstore.run_folder_of(run.data.tags, cfg.logging.mlflow_uri) / "train.log"
        assert log.read_text().strip(), f"no log in {log}"
    figure = tmp_path / "results" / "ablation_clip_frames"
    assert sorted(p.name for p in figure.glob("metrics_vs_*")) == [
        f"metrics_vs_inference.clip_frames{suffix}"
        for suffix in (".pdf", ".png", "_comparisons.csv", "_comparisons.md", "_runs.csv")
    ]


def _all_artifacts(mlflow, run_id, path=None):
    for entry in mlflow.list_artifacts(run_id, path):
        yield from _all_artifacts(mlflow, run_id, entry.path) if entry.is_dir else [entry]
