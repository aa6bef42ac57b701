"""Every command that opens the run store checks a tracking server first, in a bounded time: a server
that does not answer, refuses the login or has lost its database stops the command in one line (exit 2)
before any run, job or file exists, instead of MLflow's client retrying for minutes in silence.

For real: a closed port, a port that accepts connections and never answers, and the PostgreSQL-backed
server of tracking_server.py with a wrong password, an unknown user and no login at all."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, write_run_config
from tracking_server import free_port, needs_postgres

from ifrvis import runstore
from ifrvis.metric_names import TABLE1

pytest_plugins = ["tracking_server"]  # the `server` fixture

BOUND_S = 30  # what a command may take to give up on a store, interpreter start included

# Each command that opens the store, as an operator types it: {config}, {uri}, {out} filled in.
COMMANDS = {
    "run_seeds": [
        "experiments/run_seeds.py",
        "{config}",
        "--seeds",
        "2",
        "--set",
        "logging.mlflow_uri={uri}",
    ],
    "ablate": [
        "experiments/ablate.py",
        "--config",
        "{config}",
        "--key",
        "model.num_queries",
        "--values",
        "4",
        "8",
        "--out",
        "{out}",
        "--set",
        "logging.mlflow_uri={uri}",
    ],
    "ablate_lambda_e_slurm": [
        "experiments/ablate_lambda_e.py",
        "--config",
        "{config}",
        "--executor",
        "slurm",
        "--seeds",
        "2",
        "--out",
        "{out}",
        "--set",
        "logging.mlflow_uri={uri}",
    ],
    "tables": ["analysis/tables.py", "--sweep", "t", "--table", "1", "--out", "{out}"],
    "figures": ["analysis/figures.py", "--sweep", "t", "--figure", "4", "--out", "{out}"],
    "train": ["-m", "ifrvis.commands.train", "{config}", "logging.mlflow_uri={uri}"],
    "server_scores": ["-m", "ifrvis.cli", "server-scores", "0" * 32, *(f"{m}=0.5" for m in TABLE1)],
}
PROGRAMS = {
    "run_seeds": "run_seeds.py",
    "ablate": "ablate.py",
    "ablate_lambda_e_slurm": "ablate_lambda_e.py",
    "tables": "tables.py",
    "figures": "figures.py",
    "train": "ifrvis train",
    "server_scores": "ifrvis server-scores",
}


def run_command(name: str, tmp_path: Path, uri: str, env: dict[str, str]) -> tuple[str, float]:
    """Run command `name` on the store `uri` (in its config and $MLFLOW_TRACKING_URI), on a config
    whose data folder does not exist: the store is the first thing it may touch. Asserts exit 2 and
    one line on stderr, and that nothing was written; returns that line and the seconds it took."""
    config = write_run_config(tmp_path, tmp_path / "no-data")
    fill = {"config": str(config), "uri": uri, "out": str(tmp_path / "results")}
    argv = [part.format(**fill) for part in COMMANDS[name]]
    before = set(tmp_path.iterdir())
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={
            **os.environ,
            **env,
            "MLFLOW_TRACKING_URI": uri,
            "IFRVIS_SLURM_LOGS": str(tmp_path / "slurm-logs"),
        },
    )
    seconds = time.monotonic() - start
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{PROGRAMS[name]}: error: "), lines[0]
    assert set(tmp_path.iterdir()) == before, "the command wrote files"
    return lines[0], seconds


@pytest.mark.parametrize("name", COMMANDS)
def test_a_closed_port_stops_every_command_in_one_line(name, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    line, seconds = run_command(name, tmp_path, uri, {})
    assert f"tracking server {uri} unreachable (connection refused)" in line
    assert seconds < BOUND_S


def test_a_server_that_never_answers_is_given_up_on_in_seconds():
    """A port whose connections the kernel accepts but no program answers (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(runstore.StoreUnavailable, match=r"unreachable \(no answer in 5 s\)"):
            runstore.check_store(uri)
    assert time.monotonic() - start < 2 * runstore.CHECK_TIMEOUT + 2


def test_a_local_store_needs_no_server(tmp_path):
    runstore.check_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not (tmp_path / "mlflow.db").exists()  # checking made nothing


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda path: path.write_bytes(b"\x89PNG not a database at all"), "is not an SQLite database"),
        (lambda path: path.mkdir(), "is a folder, not an SQLite database file"),
        (lambda path: path.parent.joinpath("file").write_text("x"), None),
    ],
)
def test_a_store_file_that_is_no_database_is_one_line(tmp_path, make, words):
    """A garbage file or a folder where the SQLite store is named once gave MLflow's traceback; a store
    under a file (not a folder) cannot be made."""
    path = tmp_path / "mlflow.db"
    make(path)
    uri = f"sqlite:///{path}" if words else f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"
    with pytest.raises(
        runstore.StoreUnavailable, match=words or "cannot be made: .*file is no writable folder"
    ):
        runstore.check_store(uri)


def test_a_database_or_an_unknown_scheme_is_checked_in_seconds():
    """A direct database URI whose server is down once retried for over 100 s, then a traceback; a
    scheme MLflow has no store for gave its exception."""
    start = time.monotonic()
    with pytest.raises(
        runstore.StoreUnavailable, match=r"database 127.0.0.1:\d+ unreachable \(connection refused\)"
    ):
        runstore.check_store(f"postgresql://user@127.0.0.1:{free_port()}/mlflow")
    assert time.monotonic() - start < runstore.CHECK_TIMEOUT
    with pytest.raises(runstore.StoreUnavailable, match="foo://bar: MLflow keeps runs in sqlite"):
        runstore.check_store("foo://bar")


def experiments(server) -> set[str]:
    return set(server.sql("mlflow", "SELECT name FROM experiments").splitlines())


@needs_postgres
@pytest.mark.parametrize("name", ["ablate_lambda_e_slurm", "run_seeds", "tables", "figures", "train"])
def test_a_wrong_password_stops_every_command_in_one_line(name, server, tmp_path):
    known = experiments(server)
    env = {"MLFLOW_TRACKING_USERNAME": "node", "MLFLOW_TRACKING_PASSWORD": "not-the-password"}
    line, seconds = run_command(name, tmp_path, server.uri, env)
    assert f"tracking server {server.uri} refuses user 'node': not authenticated" in line
    assert "not-the-password" not in line
    assert seconds < BOUND_S
    assert experiments(server) == known  # no experiment, so no run


@needs_postgres
def test_an_unknown_user_and_a_missing_login_are_one_line_each(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "nobody")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.users["node"])
    with pytest.raises(runstore.StoreUnavailable, match="refuses user 'nobody': not authenticated"):
        runstore.check_store(server.uri)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.mlflow/credentials either
    line, _ = run_command("run_seeds", tmp_path, server.uri, {})
    assert line == (
        f"run_seeds.py: error: tracking server {server.uri} requires a login: set MLFLOW_TRACKING_USERNAME"
        " and MLFLOW_TRACKING_PASSWORD (docs/cluster_store.md)"
    )


@needs_postgres
def test_the_right_login_passes_the_check(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "node")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.users["node"])
    runstore.check_store(server.uri)
