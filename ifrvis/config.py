"""The one config system: typed dataclasses, YAML files with `_base_` inheritance, dotted overrides.

    cfg = load_config("experiments/configs/synthetic_tiny.yaml", ["model.decoder=mask2former", "seed=2"])

Unknown keys, wrong types and values out of their key's range (`RANGES`) raise `ConfigError`: one line
naming the key, the value and the file or override it came from. `config_hash(cfg)` is a
stable hash of the semantic settings (what changes the computation), excluding the labels `name` and
`dataset`, the seed, the device, loader workers and every logging option (output folder, store, sweep);
a run's identity is `run_identity(cfg)` = hash of (config_hash, seed). Renaming a config or relabelling
its data set therefore keeps its runs: one computation is one run, whichever sweep or file asks for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal

import yaml

from ifrvis.errors import UserError


class ConfigError(UserError):
    """A config file or override is unreadable, names an unknown key or gives a value of the wrong type
    or out of range."""


# Choices that modules outside this file check too (`typing.get_args` gives them the tuple).
IfrInit = Literal["random", "checkpoint"]
ExtraQueries = Literal["first", "error"]
ClassCost = Literal["prob", "focal"]
InferenceMode = Literal["video", "clip", "tta"]


@dataclass
class DataConfig:
    # A YouTube-VIS folder; each split's annotation file and frame folder are relative to it. The
    # defaults are the 2019 release's layout (base/ytvis2021.yaml sets 2021's, base/synthetic.yaml the
    # flat layout of `ifrvis synth`).
    root: str = "data/ytvis2019"
    train_json: str = "train.json"
    train_images: str = "train/JPEGImages"
    valid_json: str = "valid.json"  # "": no validation split (or holdout_videos > 0)
    valid_images: str = "valid/JPEGImages"
    holdout_videos: int = (
        0  # > 0: carve this many videos out of train.json as the validation split (Sec. 4.3)
    )
    holdout_seed: int = 0
    clip_length: int = 2  # T frames per training clip (Sec. 4.1)
    sampling_frame_range: int = 20  # a clip's other frames lie within this many frames of its reference
    train_short_sides: list[int] = field(default_factory=lambda: [360, 480])
    max_long_side: int = 1333  # detectron2's default, kept by Mask2Former-VIS: 480 px 16:9 frames stay 480
    test_short_side: int = 360
    hflip: bool = True
    # A training clip's class for each instance: "last_frame" is Mask2Former-VIS's video mapper (the class
    # in the clip's last frame; an instance absent there is "no object" for the whole clip, class K);
    # "category" is the annotation's category whichever frame shows the instance.
    clip_label: Literal["last_frame", "category"] = "last_frame"
    # Batches of one orientation (landscape w > h, or not), as detectron2's ASPECT_RATIO_GROUPING, on in
    # Mask2Former-VIS's configs: less padding in a batch.
    aspect_grouping: bool = True
    num_workers: int = 2


@dataclass
class ModelConfig:
    decoder: Literal["ifr", "mask2former"] = "ifr"
    backbone: Literal["tiny", "resnet50", "resnet101", "swin_t", "swin_s", "swin_b", "swin_l"] = "resnet50"
    weights: str = ""  # local checkpoint file (torchvision or Mask2Former); nothing is downloaded
    # IFR's inter-frame recurrent blocks (Eqs. 2-3) at the start: random as the paper (Sec. 4.1), or
    # copied from the checkpoint's decoder blocks (cross-attention, self-attention, FFN), an ablation.
    ifr_init: IfrInit = "random"
    # A checkpoint with more learned queries than num_queries (Swin-L's 200-query COCO model into a
    # 100-query run): keep its first num_queries, or refuse to load.
    extra_queries: ExtraQueries = "first"
    # A run refuses to start when model.weights gives the model none of its tensors, leaves some missing or
    # of the wrong shape, or has backbone or pixel-decoder tensors the model has no place for (a file for
    # another model); true says such a partial start is intended.
    partial_weights: bool = False
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
    # focal: sigmoid focal loss, IFR's (Eq. 5); softmax: cross-entropy with a "no object" class
    # weighted no_object_weight, Mask2Former-VIS's (its configs set it)
    class_loss: Literal["focal", "softmax"] = "focal"
    no_object_weight: float = 0.1
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    num_points: int = 12544  # 0: dense masks in loss and matching; > 0: sampled points
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True
    # prob: Eq. 4's -λ_c p(c); focal: Deformable DETR's focal-style cost (focal class_loss only)
    matcher_class_cost: ClassCost = "prob"


@dataclass
class SolverConfig:
    batch_size: int = 16  # clips per iteration (all ranks together)
    max_iters: int = 6000
    lr: float = 1e-4
    backbone_lr_multiplier: float = 0.1  # Sec. 4.1
    weight_decay: float = 0.05
    schedule: Literal["step", "poly"] = "step"
    steps: list[int] = field(default_factory=lambda: [4000])
    gamma: float = 0.1
    poly_power: float = 0.9
    warmup_iters: int = 10
    warmup_factor: float = 1.0  # Mask2Former's: lr starts at factor x lr, so 1.0 means no warm-up
    clip_grad_norm: float = 0.01
    amp: Literal["none", "bf16", "fp16"] = "none"  # fp16 only on a GPU
    # AdamW's fused kernel: one call over all parameters, the same update up to float rounding (on the
    # CPU several times faster than the per-parameter loop torch uses by default there).
    fused_optimizer: bool = False
    # torch.compile (TorchInductor) of the training forward; the loss, the optimiser, evaluation and the
    # checkpoints stay the eager module's. The first steps compile (minutes on a CPU, with a C++
    # compiler); the kernels are cached on disk for the next run ($TORCHINDUCTOR_CACHE_DIR, by default
    # ~/.cache/ifrvis/inductor, not /tmp, which a reboot empties).
    compile: bool = False
    # Clips each rank computes at once; the rank's share of `batch_size` is then taken in
    # share / batch_per_gpu accumulated micro-batches. 0: the whole share at once.
    batch_per_gpu: int = 0


@dataclass
class InferenceConfig:
    mode: InferenceMode = "video"
    top_k: int = 10
    mask_threshold: float = 0.5
    score_with_mask: bool = False
    chunk_frames: int = 16  # backbone + encoder over this many frames at a time
    clip_frames: int = 10  # per-clip mode; 1 = every frame decoded alone
    clip_overlap: int = 1  # frames shared by consecutive clips; 0 = tracked across their border
    tta_short_sides: list[int] = field(default_factory=lambda: [288, 360, 432, 480])
    tta_flip: bool = False
    tta_pivot: Literal["random", "largest"] = "random"  # random: the paper's (Sec. 3.2), seeded


@dataclass
class LoggingConfig:
    output_dir: str = "outputs"
    mlflow_uri: str = ""  # set by a sweep from $MLFLOW_TRACKING_URI (the one setting users touch)
    experiment: str = "ifrvis"
    sweep: str = ""
    parent_run_id: str = ""
    log_every: int = 20
    checkpoint_every: int = 200
    eval_every: int = 0  # > 0: also validate every N iterations (metrics val/AP ...); 0: only at the end
    # How long ranks wait for each other in a collective (torch's default: 10 min for NCCL): above the
    # longest validation, which rank 0 runs while the others wait for the next step's all-reduce.
    collective_timeout_min: float = 120.0
    visualize: bool = True
    progress: bool = True


@dataclass
class Config:
    name: str = "ifr"
    dataset: str = "ytvis2019"  # tag for tables: ytvis2019 | ytvis2021 | synthetic ...
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU threads of the training process (torch.set_num_threads); 0: what the launcher or torch chose.
    # Runs started side by side on a small machine each need their share, or they overload its cores.
    threads: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


@dataclass(frozen=True)
class Range:
    """The values a numeric key allows (each item, for a list key): between `low` and `high` (None: no
    bound), each bound included unless `*_open`. A float must also be finite: no key takes nan or inf."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low}, {self.high}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return ""  # any finite number


