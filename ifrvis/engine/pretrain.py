"""Pretraining for the synthetic benchmark: the stand-in for the COCO-pretrained initialisation the
paper's models start from (Sec. 4.1).

    ifrvis pretrain experiments/configs/synthetic_tiny.yaml [key=value ...] [--backbone-iters 2000]
        [--iters 16000] [--out PATH]
    ifrvis pretrain --check experiments/configs/synthetic_tiny.yaml [key=value ...]

Two stages on single frames of the training split, as a COCO Mask2Former is an ImageNet backbone
trained further on image instance segmentation:
1. `model.backbone` with a light FPN head labels every pixel with its instance's category (0 =
   background): dense semantic segmentation;
2. the image-level Mask2Former (the baseline decoder on clips of one frame) is trained from that
   backbone with the runs' matcher and loss weights (Eqs. 4-5), its own focal class loss and
   `--num-points` sampled points.
The whole model is written to `--out` (default: the config's `model.weights`, where the runs load it).
Both decoders load its backbone, pixel decoder, queries and mask head, as the paper's models load COCO
Mask2Former (Sec. 4.1); Mask2Former-VIS also its decoder blocks, and its softmax class head (K + 1
logits) starts at random as a COCO head does on YouTube-VIS; IFR's inter-frame recurrent blocks start at
random (`model.ifr_init: random`, the paper's) or from the decoder blocks (`checkpoint`). Why: inside
a few-minute run the tiny model learns categories and masks far slower than from this start
(benchmarks/README.md, "Synthetic quality"); the file is made once and shared by every run of a sweep,
as a downloaded checkpoint is.

Its provenance lies beside it in `<file>.json`: the command, the config's hash, the pretrain signature (a
hash of every setting the file depends on: `pretrain_settings`), the data seed, the commit, torch's
version, the file's sha256 and the summary. `check_pretrained(cfg)` (`--check`) compares a config with
it: a file made for other model, loss or data settings, or not the recorded file, is an error naming
`ifrvis pretrain`. A run's own choices (decoder, model.ifr_init, loss.lambda_e, loss.num_points, solver,
seed) are not among those settings: every run of both tiny configs shares the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ifrvis.config import Config, LossConfig, SolverConfig, config_hash, load_config
from ifrvis.data.datasets import ClipDataset, TrainSampler, collate_clips
from ifrvis.data.splits import load_splits, split_files
from ifrvis.data.ytvis import YTVIS
from ifrvis.engine.checkpoint import save_checkpoint, seed_everything
from ifrvis.engine.solver import build_optimizer, build_scheduler
from ifrvis.evaluation import evaluate_ytvis
from ifrvis.inference import run_inference
from ifrvis.modeling import VISModel, build_model
from ifrvis.modeling.backbone import Backbone, build_backbone
from ifrvis.modeling.criterion import build_criterion
from ifrvis.modeling.weights import CheckpointError

IGNORE = -1  # label of padding pixels
PRETRAIN_CLASS_LOSS = "focal"  # stage 2's, whatever the config's (`pretrain_loss`)


class SemanticSegmenter(nn.Module):
    """Backbone + FPN-style head: `images (N, 3, H, W)` in [0, 255] -> logits `(N, K + 1, H / 4, W / 4)`,
    normalised as `VISModel` does."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        pixel_mean: list[float],
        pixel_std: list[float],
        dim: int = 64,
    ):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.lateral = nn.ModuleDict({k: nn.Conv2d(c, dim, 1) for k, c in backbone.out_channels.items()})
        self.head = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, num_classes + 1, 1),
        )

    def forward(self, images: Tensor) -> Tensor:
        features = self.backbone((images - self.pixel_mean) / self.pixel_std)
        size = features["res2"].shape[-2:]
        fused = sum(
            F.interpolate(self.lateral[k](x), size=size, mode="bilinear", align_corners=False)
            for k, x in features.items()
        )
        return self.head(fused)


def semantic_labels(targets: list[dict], padded_size: tuple[int, int]) -> Tensor:
    """Collated clip targets -> per-pixel labels `(B * T, Hp, Wp)` int64: class index + 1 inside an
    instance's (visible, hence disjoint) mask, 0 elsewhere in the image, IGNORE in the padding."""
    frames = len(targets[0]["frame_indices"])
    labels = torch.full((len(targets), frames, *padded_size), IGNORE, dtype=torch.int64)
    for b, target in enumerate(targets):
        h, w = target["image_size"]
        labels[b, :, :h, :w] = 0
        for masks, label in zip(target["masks"], target["labels"]):
            labels[b][masks] = int(label) + 1
    return labels.flatten(0, 1)


def intersections_unions(logits: Tensor, labels: Tensor, num_classes: int) -> np.ndarray:
    """Per-class pixel counts `(K + 1, 2)` = (intersection, union) of the arg-max of
    `logits (N, K + 1, h, w)` with `labels (N, H, W)`, IGNORE pixels left out."""
    pred = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
    valid = labels != IGNORE
    counts = np.zeros((num_classes + 1, 2))
    for c in range(num_classes + 1):
        counts[c, 0] = ((pred == c) & (labels == c) & valid).sum().item()
        counts[c, 1] = (((pred == c) | (labels == c)) & valid).sum().item()
    return counts


