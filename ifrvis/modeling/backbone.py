"""Backbones returning the pyramid res2..res5 (strides 4, 8, 16, 32), Sec. 3.1.

- `resnet50`, `resnet101`: torchvision ResNets with frozen BatchNorm and every convolution trained
  (Mask2Former's FREEZE_AT 0); parameter names are torchvision's
  (`conv1`, `bn1`, `layer1..4`), so a torchvision state dict loads under the `backbone.` prefix.
- `swin_t`, `swin_s`, `swin_b`, `swin_l`: torchvision's `SwinTransformer` class with the
  hyper-parameters of Mask2Former's COCO Swin configs (`SWIN_SPECS`: Swin-T/S window 7, pretrained at
  224; Swin-B/L window 12, pretrained at 384), so that Mask2Former's COCO checkpoints load whole, and
  with Mask2Former's window shift (`AlwaysShiftedWindowAttention`). A LayerNorm per output level, as
  Mask2Former's D2SwinTransformer. Parameter names are torchvision's (`features.*`).
- `tiny`: a small CNN for CPU work; `ifrvis pretrain` (engine/pretrain.py) pretrains it on synthetic data.

Every backbone is built with random initialisation: weights come only from `model.weights` (weights.py).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
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
    # name: (embed_dim, depths, heads, window, stochastic depth), as Mask2Former's COCO instance
    # configs (configs/coco/instance-segmentation/swin/*.yaml): Swin-B and Swin-L are the 384-pretrained
    # models with window 12, Swin-T and Swin-S the 224-pretrained ones with window 7.
    "swin_t": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 0.3),
    "swin_s": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7, 0.3),
    "swin_b": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 0.3),
    "swin_l": (192, [2, 2, 18, 2], [6, 12, 24, 48], 12, 0.3),
}


def window_partition(x: Tensor, window: list[int]) -> Tensor:
    """`(B, Hp, Wp, C)` with Hp, Wp multiples of the window -> `(B * nW, wh * ww, C)`, windows row-major."""
    b, hp, wp, c = x.shape
    x = x.view(b, hp // window[0], window[0], wp // window[1], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def window_merge(windows: Tensor, window: list[int], batch: int, hp: int, wp: int) -> Tensor:
    """The inverse of `window_partition`: `(B * nW, wh * ww, C)` -> `(B, Hp, Wp, C)`."""
    x = windows.view(batch, hp // window[0], wp // window[1], window[0], window[1], -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, -1)


def shift_regions(size: int, window: int, shift: int, device: torch.device) -> Tensor:
    """Region label (0, 1, 2) of each position of one padded, rolled axis `(size,)`: after the roll by
    -shift, the last window mixes the bands [size - window, size - shift) and [size - shift, size),
    which are not neighbours in the image (and band 0, which never shares a window with them)."""
    index = torch.arange(size, device=device)
    return (index >= size - window).long() + (index >= size - shift).long()


def shift_attention_mask(hp: int, wp: int, window: list[int], shift: list[int], device) -> Tensor:
    """Additive mask `(nW, L, L)`, L = wh * ww: -100 between tokens of a window that come from different
    regions of the rolled map (Swin's value), 0 elsewhere."""
    rows = shift_regions(hp, window[0], shift[0], device)
    cols = shift_regions(wp, window[1], shift[1], device)
    labels = (rows[:, None] * 3 + cols[None, :])[None, :, :, None]  # (1, Hp, Wp, 1)
    labels = window_partition(labels, window)[..., 0]  # (nW, L)
    different = labels[:, :, None] != labels[:, None, :]
    return torch.zeros(different.shape, device=device).masked_fill(different, -100.0)


class AlwaysShiftedWindowAttention(tv_swin.ShiftedWindowAttention):
    """Window attention with Mask2Former's shift rule: a shifted block always rolls the zero-padded map
    by `shift_size` and masks across the roll's seam, even where one window covers the whole padded map.

    torchvision skips the shift along an axis whose padded size is at most the window; Mask2Former's
    Swin does not, and at the paper's sizes that changes the result: a 360-px frame (384 once padded
    to 32) has a 12-row stage-4 map, exactly one window-12 window, so Mask2Former's shifted blocks keep
    its top and bottom 6 rows apart while torchvision's let them attend to each other.
    `forward(x (B, H, W, C)) -> (B, H, W, C)`."""

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        window, shift, heads = self.window_size, self.shift_size, self.num_heads
        pad_h, pad_w = (-h) % window[0], (-w) % window[1]
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # zeros, attended to as Mask2Former's Swin does
        hp, wp = h + pad_h, w + pad_w
        shifted = any(shift)
        if shifted:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = window_partition(x, window)  # (B * nW, L, C)
        q, k, v = self.qkv(windows).view(windows.shape[0], -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        logits = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)  # (B * nW, heads, L, L)
        logits = logits + self.get_relative_position_bias()
        if shifted:
            mask = shift_attention_mask(hp, wp, window, shift, x.device).to(logits.dtype)
            logits = (logits.view(b, -1, heads, *logits.shape[-2:]) + mask[None, :, None]).flatten(0, 1)
        attn = F.dropout(logits.softmax(-1), self.attention_dropout, self.training)
        out = (attn @ v).transpose(1, 2).reshape(windows.shape)
        out = F.dropout(self.proj(out), self.dropout, self.training)
        x = window_merge(out, window, b, hp, wp)
        if shifted:
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x[:, :h, :w].contiguous()


class SwinBackbone(Backbone):
    """torchvision's Swin `features` (keys `features.*` as in its state dicts) with Mask2Former's window
    shift, a LayerNorm per level."""

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
            block=partial(tv_swin.SwinTransformerBlock, attn_layer=AlwaysShiftedWindowAttention),
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
