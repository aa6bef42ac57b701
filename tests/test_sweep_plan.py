"""Sweep planning against a real MLflow store: identities, grids, the parent run, states, no duplicate
runs, runs shared by identity, the store resolved once, a failed submission undone."""

import os
import socket

import pytest
import torch
from conftest import write_run_config

from ifrvis import run_folder, runstore
from ifrvis.config import run_identity
from ifrvis.errors import UserError
from ifrvis.launch.sweep import (
    DONE,
    FAILED,
    PENDING,
    RESUME,
    _settle,
    check_resume_shape,
    closing_lines,
    expand,
    plan,
    run_sweep,
    summary_table,
    to_launch,
)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"name: tiny\nlogging:\n  mlflow_uri: sqlite:///{tmp_path / 'mlflow.db'}\n"
        f"  output_dir: {tmp_path / 'outputs'}\n  experiment: plan-test\n"
    )
    return path


def test_expand_crosses_the_grid_with_the_seeds(config_file):
    sweep = expand(
        [config_file], range(3), "s", grid={"loss.lambda_e": [0.0, 0.3], "model.num_queries": [8, 16]}
    )
    assert len(sweep.cfgs) == 12 and len({run_identity(c) for c in sweep.cfgs}) == 12
    assert sweep.swept_keys == ["loss.lambda_e", "model.num_queries"]
    assert {c.logging.sweep for c in sweep.cfgs} == {"s"}
    with pytest.raises(UserError, match="twice"):
        expand([config_file, config_file], range(1), "s")
    with pytest.raises(UserError, match="sweep name"):
        expand([config_file], range(1), "a b")


def test_the_store_is_resolved_once_into_every_config(tmp_path, monkeypatch):
    config = tmp_path / "plain.yaml"
    config.write_text("name: plain\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    sweep = expand([config], range(2), "s")
    assert {c.logging.mlflow_uri for c in sweep.cfgs} == {f"sqlite:///{tmp_path / 'env.db'}"}


def test_renaming_a_config_or_its_dataset_label_keeps_its_runs(config_file, tmp_path):
    first = plan(expand([config_file], range(2), "s"))
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(config_file.read_text().replace("name: tiny", "name: tiny_v2\ndataset: relabelled"))
    again = plan(expand([renamed], range(2), "s"))
    assert [s.run_id for s in again] == [s.run_id for s in first]


def test_plan_creates_each_run_once_and_classifies_states(config_file):
    sweep = expand([config_file], range(4), "s", grid={"loss.lambda_e": [0.5]})
    first = plan(sweep)
    assert [s.state for s in first] == [PENDING] * 4 and all(s.run_id and s.created for s in first)
    mlflow = runstore.client(sweep.cfgs[0].logging.mlflow_uri)
    parent = runstore.find_runs(mlflow, "plan-test", sweep="s", sweep_parent="1")
    assert len(parent) == 1 and parent[0].data.tags["swept_keys"] == "loss.lambda_e"
    children = [mlflow.get_run(s.run_id) for s in first]
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in children)
    assert [r.info.run_name for r in children] == [f"tiny loss.lambda_e=0.5 s{seed}" for seed in range(4)]
    assert {r.info.status for r in children} == {"SCHEDULED"}

    # seed 0 finished, seed 1 failed, seed 2 interrupted with a checkpoint, seed 3 never started
    mlflow.log_metric(first[0].run_id, "AP", 0.5)
    mlflow.log_metric(first[0].run_id, "run_time_s", 35.0)
    mlflow.log_metric(first[0].run_id, "queue_time_s", 35 * 60.0)
    mlflow.set_terminated(first[0].run_id, "FINISHED")
    mlflow.set_terminated(first[1].run_id, "FAILED")
    mlflow.set_tag(first[1].run_id, "error", "NonFiniteLossError: loss term 'loss_dice' is nan")
    mlflow.update_run(first[2].run_id, status="RUNNING")
    run_folder.checkpoint_path(first[2].cfg).parent.mkdir(parents=True)
    run_folder.checkpoint_path(first[2].cfg).write_bytes(b"x")

    again = plan(sweep)
    assert [s.state for s in again] == [DONE, FAILED, RESUME, PENDING]
    assert [s.run_id for s in again] == [s.run_id for s in first]  # never two runs for one identity
    assert not any(s.created for s in again)
    assert again[0].metrics["AP"] == 0.5 and "loss_dice" in again[1].error
    assert [s.cfg.seed for s in to_launch(again)] == [2, 3]
    assert len(runstore.find_runs(mlflow, "plan-test", sweep="s")) == 5  # 4 runs + the parent

    retried = plan(sweep, retry_failed=True)
    assert [s.state for s in retried] == [DONE, PENDING, RESUME, PENDING]
    assert retried[1].run_id == first[1].run_id
    table = summary_table(again)
    assert "| tiny loss.lambda_e=0.5 s0 |" in table and again[2].identity in table
    assert (
        "| done | " in table and "| 50.0 | 00:00:35 | 00:35:00 |" in table
    )  # run time apart from queue time


