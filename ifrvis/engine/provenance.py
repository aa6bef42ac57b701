"""The provenance of a pretrained file, written by `ifrvis pretrain` beside it in `<file>.json`: the
command, the config's hash, the pretrain signature (a hash of every setting the file depends on:
`pretrain_settings`), the data seed, the commit, torch's version, the file's sha256 and the summary.
`check_pretrained(cfg)` (`ifrvis pretrain --check`, and every run's preflight) compares a config with
it: a file made for other model, loss or data settings, or not the recorded file, is an error naming
`ifrvis pretrain`. A run's own choices (decoder, model.ifr_init, loss.lambda_e, loss.num_points, solver,
seed) are not among those settings: every run of both tiny configs shares the file.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from ifrvis.config import Config, config_hash
from ifrvis.data.splits import split_files
from ifrvis.modeling.weights import CheckpointError

# Provenance: `ifrvis pretrain` writes `<file>.json` beside the file, and `check_pretrained` compares a
# run's config with it, so that a file made for other settings (a shipped file the tiny config has
# outgrown) is an error before a run starts, not a model that silently loads half its weights.
# The run's own choices, which the file does not depend on: runs differing in them share the file.
RUN_ONLY = {
    "model": ("decoder", "weights", "partial_weights", "ifr_init", "extra_queries"),
    "loss": ("lambda_e", "class_loss", "no_object_weight", "num_points"),
}


DATA_KEYS = ("train_short_sides", "max_long_side", "hflip")  # how the training frames are drawn


REBUILD = "ifrvis pretrain"


CHECKED_FIELDS = ("sha256", "signature", "settings", "command")


def provenance_path(weights: str | Path) -> Path:
    """Where the provenance of pretrained file `weights` lies: `<weights>.json`."""
    return Path(f"{weights}.json")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_settings(cfg: Config) -> dict[str, dict]:
    """The settings of `cfg` that the pretrained file depends on, by section: the model (all but
    `RUN_ONLY`: every new architecture key counts), the loss (likewise) and `DATA_KEYS`."""
    return {
        section: {k: v for k, v in asdict(getattr(cfg, section)).items() if k not in skipped}
        for section, skipped in RUN_ONLY.items()
    } | {"data": {key: getattr(cfg.data, key) for key in DATA_KEYS}}


def training_data(cfg: Config) -> dict | None:
    """The identity of the training annotations `cfg` reads: their file's sha256 and its `info` (what
    `ifrvis synth` records of itself: the seed); None when the file is absent."""
    path = split_files(cfg.data)["train"][0]
    if not path.is_file():
        return None
    raw = path.read_bytes()
    info = json.loads(raw).get("info")
    return {"sha256": hashlib.sha256(raw).hexdigest(), "info": info}


def pretrain_settings(cfg: Config, options: dict) -> dict:
    """Everything the file depends on: `config_settings`, the training data, and pretraining's own
    `options` (iterations, lr, batch, sampled points, class loss, seed)."""
    return config_settings(cfg) | {"train_data": training_data(cfg), "pretrain": options}


def signature(settings: dict) -> str:
    """The pretrain signature: a hash of `pretrain_settings`."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def git_state() -> dict:
    """The commit of the package's checkout and the tracked files changed since, under the code and
    configs that make the file; commit None outside a git checkout."""
    repo = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout.rstrip() if done.returncode == 0 else None

    changed = git("status", "--porcelain", "--untracked-files=no", "--", "ifrvis", "experiments/configs")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted": [line[3:] for line in (changed or "").splitlines()],
    }


def write_provenance(
    out: Path, cfg: Config, config: str, command: str, options: dict, summary: dict, code: dict
) -> Path:
    """`<out>.json`: how `out` was made (command, config and its hash, pretrain signature and the
    settings under it, data seed, the code's `git_state` when the build started, torch version and
    threads, the file's sha256, the pretrain summary)."""
    settings = pretrain_settings(cfg, options)
    info = (settings["train_data"] or {}).get("info") or {}
    record = {
        "file": out.name,
        "sha256": sha256_file(out),
        "bytes": out.stat().st_size,
        "command": command,
        "config": config,
        "config_hash": config_hash(cfg),
        "signature": signature(settings),
        "settings": settings,
        "data_seed": info.get("seed"),
        **code,
        "torch": torch.__version__,
        # Float sums are ordered by the thread count: the same command with another count gives
        # another file (the same within run-to-run variance).
        "torch_threads": torch.get_num_threads(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pretrain": summary,
    }
    path = provenance_path(out)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_provenance(path: Path) -> dict:
    """The record at `path`; CheckpointError when it is not JSON or lacks a field the check reads."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a provenance record of `{REBUILD}` ({error})") from None
    missing = [key for key in CHECKED_FIELDS if not isinstance(record, dict) or key not in record]
    if missing:
        raise CheckpointError(f"{path}: not a provenance record of `{REBUILD}` (no {', '.join(missing)})")
    return record


def setting_differences(recorded: dict, cfg: Config) -> list[str]:
    """`section.key is X here, Y in the file` per config setting that differs from the file's; and the
    training data when `cfg` reads the data set the file was made on (same `info`) but other bytes
    (a generator that changed). Another data set (other `info`: the crossing set, real data) is not a
    difference: the file is its pretrained start as COCO's is YouTube-VIS's."""
    differences = []
    for section, settings in config_settings(cfg).items():
        was = recorded.get(section, {})
        for key in sorted(settings.keys() | was.keys()):
            if settings.get(key) != was.get(key):
                differences.append(f"{section}.{key} is {settings.get(key)} here, {was.get(key)} in the file")
    data, was = training_data(cfg), recorded.get("train_data") or {}
    if data is not None and data["info"] == was.get("info") and data["sha256"] != was.get("sha256"):
        train_json = split_files(cfg.data)["train"][0]
        differences.append(
            f"{train_json} (sha256 {data['sha256'][:12]}) is not the one the file was made on "
            f"({str(was.get('sha256'))[:12]}): data made by another `ifrvis synth`?"
        )
    return differences


def check_pretrained(cfg: Config) -> None:
    """Raise CheckpointError (one line: what differs, how to rebuild) when `cfg.model.weights` has a
    provenance record that `cfg` does not match: a config setting the file depends on changed, or the
    file is not the one recorded (sha256: a partial or changed file). Without a record (a file of the
    user's own, a test's) or a file (model building reports it), nothing is checked."""
    weights = Path(cfg.model.weights) if cfg.model.weights else None
    if weights is None or not weights.is_file() or not provenance_path(weights).is_file():
        return
    record = read_provenance(provenance_path(weights))
    rebuild = f"rebuild it: `{record['command']}`"
    if sha256_file(weights) != record["sha256"]:
        raise CheckpointError(
            f"model.weights {weights}: its sha256 is not the one {provenance_path(weights)} records"
            f" (a partial or changed file); {rebuild}"
        )
    if signature(record["settings"]) != record["signature"]:
        raise CheckpointError(
            f"{provenance_path(weights)}: its settings do not give its signature {record['signature']}"
            f" (edited by hand?); {rebuild}"
        )
    differences = setting_differences(record["settings"], cfg)
    if differences:
        raise CheckpointError(
            f"model.weights {weights} was pretrained for other settings: {'; '.join(differences)};"
            f" {rebuild} (with this config's overrides, if any)"
        )
