"""Hungarian matching of clip-level queries to ground-truth video instances (Eq. 4).

C_match = -λ_c p̂(c) + λ_m BCE(m, m̂) + λ_d (1 - DICE(m, m̂)), with BCE and Dice over the masks of the
whole clip (all frames concatenated, as Mask2Former-VIS). p̂ is the class probability as the classifier
is trained: sigmoid for the focal loss (IFR), softmax over K + 1 logits for cross-entropy with a
"no object" class (Mask2Former-VIS, whose cost is the same -λ_c p̂(c)). With `num_points > 0` the
masks are compared on K random points shared by every frame, query and instance of the clip; with
`num_points = 0` densely, with the predictions bilinearly upsampled to the ground-truth resolution
(exact). Every setting comes from `LossConfig`, the one place of their defaults.
"""

from __future__ import annotations

import typing
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ifrvis.config import ClassCost, LossConfig
from ifrvis.modeling.layers import class_probabilities
from ifrvis.modeling.point_sampling import point_sample

CLASS_COSTS = typing.get_args(ClassCost)


def class_cost_matrix(probs: Tensor, labels: Tensor, kind: str, alpha: float, gamma: float) -> Tensor:
    """`probs (..., Q, C)` class probabilities, `labels (..., M)` -> cost `(..., Q, M)`.

    "prob": -p̂(c) (Eq. 4). "focal" (sigmoid probabilities only): Deformable DETR's focal-loss
    difference at the label,
    α (1 - p)^γ (-log p) - (1 - α) p^γ (-log (1 - p)).
    A "no object" label (c = K) costs -p̂(no object) with softmax probabilities (C = K + 1, as
    Mask2Former-VIS's matcher) and 0 with sigmoid ones (C = K): its target row has no positive class."""
    classes = probs.shape[-1]
    column = labels.clamp(max=classes - 1).unsqueeze(-2)  # (..., 1, M)
    p = probs.gather(-1, column.expand(*probs.shape[:-1], column.shape[-1]))
    if kind == "prob":
        cost = -p
    elif kind == "focal":
        eps = 1e-8
        pos = alpha * (1 - p) ** gamma * -(p + eps).log()
        neg = (1 - alpha) * p**gamma * -(1 - p + eps).log()
        cost = pos - neg
    else:
        raise ValueError(f"loss.matcher_class_cost must be one of {CLASS_COSTS}, got {kind!r}")
    return cost.masked_fill(labels.unsqueeze(-2) >= classes, 0.0)


