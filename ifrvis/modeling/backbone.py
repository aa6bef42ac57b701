"""Backbones returning the pyramid res2..res5 (strides 4, 8, 16, 32), Sec. 3.1.

- `resnet50`, `resnet101`: torchvision ResNets with frozen BatchNorm and every convolution trained
  (Mask2Former's FREEZE_AT 0); parameter names are torchvision's
  (`conv1`, `bn1`, `layer1..4`), so a torchvision state dict loads under the `backbone.` prefix.
- `swin_t`, `swin_s`, `swin_b`, `swin_l`: torchvision's `SwinTransformer` class with the
  hyper-parameters of Mask2Former's COCO Swin configs (`SWIN_SPECS`: Swin-T/S window 7, pretrained at
  224; Swin-B/L window 12, pretrained at 384), so that Mask2Former's COCO checkpoints load whole, and
  with Mask2Former's window shift (`AlwaysShiftedWindowAttention`). A LayerNorm per output level, as
  Mask2Former's D2SwinTransformer. Parameter names are torchvision's (`features.*`).
ResNets and Swins live in torchvision_backbones.py, imported only to build one.
- `tiny`: a small CNN for CPU work; `ifrvis pretrain` (engine/pretrain.py) pretrains it on synthetic data.

Every backbone is built with random initialisation: weights come only from `model.weights` (weights.py).
"""

from __future__ import annotations

from torch import Tensor, nn

LEVELS = ("res2", "res3", "res4", "res5")
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
BACKBONES = ("tiny", "resnet50", "resnet101", "swin_t", "swin_s", "swin_b", "swin_l")


class Backbone(nn.Module):
    """`forward(images (N, 3, H, W)) -> {"res2": (N, C2, H/4, W/4), ..., "res5": (N, C5, H/32, W/32)}`."""

    out_channels: dict[str, int]
    strides = STRIDES


def conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(Backbone):
    """A VGG-style CNN for CPU work: a stride-2 stem, then per level a stride-2 3x3
    convolution and `depth - 1` more at that stride; channels 32/64/128/256 at strides 4/8/16/32.

    BatchNorm, not GroupNorm: trained from scratch to classify the synthetic shapes, its stride-32
    features reach 0.49 accuracy after 1000 iterations, 0.34 with GroupNorm (benchmarks/README.md,
    "Synthetic quality")."""

    def __init__(self, widths: tuple[int, int, int, int] = (32, 64, 128, 256), depth: int = 2):
        super().__init__()
        self.stem = conv_bn_relu(3, widths[0], 2)
        inputs = (widths[0], *widths[:-1])
        self.stages = nn.ModuleList(
            nn.Sequential(conv_bn_relu(a, b, 2), *(conv_bn_relu(b, b, 1) for _ in range(depth - 1)))
            for a, b in zip(inputs, widths)
        )
        self.out_channels = dict(zip(LEVELS, widths))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = self.stem(images)
        outputs = {}
        for level, stage in zip(LEVELS, self.stages):
            x = stage(x)
            outputs[level] = x
        return outputs


def build_backbone(name: str) -> Backbone:
    """`name` is `model.backbone`: one of BACKBONES."""
    if name not in BACKBONES:
        raise ValueError(f"model.backbone = {name!r} is not one of {', '.join(BACKBONES)}")
    if name == "tiny":
        return TinyBackbone()
    # Imported here: torchvision costs every process ~1.5 s of imports, and the tiny runs never use it.
    from ifrvis.modeling.torchvision_backbones import ResNetBackbone, SwinBackbone

    if name.startswith("resnet"):
        return ResNetBackbone(int(name.removeprefix("resnet")))
    return SwinBackbone(name)
