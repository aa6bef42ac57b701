"""A λ_e ablation on the Slurm test cluster logging over HTTP to the PostgreSQL-backed tracking server,
through a kill -9 of the server and a restart of PostgreSQL; then, per run, what arrived.

The server (server/start_mlflow_server.sh, basic auth) runs in a temporary folder on free loopback
ports. `experiments/ablate_lambda_e.py --executor slurm` runs the tiny config (short: `--iters`
iterations, metrics sent at every checkpoint) with MLFLOW_TRACKING_URI pointing at the server, from
the environment Slurm passes to its jobs. Once the first run has a checkpoint, the server's process
group is killed (SIGKILL) and started again `--outage` seconds later; once a run has a checkpoint after
that, PostgreSQL restarts (`pg_ctl restart -m fast`). At the end, per run: its status, every training
metric's steps (each logged step once: none missing, none doubled), and what its log says it spooled
and sent later. Exit 1 if any run is not FINISHED or any point is missing or doubled.

Needs the local cluster (`make slurm-up`), PostgreSQL's programs and the synthetic data (`make data`).

    .venv/bin/python benchmarks/store_faults_slurm.py --csv benchmarks/results/store_faults/runs.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from store_load import ROOT, check, start_server, stop_server

from ifrvis import run_folder, runstore
from ifrvis.cli import ArgumentParser
from server.local_server import Server

SWEEP = "store_faults"
UNREACHABLE, ANSWERS = "tracking server unreachable", "tracking server answers again"
FIELDS = [
    "lambda_e",
    "seed",
    "run_id",
    "status",
    "keys",
    "points",
    "missing",
    "doubled",
    "spooled",
    "flushed",
]


def ablation(args: argparse.Namespace, outputs: Path, log: Path) -> subprocess.Popen:
    """The λ_e ablation, submitted to Slurm, in the background."""
    overrides = [
        f"solver.max_iters={args.iters}",
        f"solver.steps=[{args.iters * 4 // 5}]",
        "logging.log_every=10",
        "logging.checkpoint_every=20",
        "logging.visualize=false",
        f"logging.output_dir={outputs}",
        f"data.root={ROOT / 'data' / 'synthetic'}",
    ]
    command = [sys.executable, str(ROOT / "experiments" / "ablate_lambda_e.py"), "--executor", "slurm"]
    command += ["--lambdas", *args.lambdas, "--seeds", str(args.seeds), "--sweep", SWEEP, "--no-figure"]
    command += ["--out", str(outputs.parent / "results"), "--set", *overrides]
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def checkpoints(outputs: Path) -> dict[Path, float]:
    return {path: path.stat().st_mtime for path in outputs.glob(f"*/{run_folder.CHECKPOINT}")}


def wait_for_checkpoint(outputs: Path, after: float, process: subprocess.Popen, what: str) -> None:
    """Until a run writes a checkpoint later than `after` (time.time())."""
    while not any(mtime > after for mtime in checkpoints(outputs).values()):
        if process.poll() is not None:
            raise RuntimeError(f"the ablation ended before {what}")
        time.sleep(0.5)


def faults(server: Server, outputs: Path, process: subprocess.Popen, outage: float) -> None:
    wait_for_checkpoint(outputs, 0, process, "its first checkpoint")
    server.kill()
    print(f"{time.strftime('%X')} server killed (SIGKILL); restarting in {outage:.0f} s", flush=True)
    time.sleep(outage)
    check(server.start())
    restarted = time.time()
    print(f"{time.strftime('%X')} server started again", flush=True)
    wait_for_checkpoint(outputs, restarted, process, "a checkpoint after the restart")
    server.restart_postgres()
    print(f"{time.strftime('%X')} PostgreSQL restarted", flush=True)


def run_row(mlflow, run, uri: str) -> dict:
    """A run's status and, over its training metrics, the points stored, missing and doubled."""
    expected = set(range(10, int(run.data.params["solver.max_iters"]) + 1, 10))
    keys = [k for k in run.data.metrics if k.startswith(("train/", "grad_norm/"))]
    points = missing = doubled = 0
    for key in keys:
        steps = Counter(m.step for m in runstore.with_retry(mlflow.get_metric_history, run.info.run_id, key))
        points += sum(steps.values())
        missing += len(expected - steps.keys())
        doubled += sum(n - 1 for n in steps.values())
    log = (runstore.run_folder_of(run.data.tags, uri) / run_folder.LOG).read_text()
    return {
        "lambda_e": run.data.params["loss.lambda_e"],
        "seed": run.data.tags["seed"],
        "run_id": run.info.run_id,
        "status": run.info.status,
        "keys": len(keys),
        "points": points,
        "missing": missing,
        "doubled": doubled,
        "spooled": log.count(UNREACHABLE),
        "flushed": log.count(ANSWERS),
    }


def main() -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lambdas", nargs="+", default=["0.0", "0.3", "1.0"])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--iters", type=int, default=240, help="training iterations per run")
    parser.add_argument("--outage", type=float, default=60, help="seconds the server stays down")
    parser.add_argument("--csv", type=Path, help="per-run counts")
    args = parser.parse_args()
    if not (ROOT / "data" / "synthetic" / "train.json").exists():
        print("error: no synthetic data: run `make data` first", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="ifrvis-store-faults-"))
    server = start_server()
    os.environ["MLFLOW_TRACKING_URI"] = server.uri
    try:
        tic = time.time()
        process = ablation(args, work / "outputs", work / "ablation.log")
        faults(server, work / "outputs", process, args.outage)
        status = process.wait()
        print(f"ablation exited {status} after {time.time() - tic:.0f} s; its log: {work / 'ablation.log'}")
        mlflow = runstore.client(server.uri)
        runs = runstore.find_runs(mlflow, "ifrvis", **{runstore.member_tag(SWEEP): "1"})
        rows = [run_row(mlflow, run, server.uri) for run in runs if "sweep_parent" not in run.data.tags]
    finally:
        stop_server(server)
    rows.sort(key=lambda r: (float(r["lambda_e"]), int(r["seed"])))
    for row in rows:
        print(" ".join(f"{k}={v}" for k, v in row.items()))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as out:
            writer = csv.DictWriter(out, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    complete = len(rows) == len(args.lambdas) * args.seeds
    clean = all(r["status"] == runstore.FINISHED and not r["missing"] and not r["doubled"] for r in rows)
    return 0 if status == 0 and complete and clean else 1


if __name__ == "__main__":
    sys.exit(main())
