"""The MLflow run store: where runs live, what they are named and tagged, and how they are read back.

One module owns the run schema (docs/architecture.md, "Run schema"):

- the store: `resolve_uri` decides it once, when a run or a sweep is planned, and the URI then
  travels in every job's `cfg.logging.mlflow_uri`; `client` opens it, `with_retry` rides out
  transient errors of a busy store;
- writing: `create_run` (name, tags, params), `parent_run` (a sweep's), `join_sweep`, `RunLogger`
  (metrics, tags, statuses), `mark_failed` and `discard` for runs whose jobs never ran;
- reading: `find_run(s)` by tags, `load_sweep` (a sweep's runs as one pandas frame, its swept keys
  and parent run).

Everything goes through an explicit `MlflowClient` on an explicit URI, never MLflow's
process-global tracking URI or active run, which several runs in one process would share.

    python -m ifrvis.commands.store init [URI]   # create the store's schema once, before a sweep
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient

from ifrvis import metric_spool
from ifrvis.config import Config, config_hash, flatten, run_identity, to_dict
from ifrvis.errors import UserError
from ifrvis.run_folder import run_dir

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch
T = TypeVar("T")

# ------------------------------------------------------------------------------------------ schema
# The tags of a training run, each one column of `load_sweep`'s frame. Labels describe a run;
# `config_hash` and `run_identity` identify it (config.py: the name and dataset are labels, not
# identity, so one computation is one run whatever config file asked for it).
RUN_TAGS = {
    "sweep": "the sweep that created the run (its parent run holds it in the UI)",
    "method": "model.decoder: ifr | mask2former",
    "backbone": "model.backbone",
    "dataset": "the config's dataset label",
    "config": "the config's name",
    "seed": "the seed",
    "config_hash": "hash of the settings that change the computation (config.config_hash)",
    "run_identity": "hash of (config_hash, seed): one identity, one run",
    "git_commit": "the code's commit, '-dirty' with uncommitted changes",
    "run_dir": "the run's folder (checkpoint, results, train.log), relative to the store's (store_folder)",
    "swept_keys": "comma-separated config keys the sweep's grid varies ('' for none)",
}
MEMBER_PREFIX = "in_sweep."  # in_sweep.<name> = "1" for every sweep that planned the run
SWEPT_PREFIX = "swept."  # swept.<key> = the run's value of each swept key
PARENT_TAG = "sweep_parent"  # "1" on a sweep's parent run
SUBMITTED_TAG = "submitted_at"  # Unix time the job was handed to its executor
SLURM_JOB_TAG = "launch.slurm_submission"  # the Slurm job (array id_index) a sweep submitted the run as
ERROR_TAG = "error"  # why the run FAILED
SUBMISSION_ERROR_TAG = "submission_error"  # why a sweep's last submission took no job (its parent)
SOURCE_TAG, SERVER_SOURCE = "metrics_source", "evaluation server"  # AP and AR from `ifrvis server-scores`
# Metrics of the job around the run (launch/job.py); `train_time_s` is the training loop's own.
QUEUE_TIME = "queue_time_s"  # from submission to the start of the run's first job
RUN_TIME = "run_time_s"  # the jobs' own time, from each start to its end (training, evaluation)

# Run statuses: a sweep creates its runs SCHEDULED; the job sets RUNNING, then one of the others.
SCHEDULED, RUNNING, FINISHED, FAILED, KILLED = "SCHEDULED", "RUNNING", "FINISHED", "FAILED", "KILLED"


# ------------------------------------------------------------------------------------------- store
def resolve_uri(uri: str = "") -> str:
    """`uri`, else $MLFLOW_TRACKING_URI, else the SQLite file `<project>/mlflow.db` (absolute path)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def _is_transient(error: Exception) -> bool:
    """SQLite busy, or this client's connection refused (a server restarting). A server's answer that
    quotes its own database's refused connection is not one: it is an outage (`RunLogger._is_outage`)."""
    text = str(error).lower()
    refused = "connection refused" in text and http_status(error) is None
    return "database is locked" in text or "_alembic_tmp" in text or refused


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


