"""Sweeps: base configs x a grid of config keys x seeds, each run known by its identity.

    sweep = expand(["experiments/configs/synthetic_tiny.yaml"], range(5), "ablation_lambda_e",
                   grid={"loss.lambda_e": [0.0, 0.3, 1.0]})
    status = run_sweep(sweep, executor="local", max_parallel=2)

The grid's keys are the sweep's *swept keys*: recorded on its parent run and every child (tags
`swept_keys`, `swept.<key>`), carried in the runs' names, and the columns analysis groups by.

Re-running a sweep is idempotent: identities whose MLflow run FINISHED are skipped (whichever sweep
made them: the run then joins this sweep too), interrupted ones resume from their checkpoint into the
same MLflow run, FAILED ones re-run only with `retry_failed`. Every child run is created here, in one
process, before any job starts, so concurrent jobs never create two runs for one identity. A sweep
whose jobs cannot be submitted removes the runs it just created, so the next attempt starts clean, and
records the reason on its parent: FAILED, unless its earlier runs had all finished (then it stays
FINISHED: a value that could not be added does not undo those).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import platform
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ifrvis import run_folder, runstore
from ifrvis.config import Config, load_config, run_identity
from ifrvis.engine.checkpoint import load_run_checkpoint
from ifrvis.engine.train import preflight, split_batch
from ifrvis.errors import UserError
from ifrvis.launch.executors import slurm_job_state

# What a spec's MLflow run, checkpoint and job say about it (IN_SLURM, RUNNING_HERE: its job of an earlier
# launch is still queued or running, in Slurm or as a process of this machine, so it is not started again).
DONE, RESUME, FAILED, PENDING = "done", "resume", "failed", "pending"
IN_SLURM, RUNNING_HERE = "in slurm", "running here"
STILL_RUNNING = (IN_SLURM, RUNNING_HERE)
SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # it becomes part of MLflow tag keys


@dataclass
class Sweep:
    """A named list of run configs and the config keys its grid varies."""

    name: str
    cfgs: list[Config]
    swept_keys: list[str]


@dataclass
class Spec:
    """One run of a sweep and what the store says about it."""

    cfg: Config
    swept_keys: Sequence[str] = ()
    state: str = PENDING
    run_id: str = ""
    created: bool = False  # its MLflow run was made by this plan
    metrics: dict = dataclasses.field(default_factory=dict)
    error: str = ""

    @property
    def identity(self) -> str:
        return run_identity(self.cfg)

    @property
    def label(self) -> str:
        return runstore.run_name(self.cfg, self.swept_keys)


def expand(
    configs: Sequence[str],
    seeds: Sequence[int],
    name: str,
    overrides: Sequence[str] = (),
    grid: Mapping[str, Sequence] | None = None,
) -> Sweep:
    """One config per (config file, grid point, seed), the grid being every combination of its keys'
    values; the store's URI is resolved here, once, into every config."""
    if not SWEEP_NAME.fullmatch(name):
        raise UserError(f"sweep name {name!r}: use letters, digits, '_', '.' and '-' only")
    grid = dict(grid or {})
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    cfgs = []
    for path in configs:
        for point in points:
            for seed in seeds:
                assignments = [f"{key}={value}" for key, value in point.items()]
                cfg = load_config(path, [*overrides, *assignments, f"seed={seed}", f"logging.sweep={name}"])
                uri = runstore.resolve_uri(cfg.logging.mlflow_uri)
                cfgs.append(
                    dataclasses.replace(cfg, logging=dataclasses.replace(cfg.logging, mlflow_uri=uri))
                )
    identities = [run_identity(cfg) for cfg in cfgs]
    if len(set(identities)) != len(identities):
        raise UserError(
            f"sweep {name!r} lists the same run twice (configs that differ only in name or dataset label, "
            "or a repeated grid value)"
        )
    return Sweep(name, cfgs, list(grid))


