"""The cluster's tracking server (server/start_mlflow_server.sh, docs/cluster_store.md), for real: its own
PostgreSQL cluster, `mlflow server` with proxied artifacts and basic auth on loopback, started once for
the module on free ports in a temporary data folder, and stopped (with PostgreSQL) at its end.

Skipped only where PostgreSQL's programs are absent. The refusal to serve a non-loopback host without
auth needs no PostgreSQL and always runs.
"""

from __future__ import annotations

import base64
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ifrvis import runstore

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "server" / "start_mlflow_server.sh"
STOP = ROOT / "server" / "stop_mlflow_server.sh"


def _pg_bin() -> Path | None:
    """Where the start script finds PostgreSQL's programs (IFRVIS_PG_BIN, else Debian's folders)."""
    candidates = [os.environ.get("IFRVIS_PG_BIN", ""), "/usr/lib/postgresql/15/bin"]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in filter(None, candidates):
        if all(os.access(Path(folder) / name, os.X_OK) for name in ("initdb", "pg_ctl", "psql")):
            return Path(folder)
    return None


PG_BIN = _pg_bin()
needs_postgres = pytest.mark.skipif(
    PG_BIN is None,
    reason="PostgreSQL's programs (initdb, pg_ctl, psql) are absent: apt-get install postgresql, "
    "or set IFRVIS_PG_BIN",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(script: Path, env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Server:
    def __init__(self, folder: Path, port: int, pg_port: int, users: dict[str, str]):
        self.folder = folder
        self.port = port
        self.pg_port = pg_port
        self.users = users  # name -> password; the first is the admin
        self.uri = f"http://127.0.0.1:{port}"
        self.env = {
            "IFRVIS_MLFLOW_DIR": str(folder),
            "IFRVIS_PG_PORT": str(pg_port),
            "IFRVIS_MLFLOW_WORKERS": "1",
        }

    def start(self, *args: str) -> subprocess.CompletedProcess:
        return _run(START, self.env, "--port", str(self.port), *args)

    def get(self, path: str, auth: tuple[str, str] | None = None) -> int:
        """The HTTP status of GET `path`."""
        request = urllib.request.Request(self.uri + path)
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def sql(self, database: str, query: str) -> str:
        """`query` through the cluster's private socket, as its superuser."""
        result = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-tA", "-h", str(self.folder / "pg-socket"), "-p", str(self.pg_port)]
            + ["-U", "postgres", "-d", database, "-c", query],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.strip()


@pytest.fixture(scope="module")
def server():
    # Not under pytest's tmp folder: when the tests run as root, PostgreSQL runs as the 'postgres' user,
    # who cannot enter root's private /tmp/pytest-of-root.
    folder = Path(tempfile.mkdtemp(prefix="ifrvis-mlflow-server-"))
    users = {"admin": secrets.token_urlsafe(16), "node": secrets.token_urlsafe(16)}
    users_file = folder / "users"
    users_file.write_text("# test users\n" + "".join(f"{name}:{pw}\n" for name, pw in users.items()))
    users_file.chmod(0o600)
    srv = Server(folder, _free_port(), _free_port(), users)
    try:
        started = srv.start()
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith(f"MLflow server up: {srv.uri} (basic auth: 2 users (admin 'admin')")
        yield srv
    finally:
        stopped = _run(STOP, srv.env)
        pid_file = folder / "mlflow.pid"
        shutil.rmtree(folder, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("MLflow server stopped")
    assert not pid_file.exists()
    with pytest.raises(OSError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.pg_port), timeout=2).close()


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

    elsewhere = _run(START, server.env, "--port", str(_free_port()))
    assert elsewhere.returncode == 1
    assert f"already runs on 127.0.0.1:{server.port}" in elsewhere.stderr


def test_non_loopback_host_without_auth_is_refused(tmp_path):
    folder = tmp_path / "store"
    env = {"IFRVIS_MLFLOW_DIR": str(folder), "IFRVIS_MLFLOW_USERS": str(tmp_path / "no-such-users-file")}
    refused = _run(START, env, "--host", "0.0.0.0", "--port", str(_free_port()), timeout=30)
    assert refused.returncode == 2
    assert refused.stdout == ""
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and "without basic auth" in lines[0] and "--insecure" in lines[0], refused.stderr
    assert not folder.exists()  # refused before anything was made