def _is_unreachable(error: Exception) -> bool:
    """The store did not take a call: a transient error, or a server that is down, cut the connection,
    timed out or answered 5xx (urllib3's 'too many 500 error responses')."""
    text = str(error).lower()
    signs = ("error responses", "connection aborted", "timed out", "remotedisconnected")
    return _is_transient(error) or any(sign in text for sign in signs)


_HTTP_ENV = threading.Lock()


@contextlib.contextmanager
def _brief_http() -> Iterator[None]:
    """No HTTP-level retries: MLflow's client retries a dead server for ~4 min per call (7 retries,
    backoff factor 2). Its only knob is the environment, read at each request; the lock keeps threads
    of one process (Ray's trials) from restoring each other's values."""
    name = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    with _HTTP_ENV:
        saved = os.environ.get(name)
        os.environ[name] = "0"
        try:
            yield
        finally:
            if saved is None:
                del os.environ[name]
            else:
                os.environ[name] = saved


@functools.cache
def init_store(uri: str) -> str:
    """Create the store's schema once. Concurrent first use of a fresh SQLite file races on MLflow's
    schema migration, so initialisation holds an exclusive file lock beside the database."""
    path = _sqlite_path(uri)
    if path is None:
        return uri
    if path.is_file() and not os.access(path.parent, os.W_OK):  # read where it cannot change: no lock
        return uri
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(uri).search_experiments(max_results=1)
            _relocate_artifacts(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return uri


def _relocate_artifacts(database: Path) -> None:
    """Point a moved or copied SQLite store at the `mlruns/` beside it. MLflow records each experiment's
    and run's artifact folder as an absolute file URI (it turns relative ones absolute), so the copy
    would show the old folder's artifacts, or none once it is gone. An experiment is moved only when its
    folder `<...>/mlruns/<name>` exists beside the database under the same name."""
    here = (database.parent / "mlruns").as_uri()
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        experiments = connection.execute(
            "SELECT experiment_id, artifact_location FROM experiments"
        ).fetchall()
        for experiment, location in experiments:
            old, found, name = (location or "").rpartition("/mlruns/")
            if not found or old + "/mlruns" == here or not (database.parent / "mlruns" / name).is_dir():
                continue
            connection.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                (f"{here}/{name}", experiment),
            )
            connection.execute(
                "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE experiment_id = ?"
                " AND artifact_uri LIKE ? || '%'",
                (here, len(old + "/mlruns") + 1, experiment, old + "/mlruns/"),
            )


def _existing_ancestor(path: Path) -> Path:
    """The nearest folder above `path` that exists: where a store not yet made would be made."""
    return next(p for p in path.parents if p.exists())


class ReadOnlyStore(UserError):
    """A run would write into a store that cannot change (a read-only file system, no permission)."""


def check_writable(uri: str = "") -> None:
    """Raise ReadOnlyStore when a SQLite store (its file, or the folder it would be made in) cannot be
    written: before a run or sweep creates anything. Reading such a store works (`init_store`)."""
    path = _sqlite_path(resolve_uri(uri))
    if path is None:
        return
    target = path if path.exists() else _existing_ancestor(path)
    folder = target if target.is_dir() else target.parent  # SQLite writes its journal beside the file
    if not (os.access(target, os.W_OK) and os.access(folder, os.W_OK)):
        raise ReadOnlyStore(
            f"MLflow store {path} cannot be written here ({target} is read-only): tables and the UI can"
            " read it; runs need a writable store (copy it, or set MLFLOW_TRACKING_URI)"
        )


class StoreUnavailable(UserError):
    """The tracking server cannot take a run: unreachable, refusing the credentials, or its database down."""


class StoreOutage(StoreUnavailable):
    """The store stopped answering a run that it had been taking: the run is not at fault."""