def test_a_finished_run_joins_every_sweep_that_asks_for_it(config_file):
    table1 = plan(expand([config_file], range(2), "table1"))
    mlflow = runstore.client(table1[0].cfg.logging.mlflow_uri)
    mlflow.set_terminated(table1[0].run_id, "FINISHED")
    ablation = plan(expand([config_file], range(2), "ablation", grid={"loss.lambda_e": [0.3, 1.0]}))
    assert ablation[0].run_id == table1[0].run_id and ablation[0].state == DONE  # λ_e = 0.3 is the default
    assert ablation[1].run_id == table1[1].run_id and ablation[1].state == PENDING
    found = runstore.load_sweep("ablation", "plan-test", table1[0].cfg.logging.mlflow_uri)
    assert len(found.runs) == 4 and found.swept_keys == ["loss.lambda_e"]
    assert sorted(found.runs["loss.lambda_e"]) == [0.3, 0.3, 1.0, 1.0]


def test_dry_run_creates_nothing(config_file):
    sweep = expand([config_file], range(2), "dry")
    specs = plan(sweep, create=False)
    assert [s.state for s in specs] == [PENDING, PENDING] and not any(s.run_id for s in specs)
    assert not (config_file.parent / "mlflow.db").exists()
    mlflow = runstore.client(sweep.cfgs[0].logging.mlflow_uri)
    assert runstore.find_runs(mlflow, "plan-test") == []


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_sweep_that_cannot_be_submitted_leaves_no_run_behind(tmp_path, tiny_data):
    """Ray not reachable: the runs the plan created go, the parent is FAILED with the reason, and the
    next attempt plans the same runs afresh."""
    sweep = expand([write_run_config(tmp_path, tiny_data)], range(2), "unsubmitted")
    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(UserError, match=f"Ray: no cluster answers at {address}"):
        run_sweep(sweep, executor="ray", ray={"address": address})
    mlflow = runstore.client(sweep.cfgs[0].logging.mlflow_uri)
    left = runstore.find_runs(mlflow, "ifrvis", sweep="unsubmitted")
    assert [r.data.tags.get("sweep_parent") for r in left] == ["1"]
    assert left[0].info.status == "FAILED" and "submission failed: Ray" in left[0].data.tags["error"]
    assert [s.state for s in plan(sweep)] == [PENDING, PENDING]