def classify(cfg: Config, swept_keys: Sequence[str] = (), ask_jobs: bool = True) -> Spec:
    """A spec with the state its MLflow run and checkpoint say (final metrics when done), and with
    `ask_jobs` its job of an earlier launch: IN_SLURM while its Slurm job is queued or running,
    RUNNING_HERE while its process runs on this machine (a launcher that died leaves both going)."""
    run = runstore.find_run(cfg)
    if run is None:
        return Spec(cfg, swept_keys)
    spec = Spec(cfg, swept_keys, run_id=run.info.run_id, metrics=dict(run.data.metrics))
    if run.info.status == runstore.FINISHED:
        spec.state = DONE
    elif run.info.status == runstore.FAILED:
        spec.state, spec.error = FAILED, run.data.tags.get(runstore.ERROR_TAG, "")
    else:
        spec.state = RESUME if run_folder.checkpoint_path(cfg).exists() else PENDING
        tags = run.data.tags if ask_jobs else {}
        job = tags.get(runstore.SLURM_JOB_TAG)
        alive = slurm_job_state(job) if job else ""
        if alive:
            spec.state, spec.error = IN_SLURM, f"job {job} {alive}"
        elif tags.get("launch.host") == platform.node() and job_process_alive(tags.get("launch.pid", "")):
            spec.state, spec.error = RUNNING_HERE, f"process {tags['launch.pid']}"
    return spec


def job_process_alive(pid: str) -> bool:
    """Whether process `pid` of this machine is alive and a training job (not another program that
    took its number since)."""
    if not pid.isdigit() or int(pid) == os.getpid():  # this launcher's own process trained it (tests)
        return False
    try:
        return b"ifrvis" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no such process (or no /proc)
        return False


def check_inputs(cfgs: Sequence[Config], ranks: int = 1) -> None:
    """Each distinct data folder, class count and checkpoint of the sweep, checked as a run checks
    them (`preflight`), and each run to resume against the `ranks` it would resume on, so that a wrong
    path or shape fails the sweep before any run or job exists."""
    seen = set()
    for cfg in cfgs:
        key = (repr(cfg.data), cfg.model.num_classes, cfg.model.weights, cfg.model.backbone)
        if key not in seen:
            seen.add(key)
            preflight(cfg)
        split_batch(cfg.solver.batch_size, ranks, cfg.solver.batch_per_gpu)  # a batch the ranks cannot share
        check_resume_shape(cfg, ranks)


def check_resume_shape(cfg: Config, ranks: int) -> None:
    """A run with a checkpoint resumes only on as many ranks as saved it (its sampler's position is per
    rank): a UserError naming both shapes, before submission rather than inside the job."""
    path = run_folder.checkpoint_path(cfg)
    if not path.exists():
        return
    saved = len(load_run_checkpoint(path, mmap=True)["sampler"])
    if saved != ranks:
        raise UserError(
            f"{runstore.run_name(cfg)}: its checkpoint {path} was saved by {saved} rank(s) and this"
            f" launch runs it on {ranks} (nodes x tasks per node): resume it on {saved}, or move its"
            " folder away to start it afresh"
        )


def plan(sweep: Sweep, retry_failed: bool = False, create: bool = True) -> list[Spec]:
    """Attach each config to the sweep's parent run and classify it; with `create`, make the MLflow
    runs of pending specs now (one process: no duplicate runs under concurrency) and make runs found by
    identity members of this sweep. Without `create` (a dry run) nothing is written."""
    first = sweep.cfgs[0]
    parent = runstore.parent_run(first, sweep.name, sweep.swept_keys) if create else ""
    stored = create or runstore.store_exists(first.logging.mlflow_uri)
    specs = []
    for cfg in sweep.cfgs:
        cfg = dataclasses.replace(
            cfg, logging=dataclasses.replace(cfg.logging, sweep=sweep.name, parent_run_id=parent)
        )
        spec = classify(cfg, sweep.swept_keys) if stored else Spec(cfg, sweep.swept_keys)
        if spec.state == FAILED and retry_failed:
            spec.state, spec.error = (RESUME if run_folder.checkpoint_path(cfg).exists() else PENDING), ""
        if create and spec.run_id:
            runstore.join_sweep(cfg, spec.run_id)
        elif create:
            spec.run_id, spec.created = runstore.create_run(cfg, sweep.swept_keys), True
        specs.append(spec)
    return specs


