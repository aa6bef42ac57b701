"""The Mask2Former-VIS baseline decoder: N global queries; each layer masked cross-attention (Eq. 1) to
all T frames of one encoder scale flattened together (3D sine positional encoding over (t, y, x)), then
self-attention and FFN. The queries, the round robin over scales, the heads and the auxiliary outputs
are `QueryDecoder`'s, as `IFRDecoder`'s; no `pred_cross_masks`. As published, the baseline trains
with `class_loss="softmax"` (K + 1 class logits, the last "no object"); either class head fits either
decoder.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ifrvis.modeling.layers import CrossAttentionLayer, FFNLayer, SelfAttentionLayer, sine_position_3d
from ifrvis.modeling.query_decoder import QueryDecoder


class Mask2FormerDecoderLayer(nn.Module):
    """Masked cross-attention (Eq. 1) to the clip's tokens, self-attention, FFN."""

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


class Mask2FormerVISDecoder(QueryDecoder):
    """`QueryDecoder` with `Mask2FormerDecoderLayer`s: global queries attend to all frames of one scale
    at once (3D sine positions), masked over the whole clip; the same queries predict every frame."""

    layer_class = Mask2FormerDecoderLayer

    def memory(self, feature: Tensor, level: int) -> tuple[Tensor, Tensor]:
        """`(B, T, C, h, w)` -> tokens `(B, T * h * w, C)` and their 3D positions `(T * h * w, C)`."""
        num_frames, h, w = feature.shape[1], *feature.shape[-2:]
        pos = sine_position_3d(num_frames, h, w, self.dim, feature.device).to(feature.dtype)
        return self.level_tokens(feature, level).flatten(1, 2), pos.permute(0, 2, 3, 1).reshape(-1, self.dim)

    def predict(self, queries: Tensor, mask_features: Tensor) -> dict:
        """The same global queries `(B, N, C)` predict the masks of every frame `(B, T, D, H, W)`."""
        embedding = self.heads_out.mask_embedding(queries)
        return {
            "pred_logits": self.heads_out.classify(queries),
            "pred_masks": torch.einsum("bqd,btdhw->bqthw", embedding, mask_features),
        }
