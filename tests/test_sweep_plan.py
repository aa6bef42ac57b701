"""Sweep planning against a real MLflow store: identities, parent run, states, no duplicate runs."""

import pytest

from ifrvis import tracking
from ifrvis.engine import runs
from ifrvis.launch.sweep import DONE, FAILED, PENDING, RESUME, expand, plan, summary_table, to_launch


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"name: tiny\nlogging:\n  mlflow_uri: sqlite:///{tmp_path / 'mlflow.db'}\n"
        f"  output_dir: {tmp_path / 'outputs'}\n  experiment: plan-test\n"
    )
    return path


def test_expand_gives_one_identity_per_seed_and_grid_point(config_file):
    cfgs = expand([config_file], range(3), "s", grid=[["loss.lambda_e=0.0"], ["loss.lambda_e=0.3"]])
    assert len(cfgs) == 6 and len({runs.run_identity(c) for c in cfgs}) == 6
    assert {c.logging.sweep for c in cfgs} == {"s"}
    with pytest.raises(ValueError, match="twice"):
        expand([config_file, config_file], range(1), "s")


def test_plan_creates_each_run_once_and_classifies_states(config_file):
    cfgs = expand([config_file], range(4), "s")
    first = plan(cfgs, "s")
    assert [s.state for s in first] == [PENDING] * 4 and all(s.run_id for s in first)
    mlflow = tracking.client(cfgs[0].logging.mlflow_uri)
    parent = tracking.find_runs(mlflow, "plan-test", sweep="s", sweep_parent="1")
    assert len(parent) == 1
    assert all(
        mlflow.get_run(s.run_id).data.tags["mlflow.parentRunId"] == parent[0].info.run_id for s in first
    )

    # seed 0 finished, seed 1 failed, seed 2 interrupted with a checkpoint, seed 3 never started
    mlflow.log_metric(first[0].run_id, "AP", 0.5)
    mlflow.set_terminated(first[0].run_id, "FINISHED")
    mlflow.set_terminated(first[1].run_id, "FAILED")
    mlflow.set_tag(first[1].run_id, "error", "NonFiniteLossError: loss term 'loss_dice' is nan")
    mlflow.update_run(first[2].run_id, status="RUNNING")
    runs.checkpoint_path(first[2].cfg).parent.mkdir(parents=True)
    runs.checkpoint_path(first[2].cfg).write_bytes(b"x")

    again = plan(cfgs, "s")
    assert [s.state for s in again] == [DONE, FAILED, RESUME, PENDING]
    assert [s.run_id for s in again] == [s.run_id for s in first]  # never two runs for one identity
    assert again[0].result["AP"] == 0.5 and "loss_dice" in again[1].error
    assert [s.cfg.seed for s in to_launch(again)] == [2, 3]
    assert len(tracking.find_runs(mlflow, "plan-test", sweep="s")) == 5  # 4 runs + the parent

    retried = plan(cfgs, "s", retry_failed=True)
    assert [s.state for s in retried] == [DONE, PENDING, RESUME, PENDING]
    assert retried[1].run_id == first[1].run_id
    table = summary_table(again)
    assert "| done |" in table and "50.0" in table and again[2].identity in table


def test_dry_run_creates_nothing(config_file):
    cfgs = expand([config_file], range(2), "dry")
    specs = plan(cfgs, "dry", create=False)
    assert [s.state for s in specs] == [PENDING, PENDING] and not any(s.run_id for s in specs)
    assert not (config_file.parent / "mlflow.db").exists()
    mlflow = tracking.client(cfgs[0].logging.mlflow_uri)
    assert tracking.find_runs(mlflow, "plan-test") == []
