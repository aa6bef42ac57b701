"""Load `model.weights`, a local checkpoint file (nothing is downloaded), into a `VISModel`.

Accepted files:
- torchvision state dicts of ResNet / Swin (`conv1.weight`, `layer1.0...`, `features.0...`): loaded into
  `backbone.*` (classification heads `fc.*`, `head.*`, `norm.*` are reported as unexpected);
- detectron2 / Mask2Former checkpoints (`.pkl`: pickled dict of numpy arrays, possibly under "model";
  `.pth` with "model"): ResNet keys `backbone.stem.*`, `backbone.res{2-5}.*` are mapped to torchvision
  names, Swin keys (`backbone.patch_embed.*`, `backbone.layers.*`, `backbone.norm{0-3}.*`) to
  torchvision's; Mask2Former's `sem_seg_head.pixel_decoder.*` and `sem_seg_head.predictor.*` go to the pixel
  decoder and decoder (for IFR, its per-frame blocks of Eqs. 2-3; the temporal/clip blocks stay random,
  as the paper initialises from COCO Mask2Former); its class head (K + 1 COCO classes) is reported as a
  shape mismatch; other keys are kept when the model has them under the same name, else unexpected;
- this project's own state dicts (`backbone.*`, `pixel_decoder.*`, `decoder.*`), optionally under "model";
  the Mask2Former-VIS decoder's layer blocks go to IFR's per-frame blocks, as Mask2Former's do.

BatchNorm's `num_batches_tracked` counters are skipped (frozen BatchNorm has none). Missing keys are
counted only inside the top-level modules the file covers (a backbone-only file does
not report the decoder as missing). Tensors of the wrong shape are skipped and reported.
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ifrvis.errors import UserError

log = logging.getLogger(__name__)


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable, unsafe or does not fit the model."""


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys the file should have covered
    unexpected: list[str] = field(default_factory=list)  # file keys (original names) with no place
    mismatched: list[str] = field(default_factory=list)  # "key: file shape vs model shape"


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict in `path` (.pkl detectron2 pickle, or a torch file), values as tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"model.weights: no such file {path} (for the tiny configs, `ifrvis pretrain CONFIG` writes it)"
        )
    if path.suffix == ".pkl":
        with path.open("rb") as handle:
            data = pickle.load(handle, encoding="latin1")
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise CheckpointError(f"model.weights: {path} holds a {type(data).__name__}, expected a state dict")
    for wrapper in ("model", "state_dict"):
        if isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    state = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if torch.is_tensor(value):
            state[key] = value
    if not state:
        raise CheckpointError(f"model.weights: {path} holds no tensors")
    return state


_D2_RESNET = [
    (r"^backbone\.stem\.conv1\.norm\.(.+)$", r"backbone.bn1.\1"),
    (r"^backbone\.stem\.conv1\.(weight|bias)$", r"backbone.conv1.\1"),
    (r"^backbone\.res(\d)\.(\d+)\.conv(\d)\.norm\.(.+)$", r"backbone.layer{res}.\2.bn\3.\4"),
    (r"^backbone\.res(\d)\.(\d+)\.conv(\d)\.(weight|bias)$", r"backbone.layer{res}.\2.conv\3.\4"),
    (r"^backbone\.res(\d)\.(\d+)\.shortcut\.norm\.(.+)$", r"backbone.layer{res}.\2.downsample.1.\3"),
    (r"^backbone\.res(\d)\.(\d+)\.shortcut\.(weight|bias)$", r"backbone.layer{res}.\2.downsample.0.\3"),
]


