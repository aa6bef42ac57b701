"""The submitit Slurm launch path on the local single-node cluster (slurm/start_cluster.sh).

Skipped only where `sbatch` is not on PATH or `sinfo` does not answer. Every wait has a timeout so that
a broken cluster fails the tests instead of hanging them. Checkpoint and requeue are tested with the
real trainer in test_sweeps.py (USR2, and `scontrol requeue`'s SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import submitit

from ifrvis.launch.arguments import add_sweep_arguments, slurm_overrides
from ifrvis.launch.slurm_profile import load_slurm_profile, ranks_per_run, read_slurm_profile, slurm_executor

TESTS_DIR = Path(__file__).resolve().parent


def _sinfo_answers() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_skip_without_sbatch = pytest.mark.skipif(
    shutil.which("sbatch") is None, reason="no Slurm: sbatch is not on PATH"
)
_skip_without_sinfo = pytest.mark.skipif(
    shutil.which("sbatch") is not None and not _sinfo_answers(),
    reason="Slurm does not answer (`sinfo` failed): run `bash slurm/start_cluster.sh` as root",
)


def needs_slurm(test):
    """Marks a test that submits jobs to the local cluster."""
    return pytest.mark.slurm(_skip_without_sbatch(_skip_without_sinfo(test)))


# ---- functions run as Slurm jobs (imported by the job through PYTHONPATH, see `executor`) ----


def add(a: int, b: int) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def sleep_then_return(marker: str, seconds: float) -> str:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "not cancelled"


# ---- helpers ----


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.5)


def finished(job: submitit.Job, timeout_s: float = 90) -> submitit.Job:
    """Waits (polling sacct) until submitit sees `job` finished, whatever its end."""
    wait_until(lambda: job.done(force_check=True), timeout_s, f"Slurm job {job.job_id} to finish")
    return job


def job_log_tail(job: submitit.Job) -> str:
    return f"stdout:\n{job.stdout() or ''}\nstderr:\n{(job.stderr() or '')[-3000:]}"


@pytest.fixture
def executor(tmp_path, monkeypatch):
    """An AutoExecutor on Slurm with the local profile. The job folder is a pytest tmp dir: local disk
    is shared with the only node here (on a real cluster it must be on a shared file system)."""
    # sbatch exports the submitting environment: the jobs import this module as `test_slurm_cluster`
    # (tests/ on the path) or as `tests.test_slurm_cluster` (repository root on the path).
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(filter(None, [str(TESTS_DIR), str(TESTS_DIR.parent), os.environ.get("PYTHONPATH")])),
    )
    ex = slurm_executor(tmp_path / "jobs", "local", {"time_min": 5})
    ex.update_parameters(name="ifrvis-test")
    return ex


# ---- tests ----


def test_local_profile_gives_slurm_parameters():
    parameters = load_slurm_profile("local")
    assert parameters["slurm_partition"] == "debug"
    assert parameters["cpus_per_task"] == 1
    assert "gpus_per_node" not in parameters  # no GPU request on a cluster without GPUs
    assert "slurm_account" not in parameters  # null: not passed


@_skip_without_sbatch  # submitit's SlurmExecutor refuses to exist without sbatch
def test_paper_profile_reaches_the_sbatch_file():
    ex = slurm_executor("unused", "paper", {"account": "vision", "partition": "v100"})
    sbatch = ex._executor._make_submission_file_text("true", "uid")
    for line in ("--gpus-per-node=8", "--ntasks-per-node=8", "--partition=v100", "--account=vision"):
        assert f"#SBATCH {line}" in sbatch
    assert ex._executor.max_num_timeout == 10


@_skip_without_sbatch
def test_a_profiles_signal_delay_setup_and_other_options_reach_the_sbatch_file(tmp_path):
    """What a production cluster needs beyond the shape: a longer warning before the time limit for a
    large checkpoint, the lines that prepare the task's environment, any other sbatch option."""
    profile = tmp_path / "site.yaml"
    profile.write_text(
        "partition: gpu\ntime_min: 2880\ncpus_per_task: 8\nmem_gb: 64\nsignal_delay_s: 300\n"
        "setup: [module load cuda/12.4, source /shared/venv/bin/activate]\n"
        "additional_parameters: {requeue: true, exclude: node07}\n"
    )
    sbatch = slurm_executor("unused", profile)._executor._make_submission_file_text("true", "uid")
    for line in ("#SBATCH --signal=USR2@300", "#SBATCH --requeue", "#SBATCH --exclude=node07"):
        assert line in sbatch
    assert "module load cuda/12.4\nsource /shared/venv/bin/activate\n" in sbatch
    with pytest.raises(TypeError, match="setup must be a list of shell lines"):
        load_slurm_profile(profile, {"setup": [1]})
    with pytest.raises(TypeError, match="setup must be list"):
        load_slurm_profile(profile, {"setup": "module load cuda"})


