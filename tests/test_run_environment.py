"""A run logs the machine it computed on (`env.*` tags): per-seed values are bit-identical only for
the same CPU model, thread count and torch version."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from ifrvis.engine.train import environment_tags, launch_tags


def test_environment_tags_name_cpu_threads_torch_and_device():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tags = environment_tags(torch.device("cpu"))
    finally:
        torch.set_num_threads(previous)
    assert tags["env.threads"] == "1" and tags["env.torch"] == torch.__version__
    assert tags["env.device"] == "cpu" and tags["env.python"] == platform.python_version()
    cpuinfo = Path("/proc/cpuinfo")
    names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
    expected = names[0].split(":", 1)[1].strip() if names else platform.processor() or platform.machine()
    assert tags["env.cpu"] == expected and tags["env.cpu"]
    assert tags["env.cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_launch_tags_say_where_the_job_ran(monkeypatch, tmp_path):
    unset = (
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_RESTART_COUNT",
        "CUDA_VISIBLE_DEVICES",
    )
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    log = tmp_path / "train.log"
    assert "launch.log" not in launch_tags(1, log)  # a plain `ifrvis train` writes none
    log.touch()  # a sweep's job does
    assert launch_tags(1, log) == {
        "launch.host": platform.node(),
        "launch.world_size": "1",
        "launch.log": str(log),
        "launch.pid": str(os.getpid()),  # a re-run of the sweep on this host leaves the run to it
    }
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # the local executor's GPU of the run
    assert launch_tags(1, log)["launch.cuda_visible_devices"] == "3"
    monkeypatch.setenv("SLURM_JOB_ID", "118")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "117")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-02]")
    monkeypatch.setenv("IFRVIS_SLURM_LOG", "/shared/logs/117_1_0_log.out")
    tags = launch_tags(8, log)
    assert tags["launch.world_size"] == "8" and tags["launch.slurm_job_id"] == "118"
    assert tags["launch.slurm_array_job_id"] == "117" and tags["launch.slurm_array_task_id"] == "1"
    assert tags["launch.slurm_restart_count"] == "0"  # Slurm sets SLURM_RESTART_COUNT from the first requeue
    assert tags["launch.slurm_nodelist"] == "gpu[01-02]"
    assert tags["launch.slurm_log"] == "/shared/logs/117_1_0_log.out"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert launch_tags(8, log)["launch.slurm_restart_count"] == "2"
