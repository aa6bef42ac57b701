"""MLflow plumbing shared by training runs, sweeps and analysis.

Everything goes through an explicit `MlflowClient` on an explicit tracking URI (never MLflow's
process-global "active run", which several runs in one process would share). The default store is
a SQLite file in the project folder; `MLFLOW_TRACKING_URI` or `logging.mlflow_uri` choose another
(an `http://` MLflow server for clusters).

    python -m ifrvis.tracking init [URI]   # create the store's schema once, before a sweep
"""

from __future__ import annotations

import fcntl
import functools
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch
T = TypeVar("T")


def resolve_uri(uri: str = "") -> str:
    """`uri`, else $MLFLOW_TRACKING_URI, else the SQLite file `<project>/mlflow.db` (absolute path)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def _is_transient(error: Exception) -> bool:
    text = str(error).lower()
    return "database is locked" in text or "_alembic_tmp" in text or "connection refused" in text


def with_retry(fn: Callable[..., T], *args: Any, attempts: int = 8, **kwargs: Any) -> T:
    """Call `fn`, retrying transient store errors (SQLite 'database is locked', a busy server)."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            if attempt == attempts - 1 or not _is_transient(error):
                raise
            time.sleep(min(0.2 * 2**attempt, 5.0) * (1 + random.random()))
    raise AssertionError("unreachable")


@functools.cache
def init_store(uri: str) -> str:
    """Create the store's schema once. Concurrent first use of a fresh SQLite file races on MLflow's
    schema migration, so initialisation holds an exclusive file lock beside the database."""
    path = _sqlite_path(uri)
    if path is None:
        return uri
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return uri


def store_exists(uri: str = "") -> bool:
    """False for a SQLite store whose file is not there yet (reading it would create it)."""
    path = _sqlite_path(resolve_uri(uri))
    return path is None or path.exists()


def client(uri: str = "") -> MlflowClient:
    """A client on an initialised store."""
    return MlflowClient(init_store(resolve_uri(uri)))


def experiment_id(mlflow: MlflowClient, name: str) -> str:
    experiment = with_retry(mlflow.get_experiment_by_name, name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return with_retry(
            mlflow.create_experiment,
            name,
            artifact_location=_artifact_location(mlflow, name),
            tags={"mlflow.experimentKind": "custom_model_development"},  # model training, not GenAI
        )
    except Exception:  # created meanwhile by a concurrent run
        return with_retry(mlflow.get_experiment_by_name, name).experiment_id


def _artifact_location(mlflow: MlflowClient, name: str) -> str | None:
    """Artifacts of a SQLite store beside the database file (MLflow's default is ./mlruns of whatever
    the working directory is); a server decides for itself."""
    path = _sqlite_path(mlflow.tracking_uri)
    return (path.parent / "mlruns" / name).as_uri() if path is not None else None


def find_runs(mlflow: MlflowClient, experiment: str, **tags: str) -> list:
    """Runs of `experiment` whose tags equal `tags` (e.g. run_identity=...), newest first; reading
    creates nothing (no experiment, no run)."""
    found = with_retry(mlflow.get_experiment_by_name, experiment)
    if found is None:
        return []
    filters = " and ".join(f"tags.{key} = '{value}'" for key, value in tags.items())
    return with_retry(
        mlflow.search_runs,
        [found.experiment_id],
        filter_string=filters,
        order_by=["attributes.start_time DESC"],
    )


class RunLogger:
    """Logging into one existing MLflow run, with retries on transient store errors."""

    def __init__(self, uri: str, run_id: str):
        self.mlflow = client(uri)
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(entries), MAX_BATCH):
            with_retry(self.mlflow.log_batch, self.run_id, metrics=entries[start : start + MAX_BATCH])

    def log_metric_history(self, history: list[tuple[int, dict[str, float]]]) -> None:
        """[(step, {key: value})] in one batched call per MAX_BATCH entries."""
        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, step) for step, values in history for k, v in values.items()]
        for start in range(0, len(entries), MAX_BATCH):
            with_retry(self.mlflow.log_batch, self.run_id, metrics=entries[start : start + MAX_BATCH])

    def log_params(self, params: dict[str, Any]) -> None:
        entries = [Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(entries), 90):  # MLflow: at most 100 params per batch
            with_retry(self.mlflow.log_batch, self.run_id, params=entries[start : start + 90])

    def set_tags(self, tags: dict[str, Any]) -> None:
        with_retry(self.mlflow.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def delete_tag(self, key: str) -> None:
        """Remove tag `key` if the run has it."""
        if key in with_retry(self.mlflow.get_run, self.run_id).data.tags:
            with_retry(self.mlflow.delete_tag, self.run_id, key)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        with_retry(self.mlflow.log_artifact, self.run_id, str(path), artifact_path)

    def set_status(self, status: str) -> None:
        if status in ("FINISHED", "FAILED", "KILLED"):
            with_retry(self.mlflow.set_terminated, self.run_id, status)
        else:
            with_retry(self.mlflow.update_run, self.run_id, status=status)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "init":
        print("usage: python -m ifrvis.tracking init [URI]", file=sys.stderr)
        return 2
    uri = init_store(resolve_uri(argv[1] if len(argv) > 1 else ""))
    print(f"MLflow store ready: {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
