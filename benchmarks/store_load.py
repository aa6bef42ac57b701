"""Run store under load and faults: many processes log metric points at once; what arrived, how fast.

Each process makes one run and logs `--steps` steps of `--keys` metrics through `runstore.RunLogger`
with a spool in its own folder, `--batch-steps` steps per call (training flushes the steps it buffered
at each checkpoint the same way), then flushes its spool and sets FINISHED. The stores:

- server: the cluster's tracking server (server/start_mlflow_server.sh: PostgreSQL, basic auth, its
  default 4 workers) in a temporary folder on free loopback ports, stopped at the end; `--procs`
  processes (default 32). With `--outage S`, once half the batches are in, the server's process
  group is killed (SIGKILL) and restarted by its start script S seconds later;
- sqlite: a fresh SQLite file, `--sqlite-procs` processes (default 8).

Then every run's history of every key is read back (`get_metric_history`) and compared with what was
sent: a point missing or stored twice is counted, and the script exits 1 if there is any, or a run is
not FINISHED. Throughput = points sent / seconds from the common start of logging (after imports and
run creation) to the last process's end. Per-run counts go to `--csv`.

    .venv/bin/python benchmarks/store_load.py                      # both stores, no fault
    .venv/bin/python benchmarks/store_load.py --store server --outage 60
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ifrvis import run_folder, runstore  # noqa: E402
from ifrvis.cli import ArgumentParser  # noqa: E402
from server.local_server import Server  # noqa: E402

EXPERIMENT = "store-load"
FIELDS = ["store", "procs", "outage_s", "run", "run_id", "status", "sent", "arrived", "missing", "doubled"]
FIELDS += ["spooled_batches", "seconds"]


def check(done: subprocess.CompletedProcess) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{done.args[1]} failed:\n{done.stderr[-3000:]}")


def start_server() -> Server:
    """The tracking server in a temporary folder (its default 4 workers); this process logs in as 'bench'."""
    server = Server.in_temporary_folder(["admin", "bench"])
    check(server.start())
    os.environ["MLFLOW_TRACKING_USERNAME"] = "bench"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = server.users["bench"]
    return server


def stop_server(server: Server) -> None:
    check(server.stop())
    shutil.rmtree(server.folder, ignore_errors=True)


def history(args: argparse.Namespace) -> list[tuple[int, dict[str, float]]]:
    return [
        (step, {f"load/k{k}": step + k / 10 for k in range(args.keys)}) for step in range(1, args.steps + 1)
    ]


def log_one_run(uri: str, index: int, folder: str, args: argparse.Namespace, start, done) -> dict:
    """One process: its run, its points in batches, the spool flushed, FINISHED."""
    mlflow = runstore.client(uri)
    run_id = runstore.with_retry(mlflow.create_run, runstore.experiment_id(mlflow, EXPERIMENT)).info.run_id
    spool = run_folder.metric_spool_path(Path(folder) / f"run{index}", run_id)
    logger = runstore.RunLogger(uri, run_id, spool)
    points, spooled = history(args), 0
    start.wait()
    tic = time.perf_counter()
    for first in range(0, len(points), args.batch_steps):
        logger.log_metric_history(points[first : first + args.batch_steps])
        spooled += spool.exists()
        with done.get_lock():
            done.value += 1
    logger.flush_spool()
    logger.set_status(runstore.FINISHED)
    return {"run": index, "run_id": run_id, "spooled_batches": spooled, "seconds": time.perf_counter() - tic}


def _worker(uri, index, folder, args, start, done, results) -> None:
    results.put(log_one_run(uri, index, folder, args, start, done))


def count(uri: str, row: dict, args: argparse.Namespace) -> dict:
    """What arrived of a run's points: missing and doubled (step, key) pairs."""
    mlflow = runstore.client(uri)
    sent = args.steps * args.keys
    arrived = missing = doubled = 0
    for k in range(args.keys):
        steps = Counter(
            m.step for m in runstore.with_retry(mlflow.get_metric_history, row["run_id"], f"load/k{k}")
        )
        arrived += sum(steps.values())
        missing += sum(1 for step in range(1, args.steps + 1) if step not in steps)
        doubled += sum(n - 1 for n in steps.values())
    status = runstore.with_retry(mlflow.get_run, row["run_id"]).info.status
    return {**row, "status": status, "sent": sent, "arrived": arrived, "missing": missing, "doubled": doubled}


