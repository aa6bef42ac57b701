"""What identifies a training run on disk and in MLflow: its folder, tags, and MLflow run."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

from ifrvis import tracking
from ifrvis.config import Config, config_hash, flatten, run_identity, to_dict
from ifrvis.engine.checkpoint import CHECKPOINT_NAME

TERMINAL_OK = "FINISHED"


def run_dir(cfg: Config) -> Path:
    """`<output_dir>/<name>-<identity>`: checkpoints, results and logs of one run."""
    return Path(cfg.logging.output_dir).resolve() / f"{cfg.name}-{run_identity(cfg)}"


def checkpoint_path(cfg: Config) -> Path:
    return run_dir(cfg) / CHECKPOINT_NAME


@cache
def git_commit() -> str:
    """The project's commit, with '-dirty' when the work tree has changes; 'unknown' outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=tracking.PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=tracking.PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def run_tags(cfg: Config) -> dict[str, str]:
    tags = {
        "sweep": cfg.logging.sweep,
        "method": cfg.model.decoder,
        "backbone": cfg.model.backbone,
        "dataset": cfg.dataset,
        "seed": str(cfg.seed),
        "lambda_e": str(cfg.loss.lambda_e),
        "config_hash": config_hash(cfg),
        "run_identity": run_identity(cfg),
        "git_commit": git_commit(),
        "run_dir": str(run_dir(cfg)),
    }
    if cfg.logging.parent_run_id:
        tags["mlflow.parentRunId"] = cfg.logging.parent_run_id
    return tags


def find_run(cfg: Config) -> object | None:
    """The newest MLflow run with this config's identity, or None."""
    runs = tracking.find_runs(
        tracking.client(cfg.logging.mlflow_uri), cfg.logging.experiment, run_identity=run_identity(cfg)
    )
    return runs[0] if runs else None


def create_run(cfg: Config) -> str:
    """A new MLflow run for `cfg` with its tags and the flattened config as params; returns its id."""
    mlflow = tracking.client(cfg.logging.mlflow_uri)
    run = tracking.with_retry(
        mlflow.create_run,
        tracking.experiment_id(mlflow, cfg.logging.experiment),
        run_name=f"{cfg.name}-s{cfg.seed}",
        tags=run_tags(cfg),
    )
    logger = tracking.RunLogger(cfg.logging.mlflow_uri, run.info.run_id)
    logger.log_params(flatten(to_dict(cfg)))
    return run.info.run_id