def test_zero_seeds_or_parallel_runs_is_a_one_line_mistake(tmp_path, capsys):
    """`run_seeds.py CONFIG --seeds 0` once ended in an IndexError traceback; argparse now refuses it
    before any run, store or file exists, in one line (not after its 14 lines of usage)."""
    from ifrvis.cli import ArgumentParser
    from ifrvis.launch.arguments import add_sweep_arguments

    parser = ArgumentParser(prog="run_seeds.py")
    add_sweep_arguments(parser)
    for flags in (["--seeds", "0"], ["--max-parallel", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(flags)
        assert exit_info.value.code == 2
        (error,) = capsys.readouterr().err.strip().splitlines()
        assert error.startswith("run_seeds.py: error: argument") and "must be at least 1" in error
        assert error.endswith("(run_seeds.py --help: usage)")
    assert parser.parse_args(["--seeds", "8"]).seeds == 8
    assert list(tmp_path.iterdir()) == []


def test_repeated_set_flags_add_up():
    """`--set data.root=X dataset=Y --set solver.max_iters=N` (make's CROSSING beside a budget) keeps all
    three overrides: a second --set once replaced the first, and a crossing sweep ran on the default data."""
    import argparse

    from ifrvis.launch.arguments import add_sweep_arguments

    parser = argparse.ArgumentParser(prog="run_seeds.py")
    add_sweep_arguments(parser)
    args = parser.parse_args(["--set", "data.root=X", "dataset=Y", "--set", "solver.max_iters=5"])
    assert args.overrides == ["data.root=X", "dataset=Y", "solver.max_iters=5"]
    assert parser.parse_args([]).overrides == []


def test_a_resume_on_another_number_of_ranks_is_refused_before_anything_is_created(tmp_path, tiny_data):
    """A checkpoint saved by one rank (its sampler's per-rank positions) cannot resume on two: the
    sweep says so, naming both shapes, before it creates a run or submits a job; a bad profile too."""
    sweep = expand([write_run_config(tmp_path, tiny_data)], range(1), "reshaped")
    checkpoint = run_folder.checkpoint_path(sweep.cfgs[0])
    checkpoint.parent.mkdir(parents=True)
    state = {key: {} for key in ("model", "optimizer", "scheduler", "scaler")}
    state |= {"iteration": 2, "sampler": [{"position": 4, "world_size": 1}], "rng": [{}]}
    torch.save(state | {"mlflow_run_id": None, "train_time_s": 1.0}, checkpoint)
    slurm = {"profile": "local", "overrides": {"tasks_per_node": 2}}
    with pytest.raises(UserError, match=r"was saved by 1 rank\(s\) and this launch runs it on 2 \(nodes x"):
        run_sweep(sweep, executor="slurm", slurm=slurm)
    with pytest.raises(UserError, match="Slurm profile 'nowhere': no file"):
        run_sweep(sweep, executor="slurm", slurm={"profile": "nowhere"})
    assert not runstore.store_exists(sweep.cfgs[0].logging.mlflow_uri) or not runstore.find_runs(
        runstore.client(sweep.cfgs[0].logging.mlflow_uri), "ifrvis", sweep="reshaped"
    )
    check_resume_shape(sweep.cfgs[0], 1)  # the same shape resumes
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # cut short: named before any submission
    with pytest.raises(UserError, match=f"{checkpoint}: not a run checkpoint this run can resume from"):
        run_sweep(sweep, executor="slurm", slurm=slurm)


def test_a_cluster_shape_with_more_tasks_than_gpus_is_one_line_before_anything_exists(tmp_path, tiny_data):
    """Ranks 4-7 of `--gpus-per-node 4` with the paper profile's 8 tasks once died in the job on an
    invalid device ordinal; the launcher now refuses the shape, exit 2, no store or run made."""
    import subprocess
    import sys

    from conftest import ROOT

    store = tmp_path / "mlflow.db"
    config = write_run_config(tmp_path, tiny_data)
    shape = ["--executor=slurm", "--slurm-profile=paper", "--gpus-per-node=4", "--tasks-per-node=8"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "run_seeds.py"), str(config), *shape],
        capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"},
    )  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "tasks_per_node = 8 with gpus_per_node = 4: a run has one task per GPU" in done.stderr
    assert not store.exists()


