"""Backbones returning the pyramid res2..res5 (strides 4, 8, 16, 32), Sec. 3.1.

- `resnet50`, `resnet101`: torchvision ResNets with frozen BatchNorm and every convolution trained
  (Mask2Former's FREEZE_AT 0); parameter names are torchvision's
  (`conv1`, `bn1`, `layer1..4`), so a torchvision state dict loads under the `backbone.` prefix.
- `swin_t`, `swin_s`, `swin_b`: torchvision Swin Transformers; `swin_l`: torchvision's
  `SwinTransformer` class with Swin-L's hyper-parameters (embed 192, depths 2-2-18-2, heads 6-12-24-48,
  window 12 as Mask2Former's Swin-L); torchvision ships no Swin-L weights, load them from `model.weights`.
  A LayerNorm per output level, as Mask2Former's D2SwinTransformer.
- `tiny`: a small CNN for CPU work; `ifrvis pretrain` (engine/pretrain.py) pretrains it on synthetic data.

Every backbone is built with random initialisation: weights come only from `model.weights` (weights.py).
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models import swin_transformer as tv_swin
from torchvision.ops.misc import FrozenBatchNorm2d

LEVELS = ("res2", "res3", "res4", "res5")
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
BACKBONES = ("tiny", "resnet50", "resnet101", "swin_t", "swin_s", "swin_b", "swin_l")


class Backbone(nn.Module):
    """`forward(images (N, 3, H, W)) -> {"res2": (N, C2, H/4, W/4), ..., "res5": (N, C5, H/32, W/32)}`."""

    out_channels: dict[str, int]
    strides = STRIDES


class ResNetBackbone(Backbone):
    def __init__(self, depth: int):
        super().__init__()
        layers = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]
        net = resnet.ResNet(resnet.Bottleneck, layers, norm_layer=FrozenBatchNorm2d)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        res2 = self.layer1(x)
        res3 = self.layer2(res2)
        res4 = self.layer3(res3)
        res5 = self.layer4(res4)
        return {"res2": res2, "res3": res3, "res4": res4, "res5": res5}


SWIN_SPECS = {
    # name: (embed_dim, depths, heads, window, stochastic depth): Mask2Former's Swin configs
    "swin_t": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 0.3),
    "swin_s": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7, 0.3),
    "swin_b": (128, [2, 2, 18, 2], [4, 8, 16, 32], 7, 0.3),
    "swin_l": (192, [2, 2, 18, 2], [6, 12, 24, 48], 12, 0.3),
}


class SwinBackbone(Backbone):
    """torchvision's Swin `features` (keys `features.*` as in its state dicts), a LayerNorm per level."""

    def __init__(self, name: str):
        super().__init__()
        embed_dim, depths, heads, window, drop_path = SWIN_SPECS[name]
        net = tv_swin.SwinTransformer(
            patch_size=[4, 4],
            embed_dim=embed_dim,
            depths=depths,
            num_heads=heads,
            window_size=[window, window],
            stochastic_depth_prob=drop_path,
        )
        self.features = net.features  # [patch embed, stage1, merge, stage2, merge, stage3, merge, stage4]
        channels = [embed_dim * 2**i for i in range(4)]
        self.out_channels = dict(zip(LEVELS, channels))
        self.out_norms = nn.ModuleList(nn.LayerNorm(c) for c in channels)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        outputs = {}
        x = images
        for index, block in enumerate(self.features):
            x = block(x)  # (N, h, w, C): torchvision's Swin is channels-last
            if index % 2 == 1:
                level = index // 2
                outputs[LEVELS[level]] = self.out_norms[level](x).permute(0, 3, 1, 2).contiguous()
        return outputs


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
    builders = {
        "tiny": TinyBackbone,
        "resnet50": partial(ResNetBackbone, 50),
        "resnet101": partial(ResNetBackbone, 101),
        **{swin: partial(SwinBackbone, swin) for swin in SWIN_SPECS},
    }
    if name not in builders:
        raise ValueError(f"model.backbone = {name!r} is not one of {', '.join(BACKBONES)}")
    return builders[name]()