CHECK_TIMEOUT = 5.0  # seconds for each of `check_store`'s two requests: a hung server costs 10 s, not hours
_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"  # needs a login and the database


# Stores MLflow reaches through SQLAlchemy without a tracking server, and their default ports.
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
SQLITE_HEADER = b"SQLite format 3\x00"


def check_store(uri: str = "") -> None:
    """Raise StoreUnavailable, in one line that says which, when the store cannot be used: a tracking
    server of an http(s) store that does not answer, refuses the credentials or answers without its
    database; a SQLite file that is no SQLite database, or whose folder cannot exist; a database server
    that does not answer; a scheme MLflow has no store for. A bounded check before a command creates
    anything (MLflow's client would retry a dead server for minutes per call, silently)."""
    uri = resolve_uri(uri)
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "sqlite":
        _check_sqlite(uri)
        return
    if scheme in DATABASE_PORTS:
        _check_database(uri, scheme)
        return
    if scheme not in ("http", "https"):
        raise StoreUnavailable(
            f"run store {uri}: MLflow keeps runs in sqlite:///path/mlflow.db, a tracking server"
            f" (http(s)://host:port) or a database ({', '.join(DATABASE_PORTS)}):"
            " is MLFLOW_TRACKING_URI right?"
        )
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)
    answers = []
    for endpoint in ("/health", _PROBE):
        try:
            response = http_request(
                creds, endpoint, "GET", max_retries=0, timeout=CHECK_TIMEOUT, raise_on_status=False
            )
        except Exception as error:
            raise StoreUnavailable(
                f"tracking server {uri} unreachable ({_connection_failure(error)}): is it started"
                " (make mlflow-server), and is MLFLOW_TRACKING_URI right?"
            ) from None
        answers.append((response.status_code, response.text))
        if response.status_code != 200:
            break
    problem = store_problem(uri, answers, creds.username)
    if problem:
        raise StoreUnavailable(problem)


def _check_sqlite(uri: str) -> None:
    """A SQLite store's file is a SQLite database, or can be made where it is named."""
    path = _sqlite_path(uri)
    if path is None:  # sqlite:// with no path: MLflow's in-memory store
        return
    if path.is_file():
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
        if header and header != SQLITE_HEADER:
            raise StoreUnavailable(
                f"run store {path} is not an SQLite database: is MLFLOW_TRACKING_URI right?"
            )
    elif path.exists():
        raise StoreUnavailable(f"run store {path} is a folder, not an SQLite database file")
    else:
        existing = _existing_ancestor(path)
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise StoreUnavailable(f"run store {path} cannot be made: {existing} is no writable folder")


def _check_database(uri: str, scheme: str) -> None:
    """A database server named by a SQLAlchemy URI answers on its port within CHECK_TIMEOUT (MLflow's
    client would try for minutes)."""
    address = urlsplit(uri)
    host, port = address.hostname or "localhost", address.port or DATABASE_PORTS[scheme]
    try:
        socket.create_connection((host, port), timeout=CHECK_TIMEOUT).close()
    except OSError as error:
        raise StoreUnavailable(
            f"run store database {host}:{port} unreachable ({_connection_failure(error)}): is it started,"
            " and is MLFLOW_TRACKING_URI right?"
        ) from None


def _connection_failure(error: Exception) -> str:
    """What a failed connection ran into, in a few words."""
    text = str(error).lower()
    for sign, words in (
        ("refused", "connection refused"),
        ("remotedisconnected", "connection closed without an answer"),
        ("connection aborted", "connection closed without an answer"),
        ("timed out", f"no answer in {CHECK_TIMEOUT:.0f} s"),
        ("read timeout", f"no answer in {CHECK_TIMEOUT:.0f} s"),
        ("name or service not known", "unknown host name"),
        ("nodename nor servname", "unknown host name"),
        ("temporary failure in name resolution", "unknown host name"),
    ):
        if sign in text:
            return words
    return str(error).splitlines()[0][:200]


