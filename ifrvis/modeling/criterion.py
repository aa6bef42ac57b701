"""Training loss (Eqs. 5-7): classification loss on clip-level queries, per-frame BCE and Dice on
matched masks, and the cross-frame terms (frame t1's query predicting frame t2's mask, weighted λ_e).

The classification loss is IFR's sigmoid focal loss over K logits (`class_loss="focal"`, Eq. 5), or
Mask2Former-VIS's softmax cross-entropy over K + 1 logits whose last class, "no object", the unmatched
queries are pushed to, weighted `no_object_weight` (`class_loss="softmax"`).

`SetCriterion(outputs, targets)` returns WEIGHTED terms whose sum is the loss: `loss_cls`,
`loss_mask`, `loss_dice`, `loss_mask_cross`, `loss_dice_cross` (cross terms only when the outputs
hold `pred_cross_masks` and λ_e > 0), and the same with suffix `_{i}` for auxiliary decoder layer i,
each layer matched anew (deep supervision). Every term is normalised by the number of ground-truth
instances in the batch (all ranks), as Deformable DETR / Mask2Former do, except the softmax
cross-entropy: F.cross_entropy's weighted mean over all queries, as Mask2Former's `loss_labels`.

Every setting (weights, λ_e, focal α and γ, point sampling, the class loss) comes from `LossConfig`,
the one place of their defaults; the criterion and its matcher read the same one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ifrvis.config import Config, LossConfig
from ifrvis.modeling.layers import class_logit_count
from ifrvis.modeling.matcher import HungarianMatcher
from ifrvis.modeling.point_sampling import point_sample, uncertain_point_coords


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    """Element-wise focal loss (Lin et al.), same shape as `logits`; alpha < 0 disables the weighting."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def per_mask_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean BCE over the last dimension: `(..., P)`, `(..., P)` -> `(...)`."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)


def per_mask_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """1 - Dice over the last dimension, +1 smoothing (an empty target asks for an empty mask)."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def num_instances(targets: list[dict], device: torch.device) -> float:
    """Ground-truth instances in the whole batch, averaged over ranks, at least 1."""
    count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return max(count.item(), 1.0)


PER_INSTANCE_KEYS = ("labels", "masks", "present", "instance_ids")


def present_targets(target: dict) -> dict:
    """Keep the instances present in at least one frame of the clip: a label needs a frame that shows it."""
    if "present" not in target:
        return target
    keep = target["present"].any(1)
    if bool(keep.all()):
        return target
    return {key: value[keep] if key in PER_INSTANCE_KEYS else value for key, value in target.items()}


class BatchTargets(NamedTuple):
    """The instances of a batch's clips, concatenated once for every decoder layer's losses: `labels
    (sum M,)`, `masks (sum M, T, H, W)` float, `offsets (B,)` (clip b's instances start at offsets[b])."""

    labels: Tensor
    masks: Tensor
    offsets: Tensor

    @classmethod
    def of(cls, targets: list[dict], device: torch.device) -> BatchTargets:
        counts = torch.tensor([len(t["labels"]) for t in targets])
        offsets = (counts.cumsum(0) - counts).to(device)
        labels = torch.cat([t["labels"] for t in targets]).to(device)
        return cls(labels, torch.cat([t["masks"] for t in targets]).to(device).float(), offsets)

    def pairs(self, indices: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
        """The matcher's per-clip (query, instance) indices -> flat `(clip, query, instance) (N,)`, the
        instance indexing `labels` and `masks`."""
        device = self.labels.device
        clip = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)]).to(device)
        query = torch.cat([q for q, _ in indices]).to(device)
        instance = torch.cat([i for _, i in indices]).to(device) + self.offsets[clip]
        return clip, query, instance