def load(store: str, uri: str, procs: int, args: argparse.Namespace, server: Server | None) -> list[dict]:
    """`procs` processes logging at once into `uri`; with an outage, the server killed half way."""
    ctx = mp.get_context("spawn")
    start, done, results = ctx.Barrier(procs + 1), ctx.Value("i", 0), ctx.Queue()
    folder = tempfile.mkdtemp(prefix="ifrvis-spools-")
    workers = [
        ctx.Process(target=_worker, args=(uri, i, folder, args, start, done, results)) for i in range(procs)
    ]
    for worker in workers:
        worker.start()
    start.wait()  # every process imported, made its run and waits: logging starts now
    tic = time.perf_counter()
    total = procs * -(-args.steps // args.batch_steps)
    outage = args.outage if server else 0
    killed_at = None
    with tqdm(total=total, desc=f"{store} x{procs}", unit="batch") as bar:
        rows = []
        while len(rows) < procs:
            while not results.empty():
                rows.append(results.get())
            if outage and killed_at is None and done.value >= total // 2:
                server.kill()
                killed_at = time.perf_counter()
                bar.write(f"server killed at {killed_at - tic:.1f} s ({done.value} batches in)")
            if killed_at is not None and outage and time.perf_counter() - killed_at >= outage:
                check(server.start())
                bar.write(f"server restarted at {time.perf_counter() - tic:.1f} s")
                outage = 0
            bar.update(done.value - bar.n)
            time.sleep(0.2)
        bar.update(done.value - bar.n)
    seconds = time.perf_counter() - tic
    for worker in workers:
        worker.join()
    shutil.rmtree(folder, ignore_errors=True)
    rows = [count(uri, row, args) for row in sorted(rows, key=lambda r: r["run"])]
    sent = sum(r["sent"] for r in rows)
    print(
        f"{store}: {procs} processes, {sent} points in {seconds:.1f} s = {sent / seconds:.0f} points/s;"
        f" arrived {sum(r['arrived'] for r in rows)}, missing {sum(r['missing'] for r in rows)},"
        f" doubled {sum(r['doubled'] for r in rows)}, runs FINISHED"
        f" {sum(r['status'] == runstore.FINISHED for r in rows)}/{procs},"
        f" runs that spooled {sum(r['spooled_batches'] > 0 for r in rows)}"
    )
    return [{"store": store, "procs": procs, "outage_s": args.outage if server else 0, **row} for row in rows]


def main() -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["server", "sqlite", "both"], default="both")
    parser.add_argument("--procs", type=int, default=32, help="processes logging to the server")
    parser.add_argument("--sqlite-procs", type=int, default=8, help="processes logging to SQLite")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--batch-steps", type=int, default=25, help="steps per log call")
    parser.add_argument("--outage", type=float, default=0, help="kill the server half way for S seconds")
    parser.add_argument("--csv", type=Path, help="per-run counts")
    args = parser.parse_args()

    rows = []
    if args.store in ("server", "both"):
        server = start_server()
        try:
            rows += load("server", server.uri, args.procs, args, server)
        finally:
            stop_server(server)
    if args.store in ("sqlite", "both"):
        folder = Path(tempfile.mkdtemp(prefix="ifrvis-store-load-"))
        try:
            rows += load("sqlite", f"sqlite:///{folder / 'mlflow.db'}", args.sqlite_procs, args, None)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as out:
            writer = csv.DictWriter(out, FIELDS)
            writer.writeheader()
            writer.writerows({**row, "seconds": round(row["seconds"], 2)} for row in rows)
    bad = [r for r in rows if r["missing"] or r["doubled"] or r["status"] != runstore.FINISHED]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
