"""The Mask2Former-VIS baseline decoder: N global queries; each layer masked cross-attention (Eq. 1) to
all T frames of one encoder scale flattened together (3D sine positional encoding over (t, y, x)), then
self-attention and FFN. Same heads and interface as `IFRDecoder`; no `pred_cross_masks`. As published,
the baseline trains with `class_loss="softmax"` (K + 1 class logits, the last "no object"); either class
head fits either decoder.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ifrvis.modeling.layers import (
    CrossAttentionLayer,
    FFNLayer,
    PredictionHeads,
    SelfAttentionLayer,
    masked_attention_mask,
    memory_tokens,
    sine_position_3d,
)


class Mask2FormerDecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.cross_attn = CrossAttentionLayer(dim, heads, dropout, pre_norm)
        self.self_attn = SelfAttentionLayer(dim, heads, dropout, pre_norm)
        self.ffn = FFNLayer(dim, ffn_dim, dropout, pre_norm)

    def forward(
        self, queries: Tensor, memory: Tensor, memory_pos: Tensor, attn_mask: Tensor | None, query_pos: Tensor
    ) -> Tensor:
        """queries `(B, N, C)`, memory `(B, T * h * w, C)`, memory_pos `(T * h * w, C)`,
        attn_mask `(B * heads, N, T * h * w)` -> `(B, N, C)`."""
        queries = self.cross_attn(queries, memory, attn_mask=attn_mask, pos=memory_pos, query_pos=query_pos)
        return self.ffn(self.self_attn(queries, query_pos))


class Mask2FormerVISDecoder(nn.Module):
    """`forward(multi_scale [(B, T, C, h, w)] coarse to fine, mask_features (B, T, D, H, W)) -> outputs`."""

    def __init__(
        self,
        num_classes: int,
        num_queries: int = 100,
        dim: int = 256,
        heads: int = 8,
        ffn_dim: int = 2048,
        layers: int = 9,
        mask_dim: int = 256,
        levels: int = 3,
        dropout: float = 0.0,
        pre_norm: bool = False,
        class_loss: str = "focal",
    ):
        super().__init__()
        self.num_heads, self.levels, self.dim = heads, levels, dim
        self.query_feat = nn.Embedding(num_queries, dim)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.level_embed = nn.Embedding(levels, dim)
        self.layers = nn.ModuleList(
            Mask2FormerDecoderLayer(dim, heads, ffn_dim, dropout, pre_norm) for _ in range(layers)
        )
        self.heads_out = PredictionHeads(dim, num_classes, mask_dim, class_loss)

    def predict(self, queries: Tensor, mask_features: Tensor) -> dict:
        """The same global queries `(B, N, C)` predict the masks of every frame `(B, T, D, H, W)`."""
        embedding = self.heads_out.mask_embedding(queries)
        return {
            "pred_logits": self.heads_out.classify(queries),
            "pred_masks": torch.einsum("bqd,btdhw->bqthw", embedding, mask_features),
        }

    def forward(self, multi_scale: list[Tensor], mask_features: Tensor) -> dict:
        b, num_frames = mask_features.shape[:2]
        if len(multi_scale) != self.levels:
            raise ValueError(
                f"Mask2FormerVISDecoder expects {self.levels} feature levels, got {len(multi_scale)}"
            )
        sizes = [tuple(x.shape[-2:]) for x in multi_scale]
        memories = [
            memory_tokens(x, self.level_embed.weight[i]).flatten(1, 2) for i, x in enumerate(multi_scale)
        ]
        positions = [
            sine_position_3d(num_frames, h, w, self.dim, x.device)
            .to(x.dtype)
            .permute(0, 2, 3, 1)
            .reshape(-1, self.dim)
            for (h, w), x in zip(sizes, multi_scale)
        ]
        query_pos = self.query_embed.weight[None].expand(b, -1, -1)
        queries = self.query_feat.weight[None].expand(b, -1, -1)
        predictions = [self.predict(queries, mask_features)]
        for index, layer in enumerate(self.layers):
            level = index % self.levels
            attn_mask = masked_attention_mask(predictions[-1]["pred_masks"], sizes[level], self.num_heads)
            queries = layer(queries, memories[level], positions[level], attn_mask, query_pos)
            predictions.append(self.predict(queries, mask_features))
        outputs = predictions[-1]
        if self.training:
            outputs["aux_outputs"] = predictions[:-1]
        return outputs
