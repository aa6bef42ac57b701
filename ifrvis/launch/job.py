"""What runs inside every job of a sweep, on every executor (local, Slurm, Ray): one `ifrvis.train`
call, resumed from the run's checkpoint when there is one, with

- the run's log: the job's stdout and stderr go to `<run_dir>/train.log` as well as where the
  executor sends them (Slurm's and Ray's own log files), so every run folder has its log;
- the run's times in MLflow: `queue_time_s` (from the sweep's submission to the first job's start)
  and `run_time_s` (each job's own time, from its start to its end, summed over requeued jobs).

    python -m ifrvis.commands.job CONFIG.yaml     # what the local executor starts, one per run
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ifrvis import run_folder, runstore
from ifrvis.config import Config, config_from_dict


def run_job(cfg_dict: dict, stop_signals: tuple[int, ...] | None = None) -> dict:
    """Train one run of a sweep (picklable for every executor): resume from its checkpoint, log to its
    folder, record its times. `stop_signals`: the signals that checkpoint and stop the run (default:
    SIGTERM and SIGUSR2; none in Ray's trial threads)."""
    from ifrvis.engine.preemption import PREEMPTION_SIGNALS
    from ifrvis.engine.train import train

    cfg = config_from_dict(cfg_dict)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # several tasks of one run: rank 0 logs
    log = run_folder.run_dir(cfg) / run_folder.LOG
    with tee_output(log) if main_rank else contextlib.nullcontext():
        started = record_queue_time(cfg) if main_rank else time.time()
        try:
            return train(
                cfg, resume=True, stop_signals=PREEMPTION_SIGNALS if stop_signals is None else stop_signals
            )
        finally:
            if main_rank:
                add_run_time(cfg, time.time() - started)


def say_in_run_log(cfg_dict: dict, line: str) -> None:
    """`line` on stderr (Slurm's log of the task) and, from rank 0, in the run's own train.log, for a
    job that says something after `run_job` has returned."""
    print(line, file=sys.stderr, flush=True)
    if int(os.environ.get("RANK", "0")) == 0:
        with open(run_folder.run_dir(config_from_dict(cfg_dict)) / run_folder.LOG, "a") as log:
            print(line, file=log)


def record_queue_time(cfg: Config) -> float:
    """The job's start; `queue_time_s` = that start - the run's `submitted_at`, on its first job only."""
    run = runstore.find_run(cfg)
    submitted = (
        float(run.data.tags[runstore.SUBMITTED_TAG])
        if run and runstore.SUBMITTED_TAG in run.data.tags
        else None
    )
    started = job_start(submitted)
    if submitted is not None and runstore.QUEUE_TIME not in run.data.metrics:
        queued = max(0.0, started - submitted)
        spool = run_folder.metric_spool_path(
            run_folder.run_dir(cfg), run.info.run_id
        )  # sent by the run's start
        runstore.RunLogger(cfg.logging.mlflow_uri, run.info.run_id, spool).log_metrics(
            {runstore.QUEUE_TIME: queued}
        )
    return started


def job_start(submitted: float | None) -> float:
    """When this job started: its process's start when that came after the submission (a fresh process:
    starting Python and importing count as the job's time), else now (a worker started beforehand, as
    Ray's are)."""
    now = time.time()
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
    except OSError:  # not Linux
        return now
    process_start = now - uptime + ticks / os.sysconf("SC_CLK_TCK")
    # 0.1 s: the two clocks' resolution (1/100 s each)
    return process_start if submitted is not None and process_start >= submitted - 0.1 else now


def add_run_time(cfg: Config, seconds: float) -> None:
    """Add this job's time to the run's `run_time_s` (a requeued run is several jobs): its value after
    the run's k-th job is logged at step k, so its history tells the jobs apart and its value is the sum."""
    run = runstore.find_run(cfg)
    if run is None:  # the run was refused before it existed (preflight)
        return
    jobs = len(runstore.client(cfg.logging.mlflow_uri).get_metric_history(run.info.run_id, runstore.RUN_TIME))
    total = run.data.metrics.get(runstore.RUN_TIME, 0.0) + seconds
    logger = runstore.RunLogger(cfg.logging.mlflow_uri, run.info.run_id)
    logger.log_metrics({runstore.RUN_TIME: total}, step=jobs + 1)


@contextlib.contextmanager
def tee_output(path: Path) -> Iterator[None]:
    """Copy everything written to file descriptors 1 and 2 (Python, C libraries, child processes) into
    `path` (appended: a resumed run continues its log) while it still reaches the original streams. When
    stdout already is that file (the local executor's redirection), nothing is doubled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if _same_file(sys.stdout.fileno(), path):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    lock = threading.Lock()
    with open(path, "ab") as log:
        copies = [_Copy(fd, log, lock) for fd in (1, 2)]
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for copy in copies:
                copy.stop()


class _Copy:
    """Redirects `fd` into a pipe whose reader writes each chunk to `log` and to the original `fd`."""

    def __init__(self, fd: int, log, lock: threading.Lock):
        self.fd, self.original = fd, os.dup(fd)
        self.read_end, write_end = os.pipe()
        self.thread = threading.Thread(target=self._run, args=(log, lock), daemon=True)
        self.thread.start()
        os.dup2(write_end, fd)
        os.close(write_end)

    def _run(self, log, lock: threading.Lock) -> None:
        while chunk := os.read(self.read_end, 65536):
            with lock:
                log.write(chunk)
                log.flush()
            os.write(self.original, chunk)

    def stop(self) -> None:
        os.dup2(self.original, self.fd)  # closes the pipe's last write end here: the reader sees EOF
        self.thread.join(timeout=10)  # child processes still holding the pipe must not block the job
        os.close(self.read_end)
        os.close(self.original)


def _same_file(fd: int, path: Path) -> bool:
    if not path.exists():
        return False
    stat, target = os.fstat(fd), path.stat()
    return (stat.st_dev, stat.st_ino) == (target.st_dev, target.st_ino)
