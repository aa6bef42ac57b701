"""Pretraining for the synthetic benchmark: the stand-in for the COCO-pretrained initialisation the
paper's models start from (Sec. 4.1).

`ifrvis pretrain CONFIG` (ifrvis.commands.pretrain) runs it and records its provenance
(ifrvis.engine.provenance).

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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ifrvis.config import Config, LossConfig, SolverConfig
from ifrvis.data.datasets import ClipDataset, TrainSampler, collate_clips
from ifrvis.data.splits import load_splits
from ifrvis.data.ytvis import YTVIS
from ifrvis.engine.checkpoint import save_checkpoint, seed_everything
from ifrvis.engine.solver import build_optimizer, build_scheduler
from ifrvis.evaluation import evaluate_ytvis
from ifrvis.inference import run_inference
from ifrvis.modeling import VISModel, build_model
from ifrvis.modeling.backbone import Backbone, build_backbone
from ifrvis.modeling.criterion import build_criterion

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