def store_problem(uri: str, answers: list[tuple[int, str]], username: str | None) -> str:
    """What the server's answers to `/health` and an authenticated search say is wrong ('' if nothing).
    MLflow's basic auth answers 401 both to a wrong password and when its user database is down (it
    reads a failed query as an unknown user): the message names both."""
    status, body = answers[-1]
    if len(answers) == 1 and status != 200:
        return f"tracking server {uri} answers /health with HTTP {status}: is it an MLflow server?"
    if status == 200:
        return ""
    if status == 401 and not username:
        return (
            f"tracking server {uri} requires a login: set MLFLOW_TRACKING_USERNAME and"
            " MLFLOW_TRACKING_PASSWORD (docs/cluster_store.md)"
        )
    if status == 401:
        return (
            f"tracking server {uri} refuses user {username!r}: not authenticated (a wrong"
            " MLFLOW_TRACKING_USERNAME or MLFLOW_TRACKING_PASSWORD, or the server's user database is down)"
        )
    if status == 503:
        return (
            f"the tracking server's database is unavailable ({uri} answers HTTP 503):"
            " see docs/cluster_store.md, 'When the store fails'"
        )
    detail = " ".join(body.split())[:200]
    return f"tracking server {uri} answers HTTP {status}: {detail}"


def store_folder(uri: str = "") -> Path:
    """What the run folders in a store's `run_dir` tags are relative to: a SQLite store's own folder, so
    that a store copied with its outputs/ reads back; the project for a server."""
    path = _sqlite_path(resolve_uri(uri))
    return path.parent if path is not None else PROJECT_ROOT


def _portable(path: Path, base: Path) -> str:
    """`path` relative to `base` when inside it, else absolute."""
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def run_folder_of(tags: dict[str, str], uri: str = "") -> Path:
    """The run folder a run's `run_dir` tag names, in the store `uri`."""
    return store_folder(uri) / tags["run_dir"]


def store_exists(uri: str = "") -> bool:
    """False for a SQLite store whose file is not there yet (reading it would create it)."""
    path = _sqlite_path(resolve_uri(uri))
    return path is None or path.exists()


def client(uri: str = "") -> MlflowClient:
    """A client on an initialised store."""
    return MlflowClient(init_store(resolve_uri(uri)))


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # model training, not GenAI


def experiment_id(mlflow: MlflowClient, name: str) -> str:
    """The experiment `name`, created if absent; one made elsewhere (the UI, `mlflow experiments
    create`) gets the kind tag that the UI otherwise asks for, unless it has a kind of its own."""
    experiment = with_retry(mlflow.get_experiment_by_name, name)
    if experiment is None:
        try:
            return with_retry(
                mlflow.create_experiment,
                name,
                artifact_location=_artifact_location(mlflow, name),
                tags=EXPERIMENT_KIND,
            )
        except Exception:  # created meanwhile by a concurrent run
            experiment = with_retry(mlflow.get_experiment_by_name, name)
    if not EXPERIMENT_KIND.keys() & experiment.tags.keys():
        for key, value in EXPERIMENT_KIND.items():
            with_retry(mlflow.set_experiment_tag, experiment.experiment_id, key, value)
    return experiment.experiment_id


def _artifact_location(mlflow: MlflowClient, name: str) -> str | None:
    """Artifacts of a SQLite store beside the database file (MLflow's default is ./mlruns of whatever
    the working directory is); a server decides for itself."""
    path = _sqlite_path(mlflow.tracking_uri)
    return (path.parent / "mlruns" / name).as_uri() if path is not None else None


