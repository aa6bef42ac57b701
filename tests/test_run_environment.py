"""A run logs the machine it computed on (`env.*` tags): per-seed values are bit-identical only for
the same CPU model, thread count and torch version."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from ifrvis.engine.train import environment_tags


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
