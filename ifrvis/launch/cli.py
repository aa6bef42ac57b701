"""The flags every sweep launcher shares, and the one function that runs a sweep."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ifrvis import tracking
from ifrvis.config import Config
from ifrvis.launch import executors
from ifrvis.launch.sweep import DONE, FAILED, Spec, check_inputs, plan, summary_table, to_launch

# Profile keys (slurm/profiles/*.yaml) that can be overridden by a flag of the same name.
SLURM_FLAGS = {
    "partition": str,
    "account": str,
    "time_min": int,
    "gpus_per_node": int,
    "cpus_per_task": int,
    "mem_gb": float,
    "array_parallelism": int,
}


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=5, help="independent seeds per configuration (0..N-1)")
    parser.add_argument("--executor", choices=("local", "slurm", "ray"), default="local")
    parser.add_argument("--sweep", help="sweep name (MLflow tag and parent run)")
    parser.add_argument("--dry-run", action="store_true", help="print the run specs and their status only")
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=os.cpu_count() or 1,
        help="local: runs at once (default: one per CPU core); ray: concurrent trials",
    )
    parser.add_argument("--retry-failed", action="store_true", help="also re-run specs whose run FAILED")
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides applied to every run",
    )
    slurm = parser.add_argument_group("slurm (submitit): a profile, then these overrides of its keys")
    slurm.add_argument("--slurm-profile", default="local", help="slurm/profiles/<name>.yaml or a path")
    for flag, kind in SLURM_FLAGS.items():
        slurm.add_argument(f"--{flag.replace('_', '-')}", dest=f"slurm_{flag}", type=kind)
    ray = parser.add_argument_group("ray")
    ray.add_argument("--ray-address", default="", help="an existing Ray cluster (default: a local Ray)")
    ray.add_argument("--gpus-per-run", type=float, default=0.0)


def slurm_overrides(args: argparse.Namespace) -> dict:
    """The Slurm profile keys given on the command line."""
    values = {key: getattr(args, f"slurm_{key}") for key in SLURM_FLAGS}
    return {key: value for key, value in values.items() if value is not None}


def _set_parent_status(specs: Sequence[Spec], status: str) -> None:
    """The sweep's parent run runs while its children do and ends FINISHED when all finished."""
    logging = specs[0].cfg.logging
    tracking.RunLogger(logging.mlflow_uri, logging.parent_run_id).set_status(status)


def run_sweep(cfgs: Sequence[Config], args: argparse.Namespace) -> int:
    """Check the inputs, plan, launch what is missing on the chosen executor, print the summary; 1 if
    a run failed."""
    check_inputs(cfgs)
    specs = plan(cfgs, args.sweep, retry_failed=args.retry_failed, create=not args.dry_run)
    launch = to_launch(specs)
    counts = {
        state: sum(s.state == state for s in specs) for state in ("done", "resume", "failed", "pending")
    }
    print(f"sweep '{args.sweep}': {len(specs)} runs: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    if args.dry_run:
        print(summary_table(specs))
        return 0
    if launch:
        _set_parent_status(specs, "RUNNING")
        max_parallel = min(args.max_parallel, len(launch))
        if args.executor == "local":
            executors.run_local(launch, max_parallel)
        elif args.executor == "slurm":
            executors.run_slurm(launch, args.sweep, args.slurm_profile, slurm_overrides(args))
        else:
            executors.run_ray(launch, args.sweep, max_parallel, args.ray_address, args.gpus_per_run)
    print(summary_table(specs))
    failed = [s for s in specs if s.state == FAILED]
    _set_parent_status(specs, "FINISHED" if all(s.state == DONE for s in specs) else "FAILED")
    if failed:
        print(f"{len(failed)} run(s) failed; fix and re-run with --retry-failed", file=sys.stderr)
    return 1 if failed or any(s.state != DONE for s in specs) else 0