def frame_batches(train_set: YTVIS, cfg: Config, batch_size: int) -> Iterator[tuple[Tensor, list[dict]]]:
    """Endless batches of single training frames: images `(B, 1, 3, H, W)` and their targets."""
    dataset = ClipDataset(train_set, replace(cfg.data, clip_length=1), train=True, seed=cfg.seed)
    stream = iter(TrainSampler(len(dataset), seed=cfg.seed))
    while True:
        yield collate_clips([dataset[next(stream)] for _ in range(batch_size)], cfg.model.pixel_mean)


def fit(
    loss_of: Callable[[Tensor, list[dict]], Tensor],
    optimizer: torch.optim.Optimizer,
    solver: SolverConfig,
    train_set: YTVIS,
    cfg: Config,
    desc: str,
    progress: bool,
) -> float:
    """`solver.max_iters` steps of `loss_of(images, targets)` on batches of `solver.batch_size` single
    training frames, with `solver`'s schedule; returns the seconds it took."""
    batches = frame_batches(train_set, cfg, solver.batch_size)
    scheduler = build_scheduler(optimizer, solver)
    tic = time.perf_counter()
    bar = tqdm(range(solver.max_iters), desc=desc, disable=not progress, dynamic_ncols=True)
    for iteration in bar:
        loss = loss_of(*next(batches))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: the loss is {loss.item()} at iteration {iteration}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return round(time.perf_counter() - tic, 1)


def stage_solver(iters: int, lr: float, batch_size: int) -> SolverConfig:
    """The solver of a pretraining stage of `iters` steps, the lr divided by 10 at 80 %; the rest at
    its defaults, not the run's: every run's solver shares the file (`fit` clips no gradient)."""
    return SolverConfig(lr=lr, batch_size=batch_size, max_iters=iters, steps=[int(0.8 * iters)])


def pretrain_loss(cfg: Config, num_points: int) -> LossConfig:
    """The loss of stage 2: the config's weights and focal settings, with pretraining's own class loss
    (focal: the file's class head is IFR's K logits; a softmax run's K + 1 head starts at random, as
    from COCO's) and sampled points, so that runs differing in those share the file."""
    return replace(cfg.loss, class_loss=PRETRAIN_CLASS_LOSS, num_points=num_points)


def pretrain_backbone(
    cfg: Config, train_set: YTVIS, valid_set: YTVIS | None, solver: SolverConfig, progress: bool
) -> tuple[Backbone, dict]:
    """Stage 1: `cfg.model.backbone` trained by semantic segmentation; returns it and its summary."""
    num_classes = len(train_set.category_ids)
    model = SemanticSegmenter(
        build_backbone(cfg.model.backbone), num_classes, cfg.model.pixel_mean, cfg.model.pixel_std
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=solver.lr, weight_decay=solver.weight_decay)

    def loss_of(images: Tensor, targets: list[dict]) -> Tensor:
        labels = semantic_labels(targets, images.shape[-2:])
        logits = model(images.flatten(0, 1))
        up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(up, labels, ignore_index=IGNORE)

    seconds = fit(loss_of, optimizer, solver, train_set, cfg, "pretrain 1/2 backbone", progress)
    summary = {"iters": solver.max_iters, "train_time_s": seconds}
    if valid_set is not None and valid_set.has_annotations:
        summary["valid_iou"] = validation_iou(model, valid_set, cfg, num_classes)
    return model.backbone, summary


def pretrain_image_model(
    cfg: Config,
    backbone: Backbone,
    train_set: YTVIS,
    valid_set: YTVIS | None,
    solver: SolverConfig,
    num_points: int,
    progress: bool,
) -> tuple[VISModel, dict]:
    """Stage 2: the image-level Mask2Former of `cfg.model` (baseline decoder) on single frames, from
    `backbone`; returns it and its summary (with the AP it reaches on the validation videos)."""
    image_cfg = replace(
        cfg,
        model=replace(cfg.model, decoder="mask2former", weights=""),
        data=replace(cfg.data, clip_length=1),
        loss=pretrain_loss(cfg, num_points),
        solver=solver,
    )
    model = build_model(image_cfg.model, image_cfg.loss.class_loss)
    model.backbone.load_state_dict(backbone.state_dict())
    criterion = build_criterion(image_cfg)
    optimizer = build_optimizer(model, image_cfg.solver)

    def loss_of(images: Tensor, targets: list[dict]) -> Tensor:
        return sum(criterion(model(images), targets).values())

    seconds = fit(loss_of, optimizer, solver, train_set, cfg, "pretrain 2/2 image model", progress)
    summary: dict = {"iters": solver.max_iters, "train_time_s": seconds}
    if valid_set is not None and valid_set.has_annotations:
        model.eval()
        with torch.no_grad():
            results = run_inference(model, valid_set, image_cfg, progress=False)
        stats = evaluate_ytvis(valid_set.raw, results)
        summary["valid"] = {key: round(float(stats[key]), 4) for key in ("AP", "AP50", "AP75", "AR10")}
    return model, summary