def to_launch(specs: Sequence[Spec]) -> list[Spec]:
    return [spec for spec in specs if spec.state in (PENDING, RESUME)]


def run_sweep(
    sweep: Sweep,
    executor: str = "local",
    max_parallel: int = 1,
    retry_failed: bool = False,
    dry_run: bool = False,
    slurm: Mapping | None = None,
    ray: Mapping | None = None,
) -> int:
    """Check the inputs, plan, launch what is missing on `executor` (local | slurm | ray), print the
    summary; 0 when every run finished. `slurm`: {profile, overrides}; `ray`: {address, gpus}."""
    slurm = slurm or {}
    check_inputs(sweep.cfgs, ranks_of(executor, slurm))
    specs = plan(sweep, retry_failed, create=not dry_run)
    counts = {
        state: sum(s.state == state for s in specs)
        for state in (DONE, RESUME, FAILED, PENDING, *STILL_RUNNING)
    }
    keys = f" over {', '.join(sweep.swept_keys)}" if sweep.swept_keys else ""
    print(
        f"sweep '{sweep.name}'{keys}: {len(specs)} runs: " + ", ".join(f"{n} {k}" for k, n in counts.items())
    )
    if dry_run:
        print(summary_table(specs))
        return 0
    parent = runstore.RunLogger(sweep.cfgs[0].logging.mlflow_uri, specs[0].cfg.logging.parent_run_id)
    launch = to_launch(specs)
    if launch:
        parent.delete_tag(runstore.ERROR_TAG)
        parent.delete_tag(runstore.SUBMISSION_ERROR_TAG)
        parent.set_status(runstore.RUNNING)
        try:
            errors = _execute(launch, sweep.name, executor, min(max_parallel, len(launch)), slurm, ray or {})
        except UserError as error:  # nothing was submitted
            _undo_plan(specs, parent, f"submission failed: {error}")
            raise
        except BaseException as error:  # interrupted while jobs run: they end their own runs
            parent.set_tags({runstore.ERROR_TAG: f"sweep stopped: {type(error).__name__}: {error}"[:5000]})
            parent.set_status(runstore.FAILED)
            raise
        for spec, error in zip(launch, errors):
            _settle(spec, error)
    print(summary_table(specs))
    done = all(s.state == DONE for s in specs)
    if not any(s.state in STILL_RUNNING for s in specs):  # else the earlier launch's jobs still run
        parent.set_status(runstore.FINISHED if done else runstore.FAILED)
    for line in closing_lines(specs):
        print(line, file=sys.stderr)
    return 0 if done else 1


def closing_lines(specs: Sequence[Spec]) -> list[str]:
    """What the sweep's next run will do with the runs this one did not finish."""
    stopped = sum(s.error.startswith("stopped:") for s in specs)
    failed = sum(s.state == FAILED for s in specs)
    lines = []
    if stopped:
        lines.append(
            f"{stopped} run(s) stopped before finishing (scancel, preemption): re-running the sweep resumes"
            " them, from their checkpoints where they have one"
        )
    if failed:
        lines.append(f"{failed} run(s) failed; fix and re-run with --retry-failed")
    for state, where, stop in ((IN_SLURM, "Slurm jobs", "scancel"), (RUNNING_HERE, "processes here", "kill")):
        count = sum(s.state == state for s in specs)
        if count:
            lines.append(
                f"{count} run(s) still in {where} of an earlier launch, not started again: re-run the sweep"
                f" once they end ({stop} them to start them afresh instead)"
            )
    return lines


def ranks_of(executor: str, slurm: Mapping) -> int:
    """How many ranks each run of a sweep gets: the Slurm profile's nodes x tasks per node, else 1."""
    from ifrvis.launch import executors

    return (
        executors.slurm_ranks(slurm.get("profile", "local"), slurm.get("overrides", {}))
        if executor == "slurm"
        else 1
    )