AT_LEAST_0 = Range(low=0)
AT_LEAST_1 = Range(low=1)
ABOVE_0 = Range(low=0, low_open=True)
UNIT = Range(low=0, high=1)  # a probability, fraction or threshold
SEED = Range(low=0, high=2**32 - 1)  # what numpy's seeding takes

# Every int or float key (list keys: each item), checked when a file or override sets it. Counts of things
# a run needs at least one of are >= 1; a count whose 0 means "none" or "off" (see the field's comment) is
# >= 0. Cross-key rules (clip_overlap < clip_frames, heads dividing hidden_dim ...) are in `check_config`.
RANGES: dict[str, Range] = {
    "seed": SEED,
    "data.holdout_videos": AT_LEAST_0,
    "data.holdout_seed": SEED,
    "data.clip_length": AT_LEAST_1,
    "data.sampling_frame_range": AT_LEAST_0,
    "data.train_short_sides": AT_LEAST_1,
    "data.max_long_side": AT_LEAST_1,
    "data.test_short_side": AT_LEAST_1,
    "data.num_workers": AT_LEAST_0,
    "model.num_classes": AT_LEAST_1,
    "model.num_queries": AT_LEAST_1,
    "model.hidden_dim": AT_LEAST_1,
    "model.enc_layers": AT_LEAST_0,  # 0: the pixel decoder's projections and FPN without its encoder
    "model.enc_heads": AT_LEAST_1,
    "model.enc_points": AT_LEAST_1,
    "model.enc_ffn_dim": AT_LEAST_1,
    "model.mask_dim": AT_LEAST_1,
    "model.dec_layers": AT_LEAST_1,
    "model.dec_heads": AT_LEAST_1,
    "model.dec_ffn_dim": AT_LEAST_1,
    "model.dropout": Range(low=0, high=1, high_open=True),
    "model.pixel_mean": Range(),
    "model.pixel_std": ABOVE_0,
    "loss.class_weight": AT_LEAST_0,
    "loss.mask_weight": AT_LEAST_0,
    "loss.dice_weight": AT_LEAST_0,
    "loss.lambda_e": AT_LEAST_0,
    "loss.no_object_weight": AT_LEAST_0,
    "loss.focal_alpha": UNIT,
    "loss.focal_gamma": AT_LEAST_0,
    "loss.num_points": AT_LEAST_0,
    "loss.oversample_ratio": AT_LEAST_1,
    "loss.importance_sample_ratio": UNIT,
    "solver.batch_size": AT_LEAST_1,
    "solver.max_iters": AT_LEAST_1,
    "solver.lr": ABOVE_0,
    "solver.backbone_lr_multiplier": AT_LEAST_0,
    "solver.weight_decay": AT_LEAST_0,
    # Iterations; one past max_iters never comes (a short smoke run of a paper config keeps its steps).
    "solver.steps": AT_LEAST_1,
    "solver.gamma": ABOVE_0,
    "solver.poly_power": AT_LEAST_0,
    "solver.warmup_iters": AT_LEAST_0,
    "solver.warmup_factor": UNIT,
    "solver.clip_grad_norm": AT_LEAST_0,  # 0: no clipping
    "solver.batch_per_gpu": AT_LEAST_0,
    "inference.top_k": AT_LEAST_1,
    "inference.mask_threshold": UNIT,
    "inference.chunk_frames": AT_LEAST_1,
    "inference.clip_frames": AT_LEAST_1,
    "inference.clip_overlap": AT_LEAST_0,
    "inference.tta_short_sides": AT_LEAST_1,
    "logging.log_every": AT_LEAST_1,
    "logging.checkpoint_every": AT_LEAST_1,
    "logging.eval_every": AT_LEAST_0,
    "logging.collective_timeout_min": ABOVE_0,
}
# Numeric keys without a rule here, and why. `threads` < 0 is refused by the trainer's preflight (before
# anything is created), whose test loads such a config first.
UNRANGED = {"threads": "checked by ifrvis.engine.train.preflight"}