class SetCriterion(nn.Module):
    """Eqs. 5-7 with `cfg`'s settings for `num_classes` classes, matched by `HungarianMatcher(cfg)`."""

    def __init__(self, cfg: LossConfig, num_classes: int):
        super().__init__()
        self.cfg = replace(cfg)  # a copy: later edits of the run's config do not reach it
        self.num_classes = num_classes
        self.num_logits = class_logit_count(num_classes, cfg.class_loss)
        self.matcher = HungarianMatcher(cfg)

    def normaliser(self, targets: list[dict], device: torch.device) -> float:
        """What every term is divided by: the ground-truth instances of the whole step (all of its
        micro-batches, averaged over ranks: Mask2Former's num_masks)."""
        return num_instances([present_targets(t) for t in targets], device)

    def forward(self, outputs: dict, targets: list[dict], norm: float | None = None) -> dict[str, Tensor]:
        """`outputs`: `pred_logits (B, Q, K)` (focal) or `(B, Q, K + 1)` (softmax), `pred_masks
        (B, Q, T, h, w)`, optional
        `pred_cross_masks (B, Q, T, T, h, w)` and `aux_outputs`; `targets`: B dicts with
        `labels (M,)` (K: "no object", whose masks are still targets), `masks (M, T, H, W) bool`,
        `present (M, T)`. `norm`: the step's `normaliser` when `targets` are one of its micro-batches
        (default: these targets')."""
        device = outputs["pred_logits"].device
        # Loss arithmetic in float32 even when the model runs under autocast.
        with torch.autocast(device_type=device.type, enabled=False):
            targets = [present_targets(t) for t in targets]
            norm = num_instances(targets, device) if norm is None else norm
            batch = BatchTargets.of(targets, device)
            losses = self.layer_losses(outputs, targets, batch, norm)
            if self.cfg.deep_supervision:
                for i, aux in enumerate(outputs.get("aux_outputs", [])):
                    layer = self.layer_losses(aux, targets, batch, norm)
                    losses.update({f"{k}_{i}": v for k, v in layer.items()})
        return losses

    def layer_losses(
        self, outputs: dict, targets: list[dict], batch: BatchTargets, norm: float
    ) -> dict[str, Tensor]:
        """The weighted terms of one decoder layer, matched on its own predictions."""
        logits = outputs["pred_logits"].float()
        if logits.shape[-1] != self.num_logits:
            raise ValueError(
                f"pred_logits has {logits.shape[-1]} classes but model.num_classes = {self.num_classes} "
                f"with loss.class_loss = {self.cfg.class_loss!r} needs {self.num_logits}"
            )
        clip, query, instance = batch.pairs(self.matcher(outputs, targets))
        labels = batch.labels[instance]
        cfg = self.cfg
        if cfg.class_loss == "softmax":
            loss_cls = self.softmax_classification_loss(logits, clip, query, labels)
        else:
            loss_cls = self.classification_loss(logits, clip, query, labels) / norm
        losses = {"loss_cls": cfg.class_weight * loss_cls}

        # Matched pairs of the whole batch: src (N, T, h, w) logits, tgt (N, T, H, W).
        src = outputs["pred_masks"][clip, query].float()
        tgt = batch.masks[instance]
        # Eqs. 6-7, first terms: per-frame BCE and Dice summed over frames t1 (and instances).
        bce, dice = self.mask_terms(src, tgt)
        losses["loss_mask"] = cfg.mask_weight * bce / norm
        losses["loss_dice"] = cfg.dice_weight * dice / norm

        if "pred_cross_masks" in outputs and cfg.lambda_e > 0:
            cross = outputs["pred_cross_masks"][clip, query].float()
            t = cross.shape[1]
            t1, t2 = (~torch.eye(t, dtype=torch.bool, device=cross.device)).nonzero(as_tuple=True)
            # Eqs. 6-7, cross terms: frame t1's query on frame t2's pixels against frame t2's mask, t2 != t1.
            bce_x, dice_x = self.mask_terms(cross[:, t1, t2], tgt[:, t2])
            losses["loss_mask_cross"] = cfg.mask_weight * cfg.lambda_e * bce_x / norm
            losses["loss_dice_cross"] = cfg.dice_weight * cfg.lambda_e * dice_x / norm
        return losses

    def classification_loss(self, logits: Tensor, clip: Tensor, query: Tensor, labels: Tensor) -> Tensor:
        """Sigmoid focal loss over all queries and classes, summed (Eq. 5's L_cls); unmatched queries,
        and queries matched to a "no object" target (label K), are pushed to 0 on every class. The
        matched pairs: `clip`, `query`, `labels` `(N,)`."""
        onehot = torch.zeros_like(logits)
        is_object = labels < self.num_classes
        onehot[clip[is_object], query[is_object], labels[is_object]] = 1.0
        return sigmoid_focal_loss(logits, onehot, self.cfg.focal_alpha, self.cfg.focal_gamma).sum()

    def softmax_classification_loss(
        self, logits: Tensor, clip: Tensor, query: Tensor, labels: Tensor
    ) -> Tensor:
        """Mask2Former-VIS's L_cls: cross-entropy of `logits (B, Q, K + 1)` against each matched query's
        label and "no object" (index K) for the rest, class K weighted `no_object_weight`; the weighted
        mean over all B x Q queries (sum of w_y CE / sum of w_y), as F.cross_entropy with `weight`."""
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        target_classes[clip, query] = labels
        weight = logits.new_ones(self.num_classes + 1)
        weight[-1] = self.cfg.no_object_weight
        return F.cross_entropy(logits.transpose(1, 2), target_classes, weight)

    def mask_terms(self, src: Tensor, tgt: Tensor) -> tuple[Tensor, Tensor]:
        """Sums over pairs and frames of per-frame BCE and 1 - Dice: `src (N, F, h, w)` logits,
        `tgt (N, F, H, W)` in {0, 1} -> two scalars. Dense (predictions bilinearly upsampled to H x W)
        when `num_points = 0`, else on uncertainty-sampled points per (pair, frame)."""
        if src.shape[0] == 0:
            zero = src.sum() * 0.0  # keeps the graph: every parameter still gets a (zero) gradient
            return zero, zero
        cfg = self.cfg
        if cfg.num_points > 0:
            src_maps, tgt_maps = src.flatten(0, 1)[:, None], tgt.flatten(0, 1)[:, None]
            with torch.no_grad():
                coords = uncertain_point_coords(
                    src_maps, cfg.num_points, cfg.oversample_ratio, cfg.importance_sample_ratio
                )
                labels = point_sample(tgt_maps, coords)[:, 0]
            points = point_sample(src_maps, coords)[:, 0]  # (N * F, P)
        else:
            up = F.interpolate(src, size=tgt.shape[-2:], mode="bilinear", align_corners=False)
            points, labels = up.flatten(2), tgt.flatten(2)  # (N, F, H * W)
        return per_mask_bce(points, labels).sum(), per_mask_dice(points, labels).sum()


def build_criterion(cfg: Config) -> SetCriterion:
    """The criterion of `cfg.loss` for `cfg.model.num_classes` classes."""
    return SetCriterion(cfg.loss, cfg.model.num_classes)