def test_a_stopped_run_is_resumed_by_the_next_sweep_and_the_summary_says_so(tmp_path, tiny_data):
    """After `scancel` the job errs but its run is KILLED with a checkpoint: the next plain re-run
    resumes it, and the closing line says that, not '--retry-failed'; a run whose job crashed is FAILED."""
    sweep = expand([write_run_config(tmp_path, tiny_data)], range(2), "cancelled")
    stopped, crashed = plan(sweep)
    runstore.RunLogger(stopped.cfg.logging.mlflow_uri, stopped.run_id).set_status(runstore.KILLED)
    checkpoint = run_folder.checkpoint_path(stopped.cfg)
    checkpoint.parent.mkdir(parents=True)
    torch.save({"iteration": 2, "sampler": [{}]}, checkpoint)
    _settle(stopped, "job 118 was cancelled (CANCELLED)")
    _settle(crashed, "job 119 ended with status 1")
    assert stopped.state == RESUME and stopped.error.startswith("stopped: job 118")
    assert crashed.state == FAILED and runstore.find_run(crashed.cfg).info.status == runstore.FAILED
    assert closing_lines([stopped, crashed]) == [
        "1 run(s) stopped before finishing (scancel, preemption): re-running the sweep resumes them, from"
        " their checkpoints where they have one",
        "1 run(s) failed; fix and re-run with --retry-failed",
    ]
    assert [s.state for s in plan(sweep)] == [RESUME, FAILED]


def test_a_sweep_on_real_data_goes_to_the_paper_profile_unless_told_otherwise():
    """Without --slurm-profile, synthetic runs go to the test cluster's profile and any real-data run
    takes the paper's 8-GPU nodes (it once got the test cluster's 2 GB CPU task)."""
    from conftest import ROOT, TINY_CONFIG

    from ifrvis.config import load_config
    from ifrvis.launch.arguments import default_slurm_profile

    tiny = load_config(TINY_CONFIG)
    crossing = load_config(TINY_CONFIG, ["dataset=synthetic-crossing"])
    real = load_config(ROOT / "experiments/configs/ytvis19_r50.yaml")
    assert default_slurm_profile([tiny, crossing]) == "local"
    assert default_slurm_profile([tiny, real]) == "paper"


def test_a_ray_trial_asks_for_no_more_cpus_than_one_node_has():
    """Three nodes of 8 CPUs, one trial left to run: its share would be all 24 CPUs, which no node holds
    (Ray would wait for it forever, saying nothing); it gets a node's 8."""
    from ifrvis.launch.executors import trial_cpus

    assert trial_cpus([8, 8, 8], max_parallel=1) == 8
    assert trial_cpus([8, 8, 8], max_parallel=4) == 6
    assert trial_cpus([2], max_parallel=8) == 1  # never 0


def test_a_ray_run_takes_at_most_one_gpu():
    import argparse

    from ifrvis.launch.arguments import gpu_share

    assert gpu_share("0.5") == 0.5 and gpu_share("1") == 1.0
    for text, words in (("2", "a trial trains on one device"), ("-1", "0 to 1"), ("x", "is not a number")):
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            gpu_share(text)


def test_flags_of_another_executor_are_a_mistake():
    """`--executor local --partition gpu` once ran here with the partition silently ignored."""
    import argparse

    from ifrvis.launch.arguments import add_sweep_arguments, check_executor_flags

    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    for flags, words in (
        (["--executor", "local", "--partition", "gpu"], "--partition: flags of --executor slurm"),
        (["--executor", "ray", "--slurm-profile", "paper"], "--slurm-profile: flags of --executor slurm"),
        (["--executor", "slurm", "--gpus-per-run", "1"], "--gpus-per-run: flags of --executor ray"),
    ):
        with pytest.raises(UserError, match=words):
            check_executor_flags(parser.parse_args(flags))
    check_executor_flags(parser.parse_args(["--executor", "slurm", "--partition", "gpu", "--nodes", "2"]))
