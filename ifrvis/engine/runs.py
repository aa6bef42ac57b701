"""Where a training run lives on disk. Its MLflow record (name, tags, statuses) is `ifrvis.runstore`'s."""

from __future__ import annotations

from pathlib import Path

from ifrvis.config import Config, run_identity
from ifrvis.engine.checkpoint import CHECKPOINT_NAME

__all__ = ["checkpoint_path", "run_dir", "run_identity"]


def run_dir(cfg: Config) -> Path:
    """`<output_dir>/<name>-<identity>`: checkpoints, results and logs of one run (the name is there
    for reading only; a run is found by its identity)."""
    return Path(cfg.logging.output_dir).resolve() / f"{cfg.name}-{run_identity(cfg)}"


def checkpoint_path(cfg: Config) -> Path:
    return run_dir(cfg) / CHECKPOINT_NAME
