"""Before training on a GPU, the torch build is checked against the device: a build without kernels
for it (the pinned CUDA 13 build has none for the paper's V100s, sm_70) is one line naming the
device, its capability, the build and the fix, instead of a kernel error deep in the first step."""

from __future__ import annotations

import pytest
import torch

from ifrvis.engine import distributed
from ifrvis.errors import UserError

CUDA13 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # torch 2.14.1+cu130's list


@pytest.mark.parametrize(
    "capability, arch_list, covered",
    [
        ((7, 0), CUDA13, False),  # V100
        ((8, 0), CUDA13, True),  # A100
        ((8, 9), CUDA13, True),  # L40S: sm_86 binaries run on 8.9
        ((9, 0), CUDA13, True),  # H100
        ((7, 0), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], True),  # a CUDA 12.x build
        ((7, 5), ["sm_80", "compute_70"], True),  # PTX compiled by the driver
        ((6, 1), ["sm_70", "compute_70"], False),
        ((9, 0), [], True),  # a build that does not say
    ],
)
def test_which_builds_serve_which_gpus(capability, arch_list, covered):
    assert distributed.build_covers(capability, arch_list) is covered


def test_a_gpu_the_build_does_not_serve_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CUDA13)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Tesla V100-SXM2-32GB")
    with pytest.raises(UserError) as error:
        distributed.check_cuda_build(0)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        "GPU 0 (Tesla V100-SXM2-32GB, compute capability 7.0) is not served by this torch"
    )
    assert "built for sm_75 sm_80" in message and "README, 'GPUs and torch builds'" in message
