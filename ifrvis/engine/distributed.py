"""torch.distributed set-up from the environment (torchrun, or submitit's TorchDistributedEnvironment
which exports the same RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT variables)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ifrvis.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device, timeout_min: float = 120.0) -> DistInfo:
    """Join the process group when launched with several processes (its collectives wait up to
    `timeout_min` for every rank); a no-op for one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_min))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """'auto' -> this rank's GPU when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda: PyTorch sees no CUDA GPU on this machine (device=cpu or auto run here)")
    if name == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0")) if info is None else info.local_rank
        torch.cuda.set_device(local_rank)
        check_cuda_build(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def build_covers(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a torch build compiled for `arch_list` (torch.cuda.get_arch_list(): 'sm_80',
    'compute_90', ...) runs on a GPU of compute `capability`: a kernel binary for the same major version
    and a minor no higher, or PTX for a capability no higher, which the driver compiles. An empty list
    (a build that does not say) is taken to cover it."""
    if not arch_list:
        return True
    major, minor = capability
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        if not number.isdigit():
            continue
        arch_major, arch_minor = int(number[:-1]), int(number[-1])
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return True
    return False


def check_cuda_build(index: int) -> None:
    """One line, before any kernel fails, when this torch build has no kernels for GPU `index`."""
    capability = torch.cuda.get_device_capability(index)
    arch_list = torch.cuda.get_arch_list()
    if not build_covers(capability, arch_list):
        name, (major, minor) = torch.cuda.get_device_name(index), capability
        raise UserError(
            f"GPU {index} ({name}, compute capability {major}.{minor})"
            f" is not served by this torch build ({torch.__version__}, CUDA {torch.version.cuda}, built for"
            f" {' '.join(arch_list)}): install a build for it (README, 'GPUs and torch builds')"
        )


def cleanup(info: DistInfo) -> None:
    if info.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
