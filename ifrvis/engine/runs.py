"""Where a training run lives on disk. Its MLflow record (name, tags, statuses) is `ifrvis.runstore`'s."""

from __future__ import annotations

from pathlib import Path

from ifrvis.config import Config, run_identity
from ifrvis.engine.checkpoint import CHECKPOINT_NAME


def run_dir(cfg: Config) -> Path:
    """`<output_dir>/<name>-<identity>`: checkpoints, results and logs of one run. The name is there for
    reading only: a run is found by its identity, so a config of another name asking for the same
    computation (a renamed config, a run shared by two sweeps) uses the folder that already exists."""
    output_dir = Path(cfg.logging.output_dir).resolve()
    identity = run_identity(cfg)
    existing = sorted(output_dir.glob(f"*-{identity}"))
    return existing[0] if existing else output_dir / f"{cfg.name}-{identity}"


def checkpoint_path(cfg: Config) -> Path:
    return run_dir(cfg) / CHECKPOINT_NAME
