"""The cluster's tracking server (server/start_mlflow_server.sh, driven by server/local_server.py) for
tests: its own PostgreSQL cluster and `mlflow server` with basic auth on free loopback ports in a
temporary data folder, started once for the session (~15 s on 2 cores) by the first test that takes the
`server` fixture, and stopped (with PostgreSQL) at its end. Test modules load it with
`pytest_plugins = ["tracking_server"]`, and mark the tests that need PostgreSQL with `needs_postgres`.

PYTEST_DONT_REWRITE: the test modules import this one before pytest loads it as their plugin."""

from __future__ import annotations

import shutil
import socket

import pytest

from server.local_server import PG_BIN, START, Server, free_port, run_script

__all__ = ["START", "free_port", "needs_postgres", "run_script"]  # for the test modules

needs_postgres = pytest.mark.skipif(
    PG_BIN is None,
    reason="PostgreSQL's programs (initdb, pg_ctl, psql) are absent: apt-get install postgresql, "
    "or set IFRVIS_PG_BIN",
)


@pytest.fixture(scope="session")
def server():
    srv = Server.in_temporary_folder(["admin", "node"], workers=1)
    try:
        started = srv.start()
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith(f"MLflow server up: {srv.uri} (basic auth: 2 users (admin 'admin')")
        yield srv
    finally:
        stopped = srv.stop()
        pid_file = srv.folder / "mlflow.pid"
        shutil.rmtree(srv.folder, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("MLflow server stopped")
    assert not pid_file.exists()
    with pytest.raises(OSError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.pg_port), timeout=2).close()
