"""The cluster's tracking server (server/start_mlflow_server.sh, docs/cluster_store.md), for real: its own
PostgreSQL cluster, `mlflow server` with proxied artifacts and basic auth on loopback, started once for
the session on free ports in a temporary data folder (tracking_server.py), and stopped (with PostgreSQL)
at its end.

Skipped only where PostgreSQL's programs are absent. The refusal to serve a non-loopback host without
auth needs no PostgreSQL and always runs.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from tracking_server import START, free_port, needs_postgres, run_script

from ifrvis import runstore

pytest_plugins = ["tracking_server"]  # the `server` fixture


@needs_postgres
def test_unauthenticated_clients_are_refused(server):
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert server.get("/health") == 200  # health checks need no login
    assert server.get(search) == 401
    assert server.get(search, ("node", "not-the-password")) == 401
    assert server.get(search, ("nobody", server.users["node"])) == 401
    assert server.get(search, ("node", server.users["node"])) == 200


@needs_postgres
def test_authenticated_run_round_trip(server, tmp_path, monkeypatch):
    """A user that is not the admin makes an experiment and a run, logs params, metric steps and an
    artifact, and reads them back; the run is a row of PostgreSQL, the artifact a file of the server's
    artifacts destination, reached through the proxy."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "node")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.users["node"])
    mlflow = runstore.client(server.uri)
    experiment = runstore.experiment_id(mlflow, "cluster-store")
    run = mlflow.create_run(experiment, run_name="round-trip")
    run_id = run.info.run_id
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")

    logger = runstore.RunLogger(server.uri, run_id)
    logger.log_params({"model.decoder": "ifr", "seed": 3})
    for step in range(4):
        logger.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
    report = tmp_path / "report.txt"
    report.write_text("frames: 6\n")
    logger.log_artifact(report, "reports")
    logger.set_status(runstore.FINISHED)

    back = mlflow.get_run(run_id)
    assert back.data.params == {"model.decoder": "ifr", "seed": "3"}
    assert back.info.status == runstore.FINISHED
    history = mlflow.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(4)]
    assert [f.path for f in mlflow.list_artifacts(run_id, "reports")] == ["reports/report.txt"]
    downloaded = mlflow.download_artifacts(run_id, "reports/report.txt", str(tmp_path / "down"))
    assert Path(downloaded).read_text() == "frames: 6\n"

    stored = list((server.folder / "artifacts").rglob("report.txt"))
    assert len(stored) == 1 and run_id in stored[0].parts
    assert server.sql("mlflow", f"SELECT status FROM runs WHERE run_uuid = '{run_id}'") == "FINISHED"
    assert server.sql("mlflow", f"SELECT count(*) FROM metrics WHERE run_uuid = '{run_id}'") == "8"
    assert server.sql("mlflow_auth", "SELECT username FROM users WHERE is_admin") == "admin"


@needs_postgres
def test_a_second_start_only_reports(server):
    again = server.start()
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"MLflow server up: {server.uri}")
    assert "0 created, 0 updated, 0 removed" in again.stdout
    assert "starting" not in again.stderr

    elsewhere = run_script(START, server.env, "--port", str(free_port()))
    assert elsewhere.returncode == 1
    assert f"already runs on 127.0.0.1:{server.port}" in elsewhere.stderr


def test_non_loopback_host_without_auth_is_refused(tmp_path):
    folder = tmp_path / "store"
    env = {"IFRVIS_MLFLOW_DIR": str(folder), "IFRVIS_MLFLOW_USERS": str(tmp_path / "no-such-users-file")}
    refused = run_script(START, env, "--host", "0.0.0.0", "--port", str(free_port()), timeout=30)
    assert refused.returncode == 2
    assert refused.stdout == ""
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and "without basic auth" in lines[0] and "--insecure" in lines[0], refused.stderr
    assert not folder.exists()  # refused before anything was made


def group_processes(pgid: int) -> list[str]:
    """The live processes of process group `pgid` (zombies apart)."""
    listed = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    return [pid for pid in listed if "\nState:\tZ" not in _status(pid)]


def _status(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return "\nState:\tZ"  # gone meanwhile


@needs_postgres
def test_a_kill_of_the_leader_alone_neither_blocks_a_restart_nor_fools_the_stop(server):
    """`kill -9` of the pid in mlflow.pid leaves uvicorn and its workers serving on the port. The start
    replaces them (the port is free again), and the stop ends them and says so only once the port is
    closed; the session's server is up again at the end."""
    leader = server.kill_leader()
    assert group_processes(leader) and server.get("/health") == 200  # the workers serve on

    restarted = server.start()
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.startswith(f"MLflow server up: {server.uri}")
    assert f"stopping the mlflow server (process group {leader}" in restarted.stderr
    assert group_processes(leader) == []
    assert int((server.folder / "mlflow.pid").read_text()) != leader

    leader = server.kill_leader()
    stopped = server.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("MLflow server stopped")
    assert group_processes(leader) == []
    with pytest.raises(OSError):  # the port is closed
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()

    again = server.start()
    assert again.returncode == 0, again.stderr
    assert server.get("/health") == 200


@needs_postgres
def test_a_start_repairs_a_postgres_that_died_under_the_running_server(server, monkeypatch):
    """/health answers 200 while PostgreSQL is down and basic auth refuses every login: the start
    checks the database itself, restarts it, and the store answers again."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "node")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.users["node"])
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    server.stop_postgres()
    assert server.get("/health") == 200
    assert server.get(search, ("node", server.users["node"])) != 200
    with pytest.raises(runstore.StoreUnavailable):
        runstore.check_store(server.uri)

    repaired = server.start()
    assert repaired.returncode == 0, repaired.stderr
    assert repaired.stdout.startswith(f"MLflow server up: {server.uri}")
    assert "PostgreSQL of" in repaired.stderr and "restarting it" in repaired.stderr
    assert "starting mlflow server" not in repaired.stderr  # the server itself was up
    assert server.get(search, ("node", server.users["node"])) == 200
    runstore.check_store(server.uri)


def test_the_allowed_host_names_are_each_listed_once():
    """The short and the full host name are often one name (`vm,vm:*` was listed twice)."""
    script = f'source <(sed -n "/^allowed_hosts()/,/^}}/p" {START}); HOST="$(hostname -s)"; allowed_hosts'
    listed = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    names = listed.split(",")
    assert len(names) == len(set(names)) and "localhost:*" in names, listed
