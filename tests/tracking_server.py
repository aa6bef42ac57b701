"""The cluster's tracking server (server/start_mlflow_server.sh) for tests: its own PostgreSQL cluster
and `mlflow server` with basic auth on free loopback ports in a temporary data folder, started once for
the session (~15 s on 2 cores) by the first test that takes the `server` fixture, and stopped (with
PostgreSQL) at its end. Test modules load it with `pytest_plugins = ["tracking_server"]`, and mark the
tests that need PostgreSQL with `needs_postgres`.

PYTEST_DONT_REWRITE: the test modules import this one before pytest loads it as their plugin."""

from __future__ import annotations

import base64
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_script(
    script: Path, env: dict[str, str], *args: str, timeout: float = 240
) -> subprocess.CompletedProcess:
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
        return run_script(START, self.env, "--port", str(self.port), *args)

    def kill(self) -> None:
        """kill -9 the mlflow server and its workers (its own session: one process group)."""
        os.killpg(int((self.folder / "mlflow.pid").read_text()), signal.SIGKILL)

    def restart_postgres(self) -> None:
        """pg_ctl restart of the server's PostgreSQL cluster (as its owner when root runs the tests)."""
        as_owner = (
            ["runuser", "-u", os.environ.get("IFRVIS_PG_OS_USER", "postgres"), "--"]
            if os.geteuid() == 0
            else []
        )
        # -l: without it the new postmaster writes to pg_ctl's output, which would never close.
        log = self.folder / "logs" / "postgresql.log"
        command = [
            str(PG_BIN / "pg_ctl"),
            "restart",
            "-D",
            str(self.folder / "pg"),
            "-m",
            "fast",
            "-w",
            "-l",
            str(log),
        ]
        subprocess.run(as_owner + command, capture_output=True, text=True, timeout=60, check=True)

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


@pytest.fixture(scope="session")
def server():
    # Not under pytest's tmp folder: when the tests run as root, PostgreSQL runs as the 'postgres' user,
    # who cannot enter root's private /tmp/pytest-of-root.
    folder = Path(tempfile.mkdtemp(prefix="ifrvis-mlflow-server-"))
    users = {"admin": secrets.token_urlsafe(16), "node": secrets.token_urlsafe(16)}
    users_file = folder / "users"
    users_file.write_text("# test users\n" + "".join(f"{name}:{pw}\n" for name, pw in users.items()))
    users_file.chmod(0o600)
    srv = Server(folder, free_port(), free_port(), users)
    try:
        started = srv.start()
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith(f"MLflow server up: {srv.uri} (basic auth: 2 users (admin 'admin')")
        yield srv
    finally:
        stopped = run_script(STOP, srv.env)
        pid_file = folder / "mlflow.pid"
        shutil.rmtree(folder, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("MLflow server stopped")
    assert not pid_file.exists()
    with pytest.raises(OSError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.pg_port), timeout=2).close()
