"""Key names and shapes of Mask2Former's published COCO instance-segmentation checkpoints, written out
from the published architectures and hyper-parameters (never from this project's modules), and a
writer of detectron2-style `.pkl` files with them.

Sources: Mask2Former's configs/coco/instance-segmentation/{maskformer2_R50,maskformer2_R101}_bs16_50ep.yaml
and swin/*.yaml (D2SwinTransformer, MSDeformAttnPixelDecoder, MultiScaleMaskedTransformerDecoder, 80
classes + "no object", 100 queries, 200 for Swin-L); detectron2's ResNet (basic stem, bottleneck
blocks, FrozenBN, STRIDE_IN_1X1 False: the stride is in the 3x3 convolution, which changes no shape).
The learned query features are `sem_seg_head.predictor.static_query.weight` in the published files:
MultiScaleMaskedTransformerDecoder._load_from_state_dict renames `static_query` to `query_feat` for
files without its version-2 metadata, and conversions of the released .pkl files read that name.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

Shapes = dict[str, tuple[int, ...]]

# name: (EMBED_DIM, DEPTHS, NUM_HEADS, WINDOW_SIZE) of Mask2Former's COCO Swin configs
SWIN = {
    "swin_t": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7),  # swin_tiny_patch4_window7_224
    "swin_s": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7),  # swin_small_patch4_window7_224
    "swin_b": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12),  # swin_base_patch4_window12_384(_22k)
    "swin_l": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12),  # swin_large_patch4_window12_384_22k
}
RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
QUERIES = {"swin_l": 200}  # NUM_OBJECT_QUERIES; 100 for the others
COCO_CLASSES = 80
FROZEN_BN = ("weight", "bias", "running_mean", "running_var")


def layer_norm(prefix: str, dim: int) -> Shapes:
    return {f"{prefix}.weight": (dim,), f"{prefix}.bias": (dim,)}


def linear(prefix: str, out_dim: int, in_dim: int, bias: bool = True) -> Shapes:
    return {f"{prefix}.weight": (out_dim, in_dim), **({f"{prefix}.bias": (out_dim,)} if bias else {})}


def swin_backbone(name: str) -> Shapes:
    """D2SwinTransformer: patch_embed, layers.{i}.blocks.{j}, layers.{i}.downsample (not the last
    stage), norm{i} per output level; window attention's bias table and (L, L) index buffer."""
    embed, depths, heads, window = SWIN[name]
    tokens = window * window
    shapes = {
        "backbone.patch_embed.proj.weight": (embed, 3, 4, 4),
        "backbone.patch_embed.proj.bias": (embed,),
        **layer_norm("backbone.patch_embed.norm", embed),
    }
    for i, (depth, head) in enumerate(zip(depths, heads)):
        dim = embed * 2**i
        for j in range(depth):
            block = f"backbone.layers.{i}.blocks.{j}"
            shapes.update(layer_norm(f"{block}.norm1", dim))
            shapes[f"{block}.attn.relative_position_bias_table"] = ((2 * window - 1) ** 2, head)
            shapes[f"{block}.attn.relative_position_index"] = (tokens, tokens)
            shapes.update(linear(f"{block}.attn.qkv", 3 * dim, dim))
            shapes.update(linear(f"{block}.attn.proj", dim, dim))
            shapes.update(layer_norm(f"{block}.norm2", dim))
            shapes.update(linear(f"{block}.mlp.fc1", 4 * dim, dim))  # mlp_ratio 4
            shapes.update(linear(f"{block}.mlp.fc2", dim, 4 * dim))
        if i < len(depths) - 1:
            shapes.update(linear(f"backbone.layers.{i}.downsample.reduction", 2 * dim, 4 * dim, bias=False))
            shapes.update(layer_norm(f"backbone.layers.{i}.downsample.norm", 4 * dim))
        shapes.update(layer_norm(f"backbone.norm{i}", dim))
    return shapes


def conv_frozen_bn(prefix: str, out_ch: int, in_ch: int, kernel: int) -> Shapes:
    """detectron2's Conv2d without bias and its FrozenBatchNorm2d (`.norm`)."""
    return {f"{prefix}.weight": (out_ch, in_ch, kernel, kernel)} | {
        f"{prefix}.norm.{name}": (out_ch,) for name in FROZEN_BN
    }


def resnet_backbone(name: str) -> Shapes:
    """detectron2 ResNet: stem.conv1 (7x7, 64), res2..res5 of bottleneck blocks (1x1, 3x3, 1x1; 64 x 2^s
    bottleneck, 256 x 2^s out), a projection shortcut in block 0 of each stage."""
    shapes = conv_frozen_bn("backbone.stem.conv1", 64, 3, 7)
    in_ch = 64
    for stage, blocks in enumerate(RESNET_BLOCKS[name]):
        bottleneck, out_ch = 64 * 2**stage, 256 * 2**stage
        for k in range(blocks):
            prefix = f"backbone.res{stage + 2}.{k}"
            if k == 0:
                shapes.update(conv_frozen_bn(f"{prefix}.shortcut", out_ch, in_ch, 1))
            shapes.update(conv_frozen_bn(f"{prefix}.conv1", bottleneck, in_ch if k == 0 else out_ch, 1))
            shapes.update(conv_frozen_bn(f"{prefix}.conv2", bottleneck, bottleneck, 3))
            shapes.update(conv_frozen_bn(f"{prefix}.conv3", out_ch, bottleneck, 1))
        in_ch = out_ch
    return shapes