def _check_range(value: Any, key: str, source: str) -> None:
    """Raise ConfigError when the number `value` of `key` (a list: each item) is outside RANGES[key]."""
    rule = RANGES.get(key)
    if rule is None:
        return
    items = [(f"{key}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else [(key, value)]
    for name, item in items:
        if item not in rule:
            kind = "a finite number" if isinstance(item, float) else "an integer"
            should = f"{kind} {rule}".rstrip()
            raise ConfigError(f"{source}: '{name}' = {item!r} is out of range: should be {should}")


# Keys that do not change what a run computes: labels (name, dataset), the seed (part of the identity
# on its own), where it runs and where it logs. Left out of the semantic hash.
# Keys that change no computation: not in a run's identity. `model.partial_weights` only guards the start.
# How the total batch is split into ranks and micro-batches does not change a step's gradients (as the
# world size, which the launch decides, does not): solver.batch_per_gpu is no part of a run's identity.
NON_SEMANTIC_KEYS = (
    "name", "dataset", "seed", "device", "threads", "data.num_workers", "logging", "model.partial_weights",
    "solver.batch_per_gpu",
)  # fmt: skip
# Settings added after runs were logged, whose default computes what those runs computed: at that default
# they are no part of a run's identity, so that a sweep rerun still finds the runs logged before them.
IDENTITY_NEUTRAL_DEFAULTS = {"solver.compile": False}


def _check_value(value: Any, hint: Any, key: str, source: str) -> Any:
    """Return `value` converted to `hint` (int -> float only), or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(
                f"{source}: '{key}' = {value!r} is not one of {', '.join(map(repr, choices))}"
                + _did_you_mean(str(value), [str(c) for c in choices])
            )
        return value
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
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{source}: '{key}' = {value!r} is too large for a float") from None
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{source}: '{key}' = {value!r} should be {hint.__name__}, not bool")
    if not isinstance(value, hint):
        raise ConfigError(
            f"{source}: '{key}' = {value!r} should be {hint.__name__}, got {type(value).__name__}"
        )
    return value


def _did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    close = get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# Keys of earlier versions (a run folder's config.yaml keeps them): what replaced them, and how.
RETIRED_KEYS = {
    "data.max_frame_gap": "replaced by data.sampling_frame_range, with Mask2Former-VIS's frame draw (a"
    " reference frame, the others within that many frames of it): runs made with it drew other clips",
}


def _unknown_key(source: str, key: str, target: Any) -> ConfigError:
    if key in RETIRED_KEYS:
        return ConfigError(f"{source}: config key '{key}' is retired: {RETIRED_KEYS[key]}")
    *_, leaf = key.split(".")
    names = [f.name for f in dataclasses.fields(target)] if dataclasses.is_dataclass(target) else []
    return ConfigError(f"{source}: unknown config key '{key}'" + _did_you_mean(leaf, names))


def _apply(obj: Any, key: str, value: Any, source: str) -> None:
    """Set dotted `key` of dataclass `obj` to `value`, checking that the key exists and the type."""
    *parents, leaf = key.split(".")
    target = obj
    for i, part in enumerate(parents):
        if not dataclasses.is_dataclass(target) or part not in {f.name for f in dataclasses.fields(target)}:
            raise _unknown_key(source, ".".join(parents[: i + 1]), target)
        target = getattr(target, part)
    fields = {f.name: f for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else {}
    if leaf not in fields:
        raise _unknown_key(source, key, target)
    hint = typing.get_type_hints(type(target))[leaf]
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' is a section and needs a mapping, got {value!r}")
        for sub_key, sub_value in value.items():
            _apply(obj, f"{key}.{sub_key}", sub_value, source)
        return
    value = _check_value(value, hint, key, source)
    _check_range(value, key, source)
    setattr(target, leaf, value)


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line and column, 1-based) and what, and what was being parsed."""
    if isinstance(err, yaml.MarkedYAMLError):
        text = f"at {_at(err.problem_mark)}: {err.problem}" if err.problem_mark else f": {err.problem}"
        if err.context:
            text += f" ({err.context}" + (f" at {_at(err.context_mark)})" if err.context_mark else ")")
        return text
    if isinstance(err, yaml.reader.ReaderError):  # a character YAML does not allow, or bytes not UTF-8/16
        return f"at position {err.position}: {' '.join(str(err).splitlines()[0].split())}"
    return ": " + " ".join(str(err).split())


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file: a YAML config was expected") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML {_yaml_problem(err)}") from None
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
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise ConfigError(
            f"{path}: _base_ should be a file name or a list of file names (relative to this file),"
            f" got {bases!r}"
        )
    for base in bases:
        _apply_file(cfg, path.parent / base, (*seen, path))
    for key, value in data.items():
        _apply(cfg, str(key), value, str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b=3' -> ('a.b', 3); the value is parsed as YAML ('[1,2]', 'true', 'null', '1e-4')."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' should look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': invalid YAML {_yaml_problem(err)}") from None
    if isinstance(value, str) and raw and _is_float(raw):
        value = float(raw)  # YAML 1.1 reads '1e-4' as a string
    return key.strip(), value


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_config(cfg: Config, source: str = "config") -> Config:
    """Raise ConfigError for a value out of its range (`RANGES`: checked as a file or override sets it,
    again here for a Config built in code) or for settings that are each valid but do not go together."""
    for key, value in flatten(to_dict(cfg)).items():
        _check_range(value, key, source)
    problems = []
    if not cfg.data.train_short_sides:
        problems.append("data.train_short_sides must be a non-empty list of positive sizes")
    if not cfg.inference.clip_overlap < cfg.inference.clip_frames:
        problems.append(
            f"inference.clip_overlap must be in [0, inference.clip_frames), got {cfg.inference.clip_overlap}"
            f" with clip_frames {cfg.inference.clip_frames}"
        )
    if cfg.inference.mode == "tta" and not cfg.inference.tta_short_sides:
        problems.append("inference.mode 'tta' needs inference.tta_short_sides")
    for key in ("pixel_mean", "pixel_std"):
        if len(getattr(cfg.model, key)) != 3:
            problems.append(f"model.{key} needs 3 values (R, G, B), got {getattr(cfg.model, key)}")
    for key in ("enc_heads", "dec_heads"):
        if cfg.model.hidden_dim % getattr(cfg.model, key):
            problems.append(
                f"model.hidden_dim = {cfg.model.hidden_dim} must be divisible by model.{key} = "
                f"{getattr(cfg.model, key)}"
            )
    if cfg.loss.class_loss == "softmax" and cfg.loss.matcher_class_cost == "focal":
        problems.append("loss.matcher_class_cost 'focal' needs loss.class_loss 'focal'")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return cfg


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then `path` (with its `_base_` chain), then `key=value` overrides; checked."""
    cfg = Config()
    if path is not None:
        _apply_file(cfg, Path(path))
    for text in overrides:
        key, value = parse_override(text)
        _apply(cfg, key, value, f"override '{text}'")
    return check_config(cfg, str(path) if path is not None else "config")


def config_from_dict(data: dict, source: str = "<dict>") -> Config:
    cfg = Config()
    for key, value in data.items():
        _apply(cfg, key, value, source)
    return check_config(cfg, source)


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
        and not (key in IDENTITY_NEUTRAL_DEFAULTS and value == IDENTITY_NEUTRAL_DEFAULTS[key])
    }


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def config_hash(cfg: Config) -> str:
    """Stable across processes and machines: sha256 of the sorted semantic settings (no seed)."""
    return _hash(semantic_dict(cfg))


def run_identity(cfg: Config) -> str:
    """One training run = one (semantic config, seed)."""
    return _hash({"config_hash": config_hash(cfg), "seed": cfg.seed})