def _execute(specs: Sequence[Spec], sweep: str, executor: str, max_parallel: int, slurm, ray) -> list[str]:
    """Submit the specs' jobs on `executor` and wait for them; one error per spec ("" when it ended
    well). Raises a UserError (nothing submitted) when the executor cannot take them."""
    from ifrvis.launch import executors

    cfgs = [spec.cfg for spec in specs]
    _mark_submitted(specs)  # before: a job may start before the submission call returns
    if executor == "slurm":
        jobs = executors.submit_slurm(cfgs, sweep, slurm.get("profile", "local"), slurm.get("overrides", {}))
        for spec, job in zip(specs, jobs):  # a later launch finds them while they are queued or running
            runstore.RunLogger(spec.cfg.logging.mlflow_uri, spec.run_id).set_tags(
                {runstore.SLURM_JOB_TAG: job.job_id}
            )
        return executors.wait_slurm(jobs)
    if executor == "ray":
        executors.start_ray(ray.get("address", ""))
        return executors.run_ray(cfgs, sweep, max_parallel, ray.get("gpus", 0.0))
    return executors.run_local(cfgs, max_parallel, executors.visible_gpus(cfgs))


def _mark_submitted(specs: Sequence[Spec]) -> None:
    """The time each job's queue time is measured from."""
    now = time.time()
    for spec in specs:
        runstore.RunLogger(spec.cfg.logging.mlflow_uri, spec.run_id).set_tags(
            {runstore.SUBMITTED_TAG: f"{now:.3f}"}
        )


def _undo_plan(specs: Sequence[Spec], parent: runstore.RunLogger, reason: str) -> None:
    """After a failed submission: the runs this plan created go, and the parent's status is what its
    remaining runs give: a sweep whose earlier runs all finished stays FINISHED (the reason is its
    `runstore.SUBMISSION_ERROR_TAG`), else it is FAILED with the reason."""
    runstore.discard(specs[0].cfg.logging.mlflow_uri, [s.run_id for s in specs if s.created])
    remaining = [s for s in specs if not s.created]
    parent.set_tags({runstore.SUBMISSION_ERROR_TAG: reason[:5000]})
    if remaining and all(s.state == DONE for s in remaining):
        parent.set_status(runstore.FINISHED)
    else:
        parent.set_tags({runstore.ERROR_TAG: reason[:5000]})
        parent.set_status(runstore.FAILED)


def _settle(spec: Spec, job_error: str) -> None:
    """The spec's state after its job, as the store records it. A job that ended without ending its
    run (killed by the scheduler, out of memory, a crash before training) leaves the run FAILED with
    the job's error, never RUNNING; a run stopped for a requeue (KILLED) stays resumable."""
    settled = classify(spec.cfg, spec.swept_keys, ask_jobs=False)  # its job has ended (or is COMPLETING)
    spec.metrics, spec.state, spec.error = settled.metrics, settled.state, settled.error
    if spec.state in (PENDING, RESUME) and job_error:
        store_run = runstore.find_run(spec.cfg)
        if store_run is not None and store_run.info.status == runstore.KILLED:
            spec.error = f"stopped: {job_error}"  # RESUME: the next run of the sweep continues it
            return
        if store_run is not None:
            runstore.mark_failed(spec.cfg.logging.mlflow_uri, store_run.info.run_id, job_error)
        spec.state, spec.error = FAILED, job_error


def _clock(seconds: float | None) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds is not None else "-"


def summary_table(specs: Sequence[Spec]) -> str:
    """Markdown: per spec its status, MLflow run id, AP, its own run time and its time queued."""
    lines = [
        "| run | identity | status | MLflow run | AP | run time | queued |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in specs:
        ap = spec.metrics.get("AP")
        ap_text = f"{100 * ap:.1f}" if isinstance(ap, float) else "-"
        status = spec.state + (f": {spec.error[:60]}" if spec.error else "")
        times = [_clock(spec.metrics.get(key)) for key in (runstore.RUN_TIME, runstore.QUEUE_TIME)]
        lines.append(
            f"| {spec.label} | {spec.identity} | {status} | {spec.run_id} | {ap_text} | {' | '.join(times)} |"
        )
    return "\n".join(lines)
