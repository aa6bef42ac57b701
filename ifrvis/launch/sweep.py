"""Sweeps: a list of run specs with stable identities, handed to one executor.

Re-running a sweep is idempotent: identities whose MLflow run FINISHED are skipped, interrupted ones
resume from their checkpoint into the same MLflow run, FAILED ones re-run only with `retry_failed`.
Every child MLflow run is created here, in one process, before any job starts, so concurrent jobs
never create two runs for one identity.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ifrvis import tracking
from ifrvis.config import Config, load_config, run_identity
from ifrvis.engine import runs
from ifrvis.engine.train import preflight

# What a spec's MLflow run and checkpoint say about it.
DONE, RESUME, FAILED, PENDING = "done", "resume", "failed", "pending"


@dataclass
class Spec:
    cfg: Config
    state: str = PENDING
    run_id: str = ""
    result: dict = dataclasses.field(default_factory=dict)
    error: str = ""
    wall_time_s: float = 0.0

    @property
    def identity(self) -> str:
        return run_identity(self.cfg)

    @property
    def label(self) -> str:
        return f"{self.cfg.name} seed={self.cfg.seed} λ_e={self.cfg.loss.lambda_e}"


def expand(
    configs: Sequence[str], seeds: Sequence[int], sweep: str, overrides: Sequence[str] = (), grid=None
) -> list[Config]:
    """One config per (config file, grid point, seed); `grid` is a list of override lists."""
    cfgs = []
    for path in configs:
        for point in grid or [[]]:
            for seed in seeds:
                cfgs.append(load_config(path, [*overrides, *point, f"seed={seed}", f"logging.sweep={sweep}"]))
    identities = [run_identity(cfg) for cfg in cfgs]
    if len(set(identities)) != len(identities):
        raise ValueError("the sweep lists the same run (same config and seed) twice")
    return cfgs


def parent_run(cfgs: Sequence[Config], sweep: str) -> str:
    """The sweep's MLflow parent run (tags sweep=<name>, sweep_parent=1): found again on a re-run."""
    first = cfgs[0]
    mlflow = tracking.client(first.logging.mlflow_uri)
    existing = tracking.find_runs(mlflow, first.logging.experiment, sweep=sweep, sweep_parent="1")
    if existing:
        return existing[0].info.run_id
    run = tracking.with_retry(
        mlflow.create_run,
        tracking.experiment_id(mlflow, first.logging.experiment),
        run_name=f"sweep-{sweep}",
        tags={"sweep": sweep, "sweep_parent": "1", "git_commit": runs.git_commit()},
    )
    return run.info.run_id


def classify(cfg: Config) -> Spec:
    """A spec with the state its MLflow run and checkpoint say (final metrics when done)."""
    run = runs.find_run(cfg)
    if run is None:
        return Spec(cfg, PENDING)
    if run.info.status == "FINISHED":
        return Spec(cfg, DONE, run.info.run_id, result=dict(run.data.metrics))
    if run.info.status == "FAILED":
        return Spec(cfg, FAILED, run.info.run_id, error=run.data.tags.get("error", ""))
    return Spec(cfg, RESUME if runs.checkpoint_path(cfg).exists() else PENDING, run.info.run_id)


def check_inputs(cfgs: Sequence[Config]) -> None:
    """Each distinct data folder, class count and checkpoint of the sweep, checked as a run checks
    them (`preflight`), so that a wrong path fails the sweep before any run or job exists."""
    seen = set()
    for cfg in cfgs:
        key = (repr(cfg.data), cfg.model.num_classes, cfg.model.weights, cfg.model.backbone)
        if key not in seen:
            seen.add(key)
            preflight(cfg)


def plan(cfgs: Sequence[Config], sweep: str, retry_failed: bool = False, create: bool = True) -> list[Spec]:
    """Attach each config to the sweep's parent run and classify it; with `create`, make the MLflow
    runs of pending specs now (one process: no duplicate runs under concurrency)."""
    parent = parent_run(cfgs, sweep) if create else ""
    stored = create or tracking.store_exists(cfgs[0].logging.mlflow_uri)  # a dry run creates no store
    specs = []
    for cfg in cfgs:
        cfg = dataclasses.replace(
            cfg, logging=dataclasses.replace(cfg.logging, sweep=sweep, parent_run_id=parent)
        )
        spec = classify(cfg) if stored else Spec(cfg, PENDING)
        if spec.state == FAILED and retry_failed:
            spec.state, spec.error = (RESUME if runs.checkpoint_path(cfg).exists() else PENDING), ""
        if create and spec.state == PENDING and not spec.run_id:
            spec.run_id = runs.create_run(cfg)
        specs.append(spec)
    return specs


def to_launch(specs: Sequence[Spec]) -> list[Spec]:
    return [spec for spec in specs if spec.state in (PENDING, RESUME)]


def summary_table(specs: Sequence[Spec]) -> str:
    """Markdown: per spec its status, MLflow run id, AP and wall time."""
    lines = ["| run | identity | status | MLflow run | AP | wall time |", "|---|---|---|---|---|---|"]
    for spec in specs:
        ap = spec.result.get("AP")
        ap_text = f"{100 * ap:.1f}" if isinstance(ap, float) else "-"
        wall = time.strftime("%H:%M:%S", time.gmtime(spec.wall_time_s)) if spec.wall_time_s else "-"
        status = spec.state + (f": {spec.error[:60]}" if spec.error else "")
        lines.append(f"| {spec.label} | {spec.identity} | {status} | {spec.run_id} | {ap_text} | {wall} |")
    return "\n".join(lines)