# Mask2Former's pixel decoder and transformer decoder (`sem_seg_head.*`); {cross}, {self}, {ffn} are
# the decoder layer's blocks: the per-frame blocks of Eqs. 2-3 for IFR, the only ones for the baseline.
_MASK2FORMER = [
    (r"^sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(.+)$", r"pixel_decoder.layers.\1"),
    (r"^sem_seg_head\.pixel_decoder\.transformer\.level_embed$", r"pixel_decoder.level_embed"),
    (r"^sem_seg_head\.pixel_decoder\.(input_proj|mask_features)\.(.+)$", r"pixel_decoder.\1.\2"),
    (r"^sem_seg_head\.pixel_decoder\.adapter_1\.weight$", r"pixel_decoder.lateral_conv.0.weight"),
    (r"^sem_seg_head\.pixel_decoder\.adapter_1\.norm\.(.+)$", r"pixel_decoder.lateral_conv.1.\1"),
    (r"^sem_seg_head\.pixel_decoder\.layer_1\.weight$", r"pixel_decoder.output_conv.0.weight"),
    (r"^sem_seg_head\.pixel_decoder\.layer_1\.norm\.(.+)$", r"pixel_decoder.output_conv.1.\1"),
    (r"^sem_seg_head\.predictor\.(query_feat|query_embed|level_embed)\.(.+)$", r"decoder.\1.\2"),
    (r"^sem_seg_head\.predictor\.decoder_norm\.(.+)$", r"decoder.heads_out.norm.\1"),
    (r"^sem_seg_head\.predictor\.(class_embed|mask_embed)\.(.+)$", r"decoder.heads_out.\1.\2"),
    (
        r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(.+)$",
        r"decoder.layers.\1.{cross}.attn.\2",
    ),
    (
        r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.(.+)$",
        r"decoder.layers.\1.{cross}.norm.\2",
    ),
    (
        r"^sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.(.+)$",
        r"decoder.layers.\1.{self}.attn.\2",
    ),
    (
        r"^sem_seg_head\.predictor\.transformer_self_attention_layers\.(\d+)\.norm\.(.+)$",
        r"decoder.layers.\1.{self}.norm.\2",
    ),
    (r"^sem_seg_head\.predictor\.transformer_ffn_layers\.(\d+)\.(.+)$", r"decoder.layers.\1.{ffn}.\2"),
]
IFR_BLOCKS = {"cross": "frame_cross_attn", "self": "frame_self_attn", "ffn": "frame_ffn"}
BASELINE_BLOCKS = {"cross": "cross_attn", "self": "self_attn", "ffn": "ffn"}


def mask2former_name(key: str, blocks: dict[str, str]) -> str | None:
    """Mask2Former head name -> this project's, e.g. `sem_seg_head.predictor.transformer_ffn_layers.0.
    linear1.weight` -> `decoder.layers.0.frame_ffn.linear1.weight` (IFR blocks); None if not one."""
    for pattern, replacement in _MASK2FORMER:
        match = re.match(pattern, key)
        if match:
            return match.expand(replacement.format(**blocks))
    return None


def baseline_block_name(key: str, blocks: dict[str, str]) -> str | None:
    """This project's Mask2Former-VIS decoder key -> the same block of the model's decoder, e.g.
    `decoder.layers.0.cross_attn.norm.weight` -> `decoder.layers.0.frame_cross_attn.norm.weight` (IFR
    blocks), so that an image-level Mask2Former initialises IFR's per-frame blocks; None if not one."""
    match = re.match(r"^decoder\.layers\.(\d+)\.(cross_attn|self_attn|ffn)\.(.+)$", key)
    if match is None:
        return None
    block = {"cross_attn": "cross", "self_attn": "self", "ffn": "ffn"}[match[2]]
    return f"decoder.layers.{match[1]}.{blocks[block]}.{match[3]}"


def detectron2_resnet_name(key: str) -> str | None:
    """detectron2 ResNet name -> this project's, e.g. `backbone.res2.0.conv1.norm.weight` ->
    `backbone.layer1.0.bn1.weight`; None if `key` is not a detectron2 ResNet key."""
    for pattern, replacement in _D2_RESNET:
        match = re.match(pattern, key)
        if match:
            res = int(match.group(1)) - 1 if "{res}" in replacement else 0
            return match.expand(replacement.replace("{res}", str(res)))
    return None


