"""Point sampling of masks (Mask2Former / PointRend): bound the cost of mask losses and matching.

Coordinates are normalised to [0, 1] over the whole map, (x, y) order, `align_corners=False`, so the
same point addresses the same place in a prediction (H/4, W/4) and in its target (H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(maps: Tensor, coords: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Bilinear values of `maps (N, C, H, W)` at `coords (N, P, 2)` in [0, 1] -> `(N, C, P)`.

    Zero padding as detectron2's `point_sample` (the losses and the matcher): points within half a pixel
    of the edge are pulled towards 0. `"border"` reads the edge pixel instead, as a dense bilinear resize
    does (test-time augmentation's resampling of one pass onto another's grid)."""
    grid = 2.0 * coords[:, :, None, :] - 1.0  # (N, P, 1, 2) in [-1, 1]
    return F.grid_sample(
        maps, grid.to(maps.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=False
    )[..., 0]


def uncertainty(logits: Tensor) -> Tensor:
    """Mask2Former's uncertainty of mask logits: points near the decision boundary score highest."""
    return -logits.abs()


def uncertain_point_coords(
    logits: Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> Tensor:
    """Points for the mask loss of `logits (N, 1, h, w)` -> `(N, num_points, 2)` in [0, 1].

    Draws `oversample_ratio * num_points` uniform candidates, keeps the `importance_sample_ratio`
    share that are most uncertain and fills the rest with fresh uniform points (Mask2Former)."""
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"loss.oversample_ratio must be >= 1 and loss.importance_sample_ratio in [0, 1], "
            f"got {oversample_ratio} and {importance_sample_ratio}"
        )
    n = logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    candidates = torch.rand(n, num_candidates, 2, device=logits.device)
    scores = uncertainty(point_sample(logits, candidates))[:, 0]  # (N, num_candidates)
    num_uncertain = int(importance_sample_ratio * num_points)
    top = scores.topk(num_uncertain, dim=1).indices  # (N, num_uncertain)
    chosen = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        chosen = torch.cat([chosen, torch.rand(n, num_random, 2, device=logits.device)], dim=1)
    return chosen
