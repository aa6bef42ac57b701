"""The run store (ifrvis.runstore) on real SQLite stores: concurrency, the tag schema and run names,
sweep membership, and the read side."""

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import ROOT, TINY_CONFIG
from mlflow.exceptions import MlflowException, RestException

from ifrvis import runstore
from ifrvis.config import load_config

N_RUNS, N_STEPS = 8, 10


def _log_one_run(uri: str, index: int) -> str:
    mlflow = runstore.client(uri)  # every process initialises the fresh store itself: the race
    experiment = runstore.experiment_id(mlflow, "concurrency")
    run = runstore.with_retry(mlflow.create_run, experiment, tags={"run_identity": f"id{index}"})
    logger = runstore.RunLogger(uri, run.info.run_id)
    logger.log_params({"index": index, "model.decoder": "ifr"})
    for step in range(N_STEPS):
        logger.log_metrics({"train/loss": index + step / 100}, step=step)
    logger.set_tags({"seed": index})
    logger.log_metrics({"AP": index / 10})
    logger.set_status("FINISHED")
    return run.info.run_id


def test_resolve_uri_prefers_argument_then_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert runstore.resolve_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert runstore.resolve_uri() == "sqlite:////elsewhere.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert runstore.resolve_uri() == f"sqlite:///{runstore.PROJECT_ROOT / 'mlflow.db'}"