def swin_name(key: str) -> str | None:
    """Mask2Former's Swin (the official implementation's names) -> torchvision's `features.*`, e.g.
    `backbone.layers.1.blocks.0.mlp.fc2.weight` -> `backbone.features.3.0.mlp.3.weight` (stage i's blocks
    are `features[2i + 1]`, its patch merging `features[2i + 2]`); None if not a Swin key."""
    rules = [
        (r"^backbone\.patch_embed\.proj\.(.+)$", lambda m: f"backbone.features.0.0.{m[1]}"),
        (r"^backbone\.patch_embed\.norm\.(.+)$", lambda m: f"backbone.features.0.2.{m[1]}"),
        (
            r"^backbone\.layers\.(\d)\.blocks\.(\d+)\.mlp\.fc([12])\.(.+)$",
            lambda m: f"backbone.features.{2 * int(m[1]) + 1}.{m[2]}.mlp.{0 if m[3] == '1' else 3}.{m[4]}",
        ),
        (
            r"^backbone\.layers\.(\d)\.blocks\.(\d+)\.(norm1|norm2|attn)\.(.+)$",
            lambda m: f"backbone.features.{2 * int(m[1]) + 1}.{m[2]}.{m[3]}.{m[4]}",
        ),
        (
            r"^backbone\.layers\.(\d)\.downsample\.(reduction|norm)\.(.+)$",
            lambda m: f"backbone.features.{2 * int(m[1]) + 2}.{m[2]}.{m[3]}",
        ),
        (r"^backbone\.norm(\d)\.(.+)$", lambda m: f"backbone.out_norms.{m[1]}.{m[2]}"),
    ]
    for pattern, rename in rules:
        match = re.match(pattern, key)
        if match:
            return rename(match)
    return None


def map_key(key: str, model_keys: set[str], blocks: dict[str, str]) -> str | None:
    """Where file key `key` goes in the model (decoder `blocks`: IFR_BLOCKS or BASELINE_BLOCKS), or None."""
    candidates = [
        detectron2_resnet_name(key),
        swin_name(key),
        mask2former_name(key, blocks),
        baseline_block_name(key, blocks),
        key,
        f"backbone.{key}",
    ]
    return next((c for c in candidates if c is not None and c in model_keys), None)


def load_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy the matching tensors of `path` into `model`, log and return what was missing/unexpected."""
    target = model.state_dict()
    report = LoadReport()
    mapped: dict[str, Tensor] = {}
    model_keys = set(target)
    blocks = IFR_BLOCKS if any(".frame_cross_attn." in k for k in model_keys) else BASELINE_BLOCKS
    for key, value in read_checkpoint(path).items():
        name = map_key(key, model_keys, blocks)
        if name is None and key.endswith("num_batches_tracked"):
            continue  # BatchNorm bookkeeping, absent from frozen BatchNorm: not a weight
        if name is None:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(target[name].shape):
            report.mismatched.append(f"{key}: {tuple(value.shape)} vs {name}: {tuple(target[name].shape)}")
        else:
            mapped[name] = value.to(target[name].dtype)
    covered = {name.split(".")[0] for name in mapped}
    report.loaded = sorted(mapped)
    report.missing = sorted(k for k in target if k.split(".")[0] in covered and k not in mapped)
    model.load_state_dict(mapped, strict=False)
    log.info(
        "model.weights %s: loaded %d tensors into %s", path, len(mapped), ", ".join(sorted(covered)) or "-"
    )
    for kind in ("missing", "unexpected", "mismatched"):
        keys = getattr(report, kind)
        if keys:
            log.warning("model.weights %s: %d %s keys: %s", path, len(keys), kind, ", ".join(keys[:20]))
    return report
