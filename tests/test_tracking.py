"""MLflow under concurrency: a fresh SQLite store, several processes logging at once, nothing lost."""

import multiprocessing as mp

from ifrvis import tracking

N_RUNS, N_STEPS = 8, 25


def _log_one_run(uri: str, index: int) -> str:
    mlflow = tracking.client(uri)  # every process initialises the fresh store itself: the race
    experiment = tracking.experiment_id(mlflow, "concurrency")
    run = tracking.with_retry(mlflow.create_run, experiment, tags={"run_identity": f"id{index}"})
    logger = tracking.RunLogger(uri, run.info.run_id)
    logger.log_params({"index": index, "model.decoder": "ifr"})
    for step in range(N_STEPS):
        logger.log_metrics({"train/loss": index + step / 100}, step=step)
    logger.set_tags({"seed": index})
    logger.log_metrics({"AP": index / 10})
    logger.set_status("FINISHED")
    return run.info.run_id


def test_resolve_uri_prefers_argument_then_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert tracking.resolve_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert tracking.resolve_uri() == "sqlite:////elsewhere.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.resolve_uri() == f"sqlite:///{tracking.PROJECT_ROOT / 'mlflow.db'}"


def test_eight_concurrent_runs_on_a_fresh_sqlite_store_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mp.get_context("spawn").Pool(N_RUNS) as pool:
        run_ids = pool.starmap(_log_one_run, [(uri, i) for i in range(N_RUNS)])
    mlflow = tracking.client(uri)
    assert len(set(run_ids)) == N_RUNS
    runs = tracking.find_runs(mlflow, "concurrency")
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
    mlflow = tracking.client(uri)
    experiment = tracking.experiment_id(mlflow, "tags")
    for sweep, seed in [("a", 0), ("a", 1), ("b", 0)]:
        mlflow.create_run(experiment, tags={"sweep": sweep, "seed": str(seed)})
    assert len(tracking.find_runs(mlflow, "tags", sweep="a")) == 2
    assert len(tracking.find_runs(mlflow, "tags", sweep="b", seed="0")) == 1
    assert tracking.find_runs(mlflow, "tags", sweep="c") == []