def pretrain(
    cfg: Config,
    out: str | Path,
    backbone_iters: int = 2000,
    image_iters: int = 16000,
    lr: float = 1e-3,
    batch_size: int = 8,
    num_points: int = 1024,
    progress: bool = True,
) -> dict:
    """Both stages on the training split of `cfg.data`; saves `{"model": state dict, "pretrain":
    summary}` to `out` (what `model.weights` loads) and returns the summary. `batch_size` frames per
    iteration, `num_points` sampled points in stage 2's loss and matching. Deterministic for a given
    `cfg.seed` on one machine."""
    seed_everything(cfg.seed)
    train_set, valid_set = load_splits(cfg.data)
    backbone_solver = stage_solver(backbone_iters, lr, batch_size)
    backbone, stage1 = pretrain_backbone(cfg, train_set, valid_set, backbone_solver, progress)
    image_solver = stage_solver(image_iters, lr, batch_size)
    model, stage2 = pretrain_image_model(
        cfg, backbone, train_set, valid_set, image_solver, num_points, progress
    )
    summary = {
        "backbone": cfg.model.backbone,
        "data": str(Path(cfg.data.root) / cfg.data.train_json),
        "lr": lr,
        "batch_size": batch_size,
        "seed": cfg.seed,
        "semantic_segmentation": stage1,
        "image_instance_segmentation": stage2,
    }
    save_checkpoint(Path(out), {"model": model.state_dict(), "pretrain": summary})
    return summary


@torch.no_grad()
def validation_iou(model: SemanticSegmenter, valid_set, cfg: Config, num_classes: int) -> dict:
    """Background IoU and mean foreground-class IoU over the validation clips (`ClipDataset` frames)."""
    model.eval()
    dataset = ClipDataset(valid_set, cfg.data, train=False, seed=cfg.seed)
    counts = np.zeros((num_classes + 1, 2))
    for start in range(0, len(dataset), 8):
        items = [dataset[i] for i in range(start, min(start + 8, len(dataset)))]
        images, targets = collate_clips(items, cfg.model.pixel_mean)
        labels = semantic_labels(targets, images.shape[-2:])
        counts += intersections_unions(model(images.flatten(0, 1)), labels, num_classes)
    model.train()
    iou = counts[:, 0] / np.maximum(counts[:, 1], 1)
    return {"background": round(float(iou[0]), 4), "mean_foreground": round(float(iou[1:].mean()), 4)}


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifrvis pretrain", description=" ".join(__doc__.split("\n\n")[0].split())
    )
    parser.add_argument("config", help="run config: its data, model and loss settings are used")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    parser.add_argument("--out", help="where to write the weights (default: the config's model.weights)")
    parser.add_argument("--backbone-iters", type=int, default=2000, help="stage 1: semantic segmentation")
    parser.add_argument("--iters", type=int, default=16000, help="stage 2: image-level Mask2Former")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8, help="frames per iteration")
    parser.add_argument("--num-points", type=int, default=1024, help="stage 2: sampled points (0: dense)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--check", action="store_true", help="build nothing: check model.weights against its provenance"
    )
    return parser


def pretrain_options(args: argparse.Namespace) -> dict:
    """Pretraining's own settings on the command line: `pretrain`'s keyword arguments."""
    return {
        "backbone_iters": args.backbone_iters,
        "image_iters": args.iters,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "num_points": args.num_points,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.check:
        return check_main(cfg, args.config)
    out = args.out or cfg.model.weights
    if not out:
        parser.error("the config sets no model.weights: pass --out")
    options = pretrain_options(args)
    code = git_state()  # before the build: commits made while it runs did not make the file
    summary = pretrain(cfg, out, **options, progress=not args.no_progress)
    command = shlex.join([*REBUILD.split(), *argv])
    options |= {"class_loss": PRETRAIN_CLASS_LOSS, "seed": cfg.seed}
    record = write_provenance(Path(out), cfg, args.config, command, options, summary, code)
    print(json.dumps({"out": str(out), "provenance": str(record), **summary}))
    return 0


def check_main(cfg: Config, config: str) -> int:
    """`ifrvis pretrain --check CONFIG`: `check_pretrained`, and what was checked, in one line."""
    weights = cfg.model.weights
    if not weights or not Path(weights).is_file():
        raise CheckpointError(f"model.weights {weights!r} is missing: make it with `{REBUILD} {config}`")
    record = provenance_path(weights)
    check_pretrained(cfg)
    if record.is_file():
        print(f"{weights} matches {config} (pretrain signature {read_provenance(record)['signature']})")
    else:
        print(f"{weights}: no provenance ({record}), nothing to check")
    return 0
