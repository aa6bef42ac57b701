"""Blocks shared by both transformer decoders (IFR and Mask2Former-VIS): attention and FFN layers with
Mask2Former's residual + LayerNorm placement, the class and mask heads (class logits to probabilities
for either class loss), sine positional encodings (2D per frame, 3D over (t, y, x)) and the
masked-attention mask of Eq. 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


def xavier_init(module: nn.Module) -> None:
    """Mask2Former's `_reset_parameters` of its decoder layers: `xavier_uniform_` on every parameter with
    more than one dimension (biases and LayerNorm keep PyTorch's init). Without it nn.Linear's default
    (kaiming-uniform, a = sqrt(5)) starts out_proj and the FFN at about half xavier's std."""
    for param in module.parameters():
        if param.dim() > 1:
            nn.init.xavier_uniform_(param)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """`(B, L, C)` -> `(B, heads, L, C / heads)`."""
    b, length, dim = x.shape
    return x.view(b, length, heads, dim // heads).transpose(1, 2)


def project_keys_values(attn: nn.MultiheadAttention, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """`attn`'s key and value projections of `key`, `value (B, S, C)`, split into heads `(B, heads, S,
    C / heads)`: computed once where several queries attend to the same memory."""
    _, w_k, w_v = attn.in_proj_weight.chunk(3)
    _, b_k, b_v = attn.in_proj_bias.chunk(3)
    heads = attn.num_heads
    return split_heads(F.linear(key, w_k, b_k), heads), split_heads(F.linear(value, w_v, b_v), heads)


def attend(
    attn: nn.MultiheadAttention, query: Tensor, keys: Tensor, values: Tensor, blocked: Tensor | None = None
) -> Tensor:
    """`attn`'s forward (batch-first, no weights returned) on projected keys and values
    (`project_keys_values`), in a fraction of nn.MultiheadAttention's op calls (its argument checks,
    packing and mask conversions cost more than the arithmetic at the decoders' sizes): `query (B, L, C)`,
    `keys`/`values (B, heads, S, C / heads)`, `blocked (B * heads, L, S)` bool, True = not allowed ->
    `(B, L, C)`."""
    b, length, dim = query.shape
    heads = attn.num_heads
    q = split_heads(F.linear(query, attn.in_proj_weight[:dim], attn.in_proj_bias[:dim]), heads)
    allowed = None if blocked is None else ~blocked.view(b, heads, length, keys.shape[2])
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, dropout_p=dropout)
    return attn.out_proj(out.transpose(1, 2).reshape(b, length, dim))


class SelfAttentionLayer(nn.Module):
    """Multi-head self-attention with residual and LayerNorm; tokens `(B, L, C)`."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm
        xavier_init(self)

    def forward(self, tgt: Tensor, query_pos: Tensor | None = None) -> Tensor:
        x = self.norm(tgt) if self.pre_norm else tgt
        q = k = with_pos(x, query_pos)
        out = tgt + self.dropout(attend(self.attn, q, *project_keys_values(self.attn, k, x)))
        return out if self.pre_norm else self.norm(out)


class CrossAttentionLayer(nn.Module):
    """Masked multi-head cross-attention (Eq. 1) with residual and LayerNorm.

    `tgt (B, L, C)` attends to `memory (B, S, C)`; `attn_mask (B * heads, L, S)` bool, True = not allowed.
    `attend` takes the memory's keys and values from `keys_values` instead, for queries that attend to
    the same memory in several calls (IFR's recurrence)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm
        xavier_init(self)

    def keys_values(self, memory: Tensor, pos: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """`memory (B, S, C)` and its positions -> keys and values `(B, heads, S, C / heads)`."""
        return project_keys_values(self.attn, with_pos(memory, pos), memory)

    def attend(
        self,
        tgt: Tensor,
        keys_values: tuple[Tensor, Tensor],
        attn_mask: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        x = self.norm(tgt) if self.pre_norm else tgt
        attended = attend(self.attn, with_pos(x, query_pos), *keys_values, attn_mask)
        out = tgt + self.dropout(attended)
        return out if self.pre_norm else self.norm(out)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        attn_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        return self.attend(tgt, self.keys_values(memory, pos), attn_mask, query_pos)


class FFNLayer(nn.Module):
    """Linear-ReLU-Linear with residual and LayerNorm; `(..., C)` -> `(..., C)`."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm
        xavier_init(self)

    def forward(self, tgt: Tensor) -> Tensor:
        x = self.norm(tgt) if self.pre_norm else tgt
        out = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return out if self.pre_norm else self.norm(out)


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (the mask-embedding head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def _sine(embed: Tensor, num_feats: int, temperature: float) -> Tensor:
    """`(...)` positions -> `(..., num_feats)` interleaved sin/cos features (DETR's encoding)."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=embed.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos = embed[..., None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_position_2d(
    height: int, width: int, dim: int, device: torch.device | None = None, temperature: float = 10000.0
) -> Tensor:
    """Normalised 2D sine encoding as Mask2Former's `PositionEmbeddingSine(dim // 2, normalize=True)`:
    `(dim, H, W)`, channels [y features, x features]."""
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device)[:, None].expand(height, width)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device)[None, :].expand(height, width)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    pos = torch.cat((_sine(y, dim // 2, temperature), _sine(x, dim // 2, temperature)), dim=-1)
    return pos.permute(2, 0, 1)


def sine_position_3d(
    frames: int,
    height: int,
    width: int,
    dim: int,
    device: torch.device | None = None,
    temperature: float = 10000.0,
) -> Tensor:
    """Mask2Former-VIS's `PositionEmbeddingSine3D`: the 2D (y, x) encoding plus a `dim`-channel sine
    encoding of the normalised frame index; `(T, dim, H, W)`."""
    eps, scale = 1e-6, 2 * math.pi
    spatial = sine_position_2d(height, width, dim, device, temperature)  # (dim, H, W)
    t = torch.arange(1, frames + 1, dtype=torch.float32, device=device) / (frames + eps) * scale
    temporal = _sine(t, dim, temperature)  # (T, dim)
    return spatial[None] + temporal[:, :, None, None]


def masked_attention_mask(mask_logits: Tensor, size: tuple[int, int], heads: int) -> Tensor:
    """Eq. 1's binary mask M from mask logits, as Mask2Former's masked attention.

    `mask_logits (B, Q, T, H, W)` -> bool `(B * heads, Q, T * h * w)` at `size = (h, w)`, True where
    attention is NOT allowed (sigmoid < 0.5). A query whose mask is empty everywhere attends everywhere.
    The mask is a hard threshold: no gradient flows through it.
    """
    b, q, t = mask_logits.shape[:3]
    resized = F.interpolate(
        mask_logits.detach().flatten(1, 2), size=size, mode="bilinear", align_corners=False
    )
    blocked = (resized.sigmoid() < 0.5).view(b, q, t * size[0] * size[1])
    blocked = blocked & ~blocked.all(-1, keepdim=True)
    return blocked.repeat_interleave(heads, dim=0)


CLASS_LOSSES = ("focal", "softmax")


def class_logit_count(num_classes: int, class_loss: str) -> int:
    """Outputs of the class head: K for sigmoid focal (IFR, Eq. 5), K + 1 with a trailing "no object"
    logit for softmax cross-entropy (Mask2Former-VIS)."""
    if class_loss not in CLASS_LOSSES:
        raise ValueError(f"loss.class_loss must be one of {CLASS_LOSSES}, got {class_loss!r}")
    return num_classes + (class_loss == "softmax")


def class_probabilities(logits: Tensor, class_loss: str) -> Tensor:
    """Per-class probabilities `(..., K)` of class logits: sigmoid of `(..., K)` (focal), or softmax
    over `(..., K + 1)` with the "no object" column dropped (softmax, Mask2Former-VIS's inference)."""
    if class_loss == "softmax":
        return logits.softmax(-1)[..., :-1]
    if class_loss == "focal":
        return logits.sigmoid()
    raise ValueError(f"loss.class_loss must be one of {CLASS_LOSSES}, got {class_loss!r}")


class PredictionHeads(nn.Module):
    """Mask2Former's heads on the decoder's queries: LayerNorm, then a linear class head and a 3-layer
    MLP to the mask embedding dotted with per-pixel embeddings. The class head has K outputs (focal, no
    "no object" logit) or K + 1 (softmax, the last one "no object"): `class_logit_count`."""

    def __init__(self, dim: int, num_classes: int, mask_dim: int, class_loss: str, prior_prob: float = 0.01):
        super().__init__()
        self.class_loss = class_loss
        self.norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, class_logit_count(num_classes, class_loss))
        self.mask_embed = MLP(dim, dim, mask_dim, 3)
        if class_loss == "focal":
            # Focal-loss prior (Lin et al.): every class starts at probability `prior_prob`. Softmax keeps
            # nn.Linear's initialisation, as Mask2Former does.
            nn.init.constant_(self.class_embed.bias, -math.log((1 - prior_prob) / prior_prob))

    def classify(self, queries: Tensor) -> Tensor:
        """`(B, Q, C)` -> class logits `(B, Q, K)` (focal) or `(B, Q, K + 1)` (softmax)."""
        return self.class_embed(self.norm(queries))

    def probabilities(self, logits: Tensor) -> Tensor:
        """Class logits of `classify` -> per-class probabilities `(..., K)`."""
        return class_probabilities(logits, self.class_loss)

    def mask_embedding(self, queries: Tensor) -> Tensor:
        """`(..., Q, C)` -> `(..., Q, mask_dim)`."""
        return self.mask_embed(self.norm(queries))


def memory_tokens(feature: Tensor, level_embed: Tensor) -> Tensor:
    """One encoder level `(B, T, C, h, w)` -> tokens `(B, T, h * w, C)` plus the level embedding `(C,)`."""
    return feature.flatten(3).transpose(2, 3) + level_embed
