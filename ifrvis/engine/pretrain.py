"""Backbone pretraining by dense semantic segmentation: the synthetic benchmark's stand-in for the
ImageNet/COCO initialisation the paper's models start from (Sec. 4.1).

    ifrvis pretrain experiments/configs/synthetic_tiny.yaml [key=value ...] [--iters 2000] [--out PATH]

Trains `model.backbone` with a light FPN head to label every pixel of the training frames with its
instance's category (0 = background), then writes the backbone's weights to `--out` (default: the
config's `model.weights`, so the file lands where the runs load it). Why: trained from scratch inside a
run, the tiny backbone learns shape categories far slower than the decoder learns masks (benchmarks/
README.md, "Synthetic quality"); per-pixel labels are a much denser signal, and the file is made once
and shared by every run of a sweep, as a pretrained checkpoint is.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ifrvis.config import Config, load_config
from ifrvis.data.datasets import ClipDataset, TrainSampler, collate_clips
from ifrvis.engine.checkpoint import save_checkpoint
from ifrvis.engine.train import load_splits, seed_everything
from ifrvis.modeling.backbone import Backbone, build_backbone

IGNORE = -1  # label of padding pixels


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


def pretrain_backbone(
    cfg: Config,
    out: str | Path,
    iters: int = 2000,
    lr: float = 1e-3,
    batch_size: int = 4,
    progress: bool = True,
) -> dict:
    """Pretrain `cfg.model.backbone` on the training split of `cfg.data`, save it to `out` as
    `{"model": {"backbone.*": ...}, "pretrain": recipe and validation IoU}` (what `model.weights`
    loads) and return that summary. Deterministic for a given `cfg.seed` on one machine."""
    seed_everything(cfg.seed)
    train_set, valid_set = load_splits(cfg)
    num_classes = len(train_set.category_ids)
    model = SemanticSegmenter(
        build_backbone(cfg.model.backbone), num_classes, cfg.model.pixel_mean, cfg.model.pixel_std
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.solver.weight_decay)
    dataset = ClipDataset(train_set, cfg.data, train=True, seed=cfg.seed)
    stream = iter(TrainSampler(len(dataset), seed=cfg.seed))
    model.train()
    tic = time.perf_counter()
    bar = tqdm(range(iters), desc=f"pretrain {cfg.model.backbone}", disable=not progress, dynamic_ncols=True)
    for iteration in bar:
        images, targets = collate_clips([dataset[next(stream)] for _ in range(batch_size)])
        labels = semantic_labels(targets, images.shape[-2:])
        logits = model(images.flatten(0, 1))
        up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(up, labels, ignore_index=IGNORE)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretraining loss is {loss.item()} at iteration {iteration}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    summary = {
        "backbone": cfg.model.backbone,
        "data": str(Path(cfg.data.root) / cfg.data.train_json),
        "iters": iters,
        "lr": lr,
        "batch_size": batch_size,
        "seed": cfg.seed,
        "train_time_s": round(time.perf_counter() - tic, 1),
    }
    if valid_set is not None and valid_set.has_annotations:
        summary["valid_iou"] = validation_iou(model, valid_set, cfg, num_classes)
    state = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    save_checkpoint(Path(out), {"model": state, "pretrain": summary})
    return summary


@torch.no_grad()
def validation_iou(model: SemanticSegmenter, valid_set, cfg: Config, num_classes: int) -> dict:
    """Background IoU and mean foreground-class IoU over the validation clips (`ClipDataset` frames)."""
    model.eval()
    dataset = ClipDataset(valid_set, cfg.data, train=False, seed=cfg.seed)
    counts = np.zeros((num_classes + 1, 2))
    for start in range(0, len(dataset), 8):
        images, targets = collate_clips([dataset[i] for i in range(start, min(start + 8, len(dataset)))])
        labels = semantic_labels(targets, images.shape[-2:])
        counts += intersections_unions(model(images.flatten(0, 1)), labels, num_classes)
    model.train()
    iou = counts[:, 0] / np.maximum(counts[:, 1], 1)
    return {"background": round(float(iou[0]), 4), "mean_foreground": round(float(iou[1:].mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ifrvis pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="run config: its data, model.backbone and model.weights are used")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    parser.add_argument("--out", help="where to write the weights (default: the config's model.weights)")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=4, help="clips per iteration")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    out = args.out or cfg.model.weights
    if not out:
        parser.error("the config sets no model.weights: pass --out")
    summary = pretrain_backbone(cfg, out, args.iters, args.lr, args.batch_size, not args.no_progress)
    print(json.dumps({"out": str(out), **summary}))
    return 0