def test_eight_concurrent_runs_on_a_fresh_sqlite_store_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mp.get_context("spawn").Pool(N_RUNS) as pool:
        run_ids = pool.starmap(_log_one_run, [(uri, i) for i in range(N_RUNS)])
    mlflow = runstore.client(uri)
    assert len(set(run_ids)) == N_RUNS
    runs = runstore.find_runs(mlflow, "concurrency")
    assert len(runs) == N_RUNS
    for run in runs:
        index = int(run.data.params["index"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["seed"] == str(index) and run.data.tags["run_identity"] == f"id{index}"
        assert run.data.metrics["AP"] == index / 10
        history = mlflow.get_metric_history(run.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == list(range(N_STEPS))


def test_find_runs_filters_by_tags(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = runstore.client(uri)
    experiment = runstore.experiment_id(mlflow, "tags")
    for sweep, seed in [("a", 0), ("a", 1), ("b", 0)]:
        mlflow.create_run(experiment, tags={"sweep": sweep, "seed": str(seed)})
    assert len(runstore.find_runs(mlflow, "tags", sweep="a")) == 2
    assert len(runstore.find_runs(mlflow, "tags", sweep="b", seed="0")) == 1
    assert runstore.find_runs(mlflow, "tags", sweep="c") == []


def test_experiment_kind_tag_on_new_and_existing_experiments(tmp_path):
    mlflow = runstore.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    kind = "mlflow.experimentKind"
    made_elsewhere = mlflow.create_experiment("from-the-ui")
    genai = mlflow.create_experiment("genai", tags={kind: "genai_development"})
    assert runstore.experiment_id(mlflow, "from-the-ui") == made_elsewhere
    assert runstore.experiment_id(mlflow, "genai") == genai
    new = runstore.experiment_id(mlflow, "new")
    tags = {e: mlflow.get_experiment(e).tags.get(kind) for e in (made_elsewhere, genai, new)}
    assert tags == {
        made_elsewhere: "custom_model_development",
        genai: "genai_development",
        new: "custom_model_development",
    }


@pytest.fixture
def tiny_cfg(tmp_path):
    return load_config(
        None,
        [
            "name=tiny",
            f"logging.mlflow_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"logging.output_dir={tmp_path / 'outputs'}",
            "logging.sweep=abl",
            "loss.lambda_e=0.5",
            "seed=1",
        ],
    )


def test_a_sweep_run_is_named_and_tagged_by_its_swept_values(tiny_cfg):
    parent = runstore.parent_run(tiny_cfg, "abl", ["loss.lambda_e"])
    tiny_cfg.logging.parent_run_id = parent
    run_id = runstore.create_run(tiny_cfg)  # the swept keys come from the parent run
    run = runstore.client(tiny_cfg.logging.mlflow_uri).get_run(run_id)
    assert run.info.run_name == "tiny loss.lambda_e=0.5 s1"
    assert run.info.status == "SCHEDULED"  # created by a plan, no job has started it
    tags = run.data.tags
    assert tags["swept_keys"] == "loss.lambda_e" and tags["swept.loss.lambda_e"] == "0.5"
    assert tags["in_sweep.abl"] == "1" and tags["mlflow.parentRunId"] == parent and tags["config"] == "tiny"
    assert "lambda_e" not in tags  # no key of one ablation in the generic schema
    assert set(runstore.RUN_TAGS) <= set(tags)
    assert run.data.params["loss.lambda_e"] == "0.5"


def test_load_sweep_reads_members_and_swept_keys_without_touching_global_state(tiny_cfg, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tiny_cfg.logging.mlflow_uri
    parent = runstore.parent_run(tiny_cfg, "abl", ["loss.lambda_e"])
    tiny_cfg.logging.parent_run_id = parent
    shared = runstore.create_run(tiny_cfg)
    other = load_config(
        None, [f"logging.mlflow_uri={uri}", "logging.sweep=table1", "seed=1", "loss.lambda_e=0.5"]
    )
    runstore.parent_run(other, "table1", [])
    runstore.join_sweep(other, shared)  # the same computation, asked for by a second sweep
    runstore.RunLogger(uri, shared).log_metrics({"AP": 0.25})
    global_uri = mlflow.get_tracking_uri()

    found = runstore.load_sweep("abl", uri=uri)
    assert mlflow.get_tracking_uri() == global_uri  # readers never set MLflow's process-global URI
    assert found.parent_run_id == parent and found.swept_keys == ["loss.lambda_e"]
    assert list(found.runs["run_id"]) == [shared] and found.runs["loss.lambda_e"].tolist() == [0.5]
    assert found.runs["metrics.AP"].tolist() == [0.25] and found.runs["seed"].tolist() == [1]
    table1 = runstore.load_sweep("table1", uri=uri)
    assert list(table1.runs["run_id"]) == [shared] and table1.swept_keys == []
    assert runstore.load_sweep("none", uri=uri).runs.empty
    missing = tiny_cfg.logging.output_dir + "/absent.db"
    assert runstore.load_sweep("abl", uri=f"sqlite:///{missing}").runs.empty  # reading creates no store
    assert not Path(missing).exists()


@pytest.fixture
def read_only_store(tmp_path):
    """A store with one finished run, seen through a read-only bind mount of its folder (root only)."""
    source, mounted = tmp_path / "store", tmp_path / "read_only"
    source.mkdir()
    mounted.mkdir()
    run_id = _log_one_run(f"sqlite:///{source / 'mlflow.db'}", 0)
    mount = subprocess.run(["mount", "--bind", str(source), str(mounted)], capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"a read-only mount needs root: {mount.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mounted)], check=True, capture_output=True)
        yield f"sqlite:///{mounted / 'mlflow.db'}", run_id
    finally:
        subprocess.run(["umount", "--lazy", str(mounted)], check=True)  # the client holds the file open


def test_a_read_only_store_is_read_and_refuses_runs_in_one_line(read_only_store):
    """Reading needs no lock file; a sweep on it stops at its preflight, in one line, exit status 2."""
    uri, run_id = read_only_store
    runs = runstore.find_runs(runstore.client(uri), "concurrency")
    assert [run.info.run_id for run in runs] == [run_id]
    with pytest.raises(runstore.ReadOnlyStore, match="cannot be written here"):
        runstore.check_writable(uri)
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "run_seeds.py"), str(TINY_CONFIG), "--seeds", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"run_seeds.py: error: MLflow store {uri.removeprefix('sqlite:///')} cannot be written here "
        f"({uri.removeprefix('sqlite:///')} is read-only): tables and the UI can read it; runs need a "
        "writable store (copy it, or set MLFLOW_TRACKING_URI)"
    ]


def test_a_servers_answer_quoting_its_databases_refused_connection_is_an_outage_not_a_refused_connection():
    """With PostgreSQL down the tracking server answers 503 TEMPORARILY_UNAVAILABLE, its message quoting
    psycopg's 'Connection refused' (body as MLflow 3.17 sends it). Read as this client's own refused
    connection, it was retried silently and then reported as a server that does not answer."""
    answer = RestException(
        {
            "error_code": "TEMPORARILY_UNAVAILABLE",
            "message": '(psycopg.OperationalError) connection failed: connection to server at "127.0.0.1", '
            "port 5433 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP"
            " connections?",
        }
    )
    refused = MlflowException(
        "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/get failed with exception "
        "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url: "
        "/api/2.0/mlflow/runs/get (Caused by NewConnectionError('<urllib3.connection.HTTPConnection object "
        "at 0x7f>: Failed to establish a new connection: [Errno 111] Connection refused'))"
    )
    assert runstore.http_status(answer) == 503 and not runstore._is_transient(answer)
    assert runstore.http_status(refused) is None and runstore._is_transient(refused)

    def failing(error):
        calls = []

        def call():
            calls.append(1)
            raise error

        with pytest.raises(MlflowException):
            runstore.with_retry(call, attempts=2)
        return len(calls)

    assert failing(answer) == 1 and failing(refused) == 2  # the answer is not retried as a refusal

    logger = runstore.RunLogger("http://127.0.0.1:5000", "run")
    assert logger._is_outage(answer) and logger._is_outage(refused)
    assert logger._outage(answer) == (
        "the tracking server's database is unavailable (http://127.0.0.1:5000 answers HTTP 503)"
    )
    assert (
        logger._outage(refused)
        == "tracking server http://127.0.0.1:5000 does not answer (connection refused)"
    )