def bce_cost_matrix(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy of every pair: `logits (..., Q, N)`, `targets (..., M, N)` in [0, 1] ->
    `(..., Q, M)`.

    BCE(x, y) = softplus(x) - x y, so the pairwise sum is one matrix product."""
    n = logits.shape[-1]
    return (F.softplus(logits).sum(-1, keepdim=True) - logits @ targets.transpose(-1, -2)) / n


def dice_cost_matrix(logits: Tensor, targets: Tensor) -> Tensor:
    """1 - Dice of every pair (Mask2Former's +1 smoothing): `(..., Q, N)`, `(..., M, N)` -> `(..., Q, M)`."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.transpose(-1, -2)
    denominator = probs.sum(-1, keepdim=True) + targets.sum(-1).unsqueeze(-2)
    return 1 - (numerator + 1) / (denominator + 1)


def batch_mask_pairs(pred_masks: Tensor, gt_masks: list[Tensor], num_points: int) -> tuple[Tensor, Tensor]:
    """Flatten the masks of B clips for the Eq. 4 mask costs, all clips at once.

    `pred_masks (B, Q, T, h, w)` logits, B tensors `gt_masks (M_b, T, H, W)` -> `(B, Q, N)` logits and
    `(B, max M_b, N)` float targets (rows past M_b zero), N = T * H * W (dense, predictions upsampled) or
    T * num_points (random points, one set per clip shared by its frames, drawn clip after clip)."""
    b, q, t = pred_masks.shape[:3]
    counts = [len(g) for g in gt_masks]
    gt = torch.cat(gt_masks).to(pred_masks.dtype)  # (sum M_b, T, H, W)
    clip_of = torch.repeat_interleave(
        torch.arange(b, device=gt.device), torch.tensor(counts, device=gt.device)
    )
    if num_points > 0:
        coords = torch.rand(b, num_points, 2, device=pred_masks.device)
        pred = point_sample(pred_masks.flatten(1, 2), coords)  # (B, Q * T, P)
        gt = point_sample(gt, coords[clip_of])
    else:
        size = gt.shape[-2:]
        pred = F.interpolate(pred_masks.flatten(0, 1), size=size, mode="bilinear", align_corners=False)
    padded = gt.new_zeros(b, max(counts), t * gt.shape[-1] * (1 if num_points > 0 else gt.shape[-2]))
    rank = torch.cat([torch.arange(m, device=gt.device) for m in counts])  # an instance's row in its clip
    padded[clip_of, rank] = gt.flatten(1)
    return pred.reshape(b, q, -1), padded


def clip_mask_pairs(pred_masks: Tensor, gt_masks: Tensor, num_points: int) -> tuple[Tensor, Tensor]:
    """`batch_mask_pairs` of one clip: `pred_masks (Q, T, h, w)`, `gt_masks (M, T, H, W)` -> `(Q, N)`,
    `(M, N)`."""
    pred, gt = batch_mask_pairs(pred_masks[None], [gt_masks], num_points)
    return pred[0], gt[0]


def hungarian(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost assignment of `cost (Q, M)` -> (row indices, column indices), int64, sorted by row."""
    if not torch.isfinite(cost).all():
        raise FloatingPointError("matching cost has NaN or inf entries: the model's outputs are not finite")
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(np.asarray(cols), dtype=torch.int64)


def matching_probabilities(logits: Tensor, class_loss: str) -> Tensor:
    """`logits (Q, K)` (focal) or `(Q, K + 1)` (softmax) -> the probabilities Eq. 4 reads: sigmoid `(Q, K)`,
    or softmax `(Q, K + 1)` with the "no object" column kept for "no object" targets."""
    if class_loss == "softmax":
        return logits.softmax(-1)
    return class_probabilities(logits, class_loss)


class HungarianMatcher(nn.Module):
    """Eq. 4 matcher with `cfg`'s weights λ_c (`class_weight`), λ_m (`mask_weight`), λ_d
    (`dice_weight`), `num_points`, `matcher_class_cost` (with `focal_alpha`, `focal_gamma`) and
    `class_loss`, which says how `pred_logits` become probabilities (`matching_probabilities`).
    `forward(outputs, targets) -> [(query_idx (n,), instance_idx (n,)) per clip]`."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        if cfg.matcher_class_cost not in CLASS_COSTS:
            raise ValueError(
                f"loss.matcher_class_cost must be one of {CLASS_COSTS}, got {cfg.matcher_class_cost!r}"
            )
        if cfg.matcher_class_cost == "focal" and cfg.class_loss != "focal":
            raise ValueError("loss.matcher_class_cost 'focal' needs loss.class_loss 'focal'")
        self.cfg = replace(cfg)  # a copy: later edits of the run's config do not reach it

    def costs(self, probs: Tensor, pred: Tensor, labels: Tensor, gt: Tensor) -> Tensor:
        """Eq. 4 from flattened masks (`batch_mask_pairs`): `probs (..., Q, C)`, `pred (..., Q, N)`
        logits, `labels (..., M)`, `gt (..., M, N)` -> `(..., Q, M)`."""
        cfg = self.cfg
        cost_class = class_cost_matrix(
            probs, labels, cfg.matcher_class_cost, cfg.focal_alpha, cfg.focal_gamma
        )
        return (
            cfg.class_weight * cost_class
            + cfg.mask_weight * bce_cost_matrix(pred, gt)
            + cfg.dice_weight * dice_cost_matrix(pred, gt)
        )

    def cost_matrix(self, probs: Tensor, pred_masks: Tensor, labels: Tensor, gt_masks: Tensor) -> Tensor:
        """Eq. 4 for one clip: `probs (Q, K)` or `(Q, K + 1)` (`matching_probabilities`), `pred_masks
        (Q, T, h, w)` logits, `labels (M,)`, `gt_masks (M, T, H, W)` -> `(Q, M)`."""
        pred, gt = clip_mask_pairs(pred_masks.float(), gt_masks, self.cfg.num_points)
        return self.costs(probs.float(), pred, labels, gt)

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        """`outputs`: `pred_logits (B, Q, K)` (focal) or `(B, Q, K + 1)` (softmax), `pred_masks
        (B, Q, T, h, w)`; `targets`: B dicts with `labels (M,)`, `masks (M, T, H, W)`. The cost matrices
        of all clips are computed together (padded to the largest M), then solved clip by clip."""
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        if len(targets) != logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {logits.shape[0]} clips")
        for b, target in enumerate(targets):
            frames = target["masks"].shape[1]
            if target["labels"].numel() and frames != masks.shape[2]:
                raise ValueError(f"targets[{b}]['masks'] has {frames} frames, pred_masks {masks.shape[2]}")
        empty = torch.zeros(0, dtype=torch.int64)
        indices = [(empty, empty.clone()) for _ in targets]
        clips = [b for b, target in enumerate(targets) if target["labels"].numel() > 0]
        if not clips:
            return indices
        pred, gt = batch_mask_pairs(
            masks[clips].float(), [targets[b]["masks"] for b in clips], self.cfg.num_points
        )
        labels = nn.utils.rnn.pad_sequence([targets[b]["labels"] for b in clips], batch_first=True)
        probs = matching_probabilities(logits[clips].float(), self.cfg.class_loss)
        cost = self.costs(probs, pred, labels, gt).cpu()  # (clips, Q, max M)
        for b, clip_cost in zip(clips, cost):
            indices[b] = hungarian(clip_cost[:, : len(targets[b]["labels"])])
        return indices
