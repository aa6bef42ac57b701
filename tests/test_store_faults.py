"""Training outlives its run store: metric batches the store does not take wait in the run's folder
(ifrvis/metric_spool.py) and arrive once, each step exactly once, when it answers again.

The spool on its own (no PostgreSQL needed), then a tiny training run logging over HTTP to the
PostgreSQL-backed tracking server (tracking_server.py) while that server is killed with SIGKILL and
restarted, and its PostgreSQL restarted. Short outages keep this fast; benchmarks/store_load.py
measures a 60-s one under load.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_run_config
from tracking_server import free_port, needs_postgres

from ifrvis import metric_spool, runstore
from ifrvis.config import load_config
from ifrvis.run_folder import metric_spool_path, run_dir

pytest_plugins = ["tracking_server"]  # the `server` fixture, shared with test_mlflow_server.py

UNREACHABLE = "tracking server unreachable:"
ANSWERS = "tracking server answers again:"


def answers_health(server) -> bool:
    try:
        return server.get("/health") == 200
    except OSError:
        return False


def server_log(server) -> str:
    """The end of the mlflow server's log, for a failure's message."""
    path = server.folder / "logs" / "mlflow.log"
    return "\nmlflow.log:\n" + path.read_text()[-3000:] if path.exists() else ""


def steps(mlflow, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in mlflow.get_metric_history(run_id, key))


def test_a_batch_the_store_refuses_waits_in_the_spool_and_arrives_once(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(runstore, "SPOOL_ATTEMPTS", 1)  # refused at once, not after the brief retry
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = runstore.client(uri)
    run_id = mlflow.create_run(runstore.experiment_id(mlflow, "spool")).info.run_id
    spool = metric_spool_path(tmp_path / "run", run_id)

    down = runstore.RunLogger(f"http://127.0.0.1:{free_port()}", run_id, spool)  # nothing listens
    down.log_metric_history([(1, {"loss": 1.0}), (2, {"loss": 0.5})])
    down.log_metrics({"loss": 0.25}, step=3)
    assert [(m.step, m.value) for m in metric_spool.read(spool)] == [(1, 1.0), (2, 0.5), (3, 0.25)]

    # A batch that arrived though its answer was lost is sent again: identical points are stored once.
    mlflow.log_batch(run_id, metrics=metric_spool.read(spool)[:2])
    up = runstore.RunLogger(uri, run_id, spool)
    up.log_metrics({"loss": 0.125}, step=4)
    assert steps(mlflow, run_id, "loss") == [1, 2, 3, 4] and not spool.exists()
    up.flush_spool()  # nothing left: nothing sent, nothing said

    log = capfd.readouterr().err
    assert log.count(UNREACHABLE) == 1 and f"2 metric points kept in {spool}, sent when it answers" in log
    assert log.count(ANSWERS) == 1 and f"3 spooled metric points sent from {spool}" in log


def wait_for(condition, what: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"training ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"no {what} after {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


@contextlib.contextmanager
def paused(process: subprocess.Popen) -> Iterator[None]:
    """The run stopped (SIGSTOP) while a restart takes its seconds: a tiny run spans it on any machine."""
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


@needs_postgres
def test_training_outlives_a_killed_server_and_a_postgres_restart(server, tmp_path, tiny_data, monkeypatch):
    """Killed at the run's first checkpoint, the server is restarted by its start script (~13 s) while
    the run is paused; then PostgreSQL restarts under it. The run finishes with every step once."""
    max_iters = 16  # checkpoints every 2 iterations: enough after the faults for a fast machine too
    config = write_run_config(tmp_path, tiny_data, max_iters=max_iters)
    overrides = [f"logging.mlflow_uri={server.uri}", "logging.visualize=false", "logging.experiment=faults"]
    cfg = load_config(config, overrides)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "node")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.users["node"])
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ifrvis.commands.train", str(config), *overrides],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    try:
        wait_for((run_dir(cfg) / "checkpoint.pt").exists, "a checkpoint", process, log)
        server.kill()
        wait_for(lambda: UNREACHABLE in log.read_text(), "spooling", process, log)
        with paused(process):
            restarted = server.start()
        assert restarted.returncode == 0, restarted.stderr
        wait_for(lambda: ANSWERS in log.read_text(), "a flush", process, log)
        with paused(process):
            server.restart_postgres()
        assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()

    text = log.read_text()
    assert text.count(UNREACHABLE) == text.count(ANSWERS) >= 1, text  # every spooling ended in a flush
    assert not list(run_dir(cfg).glob("metric_spool-*"))
    mlflow = runstore.client(server.uri)
    (run,) = runstore.find_runs(mlflow, "faults")
    assert run.info.status == runstore.FINISHED
    # Every training metric, each step 1..max_iters once: counted in PostgreSQL in one query.
    rows = server.sql(
        "mlflow",
        "SELECT key, count(*), count(DISTINCT step), min(step), max(step) FROM metrics"
        f" WHERE run_uuid = '{run.info.run_id}' AND (key LIKE 'train/%' OR key LIKE 'grad_norm/%')"
        " GROUP BY key",
    ).splitlines()
    counts = {row.split("|")[0]: row.split("|")[1:] for row in rows}
    assert "train/loss" in counts and "grad_norm/backbone" in counts
    assert all(count == [str(max_iters), str(max_iters), "1", str(max_iters)] for count in counts.values()), (
        counts
    )
    assert steps(mlflow, run.info.run_id, "train/loss") == list(range(1, max_iters + 1))
    # Over REST too, a point sent again (its original timestamp) is stored once.
    history = mlflow.get_metric_history(run.info.run_id, "train/loss")
    mlflow.log_batch(run.info.run_id, metrics=history)
    assert steps(mlflow, run.info.run_id, "train/loss") == list(range(1, max_iters + 1))


@needs_postgres
def test_a_database_outage_at_the_final_upload_is_waited_out_and_the_run_finishes(
    server, tmp_path, monkeypatch, capfd
):
    """With PostgreSQL down, MLflow's basic auth answers 401 as if the password were wrong. For a run whose
    credentials the server had accepted, that is an outage: a metric batch waits in the spool, the final
    upload and status wait for the database (one line naming it on each side), and the run FINISHES with
    every point once. Credentials never accepted still fail at once: a 401 then means a wrong password."""
    monkeypatch.setattr(runstore, "OUTAGE_POLL_S", 0.5)
    monkeypatch.setattr(runstore, "SPOOL_ATTEMPTS", 1)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "node")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.users["node"])
    mlflow = runstore.client(server.uri)
    run_id = mlflow.create_run(runstore.experiment_id(mlflow, "outage")).info.run_id
    spool = metric_spool_path(tmp_path / "run", run_id)
    logger = runstore.RunLogger(server.uri, run_id, spool)
    logger.log_metrics({"loss": 1.0}, step=1)
    results = tmp_path / "results.json"
    results.write_text('{"AP": 0.5}')

    server.stop_postgres()
    # The start script restarts what is down 1 s after the upload said it waits, so that the line is said
    # while the database is down however slow the machine. Whether /health answered then is recorded: the
    # line must name the database, not the server (a 503 quoting "Connection refused" once read as both).
    repair = threading.Timer(1.0, server.start)
    server_answered = []
    say = runstore._say

    def say_then_repair(message: str) -> None:
        say(message)
        if "waiting up to" in message:
            server_answered.append(answers_health(server))
            repair.start()

    monkeypatch.setattr(runstore, "_say", say_then_repair)
    try:
        logger.log_metrics({"loss": 0.5}, step=2)  # training goes on
        assert [m.step for m in metric_spool.read(spool)] == [2]
        logger.log_artifact(results)  # waits for the database
        assert repair.ident is not None, "the upload went through with the database stopped"
        logger.flush_spool()
        logger.set_status(runstore.FINISHED)
    finally:
        repair.cancel()
        if repair.ident is not None:  # started
            repair.join()
        if server.start().returncode != 0:  # whatever happened above, the session's server is whole
            pytest.fail("the tracking server could not be repaired")

    run = mlflow.get_run(run_id)
    assert run.info.status == runstore.FINISHED
    assert steps(mlflow, run_id, "loss") == [1, 2]
    assert [a.path for a in mlflow.list_artifacts(run_id)] == ["results.json"]
    log = capfd.readouterr().err
    assert log.count("waiting up to 600 s") == 1, log
    assert server_answered == [True], log + server_log(server)
    wait = (
        rf"the tracking server's database is unavailable \({re.escape(server.uri)} answers HTTP (401|503)\)"
    )
    assert re.search(rf"{wait}: waiting up to 600 s", log), log + server_log(server)
    assert log.count(f"tracking server {server.uri} takes the run's calls again") == 1, log

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    wrong = runstore.RunLogger(server.uri, run_id)
    started = time.monotonic()
    with pytest.raises(Exception, match="401"):
        wrong.set_tags({"note": "x"})
    assert time.monotonic() - started < 10
