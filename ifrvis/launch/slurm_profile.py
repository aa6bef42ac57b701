"""Slurm profiles: small YAML files (slurm/profiles/*.yaml) of submitit Slurm executor parameters.

A profile's keys are ours (`partition`, `time_min`, ...); `load_slurm_profile` turns them into the
keyword arguments of submitit's `AutoExecutor.update_parameters`, and `slurm_executor` builds the
executor (`max_num_timeout` is a constructor argument of submitit, not a parameter).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).resolve().parents[2] / "slurm" / "profiles"

# Profile key -> (accepted types, submitit AutoExecutor.update_parameters keyword or None).
_KEYS: dict[str, tuple[tuple[type, ...], str | None]] = {
    "partition": ((str, type(None)), "slurm_partition"),
    "account": ((str, type(None)), "slurm_account"),
    "qos": ((str, type(None)), "slurm_qos"),
    "constraint": ((str, type(None)), "slurm_constraint"),
    "time_min": ((int,), "timeout_min"),
    "nodes": ((int,), "nodes"),
    "tasks_per_node": ((int,), "tasks_per_node"),
    "gpus_per_node": ((int,), "gpus_per_node"),
    "cpus_per_task": ((int,), "cpus_per_task"),
    "mem_gb": ((int, float), "mem_gb"),
    "array_parallelism": ((int,), "slurm_array_parallelism"),
    "max_num_timeout": ((int,), None),
    # seconds between USR2 and the time limit: the next iteration and the checkpoint's save must fit
    "signal_delay_s": ((int,), "slurm_signal_delay_s"),
    # shell lines run before the task (module load, activating an environment)
    "setup": ((list,), "slurm_setup"),
    # any other sbatch option, e.g. {requeue: true, gres: "gpu:a100:8", exclude: "node07"}
    "additional_parameters": ((dict,), "slurm_additional_parameters"),
}
_REQUIRED = ("partition", "time_min", "cpus_per_task", "mem_gb")
# Keys that must be counts of at least 1 (gpus_per_node and max_num_timeout may be 0).
_POSITIVE = ("time_min", "nodes", "tasks_per_node", "cpus_per_task", "array_parallelism", "signal_delay_s")


def profile_path(name_or_path: str | Path) -> Path:
    """`local` -> slurm/profiles/local.yaml; a path (with a suffix or a directory part) as given."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return Path(text)
    return PROFILE_DIR / f"{text}.yaml"


def read_slurm_profile(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The profile's keys, validated, with `overrides` (same keys) applied on top.

    Raises FileNotFoundError naming the known profiles, KeyError/TypeError/ValueError naming the file
    and the key.
    """
    path = profile_path(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"Slurm profile {name_or_path!r}: no file {path} (known profiles: {known})")
    with path.open() as f:
        profile = yaml.safe_load(f) or {}
    if not isinstance(profile, dict):
        raise TypeError(f"{path}: a Slurm profile must be a mapping of keys to values")
    _check_keys(profile, f"{path}")
    _check_keys(overrides or {}, f"overrides of {path}")
    profile = {**profile, **(overrides or {})}
    missing = [key for key in _REQUIRED if key not in profile]
    if missing:
        raise KeyError(f"{path}: missing key(s) {', '.join(missing)}")
    for key, value in profile.items():
        _check_value(key, value, path)
    gpus, tasks = profile.get("gpus_per_node") or 0, profile.get("tasks_per_node") or 1
    if gpus and tasks != gpus:
        raise ValueError(
            f"{path}: tasks_per_node = {tasks} with gpus_per_node = {gpus}: a run has one task per GPU"
            " (set them equal; --gpus-per-node sets both)"
        )
    return profile


def ranks_per_run(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> int:
    """How many training processes (ranks) a run of this profile has: nodes x tasks per node."""
    profile = read_slurm_profile(name_or_path, overrides)
    return (profile.get("nodes") or 1) * (profile.get("tasks_per_node") or 1)


def load_slurm_profile(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """submitit `AutoExecutor.update_parameters` keyword arguments for a profile (`max_num_timeout`
    excluded: see `slurm_executor`). Unset (null) values and `gpus_per_node: 0` are left out, so that
    no GPU request reaches a cluster without GPUs."""
    profile = read_slurm_profile(name_or_path, overrides)
    parameters = {}
    for key, value in profile.items():
        submitit_key = _KEYS[key][1]
        if submitit_key is None or value is None or (key == "gpus_per_node" and value == 0):
            continue
        parameters[submitit_key] = value
    return parameters


def slurm_executor(folder: str | Path, name_or_path: str | Path, overrides: dict[str, Any] | None = None):
    """A submitit AutoExecutor on Slurm with the profile's parameters. `folder` holds the jobs' pickles
    and logs: it must be on a file system shared by the submitting machine and the nodes."""
    import submitit

    profile = read_slurm_profile(name_or_path, overrides)
    executor = submitit.AutoExecutor(
        folder=folder, cluster="slurm", slurm_max_num_timeout=profile.get("max_num_timeout", 3)
    )
    executor.update_parameters(**load_slurm_profile(name_or_path, overrides))
    return executor


def _check_keys(mapping: dict[str, Any], where: str) -> None:
    unknown = sorted(set(mapping) - set(_KEYS))
    if unknown:
        raise KeyError(
            f"{where}: unknown Slurm profile key(s) {', '.join(unknown)} (known: {', '.join(_KEYS)})"
        )


def _check_value(key: str, value: Any, path: Path) -> None:
    types = _KEYS[key][0]
    if isinstance(value, bool) or not isinstance(value, types):
        expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise TypeError(f"{path}: {key} must be {expected}, got {value!r}")
    if key in _POSITIVE and value < 1:
        raise ValueError(f"{path}: {key} must be at least 1, got {value}")
    if key in ("gpus_per_node", "max_num_timeout", "mem_gb") and value < 0:
        raise ValueError(f"{path}: {key} must not be negative, got {value}")
    if key == "setup" and not all(isinstance(line, str) for line in value):
        raise TypeError(f"{path}: setup must be a list of shell lines, got {value!r}")
    if key == "additional_parameters" and not all(isinstance(name, str) for name in value):
        raise TypeError(
            f"{path}: additional_parameters must map sbatch option names to values, got {value!r}"
        )