@functools.cache
def git_commit() -> str:
    """The project's commit, with '-dirty' when the work tree has changes; 'unknown' outside git."""
    try:
        commit, dirty = (
            subprocess.run(
                command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
            for command in (
                ["git", "rev-parse", "HEAD"],
                ["git", "status", "--porcelain", "--untracked-files=no"],
            )
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


# -------------------------------------------------------------------------------- names and tags
def member_tag(sweep: str) -> str:
    return f"{MEMBER_PREFIX}{sweep}"


def swept_values(cfg: Config, swept_keys: Sequence[str]) -> dict[str, Any]:
    """The config's value of each swept key, e.g. {'loss.lambda_e': 0.3}."""
    flat = flatten(to_dict(cfg))
    return {key: flat[key] for key in swept_keys}


def run_name(cfg: Config, swept_keys: Sequence[str] = ()) -> str:
    """`<config name> <key>=<value> ... s<seed>`: the runs of a sweep tell themselves apart in the UI."""
    values = " ".join(f"{key}={value}" for key, value in swept_values(cfg, swept_keys).items())
    return " ".join(filter(None, [cfg.name, values, f"s{cfg.seed}"]))


def run_tags(cfg: Config, swept_keys: Sequence[str] = ()) -> dict[str, str]:
    """The tags of RUN_TAGS, the sweep's membership and swept values, and the parent run."""
    tags = {
        "sweep": cfg.logging.sweep,
        "method": cfg.model.decoder,
        "backbone": cfg.model.backbone,
        "dataset": cfg.dataset,
        "config": cfg.name,
        "seed": str(cfg.seed),
        "config_hash": config_hash(cfg),
        "run_identity": run_identity(cfg),
        "git_commit": git_commit(),
        "run_dir": _portable(run_dir(cfg), store_folder(cfg.logging.mlflow_uri)),
        "swept_keys": ",".join(swept_keys),
    }
    tags.update({f"{SWEPT_PREFIX}{key}": str(v) for key, v in swept_values(cfg, swept_keys).items()})
    if cfg.logging.sweep:
        tags[member_tag(cfg.logging.sweep)] = "1"
    if cfg.logging.parent_run_id:
        tags["mlflow.parentRunId"] = cfg.logging.parent_run_id
    return tags


def _split_keys(text: str | None) -> list[str]:
    return [key for key in (text or "").split(",") if key]


# ------------------------------------------------------------------------------------------ writing
def create_run(cfg: Config, swept_keys: Sequence[str] | None = None) -> str:
    """A new SCHEDULED run for `cfg` with its name, tags and the flattened config as params; its id.
    `swept_keys` default to those of the sweep's parent run (none outside a sweep)."""
    mlflow = client(cfg.logging.mlflow_uri)
    if swept_keys is None:
        swept_keys = parent_swept_keys(mlflow, cfg.logging.parent_run_id)
    run = with_retry(
        mlflow.create_run,
        experiment_id(mlflow, cfg.logging.experiment),
        run_name=run_name(cfg, swept_keys),
        tags=run_tags(cfg, swept_keys),
    )
    logger = RunLogger(cfg.logging.mlflow_uri, run.info.run_id)
    logger.log_params(flatten(to_dict(cfg)))
    logger.set_status(SCHEDULED)
    return run.info.run_id


def parent_swept_keys(mlflow: MlflowClient, parent_run_id: str) -> list[str]:
    if not parent_run_id:
        return []
    return _split_keys(with_retry(mlflow.get_run, parent_run_id).data.tags.get("swept_keys"))


def parent_run(cfg: Config, sweep: str, swept_keys: Sequence[str]) -> str:
    """The sweep's parent run (tags sweep, in_sweep.<sweep>, sweep_parent=1, swept_keys), found again
    on a re-run; its swept keys are this plan's."""
    mlflow = client(cfg.logging.mlflow_uri)
    tags = {"sweep": sweep, member_tag(sweep): "1", PARENT_TAG: "1", "swept_keys": ",".join(swept_keys)}
    existing = find_runs(mlflow, cfg.logging.experiment, sweep=sweep, **{PARENT_TAG: "1"})
    if existing:
        RunLogger(cfg.logging.mlflow_uri, existing[0].info.run_id).set_tags(tags)
        return existing[0].info.run_id
    run = with_retry(
        mlflow.create_run,
        experiment_id(mlflow, cfg.logging.experiment),
        run_name=f"sweep-{sweep}",
        tags={**tags, "git_commit": git_commit()},
    )
    return run.info.run_id


def join_sweep(cfg: Config, run_id: str) -> None:
    """Make a run found by identity a member of `cfg.logging.sweep` too (a run another sweep made)."""
    RunLogger(cfg.logging.mlflow_uri, run_id).set_tags({member_tag(cfg.logging.sweep): "1"})


def mark_failed(uri: str, run_id: str, reason: str) -> None:
    """FAILED with the reason as its `error` tag."""
    logger = RunLogger(uri, run_id)
    logger.set_tags({ERROR_TAG: reason[:5000]})
    logger.set_status(FAILED)


def discard(uri: str, run_ids: Sequence[str]) -> None:
    """Delete runs that hold nothing yet (created for jobs that were never submitted), so that the
    next plan of the sweep starts as if they had never been made."""
    mlflow = client(uri)
    for run_id in run_ids:
        with_retry(mlflow.delete_run, run_id)


SPOOL_ATTEMPTS = 4  # a metric batch that can be spooled waits ~1.4-2.8 s for the store, not 16-32 s
# How long a run's calls wait out its tracking server's database (a PostgreSQL restart, an operator's
# outage) before the job gives up; the run is then left RUNNING, its folder keeps everything.
OUTAGE_PATIENCE_S = 600.0
OUTAGE_POLL_S = 5.0
# MLflow's REST errors, urllib3's given-up retries, requests' HTTPError text
_HTTP_STATUS = re.compile(
    r"error code (\d{3}) != |too many (\d{3}) error responses|^(\d{3}) (?:client|server) error", re.I
)


def http_status(error: BaseException) -> int | None:
    """The HTTP status a failed store call was answered with; None when it got no answer."""
    if isinstance(error, RestException):  # the server's JSON error, e.g. TEMPORARILY_UNAVAILABLE: 503
        return error.get_http_status_code()
    response = getattr(error, "response", None)  # requests' HTTPError: artifact uploads
    if isinstance(getattr(response, "status_code", None), int):
        return response.status_code
    match = _HTTP_STATUS.search(str(error))
    return int(next(group for group in match.groups() if group)) if match else None


class RunLogger:
    """Logging into one existing MLflow run, with retries on transient store errors.

    With a `spool` file (metric_spool.py, in the run's folder), a metric batch that the store does not
    take after a brief retry is kept there and sent with the next batch that goes through, or by
    `flush_spool`: training goes on while the store is down.

    A store that stops answering, or answers that its database is down (HTTP 503; or 401 once the
    server has taken a call of this logger: MLflow's basic auth gives 401 for any login while its user
    database is down), is an outage, not a refusal: spooled metrics wait in the spool, every other call
    waits up to OUTAGE_PATIENCE_S, saying so in one line, and then raises StoreOutage. A 401 before any
    accepted call means wrong credentials and raises at once. (Commands check the store before they
    create anything: `check_store`.)"""

    def __init__(self, uri: str, run_id: str, spool: Path | None = None):
        self.uri = uri
        self.mlflow = client(uri)
        self.run_id = run_id
        self.spool = spool
        self.accepted = False  # a call of this logger went through: its credentials are good

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.log_metric_history([(step, metrics)])

    def log_metric_history(
        self, history: list[tuple[int, dict[str, float]]], timestamp_ms: int | None = None
    ) -> None:
        """[(step, {key: value})] in one batched call per MAX_BATCH entries, after any spooled ones, stamped
        `timestamp_ms` (default: now). Points sent again with their first stamp are stored once (see
        metric_spool.py)."""
        now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        entries = [Metric(k, float(v), now, step) for step, values in history for k, v in values.items()]
        if self.spool is None:
            self._send(entries)
            return
        kept = metric_spool.read(self.spool)
        try:
            self._send(kept + entries, attempts=SPOOL_ATTEMPTS, wait_out=False)  # training goes on
        except Exception as error:
            if not (_is_unreachable(error) or self._is_outage(error)):
                raise
            metric_spool.append(self.spool, entries)
            if not kept:
                _say(
                    f"tracking server unreachable: {len(entries)} metric points kept in {self.spool},"
                    " sent when it answers"
                )
            return
        self._sent(kept)

    def flush_spool(self) -> None:
        """Send the spooled points, waiting for the store as long as a status does."""
        kept = metric_spool.read(self.spool) if self.spool else []
        self._send(kept)
        self._sent(kept)

    def _sent(self, spooled: list[Metric]) -> None:
        if spooled:
            metric_spool.clear(self.spool)
            _say(
                f"tracking server answers again: {len(spooled)} spooled metric points sent from {self.spool}"
            )

    def _is_outage(self, error: Exception) -> bool:
        """The store stopped taking this logger's calls (see the class)."""
        status = http_status(error)
        return self.accepted if status == 401 else status == 503 or _is_unreachable(error)

    def _outage(self, error: Exception) -> str:
        status = http_status(error)
        if status in (401, 503):
            return f"the tracking server's database is unavailable ({self.uri} answers HTTP {status})"
        return f"tracking server {self.uri} does not answer ({_connection_failure(error)})"

    def _call(
        self, fn: Callable[..., T], *args: Any, attempts: int = 8, wait_out: bool = True, **kwargs: Any
    ) -> T:
        """`fn` through `with_retry`; an outage waited out (OUTAGE_PATIENCE_S) with one line on each side,
        or raised at once without `wait_out`."""
        deadline = None
        while True:
            try:
                with _brief_http():  # the waiting is ours, said in the log, not MLflow's silent minutes
                    result = with_retry(fn, *args, attempts=attempts, **kwargs)
            except Exception as error:
                if not wait_out or not self._is_outage(error):
                    raise
                if deadline is None:
                    deadline = time.monotonic() + OUTAGE_PATIENCE_S
                    _say(f"{self._outage(error)}: waiting up to {OUTAGE_PATIENCE_S:.0f} s")
                elif time.monotonic() > deadline:
                    raise StoreOutage(f"{self._outage(error)} for {OUTAGE_PATIENCE_S:.0f} s") from None
                time.sleep(OUTAGE_POLL_S)
                continue
            self.accepted = True
            if deadline is not None:
                _say(f"tracking server {self.uri} takes the run's calls again")
            return result

    def _send(self, entries: list[Metric], attempts: int = 8, wait_out: bool = True) -> None:
        for start in range(0, len(entries), MAX_BATCH):
            chunk = entries[start : start + MAX_BATCH]
            self._call(
                self.mlflow.log_batch, self.run_id, metrics=chunk, attempts=attempts, wait_out=wait_out
            )

    def logged_metrics(self) -> set[str]:
        """The keys of the metrics the run has."""
        return set(self._call(self.mlflow.get_run, self.run_id).data.metrics)

    def log_params(self, params: dict[str, Any]) -> None:
        entries = [Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(entries), 90):  # MLflow: at most 100 params per batch
            self._call(self.mlflow.log_batch, self.run_id, params=entries[start : start + 90])

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._call(self.mlflow.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def delete_tag(self, key: str) -> None:
        """Remove tag `key` if the run has it."""
        if key in self._call(self.mlflow.get_run, self.run_id).data.tags:
            self._call(self.mlflow.delete_tag, self.run_id, key)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call(self.mlflow.log_artifact, self.run_id, str(path), artifact_path)

    def set_status(self, status: str) -> None:
        if status in (FINISHED, FAILED, KILLED):
            self._call(self.mlflow.set_terminated, self.run_id, status)
        else:
            self._call(self.mlflow.update_run, self.run_id, status=status)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # the job's log (train.log)


# ------------------------------------------------------------------------------------------ reading
def _filter(tags: dict[str, str]) -> str:
    # Backticks: tag keys such as in_sweep.<name> hold dots.
    return " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())


def find_runs(mlflow: MlflowClient, experiment: str, **tags: str) -> list:
    """Runs of `experiment` whose tags equal `tags` (e.g. run_identity=...), newest first; reading
    creates nothing (no experiment, no run)."""
    found = with_retry(mlflow.get_experiment_by_name, experiment)
    if found is None:
        return []
    runs, token = [], None
    while True:
        page = with_retry(
            mlflow.search_runs,
            [found.experiment_id],
            filter_string=_filter(tags),
            order_by=["attributes.start_time DESC"],
            max_results=1000,
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def find_run(cfg: Config) -> object | None:
    """The newest run with this config's identity, whichever sweep made it; None when there is none."""
    runs = find_runs(client(cfg.logging.mlflow_uri), cfg.logging.experiment, run_identity=run_identity(cfg))
    return runs[0] if runs else None


@dataclass
class SweepRuns:
    """A sweep as the store holds it: its runs, the keys its grid varies, its parent run."""

    runs: pd.DataFrame
    swept_keys: list[str]
    parent_run_id: str | None


def cast_value(text: object) -> object:
    """An MLflow param/tag string -> int, float, bool or None where it reads as one, else unchanged."""
    if not isinstance(text, str):
        return text
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def runs_frame(runs: Sequence) -> pd.DataFrame:
    """One row per run: `run_id`, `run_name`, `status`, `start_time`, `end_time` (UTC), the tags of
    RUN_TAGS as plain columns (`seed` an integer), and `tags.*`, `params.*` (cast), `metrics.*`."""
    rows = []
    for run in runs:
        row = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
            "end_time": pd.to_datetime(run.info.end_time, unit="ms", utc=True),
        }
        row |= {key: run.data.tags.get(key) for key in RUN_TAGS}
        row |= {f"tags.{k}": v for k, v in run.data.tags.items()}
        row |= {f"params.{k}": cast_value(v) for k, v in run.data.params.items()}
        row |= {f"metrics.{k}": float(v) for k, v in run.data.metrics.items()}
        rows.append(row)
    columns = ["run_id", "run_name", "status", "start_time", "end_time", *RUN_TAGS]
    frame = pd.DataFrame(rows, columns=None if rows else columns)
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    for column in [c for c in frame.columns if c.startswith("params.")]:
        frame[column] = frame[column].astype(object)
    return frame


def load_sweep(sweep: str, experiment: str = "ifrvis", uri: str = "") -> SweepRuns:
    """The runs that are members of `sweep` (its parent run apart), the keys its grid varies (the
    parent's `swept_keys`, else those its runs carry) as plain columns from their params, and the
    parent's id; `run_dir` as a full path. A store, experiment or sweep that does not exist gives an
    empty frame."""
    runs = find_runs(client(uri), experiment, **{member_tag(sweep): "1"}) if store_exists(uri) else []
    parents = [run for run in runs if run.data.tags.get(PARENT_TAG) == "1"]
    children = [run for run in runs if run.data.tags.get(PARENT_TAG) != "1"]
    frame = runs_frame(children)
    base = store_folder(uri)
    frame["run_dir"] = [None if d is None else str(base / d) for d in frame["run_dir"]]
    if parents:
        swept_keys = _split_keys(parents[0].data.tags.get("swept_keys"))
    else:
        swept_keys = sorted({key for run in children for key in _split_keys(run.data.tags.get("swept_keys"))})
    for key in swept_keys:
        frame[key] = frame[f"params.{key}"] if f"params.{key}" in frame else pd.Series(dtype=object)
    return SweepRuns(frame, swept_keys, parents[0].info.run_id if parents else None)
