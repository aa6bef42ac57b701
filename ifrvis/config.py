"""The one config system: typed dataclasses, YAML files with `_base_` inheritance, dotted overrides.

    cfg = load_config("experiments/configs/synthetic_tiny.yaml", ["model.decoder=mask2former", "seed=2"])

Unknown keys and wrong types raise `ConfigError` naming the key and the file. `config_hash(cfg)` is a
stable hash of the semantic settings (what changes results), excluding the seed, output paths and
logging options; a run's identity is `run_identity(cfg)` = hash of (config_hash, seed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


@dataclass
class DataConfig:
    root: str = "data/synthetic"  # a YouTube-VIS 2019/2021 folder (real or from `ifrvis synth`)
    train_json: str = "train.json"
    valid_json: str = "valid.json"  # "" when there is no validation split with ground truth
    image_dir: str = "JPEGImages"
    holdout_videos: int = (
        0  # > 0: carve this many videos out of train.json as the validation split (Sec. 4.3)
    )
    holdout_seed: int = 0
    clip_length: int = 2  # T frames per training clip (Sec. 4.1)
    max_frame_gap: int = 20  # the sampled frames of a clip lie within this many frames
    train_short_sides: list[int] = field(default_factory=lambda: [360, 480])
    max_long_side: int = 1333  # detectron2's default, kept by Mask2Former-VIS: 480 px 16:9 frames stay 480
    test_short_side: int = 360
    hflip: bool = True
    num_workers: int = 2


@dataclass
class ModelConfig:
    decoder: str = "ifr"  # ifr | mask2former
    backbone: str = "resnet50"  # tiny | resnet50 | resnet101 | swin_t | swin_s | swin_b | swin_l
    weights: str = ""  # local checkpoint file (torchvision or Mask2Former); nothing is downloaded
    num_classes: int = 40
    num_queries: int = 100
    hidden_dim: int = 256
    # pixel decoder: multi-scale deformable attention encoder (Mask2Former's defaults)
    enc_layers: int = 6
    enc_heads: int = 8
    enc_points: int = 4
    enc_ffn_dim: int = 1024
    mask_dim: int = 256
    # transformer decoder
    dec_layers: int = 9
    dec_heads: int = 8
    dec_ffn_dim: int = 2048
    dropout: float = 0.0  # attention/FFN dropout in encoder and decoder (Mask2Former: 0.0)
    pre_norm: bool = False  # LayerNorm before (True) or after (False, Mask2Former) decoder blocks
    pixel_mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    pixel_std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])


@dataclass
class LossConfig:
    class_weight: float = 2.0  # λ_c, Eqs. 4-5
    mask_weight: float = 5.0  # λ_m
    dice_weight: float = 5.0  # λ_D
    lambda_e: float = 0.3  # cross-frame mask loss weight, Eqs. 6-7
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    num_points: int = 12544  # 0: dense masks in loss and matching; > 0: sampled points
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True
    matcher_class_cost: str = "prob"  # prob: Eq. 4's -λ_c p(c); focal: Deformable DETR's focal-style cost


@dataclass
class SolverConfig:
    batch_size: int = 16  # clips per iteration (all ranks together)
    max_iters: int = 6000
    lr: float = 1e-4
    backbone_lr_multiplier: float = 0.1  # Sec. 4.1
    weight_decay: float = 0.05
    schedule: str = "step"  # step | poly
    steps: list[int] = field(default_factory=lambda: [4000])
    gamma: float = 0.1
    poly_power: float = 0.9
    warmup_iters: int = 10
    warmup_factor: float = 1.0  # Mask2Former's: lr starts at factor x lr, so 1.0 means no warm-up
    clip_grad_norm: float = 0.01
    amp: str = "none"  # none | bf16 | fp16 (GPU only)


@dataclass
class InferenceConfig:
    mode: str = "video"  # video | clip | tta
    top_k: int = 10
    mask_threshold: float = 0.5
    score_with_mask: bool = False
    chunk_frames: int = 16  # backbone + encoder over this many frames at a time
    clip_frames: int = 10  # per-clip mode; 1 = every frame decoded alone
    clip_overlap: int = 2  # 0 = clips linked through the frames on either side of their border
    tta_short_sides: list[int] = field(default_factory=lambda: [288, 360, 432, 480])
    tta_flip: bool = False


@dataclass
class LoggingConfig:
    output_dir: str = "outputs"
    mlflow_uri: str = ""  # "" -> $MLFLOW_TRACKING_URI, else sqlite file in the project folder
    experiment: str = "ifrvis"
    sweep: str = ""
    parent_run_id: str = ""
    log_every: int = 20
    checkpoint_every: int = 200
    eval_every: int = 0  # > 0: also validate every N iterations (metrics val/AP ...); 0: only at the end
    visualize: bool = True
    progress: bool = True


@dataclass
class Config:
    name: str = "ifr"
    dataset: str = "ytvis2019"  # tag for tables: ytvis2019 | ytvis2021 | synthetic ...
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# Keys that do not change what a run computes: left out of the semantic hash.
NON_SEMANTIC_KEYS = ("seed", "device", "data.num_workers", "logging")


def _check_value(value: Any, hint: Any, key: str, source: str) -> Any:
    """Return `value` converted to `hint` (int -> float only), or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_value(value, option, key, source)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: '{key}' = {value!r} is not of type {hint}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' = {value!r} should be a list")
        (item,) = typing.get_args(hint)
        return [_check_value(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{source}: '{key}' = {value!r} should be null")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{source}: '{key}' = {value!r} should be {hint.__name__}, not bool")
    if not isinstance(value, hint):
        raise ConfigError(
            f"{source}: '{key}' = {value!r} should be {hint.__name__}, got {type(value).__name__}"
        )
    return value


def _apply(obj: Any, key: str, value: Any, source: str) -> None:
    """Set dotted `key` of dataclass `obj` to `value`, checking that the key exists and the type."""
    *parents, leaf = key.split(".")
    target = obj
    for i, part in enumerate(parents):
        if not dataclasses.is_dataclass(target) or part not in {f.name for f in dataclasses.fields(target)}:
            raise ConfigError(f"{source}: unknown config key '{'.'.join(parents[: i + 1])}'")
        target = getattr(target, part)
    fields = {f.name: f for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else {}
    if leaf not in fields:
        raise ConfigError(f"{source}: unknown config key '{key}'")
    hint = typing.get_type_hints(type(target))[leaf]
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' is a section and needs a mapping, got {value!r}")
        for sub_key, sub_value in value.items():
            _apply(obj, f"{key}.{sub_key}", sub_value, source)
        return
    setattr(target, leaf, _check_value(value, hint, key, source))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _apply_file(cfg: Config, path: Path, seen: tuple[Path, ...] = ()) -> None:
    """Apply `path` on top of `cfg`, after its `_base_` files (relative to `path`)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular _base_ chain")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    for base in [bases] if isinstance(bases, str) else bases:
        _apply_file(cfg, path.parent / base, (*seen, path))
    for key, value in data.items():
        _apply(cfg, key, value, str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b=3' -> ('a.b', 3); the value is parsed as YAML ('[1,2]', 'true', 'null', '1e-4')."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' should look like key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw else ""
    if isinstance(value, str) and raw and _is_float(raw):
        value = float(raw)  # YAML 1.1 reads '1e-4' as a string
    return key.strip(), value


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then `path` (with its `_base_` chain), then `key=value` overrides."""
    cfg = Config()
    if path is not None:
        _apply_file(cfg, Path(path))
    for text in overrides:
        key, value = parse_override(text)
        _apply(cfg, key, value, f"override '{text}'")
    return cfg


def config_from_dict(data: dict, source: str = "<dict>") -> Config:
    cfg = Config()
    for key, value in data.items():
        _apply(cfg, key, value, source)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def semantic_dict(cfg: Config) -> dict[str, Any]:
    """The flattened settings that change what a run computes."""
    return {
        key: value
        for key, value in flatten(to_dict(cfg)).items()
        if not any(key == skip or key.startswith(f"{skip}.") for skip in NON_SEMANTIC_KEYS)
    }


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def config_hash(cfg: Config) -> str:
    """Stable across processes and machines: sha256 of the sorted semantic settings (no seed)."""
    return _hash(semantic_dict(cfg))


def run_identity(cfg: Config) -> str:
    """One training run = one (semantic config, seed)."""
    return _hash({"config_hash": config_hash(cfg), "seed": cfg.seed})
