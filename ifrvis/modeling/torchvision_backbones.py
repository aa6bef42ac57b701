"""The torchvision backbones of backbone.py (ResNet-50/101, Swin-T/S/B/L): its docstring says what
they are; built through `backbone.build_backbone`, which imports this module only for them."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models import swin_transformer as tv_swin
from torchvision.ops.misc import FrozenBatchNorm2d

from ifrvis.modeling.backbone import LEVELS, Backbone


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
