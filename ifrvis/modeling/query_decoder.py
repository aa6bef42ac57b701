"""`QueryDecoder`: the query machinery Mask2Former's decoders share, the base of `IFRDecoder` and
`Mask2FormerVISDecoder`.

It owns the N learned queries and their positional embedding, the level embedding of the encoder's
scales and the round robin over them (layer i attends to scale i mod levels, coarse to fine), the
masked-attention mask of Eq. 1 from the previous layer's mask prediction, the prediction heads, and
the auxiliary outputs for deep supervision (one prediction from the initial queries, one after every
layer; all but the last go to `aux_outputs` while training).

A subclass supplies its decoder layer (`layer_class`), how one encoder scale becomes the layer's memory
(`memory`) and how its queries predict (`predict`); a decoder whose queries are more than one tensor
(IFR's clip- and frame-level queries) also overrides `initial_queries` and `apply_layer`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ifrvis.modeling.layers import PredictionHeads, masked_attention_mask, memory_tokens


class QueryDecoder(nn.Module):
    """`forward(multi_scale [(B, T, C, h, w)] coarse to fine, mask_features (B, T, D, H, W)) -> outputs`
    with the `VISModel` contract (docs/architecture.md).

    `layer_class(dim, heads, ffn_dim, dropout, pre_norm)` builds one decoder layer; `levels` is the
    number of encoder scales (the pixel decoder's three)."""

    layer_class: type[nn.Module]

    def __init__(
        self,
        num_classes: int,
        num_queries: int,
        dim: int,
        heads: int,
        ffn_dim: int,
        layers: int,
        mask_dim: int,
        dropout: float,
        pre_norm: bool,
        class_loss: str,
        *,
        levels: int = 3,
    ):
        super().__init__()
        self.num_heads, self.levels, self.dim = heads, levels, dim
        self.query_feat = nn.Embedding(num_queries, dim)  # the learned queries Q_0
        self.query_embed = nn.Embedding(num_queries, dim)  # their positional embedding
        self.level_embed = nn.Embedding(levels, dim)
        self.layers = nn.ModuleList(
            self.layer_class(dim, heads, ffn_dim, dropout, pre_norm) for _ in range(layers)
        )
        self.heads_out = PredictionHeads(dim, num_classes, mask_dim, class_loss)

    def memory(self, feature: Tensor, level: int) -> tuple[Tensor, Tensor]:
        """One encoder scale `(B, T, C, h, w)` -> the layer's memory tokens and their positions."""
        raise NotImplementedError

    def predict(self, queries: Any, mask_features: Tensor) -> dict:
        """Queries (after a layer, or the initial ones) and per-pixel embeddings `(B, T, D, H, W)` ->
        `{"pred_logits": (B, Q, K) or (B, Q, K + 1), "pred_masks": (B, Q, T, H, W), ...}`."""
        raise NotImplementedError

    def level_tokens(self, feature: Tensor, level: int) -> Tensor:
        """Encoder scale `level` `(B, T, C, h, w)` -> tokens `(B, T, h * w, C)` with its level embedding."""
        return memory_tokens(feature, self.level_embed.weight[level])

    def initial_queries(self, batch: int, num_frames: int) -> Any:
        """The learned queries of every clip of the batch: `(B, N, C)`."""
        return self.query_feat.weight[None].expand(batch, -1, -1)

    def attention_mask(self, mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
        """Eq. 1's M from the previous prediction `(B, Q, T, H, W)` at a scale of `size = (h, w)`: bool
        `(B * heads, Q, T * h * w)`, True = blocked, over the whole clip."""
        return masked_attention_mask(mask_logits, size, self.num_heads)

    def apply_layer(
        self,
        layer: nn.Module,
        queries: Any,
        memory: Tensor,
        memory_pos: Tensor,
        attn_mask: Tensor,
        query_pos: Tensor,
    ) -> Any:
        """One decoder layer on the queries; `query_pos (B, N, C)`."""
        return layer(queries, memory, memory_pos, attn_mask, query_pos)

    def forward(self, multi_scale: list[Tensor], mask_features: Tensor) -> dict:
        if len(multi_scale) != self.levels:
            raise ValueError(
                f"{type(self).__name__} expects {self.levels} feature levels, got {len(multi_scale)}"
            )
        b, num_frames = mask_features.shape[:2]
        sizes = [tuple(x.shape[-2:]) for x in multi_scale]
        memories = [self.memory(x, level) for level, x in enumerate(multi_scale)]
        query_pos = self.query_embed.weight[None].expand(b, -1, -1)
        queries = self.initial_queries(b, num_frames)
        predictions = [self.predict(queries, mask_features)]
        for index, layer in enumerate(self.layers):
            level = index % self.levels  # scales round-robin, one per layer
            attn_mask = self.attention_mask(predictions[-1]["pred_masks"], sizes[level])
            queries = self.apply_layer(layer, queries, *memories[level], attn_mask, query_pos)
            predictions.append(self.predict(queries, mask_features))
        return self.with_aux_outputs(predictions)

    def with_aux_outputs(self, predictions: list[dict]) -> dict:
        """The last prediction, with the earlier ones as `aux_outputs` (deep supervision) in training."""
        outputs = predictions[-1]
        if self.training:
            outputs["aux_outputs"] = predictions[:-1]
        return outputs
