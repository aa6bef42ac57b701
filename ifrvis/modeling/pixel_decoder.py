"""Pixel decoder (Sec. 3.1): a multi-scale deformable-attention encoder (Deformable DETR) over the
stride-8/16/32 levels, then an FPN step to stride 4 and a 1x1 conv to the per-pixel embeddings, as
Mask2Former's `MSDeformAttnPixelDecoder`. Deformable sampling is pure PyTorch (`grid_sample`).

Per frame: `forward(features {"res2".."res5"}) -> (mask_features (N, mask_dim, H/4, W/4),
multi_scale [(N, C, H/32, W/32), (N, C, H/16, W/16), (N, C, H/8, W/8)])`, coarse to fine.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ifrvis.modeling.layers import sine_position_2d, xavier_init

ENCODER_LEVELS = ("res5", "res4", "res3")  # coarse to fine, as Mask2Former orders them


def ms_deform_attn_sample(
    value: Tensor, spatial_shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor
) -> Tensor:
    """Multi-scale deformable attention core (Deformable DETR's PyTorch reference).

    value `(N, S, heads, Dh)` with S = sum of h*w over levels; locations `(N, Lq, heads, L, P, 2)` as
    (x, y) in [0, 1]; weights `(N, Lq, heads, L, P)` -> `(N, Lq, heads * Dh)`. Bilinear sampling,
    zero outside the map, pixel centres at (i + 0.5) / size (align_corners=False).
    """
    n, _, heads, head_dim = value.shape
    _, num_queries, _, levels, points, _ = locations.shape
    per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * locations - 1
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes):
        level_value = per_level[level].flatten(2).transpose(1, 2).reshape(n * heads, head_dim, h, w)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (N * heads, Lq, P, 2)
        sampled.append(
            F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (N * heads, Dh, Lq, P)
    weights = weights.transpose(1, 2).reshape(n * heads, 1, num_queries, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (N * heads, Dh, Lq)
    return out.view(n, heads * head_dim, num_queries).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: each query samples `points` locations per head and level around
    its reference point, offsets and weights predicted from the query."""

    def __init__(self, dim: int = 256, levels: int = 3, heads: int = 8, points: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model.hidden_dim = {dim} must be divisible by model.enc_heads = {heads}")
        self.levels, self.heads, self.points = levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: initial offsets point in `heads` directions, growing with k."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.heads, 1, 1, 2)
        grid = grid.repeat(1, self.levels, self.points, 1) * torch.arange(1, self.points + 1).view(
            1, 1, -1, 1
        )
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        for layer in (self.attention_weights,):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self, query: Tensor, reference_points: Tensor, value: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """query `(N, Lq, C)`, reference_points `(N, Lq, L, 2)` in [0, 1], value `(N, S, C)`: `(N, Lq, C)`."""
        n, num_queries, _ = query.shape
        value = self.value_proj(value).view(n, value.shape[1], self.heads, -1)
        offsets = self.sampling_offsets(query).view(n, num_queries, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(n, num_queries, self.heads, self.levels * self.points)
        weights = weights.softmax(-1).view(n, num_queries, self.heads, self.levels, self.points)
        # Offsets are in pixels of each level: normalise by that level's (w, h).
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        locations = (
            reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        )
        return self.output_proj(ms_deform_attn_sample(value, spatial_shapes, locations, weights))


class DeformableEncoderLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, heads: int, points: int, levels: int, dropout: float):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        # Mask2Former's encoder xavier-initialises every matrix before MSDeformAttn's own reset: here the FFN.
        xavier_init(self.linear1)
        xavier_init(self.linear2)

    def forward(
        self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        src = self.norm1(src + self.dropout(self.self_attn(src + pos, reference_points, src, spatial_shapes)))
        return self.norm2(src + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(src))))))


def reference_points(spatial_shapes: list[tuple[int, int]], device: torch.device) -> Tensor:
    """Pixel centres of every level, normalised to [0, 1], shared by all levels (no padding): `(S, L, 2)`."""
    points = []
    for h, w in spatial_shapes:
        y, x = torch.meshgrid(
            (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h,
            (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w,
            indexing="ij",
        )
        points.append(torch.stack((x.flatten(), y.flatten()), -1))
    return torch.cat(points)[:, None].expand(-1, len(spatial_shapes), -1)


def conv_gn(in_ch: int, out_ch: int, kernel: int, relu: bool) -> nn.Sequential:
    layers = [
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(min(32, out_ch), out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MSDeformAttnPixelDecoder(nn.Module):
    def __init__(
        self,
        in_channels: dict[str, int],
        dim: int = 256,
        mask_dim: int = 256,
        layers: int = 6,
        heads: int = 8,
        points: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.0,
    ):
        super().__init__()
        levels = len(ENCODER_LEVELS)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels[name], dim, 1), nn.GroupNorm(min(32, dim), dim))
            for name in ENCODER_LEVELS
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.level_embed = nn.Parameter(torch.empty(levels, dim).normal_())
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(dim, ffn_dim, heads, points, levels, dropout) for _ in range(layers)
        )
        self.lateral_conv = conv_gn(in_channels["res2"], dim, 1, relu=False)
        self.output_conv = conv_gn(dim, dim, 3, relu=True)
        self.mask_features = nn.Conv2d(dim, mask_dim, 1)
        self.dim = dim

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        maps = [proj(features[name]) for proj, name in zip(self.input_proj, ENCODER_LEVELS)]
        shapes = [tuple(m.shape[-2:]) for m in maps]
        src = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)  # (N, S, C)
        pos = torch.cat(
            [
                (
                    sine_position_2d(h, w, self.dim, src.device).to(src.dtype).flatten(1).T
                    + self.level_embed[level]
                )
                for level, (h, w) in enumerate(shapes)
            ]
        )[None]
        ref = reference_points(shapes, src.device).to(src.dtype)[None].expand(src.shape[0], -1, -1, -1)
        for layer in self.layers:
            src = layer(src, pos, ref, shapes)
        multi_scale = [
            part.transpose(1, 2).reshape(src.shape[0], self.dim, h, w)
            for part, (h, w) in zip(src.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        # FPN step to stride 4: lateral res2 + upsampled finest encoder level.
        lateral = self.lateral_conv(features["res2"])
        fpn = lateral + F.interpolate(
            multi_scale[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.mask_features(self.output_conv(fpn)), multi_scale