def backbone_channels(name: str) -> tuple[int, int, int, int]:
    """res2..res5 channels."""
    if name in SWIN:
        return tuple(SWIN[name][0] * 2**i for i in range(4))
    return (256, 512, 1024, 2048)


def mask2former_head(channels: tuple[int, int, int, int], queries: int) -> Shapes:
    """`sem_seg_head.*` of the COCO instance model: MSDeformAttnPixelDecoder (CONVS_DIM 256, MASK_DIM
    256, 6 encoder layers, 8 heads, 4 points, 3 levels, FFN 1024, GroupNorm) and
    MultiScaleMaskedTransformerDecoder (HIDDEN_DIM 256, 9 layers, 8 heads, FFN 2048, no input
    projection as 256 = 256), plus the criterion's `empty_weight` buffer."""
    dim, heads, levels, points = 256, 8, 3, 4
    pixel = "sem_seg_head.pixel_decoder"
    shapes: Shapes = {}
    for i, in_ch in enumerate(reversed(channels[1:])):  # res5, res4, res3
        shapes[f"{pixel}.input_proj.{i}.0.weight"] = (dim, in_ch, 1, 1)
        shapes[f"{pixel}.input_proj.{i}.0.bias"] = (dim,)
        shapes.update(layer_norm(f"{pixel}.input_proj.{i}.1", dim))  # GroupNorm: same shapes
    shapes[f"{pixel}.transformer.level_embed"] = (levels, dim)
    for layer in range(6):
        prefix = f"{pixel}.transformer.encoder.layers.{layer}"
        shapes.update(linear(f"{prefix}.self_attn.sampling_offsets", heads * levels * points * 2, dim))
        shapes.update(linear(f"{prefix}.self_attn.attention_weights", heads * levels * points, dim))
        shapes.update(linear(f"{prefix}.self_attn.value_proj", dim, dim))
        shapes.update(linear(f"{prefix}.self_attn.output_proj", dim, dim))
        shapes.update(layer_norm(f"{prefix}.norm1", dim))
        shapes.update(linear(f"{prefix}.linear1", 1024, dim))
        shapes.update(linear(f"{prefix}.linear2", dim, 1024))
        shapes.update(layer_norm(f"{prefix}.norm2", dim))
    shapes[f"{pixel}.mask_features.weight"] = (dim, dim, 1, 1)
    shapes[f"{pixel}.mask_features.bias"] = (dim,)
    shapes[f"{pixel}.adapter_1.weight"] = (dim, channels[0], 1, 1)
    shapes.update(layer_norm(f"{pixel}.adapter_1.norm", dim))
    shapes[f"{pixel}.layer_1.weight"] = (dim, dim, 3, 3)
    shapes.update(layer_norm(f"{pixel}.layer_1.norm", dim))

    predictor = "sem_seg_head.predictor"
    for layer in range(9):
        for module, attn in (("self_attention", "self_attn"), ("cross_attention", "multihead_attn")):
            prefix = f"{predictor}.transformer_{module}_layers.{layer}"
            shapes[f"{prefix}.{attn}.in_proj_weight"] = (3 * dim, dim)
            shapes[f"{prefix}.{attn}.in_proj_bias"] = (3 * dim,)
            shapes.update(linear(f"{prefix}.{attn}.out_proj", dim, dim))
            shapes.update(layer_norm(f"{prefix}.norm", dim))
        prefix = f"{predictor}.transformer_ffn_layers.{layer}"
        shapes.update(linear(f"{prefix}.linear1", 2048, dim))
        shapes.update(linear(f"{prefix}.linear2", dim, 2048))
        shapes.update(layer_norm(f"{prefix}.norm", dim))
    shapes.update(layer_norm(f"{predictor}.decoder_norm", dim))
    shapes[f"{predictor}.static_query.weight"] = (queries, dim)  # renamed query_feat on loading
    shapes[f"{predictor}.query_embed.weight"] = (queries, dim)
    shapes[f"{predictor}.level_embed.weight"] = (levels, dim)
    shapes.update(linear(f"{predictor}.class_embed", COCO_CLASSES + 1, dim))
    for i in range(3):
        shapes.update(linear(f"{predictor}.mask_embed.layers.{i}", dim, dim))
    shapes["criterion.empty_weight"] = (COCO_CLASSES + 1,)
    return shapes


def published_shapes(backbone: str) -> Shapes:
    """Every key of Mask2Former's COCO instance model with `backbone` and its shape."""
    shapes = swin_backbone(backbone) if backbone in SWIN else resnet_backbone(backbone)
    return shapes | mask2former_head(backbone_channels(backbone), QUERIES.get(backbone, 100))


def write_detectron2_pkl(path: Path, shapes: Shapes, protocol: int = 4) -> Path:
    """A detectron2 model-zoo style pickle with zero arrays of `shapes`: one byte per value (uint8;
    the published files hold float32) keeps Swin-L's ~215M values fast to write and read, the index
    buffers int64 as published."""
    model = {
        key: np.zeros(shape, np.int64 if key.endswith("relative_position_index") else np.uint8)
        for key, shape in shapes.items()
    }
    with path.open("wb") as handle:
        payload = {"model": model, "__author__": "Mask2Former", "matching_heuristics": True}
        pickle.dump(payload, handle, protocol=protocol)
    return path
