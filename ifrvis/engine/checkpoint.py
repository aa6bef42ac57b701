"""Atomic checkpoints with everything a bit-exact resume needs."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ifrvis.engine.preemption import deferred_signals
from ifrvis.errors import UserError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename: a kill during the save
    leaves the previous checkpoint intact, and a preemption signal waits until the save is done."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with deferred_signals():
        with open(tmp, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    return path


class RunCheckpointError(UserError):
    """A run's checkpoint that it cannot resume from: cut short, damaged, or not a run checkpoint."""


MOVE_AWAY = "not a run checkpoint this run can resume from (move it away to start the run afresh)"


# What `train` writes into a checkpoint and reads back at a resume (`metrics` is optional: older files).
CHECKPOINT_KEYS: dict[str, type | tuple[type, ...]] = {
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "scaler": dict,
    "iteration": int,
    "sampler": list,
    "rng": list,
    "mlflow_run_id": (str, type(None)),
    "train_time_s": (int, float),
}


def load_checkpoint(path: str | Path, mmap: bool = False) -> Any:
    """What `save_checkpoint` wrote (tensors and plain Python values only, so the safe `weights_only=True`
    loader suffices); a RunCheckpointError naming the file when it cannot be read (cut short, a foreign
    pickle that weights_only refuses, not a file)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise RunCheckpointError(f"{path}: {MOVE_AWAY} ({reason[:200]})") from error


def load_run_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """A run's checkpoint for its resume: `load_checkpoint`, and a RunCheckpointError before the resume
    touches the run when it lacks what a resume reads (`CHECKPOINT_KEYS`)."""
    state = load_checkpoint(path, mmap)
    problem = checkpoint_problem(state)
    if problem:
        raise RunCheckpointError(f"{path}: {MOVE_AWAY} ({problem})")
    return state


def checkpoint_problem(state: object) -> str | None:
    """What keeps `state` from being a run checkpoint; None when it is one."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a mapping"
    for key, kind in CHECKPOINT_KEYS.items():
        if key not in state:
            return f"no {key!r}"
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            return f"{key!r} is a {type(state[key]).__name__}"
    if state["iteration"] < 0 or not state["sampler"] or len(state["rng"]) != len(state["sampler"]):
        return "its iteration, samplers and random states do not fit together"
    return None
