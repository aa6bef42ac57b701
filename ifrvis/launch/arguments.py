"""The command-line flags every sweep launcher (experiments/*.py) shares, and the call they end in."""

from __future__ import annotations

import argparse
import os

from ifrvis import runstore
from ifrvis.cli import non_negative_int, positive_int
from ifrvis.errors import UserError
from ifrvis.launch.sweep import Sweep, run_sweep

# Profile keys (slurm/profiles/*.yaml) that can be overridden by a flag of the same name.
SLURM_FLAGS = {
    "partition": str,
    "account": str,
    "time_min": int,
    "nodes": int,
    "gpus_per_node": int,  # and as many tasks per node: one rank per GPU
    "tasks_per_node": int,  # ranks per node without GPUs (gloo on CPUs)
    "cpus_per_task": int,
    "mem_gb": float,
    "array_parallelism": int,
}


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seeds", type=positive_int, default=5, help="independent seeds per configuration (0..N-1)"
    )
    parser.add_argument(
        "--first-seed",
        type=non_negative_int,
        default=0,
        help="seeds FIRST..FIRST+N-1: a later part of an experiment whose earlier seeds ran elsewhere",
    )
    parser.add_argument("--executor", choices=("local", "slurm", "ray"), default="local")
    parser.add_argument("--sweep", help="sweep name (MLflow tag and parent run)")
    parser.add_argument("--dry-run", action="store_true", help="print the run specs and their status only")
    parser.add_argument(
        "--max-parallel",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="local: runs at once (default: one per CPU core); ray: concurrent trials",
    )
    parser.add_argument("--retry-failed", action="store_true", help="also re-run specs whose run FAILED")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",  # a repeated --set adds to the overrides (make's CROSSING beside a budget)
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides applied to every run (repeatable)",
    )
    slurm = parser.add_argument_group("slurm (submitit): a profile, then these overrides of its keys")
    slurm.add_argument(
        "--slurm-profile",
        help="slurm/profiles/<name>.yaml or a path (default: local, the test cluster, for synthetic data;"
        " paper, the paper's 8-GPU nodes, for real data)",
    )
    for flag, kind in SLURM_FLAGS.items():
        names = [f"--{flag.replace('_', '-')}", *(["--mem"] if flag == "mem_gb" else [])]
        slurm.add_argument(*names, dest=f"slurm_{flag}", type=kind)
    ray = parser.add_argument_group("ray")
    ray.add_argument("--ray-address", default="", help="an existing Ray cluster (default: a local Ray)")
    ray.add_argument(
        "--gpus-per-run",
        type=gpu_share,
        default=0.0,
        help="GPUs a trial holds, 0 to 1 (a trial trains on one device; DDP over GPUs: --executor slurm)",
    )


def gpu_share(text: str) -> float:
    """A Ray trial's GPUs: 0 (CPUs), a share of one GPU, or one; a trial's process uses one device."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(
            f"{text}: a trial trains on one device, so 0 to 1 (several GPUs a run: --executor slurm)"
        )
    return value


def seed_range(args: argparse.Namespace) -> range:
    """The seeds of `--first-seed` and `--seeds`."""
    return range(args.first_seed, args.first_seed + args.seeds)


def slurm_overrides(args: argparse.Namespace) -> dict:
    """The Slurm profile keys given on the command line."""
    values = {key: getattr(args, f"slurm_{key}") for key in SLURM_FLAGS}
    overrides = {key: value for key, value in values.items() if value is not None}
    if overrides.get("gpus_per_node") and "tasks_per_node" not in overrides:
        overrides["tasks_per_node"] = overrides["gpus_per_node"]  # one rank per GPU
    return overrides


def check_executor_flags(args: argparse.Namespace) -> None:
    """A UserError for flags of another executor than the one asked for (`--executor local
    --partition gpu` would run on this machine, the partition silently ignored)."""
    slurm = [f"--{key.replace('_', '-')}" for key in SLURM_FLAGS if getattr(args, f"slurm_{key}") is not None]
    ray = [
        flag
        for flag, value in (("--ray-address", args.ray_address), ("--gpus-per-run", args.gpus_per_run))
        if value
    ]
    given = {"slurm": slurm + (["--slurm-profile"] if args.slurm_profile else []), "ray": ray}
    for executor, flags in given.items():
        if flags and args.executor != executor:
            raise UserError(
                f"{', '.join(flags)}: flags of --executor {executor}, not of --executor {args.executor}"
            )


def default_slurm_profile(cfgs) -> str:
    """`local` (slurm/start_cluster.sh's CPU node) when every run trains on synthetic data, else `paper`
    (8 GPUs a node): real data never goes to a 2-GB CPU task for want of a flag."""
    return "local" if all(cfg.dataset.startswith("synthetic") for cfg in cfgs) else "paper"


def run_from_arguments(sweep: Sweep, args: argparse.Namespace) -> int:
    """`run_sweep` with the flags of `add_sweep_arguments`, once the sweep's store answers (a tracking
    server that is down or refuses the login stops the sweep in one line before anything is made)."""
    check_executor_flags(args)
    for uri in sorted({cfg.logging.mlflow_uri for cfg in sweep.cfgs}):
        runstore.check_store(uri)
    return run_sweep(
        sweep,
        executor=args.executor,
        max_parallel=args.max_parallel,
        retry_failed=args.retry_failed,
        dry_run=args.dry_run,
        slurm={
            "profile": args.slurm_profile or default_slurm_profile(sweep.cfgs),
            "overrides": slurm_overrides(args),
        },
        ray={"address": args.ray_address, "gpus": args.gpus_per_run},
    )
