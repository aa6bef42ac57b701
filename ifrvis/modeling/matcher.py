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
    """`probs (Q, C)` class probabilities, `labels (M,)` -> cost `(Q, M)`.

    "prob": -p̂(c) (Eq. 4). "focal" (sigmoid probabilities only): Deformable DETR's focal-loss
    difference at the label,
    α (1 - p)^γ (-log p) - (1 - α) p^γ (-log (1 - p)).
    A "no object" label (c = K) costs -p̂(no object) with softmax probabilities (C = K + 1, as
    Mask2Former-VIS's matcher) and 0 with sigmoid ones (C = K): its target row has no positive class."""
    column = labels.clamp(max=probs.shape[1] - 1)
    p = probs[:, column]
    if kind == "prob":
        cost = -p
    elif kind == "focal":
        eps = 1e-8
        pos = alpha * (1 - p) ** gamma * -(p + eps).log()
        neg = (1 - alpha) * p**gamma * -(1 - p + eps).log()
        cost = pos - neg
    else:
        raise ValueError(f"loss.matcher_class_cost must be one of {CLASS_COSTS}, got {kind!r}")
    return cost.masked_fill(labels >= probs.shape[1], 0.0)


def bce_cost_matrix(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy of every pair: `logits (Q, N)`, `targets (M, N)` in [0, 1] -> `(Q, M)`.

    BCE(x, y) = softplus(x) - x y, so the pairwise sum is one matrix product."""
    n = logits.shape[1]
    return (F.softplus(logits).sum(1, keepdim=True) - logits @ targets.T) / n


def dice_cost_matrix(logits: Tensor, targets: Tensor) -> Tensor:
    """1 - Dice of every pair (Mask2Former's +1 smoothing): `(Q, N)`, `(M, N)` -> `(Q, M)`."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(1)[:, None] + targets.sum(1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def clip_mask_pairs(pred_masks: Tensor, gt_masks: Tensor, num_points: int) -> tuple[Tensor, Tensor]:
    """Flatten one clip's masks for the Eq. 4 mask costs.

    `pred_masks (Q, T, h, w)` logits, `gt_masks (M, T, H, W)` -> `(Q, N)` logits and `(M, N)` float
    targets, N = T * H * W (dense, predictions upsampled) or T * num_points (the same random points
    in every frame)."""
    gt = gt_masks.to(pred_masks.dtype)
    if num_points > 0:
        coords = torch.rand(1, num_points, 2, device=pred_masks.device)
        pred = point_sample(pred_masks, coords.expand(pred_masks.shape[0], -1, -1))
        gt = point_sample(gt, coords.expand(gt.shape[0], -1, -1))
    else:
        pred = F.interpolate(pred_masks, size=gt.shape[-2:], mode="bilinear", align_corners=False)
    return pred.flatten(1), gt.flatten(1)


def hungarian(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost assignment of `cost (Q, M)` -> (row indices, column indices), int64, sorted by row."""
    if not torch.isfinite(cost).all():
        raise ValueError("matching cost has NaN or inf entries: check pred_logits / pred_masks for NaN")
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

    def cost_matrix(self, probs: Tensor, pred_masks: Tensor, labels: Tensor, gt_masks: Tensor) -> Tensor:
        """Eq. 4 for one clip: `probs (Q, K)` or `(Q, K + 1)` (`matching_probabilities`), `pred_masks
        (Q, T, h, w)` logits, `labels (M,)`, `gt_masks (M, T, H, W)` -> `(Q, M)`."""
        cfg = self.cfg
        pred, gt = clip_mask_pairs(pred_masks.float(), gt_masks, cfg.num_points)
        cost_class = class_cost_matrix(
            probs.float(), labels, cfg.matcher_class_cost, cfg.focal_alpha, cfg.focal_gamma
        )
        return (
            cfg.class_weight * cost_class
            + cfg.mask_weight * bce_cost_matrix(pred, gt)
            + cfg.dice_weight * dice_cost_matrix(pred, gt)
        )

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        """`outputs`: `pred_logits (B, Q, K)` (focal) or `(B, Q, K + 1)` (softmax), `pred_masks
        (B, Q, T, h, w)`; `targets`: B dicts with `labels (M,)`, `masks (M, T, H, W)`."""
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        if len(targets) != logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {logits.shape[0]} clips")
        indices = []
        for b, target in enumerate(targets):
            labels, gt_masks = target["labels"], target["masks"]
            if labels.numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            if gt_masks.shape[1] != masks.shape[2]:
                raise ValueError(
                    f"targets[{b}]['masks'] has {gt_masks.shape[1]} frames, pred_masks {masks.shape[2]}"
                )
            probs = matching_probabilities(logits[b].float(), self.cfg.class_loss)
            cost = self.cost_matrix(probs, masks[b], labels, gt_masks)
            indices.append(hungarian(cost))
        return indices
