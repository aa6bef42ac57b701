"""A tracking server of its own for tests and benchmarks: server/start_mlflow_server.sh and its stop
script run in a given data folder on free loopback ports, with a handle to kill the server (SIGKILL),
restart its PostgreSQL, and query PostgreSQL directly. tests/tracking_server.py (the pytest fixture)
and benchmarks/store_load.py, store_faults_slurm.py use it."""

from __future__ import annotations

import base64
import glob
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "server" / "start_mlflow_server.sh"
STOP = ROOT / "server" / "stop_mlflow_server.sh"


def pg_bin() -> Path | None:
    """Where the start script finds PostgreSQL's programs (IFRVIS_PG_BIN, else Debian's folders)."""
    candidates = [os.environ.get("IFRVIS_PG_BIN", ""), "/usr/lib/postgresql/15/bin"]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in filter(None, candidates):
        if all(os.access(Path(folder) / name, os.X_OK) for name in ("initdb", "pg_ctl", "psql")):
            return Path(folder)
    return None


PG_BIN = pg_bin()


def _ended(pid: int) -> bool:
    """The process is gone, or a zombie its parent has not reaped yet."""
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


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
    """The start script's server with its data in `folder`, on `port` (PostgreSQL on `pg_port`);
    `users`: name -> password, the first the admin; `workers`: the server's (default: the script's)."""

    def __init__(self, folder: Path, port: int, pg_port: int, users: dict[str, str], workers: int = 0):
        self.folder = folder
        self.port = port
        self.pg_port = pg_port
        self.users = users
        self.uri = f"http://127.0.0.1:{port}"
        self.env = {"IFRVIS_MLFLOW_DIR": str(folder), "IFRVIS_PG_PORT": str(pg_port)}
        if workers:
            self.env["IFRVIS_MLFLOW_WORKERS"] = str(workers)

    @classmethod
    def in_temporary_folder(cls, users: list[str], workers: int = 0) -> Server:
        """A new data folder with a users file of random passwords, on free ports. Not under pytest's tmp
        folder: run as root, PostgreSQL runs as 'postgres', who cannot enter /tmp/pytest-of-root."""
        folder = Path(tempfile.mkdtemp(prefix="ifrvis-mlflow-server-"))
        passwords = {name: secrets.token_urlsafe(16) for name in users}
        users_file = folder / "users"
        users_file.write_text("".join(f"{name}:{password}\n" for name, password in passwords.items()))
        users_file.chmod(0o600)
        return cls(folder, free_port(), free_port(), passwords, workers)

    def start(self, *args: str) -> subprocess.CompletedProcess:
        return run_script(START, self.env, "--port", str(self.port), *args)

    def stop(self) -> subprocess.CompletedProcess:
        return run_script(STOP, self.env)

    def kill(self) -> None:
        """kill -9 the mlflow server and its workers (its own session: one process group)."""
        os.killpg(int((self.folder / "mlflow.pid").read_text()), signal.SIGKILL)

    def kill_leader(self) -> int:
        """kill -9 of the pid in mlflow.pid alone, as an operator might: its uvicorn and workers live on.
        Returns that pid once it is gone."""
        pid = int((self.folder / "mlflow.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while not _ended(pid):
            time.sleep(0.05)
        return pid

    def restart_postgres(self) -> None:
        """pg_ctl restart of the server's PostgreSQL cluster."""
        # -l: without it the new postmaster writes to pg_ctl's output, which would never close.
        self._pg_ctl("restart", "-m", "fast", "-w", "-l", str(self.folder / "logs" / "postgresql.log"))

    def stop_postgres(self) -> None:
        """PostgreSQL's cluster stopped as by a crash (pg_ctl stop -m immediate) under the running server."""
        self._pg_ctl("stop", "-m", "immediate", "-w")

    def _pg_ctl(self, *args: str) -> None:
        """pg_ctl on the server's cluster, as its owner when root runs the tests."""
        as_owner = (
            ["runuser", "-u", os.environ.get("IFRVIS_PG_OS_USER", "postgres"), "--"]
            if os.geteuid() == 0
            else []
        )
        command = [str(PG_BIN / "pg_ctl"), args[0], "-D", str(self.folder / "pg"), *args[1:]]
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
