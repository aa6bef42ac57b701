"""The Inter-Frame Recurrent (IFR) transformer decoder (Sec. 3.1, Eqs. 1-3, Fig. 3).

Layer i, clip-level queries Q_i `(B, N, C)`, frames F_1..F_n of one encoder scale:
- Q_i^0 = Q_i; for t = 1..n: [Attn(Q_i^{t-1}, F_t), Attn(Q_i, F_t)] with one attention module (same
  W^K, W^V; Eq. 2), masked by frame t's mask prediction of the previous layer (Eq. 1), then
  self-attention over the 2N queries and FFN, keeping the first N (Eq. 3): Q_i^t.
- Q_{i+1}: temporal cross-attention of Q_i to all {Q_i^1..Q_i^n}, self-attention, FFN.
The learned queries, the round robin over the encoder's scales, the heads and the auxiliary outputs
are `QueryDecoder`'s. Class logits come from the clip-level queries Q_{i+1}; frame t's masks from
MLP(Q_i^t) . frame t's per-pixel embeddings. The class head is the paper's sigmoid focal one (K
logits, Eq. 5) unless `class_loss="softmax"` (K + 1 logits).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ifrvis.modeling.layers import (
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
    masked_attention_mask,
    sine_position_2d,
)
from ifrvis.modeling.query_decoder import QueryDecoder


def per_frame_attention_mask(mask_logits: Tensor, size: tuple[int, int], heads: int) -> Tensor:
    """Eq. 1's M for each frame separately: `(B, Q, T, H, W)` -> bool `(B, T, heads, Q, h * w)`.

    A query whose mask on frame t is empty attends to all of frame t (Mask2Former's rule, per frame).
    """
    b, q, t = mask_logits.shape[:3]
    per_frame = mask_logits.transpose(1, 2).reshape(b * t, q, 1, *mask_logits.shape[-2:])
    return masked_attention_mask(per_frame, size, heads).view(b, t, heads, q, size[0] * size[1])


class IFRDecoderLayer(nn.Module):
    """One IFR layer: the frame-level recurrence (Eqs. 1-3) over the frames, then the clip update."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        # Eq. 2: ONE cross-attention for both Attn(Q_i^{t-1}, F_t) and Attn(Q_i, F_t): shared W^K, W^V.
        self.frame_cross_attn = CrossAttentionLayer(dim, heads, dropout, pre_norm)
        self.frame_self_attn = SelfAttentionLayer(dim, heads, dropout, pre_norm)  # Eq. 3
        self.frame_ffn = FFNLayer(dim, ffn_dim, dropout, pre_norm)
        self.temporal_cross_attn = CrossAttentionLayer(dim, heads, dropout, pre_norm)
        self.clip_self_attn = SelfAttentionLayer(dim, heads, dropout, pre_norm)
        self.clip_ffn = FFNLayer(dim, ffn_dim, dropout, pre_norm)

    def forward(
        self,
        clip_queries: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        attn_mask: Tensor | None,
        query_pos: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """clip_queries Q_i `(B, N, C)`, memory F `(B, T, S, C)`, memory_pos `(S, C)`, attn_mask
        `(B, T, heads, N, S)` bool (True = blocked) or None, query_pos `(B, N, C)` ->
        (frame-level queries {Q_i^t} `(B, T, N, C)`, clip-level queries Q_{i+1} `(B, N, C)`)."""
        b, num_frames, tokens, dim = memory.shape
        n = clip_queries.shape[1]

        def frame_mask(t: int | slice) -> Tensor | None:
            if attn_mask is None:
                return None
            return attn_mask[:, t].reshape(-1, n, tokens)

        # Eq. 2's two attentions share W^K, W^V: frame t's keys and values are projected once.
        keys, values = self.frame_cross_attn.keys_values(memory.flatten(0, 1), memory_pos)  # (B * T, ...)
        # Attn(Q_i, F_t) does not depend on the recurrence: all frames in one batched call (Eq. 2, 2nd half).
        clip_to_frames = self.frame_cross_attn.attend(
            clip_queries[:, None].expand(b, num_frames, n, dim).reshape(b * num_frames, n, dim),
            (keys, values),
            attn_mask=frame_mask(slice(None)),
            query_pos=query_pos.repeat_interleave(num_frames, dim=0),
        ).view(b, num_frames, n, dim)
        keys, values = (
            x.unflatten(0, (b, num_frames)) for x in (keys, values)
        )  # (B, T, heads, S, C / heads)

        joint_pos = torch.cat([query_pos, query_pos], dim=1)
        previous = clip_queries  # Q_i^0 = Q_i
        frame_queries = []
        for t in range(num_frames):
            recurrent = self.frame_cross_attn.attend(  # Attn(Q_i^{t-1}, F_t), Eq. 2 first half
                previous, (keys[:, t], values[:, t]), attn_mask=frame_mask(t), query_pos=query_pos
            )
            joint = self.frame_self_attn(torch.cat([recurrent, clip_to_frames[:, t]], dim=1), joint_pos)
            previous = self.frame_ffn(joint[:, :n])  # Eq. 3: keep the first N queries
            frame_queries.append(previous)
        frame_queries = torch.stack(frame_queries, dim=1)

        # Clip update: Q_i attends to all frame-level queries of the clip.
        clip = self.temporal_cross_attn(
            clip_queries,
            frame_queries.flatten(1, 2),
            pos=query_pos.repeat(1, num_frames, 1),
            query_pos=query_pos,
        )
        clip = self.clip_ffn(self.clip_self_attn(clip, query_pos))
        return frame_queries, clip


class IFRQueries(NamedTuple):
    """IFR's queries after a layer: clip-level Q_{i+1} `(B, N, C)` and frame-level {Q_i^t} `(B, T, N, C)`."""

    clip: Tensor
    frames: Tensor


class IFRDecoder(QueryDecoder):
    """`QueryDecoder` with `IFRDecoderLayer`s: each layer attends to one scale frame by frame (2D sine
    positions per frame), masked per frame; classes from the clip-level queries, frame t's masks from
    frame t's queries."""

    layer_class = IFRDecoderLayer

    def memory(self, feature: Tensor, level: int) -> tuple[Tensor, Tensor]:
        """`(B, T, C, h, w)` -> tokens F `(B, T, h * w, C)` and their 2D positions `(h * w, C)`."""
        h, w = feature.shape[-2:]
        pos = sine_position_2d(h, w, self.dim, feature.device).to(feature.dtype).flatten(1).T
        return self.level_tokens(feature, level), pos

    def initial_queries(self, batch: int, num_frames: int) -> IFRQueries:
        """Q_0 `(B, N, C)`; every frame predicts from Q_0 too."""
        clip = super().initial_queries(batch, num_frames)
        return IFRQueries(clip, clip[:, None].expand(-1, num_frames, -1, -1))

    def attention_mask(self, mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
        """Eq. 1's M per frame: `(B, Q, T, H, W)` -> bool `(B, T, heads, Q, h * w)`."""
        return per_frame_attention_mask(mask_logits, size, self.num_heads)

    def apply_layer(
        self,
        layer: IFRDecoderLayer,
        queries: IFRQueries,
        memory: Tensor,
        memory_pos: Tensor,
        attn_mask: Tensor,
        query_pos: Tensor,
    ) -> IFRQueries:
        """Eqs. 1-3 and the clip update from the clip-level queries Q_i."""
        frames, clip = layer(queries.clip, memory, memory_pos, attn_mask, query_pos)
        return IFRQueries(clip, frames)

    def predict(self, queries: IFRQueries, mask_features: Tensor) -> dict:
        """Class logits from Q_{i+1}; frame t's masks from Q_i^t and frame t's per-pixel embeddings
        `(B, T, D, H, W)`; in training on a clip of T > 1 frames, also every frame's queries on every
        frame (`pred_cross_masks`, Eqs. 6-7)."""
        embedding = self.heads_out.mask_embedding(queries.frames)  # (B, T, N, D)
        out = {
            "pred_logits": self.heads_out.classify(queries.clip),
            "pred_masks": torch.einsum("btqd,btdhw->bqthw", embedding, mask_features),
        }
        if self.training and mask_features.shape[1] > 1:  # [b, q, t1, t2] = frame t1's query on frame t2
            out["pred_cross_masks"] = torch.einsum("baqd,bcdhw->bqachw", embedding, mask_features)
        return out