def test_profile_errors_name_the_file_and_key(tmp_path):
    with pytest.raises(KeyError, match="overrides of .*local.yaml.*partiton"):
        load_slurm_profile("local", {"partiton": "gpu"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: debug\ntime_min: 10\ncpus_per_task: 1\nmem_gb: 1\ngpus: 1\n")
    with pytest.raises(KeyError, match=r"bad.yaml.*\bgpus\b"):
        load_slurm_profile(bad)
    with pytest.raises(TypeError, match="local.yaml: time_min must be int"):
        load_slurm_profile("local", {"time_min": "10"})
    with pytest.raises(ValueError, match="cpus_per_task must be at least 1"):
        load_slurm_profile("local", {"cpus_per_task": 0})
    with pytest.raises(FileNotFoundError, match="known profiles: .*local"):
        load_slurm_profile("no_such_profile")
    bad.write_text("partition: debug\n")
    with pytest.raises(KeyError, match="missing key"):
        load_slurm_profile(bad)


@pytest.mark.parametrize(
    "flags, ranks",
    [
        ([], 8),  # the paper's node of 8 GPUs
        (["--gpus-per-node", "4", "--nodes", "2"], 8),  # 2 nodes x 4 GPUs: one task per GPU
        (["--gpus-per-node", "2", "--nodes", "4", "--cpus-per-task", "4", "--mem", "96"], 8),
        (["--gpus-per-node", "1"], 1),
    ],
)
def test_any_cluster_shape_from_the_command_line(flags, ranks):
    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    overrides = slurm_overrides(parser.parse_args(["--slurm-profile", "paper", *flags]))
    profile = read_slurm_profile("paper", overrides)
    assert profile["tasks_per_node"] == profile["gpus_per_node"]
    assert ranks_per_run("paper", overrides) == ranks


def test_a_profile_with_a_task_count_other_than_its_gpus_is_refused():
    with pytest.raises(
        ValueError, match="tasks_per_node = 8 with gpus_per_node = 4: a run has one task per GPU"
    ):
        read_slurm_profile("paper", {"gpus_per_node": 4, "tasks_per_node": 8})
    assert read_slurm_profile("local", {"tasks_per_node": 2})["tasks_per_node"] == 2  # CPUs: gloo ranks


@needs_slurm
def test_submit_returns_the_function_result(executor):
    job = executor.submit(add, 2, 40)
    finished(job)
    assert job.result() == 42, job_log_tail(job)


@needs_slurm
def test_map_array_runs_one_task_per_argument(executor):
    jobs = executor.map_array(square, [3, 4])
    assert len(jobs) == 2
    assert jobs[0].job_id.split("_")[0] == jobs[1].job_id.split("_")[0]  # one Slurm array
    for job in jobs:
        finished(job)
    assert [job.result() for job in jobs] == [9, 16]


@needs_slurm
def test_cancelled_job_is_seen_finished(executor, tmp_path):
    marker = tmp_path / "started"
    job = executor.submit(sleep_then_return, str(marker), 300)
    wait_until(marker.exists, 60, "the job to start")
    job.cancel()
    # Seen through sacct (no result file will ever appear): without accounting this never returns.
    finished(job, timeout_s=30)
    assert job.state.startswith("CANCELLED"), job.state


@needs_slurm
def test_every_daemon_of_the_cluster_listens_on_loopback_only():
    """slurmctld and slurmd bind 127.0.0.1 (NoCtldInAddrAny, NoInAddrAny), MariaDB its bind-address, and
    slurmdbd, which has no such setting, through the bind preload (slurm/loopback_bind.c)."""
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    daemons = ("slurmctld", "slurmd", "slurmdbd", "mariadbd")
    addresses = {}
    for line in listening.splitlines():
        for daemon in daemons:
            if f'(("{daemon}"' in line:
                addresses.setdefault(daemon, set()).add(line.split()[3].rsplit(":", 1)[0])
    assert addresses == {daemon: {"127.0.0.1"} for daemon in daemons}
