"""`VISModel`: normalisation, backbone -> pixel decoder (per frame) -> IFR or Mask2Former-VIS decoder.

`forward(images (B, T, 3, H, W) in [0, 255])` = `decode(encode(images.flatten(0, 1)), B, T)`; inference
runs `encode` over chunks of frames, joins them with `concat_features` and decodes the whole video.
`features` is a dict of per-frame tensors (frame axis first):
`{"mask_features": (N, mask_dim, H/4, W/4), "multi_scale": [(N, C, H/32, W/32), (N, C, H/16, W/16),
(N, C, H/8, W/8)]}`.
`class_probabilities(pred_logits)` turns the decoder's class logits into per-class probabilities
`(..., K)` as its class head was trained (sigmoid for focal, softmax without "no object" for softmax).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from ifrvis.config import LossConfig, ModelConfig
from ifrvis.modeling.backbone import Backbone, build_backbone
from ifrvis.modeling.ifr_decoder import IFRDecoder
from ifrvis.modeling.mask2former_decoder import Mask2FormerVISDecoder
from ifrvis.modeling.pixel_decoder import MSDeformAttnPixelDecoder
from ifrvis.modeling.weights import CheckpointError, LoadReport, load_weights

DECODERS = {"ifr": IFRDecoder, "mask2former": Mask2FormerVISDecoder}


def concat_features(chunks: list):
    """Join `encode` outputs of consecutive frame chunks along the frame axis, whatever their nesting
    (tensors in dicts, lists or tuples)."""
    first = chunks[0]
    if torch.is_tensor(first):
        return torch.cat(chunks)
    if isinstance(first, dict):
        return {key: concat_features([c[key] for c in chunks]) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(concat_features(list(parts)) for parts in zip(*chunks))
    raise TypeError(f"model.encode returned {type(first).__name__}; expected tensors, lists, tuples or dicts")


class VISModel(nn.Module):
    def __init__(
        self,
        backbone: Backbone,
        pixel_decoder: MSDeformAttnPixelDecoder,
        decoder: nn.Module,
        pixel_mean: list[float],
        pixel_std: list[float],
    ):
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.decoder = decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)

    def encode(self, frames: Tensor) -> dict:
        """Backbone + pixel decoder, frame by frame: `frames (N, 3, H, W)` in [0, 255] -> features."""
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"VISModel.encode expects frames (N, 3, H, W), got {tuple(frames.shape)}")
        mask_features, multi_scale = self.pixel_decoder(
            self.backbone((frames - self.pixel_mean) / self.pixel_std)
        )
        return {"mask_features": mask_features, "multi_scale": multi_scale}

    def decode(self, features: dict, batch: int, frames: int) -> dict:
        """Features of `batch * frames` frames (video-major) -> outputs (docs/architecture.md)."""
        mask_features = features["mask_features"]
        if mask_features.shape[0] != batch * frames:
            raise ValueError(f"features hold {mask_features.shape[0]} frames, expected {batch} x {frames}")
        multi_scale = [x.view(batch, frames, *x.shape[1:]) for x in features["multi_scale"]]
        return self.decoder(multi_scale, mask_features.view(batch, frames, *mask_features.shape[1:]))

    def class_probabilities(self, logits: Tensor) -> Tensor:
        """`pred_logits (..., K)` or `(..., K + 1)` -> per-class probabilities `(..., K)`."""
        return self.decoder.heads_out.probabilities(logits)

    def forward(self, images: Tensor) -> dict:
        """`images (B, T, 3, H, W)` in [0, 255], H and W multiples of 32 -> outputs."""
        if images.dim() != 5:
            raise ValueError(f"VISModel expects images (B, T, 3, H, W), got {tuple(images.shape)}")
        b, t = images.shape[:2]
        return self.decode(self.encode(images.flatten(0, 1)), b, t)


def build_model(cfg: ModelConfig, class_loss: str = LossConfig.class_loss) -> VISModel:
    """The model named by `cfg` (the `model` config section), with `cfg.weights` loaded if set; its
    class head fits `class_loss` (`loss.class_loss`, `LossConfig`'s default unless given: K logits for
    "focal", K + 1 for "softmax")."""
    backbone = build_backbone(cfg.backbone)
    pixel_decoder = MSDeformAttnPixelDecoder(
        backbone.out_channels,
        dim=cfg.hidden_dim,
        mask_dim=cfg.mask_dim,
        layers=cfg.enc_layers,
        heads=cfg.enc_heads,
        points=cfg.enc_points,
        ffn_dim=cfg.enc_ffn_dim,
        dropout=cfg.dropout,
    )
    decoder = DECODERS[cfg.decoder](
        num_classes=cfg.num_classes,
        num_queries=cfg.num_queries,
        dim=cfg.hidden_dim,
        heads=cfg.dec_heads,
        ffn_dim=cfg.dec_ffn_dim,
        layers=cfg.dec_layers,
        mask_dim=cfg.mask_dim,
        dropout=cfg.dropout,
        pre_norm=cfg.pre_norm,
        class_loss=class_loss,
    )
    model = VISModel(backbone, pixel_decoder, decoder, cfg.pixel_mean, cfg.pixel_std)
    if cfg.weights:
        load_weights(model, cfg.weights, cfg.ifr_init, cfg.extra_queries)
    return model


def check_weights_fit(model_cfg, class_loss: str) -> None:
    """Refuse, before anything is created, a `model.weights` that is not `LoadReport.complete` for the
    model of `model_cfg` (built on the meta device: names and shapes only), unless
    `model.partial_weights` says a partial start is intended. A sweep checks every run's config: the
    file is read once per model and file version."""
    if not model_cfg.weights or model_cfg.partial_weights:
        return
    stat = Path(model_cfg.weights).stat()
    key = (json.dumps(asdict(model_cfg), sort_keys=True), class_loss, stat.st_size, stat.st_mtime_ns)
    if key not in _FIT_REPORTS:
        with torch.device("meta"):
            model = build_model(replace(model_cfg, weights=""), class_loss)
        _FIT_REPORTS[key] = load_weights(
            model, model_cfg.weights, model_cfg.ifr_init, model_cfg.extra_queries, quiet=True
        )
    report = _FIT_REPORTS[key]
    if not report.complete:
        raise CheckpointError(
            f"{report.summary()}: refusing to start from a partial load or another model's file (`ifrvis "
            "weights` lists the keys; model.partial_weights=true starts anyway)"
        )


_FIT_REPORTS: dict[tuple, LoadReport] = {}
