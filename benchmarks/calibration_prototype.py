"""Control for the synthetic quality bar: a from-scratch tiny Mask2Former-VIS written apart from ifrvis.

    .venv/bin/python benchmarks/calibration_prototype.py --minutes 3 --out outputs/calibration/s0 [--seed 0]
        [--root data/synthetic] [--loss-res quarter|half|full] [--no-masked-attention] [--lr 1e-3]

The quality bar of `benchmarks/synthetic_quality.py` (AP >= 0.3 after 3 training minutes, >= 0.5 after
10) was calibrated on a throwaway prototype described only in words: 16 queries, d = 64, 3 decoder
layers, plain attention in the pixel decoder, 96 px frames, 4 clips x 2 frames, AdamW lr 1e-3, mask
losses at reduced resolution, from scratch. This file is that recipe, written independently of the
package on purpose (its own data loading, model, matcher, losses and inference; only the evaluator is
ifrvis's), so that its AP on the same data tells whether a gap lies in ifrvis or in the data:

- data: every training frame and mask cached in memory; a clip is a random video, a frame and a second
  one at most 5 frames away, flipped horizontally half the time;
- backbone: VGG-style conv-BN-ReLU, strides 4/8/16/32, 32/64/128/256 channels;
- pixel decoder: 1x1 projections of strides 8-32 to d, a 2-layer transformer encoder over the three
  levels flattened (2D sine + level embeddings), FPN step to the stride-4 mask features;
- decoder: Mask2Former's masked cross-attention -> self-attention -> FFN, round-robin over strides
  32/16/8, keys of both frames concatenated; softmax classes with a "no object" class (weight 0.1);
- matching and losses: 2 CE + 5 BCE + 5 Dice over the clip's masks at half resolution (Eq. 4 of the
  paper, with the softmax probability), every prediction set supervised; clipping at norm 1.0;
- training for a wall-clock budget, lr x 0.1 at 90 % of it; one thread;
- inference: the whole video as one clip, top 10 (query, class) pairs, masks thresholded at 0.5.

Writes `<out>/results.json` and `<out>/summary.json` (iterations, seconds, AP/AR) and prints them.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ifrvis.cli import ArgumentParser
from ifrvis.evaluation import evaluate_ytvis

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) * 255
LOSS_SCALES = {"quarter": 0.25, "half": 0.5, "full": 1.0}  # of the frame size


# Data -------------------------------------------------------------------------------------------
def read_frames(root: Path, video: dict) -> Tensor:
    """(L, 3, H, W) uint8."""
    frames = [
        np.asarray(Image.open(root / "JPEGImages" / name).convert("RGB")) for name in video["file_names"]
    ]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def decode_track(ann: dict) -> Tensor:
    """One annotation's masks (L, H, W) uint8; null segmentations are empty."""
    masks = np.zeros((len(ann["segmentations"]), ann["height"], ann["width"]), np.uint8)
    for t, seg in enumerate(ann["segmentations"]):
        if seg:
            rle = mask_utils.frPyObjects(seg, *seg["size"]) if isinstance(seg["counts"], list) else seg
            masks[t] = mask_utils.decode(rle)
    return torch.from_numpy(masks)


class CachedVideos:
    def __init__(self, root: Path, split: str):
        data = json.loads((root / f"{split}.json").read_text())
        self.category_ids = sorted(c["id"] for c in data["categories"])
        label = {cid: i for i, cid in enumerate(self.category_ids)}
        self.videos = data["videos"]
        self.frames = {v["id"]: read_frames(root, v) for v in self.videos}
        self.tracks = {v["id"]: [] for v in self.videos}
        for ann in data.get("annotations", []):
            self.tracks[ann["video_id"]].append((label[ann["category_id"]], decode_track(ann)))

    def clip(self, rng: random.Random, max_gap: int = 5) -> tuple[Tensor, dict]:
        """A random 2-frame clip: images (2, 3, H, W) normalised, target labels (M,), masks (M, 2, H, W)."""
        video = rng.choice(self.videos)
        length = len(video["file_names"])
        first = rng.randrange(length)
        others = [t for t in range(max(0, first - max_gap), min(length, first + max_gap + 1)) if t != first]
        frames = sorted([first, rng.choice(others) if others else first])
        images = self.frames[video["id"]][frames].float()
        labels, masks = [], []
        for label, track in self.tracks[video["id"]]:
            if track[frames].any():
                labels.append(label)
                masks.append(track[frames].float())
        masks = torch.stack(masks) if masks else torch.zeros(0, 2, *images.shape[-2:])
        if rng.random() < 0.5:
            images, masks = images.flip(-1), masks.flip(-1)
        return (images - MEAN) / STD, {"labels": torch.tensor(labels, dtype=torch.long), "masks": masks}


# Model ------------------------------------------------------------------------------------------
def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(True)
    )


class Backbone(nn.Module):
    """(N, 3, H, W) -> [stride 4, 8, 16, 32] maps of 32/64/128/256 channels."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, 24, 2), conv_bn_relu(24, 32, 2), conv_bn_relu(32, 32))
        self.stages = nn.ModuleList(
            nn.Sequential(conv_bn_relu(a, b, 2), conv_bn_relu(b, b))
            for a, b in ((32, 64), (64, 128), (128, 256))
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = [self.stem(x)]
        for stage in self.stages:
            maps.append(stage(maps[-1]))
        return maps


def sine_position(h: int, w: int, dim: int) -> Tensor:
    """Normalised 2D sine embedding (DETR) -> (h * w, dim), channels [y, x]."""
    half = dim // 2
    scale = 10000 ** (2 * (torch.arange(half) // 2) / half)

    def encode(n: int) -> Tensor:
        pos = ((torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 * math.pi)[:, None] / scale
        return torch.stack([pos[:, 0::2].sin(), pos[:, 1::2].cos()], 2).flatten(1)  # (n, half)

    y, x = encode(h), encode(w)
    return torch.cat([y[:, None].expand(h, w, half), x[None].expand(h, w, half)], -1).reshape(h * w, dim)


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int = 4, ffn: int = 256):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(True), nn.Linear(ffn, dim))

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        q = x + pos
        x = self.norm1(x + self.attn(q, q, x)[0])
        return self.norm2(x + self.ffn(x))


class PixelDecoder(nn.Module):
    """Backbone maps -> mask features (N, d, H/4, W/4) and [strides 32, 16, 8] maps (N, d, h, w) with their
    positions (h * w, d), coarse to fine."""

    def __init__(self, dim: int = 64, layers: int = 2):
        super().__init__()
        self.dim = dim
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(8, dim)) for c in (64, 128, 256)
        )
        self.level_embed = nn.Parameter(torch.randn(3, dim) * 0.02)
        self.encoder = nn.ModuleList(EncoderLayer(dim) for _ in range(layers))
        self.lateral = nn.Sequential(nn.Conv2d(32, dim, 1, bias=False), nn.GroupNorm(8, dim))
        self.output = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False), nn.GroupNorm(8, dim), nn.ReLU(True)
        )
        self.mask_features = nn.Conv2d(dim, dim, 1)

    def forward(self, maps: list[Tensor]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        levels = [proj(m) for proj, m in zip(self.proj, maps[1:])]  # strides 8, 16, 32
        shapes = [tuple(x.shape[-2:]) for x in levels]
        pos = [sine_position(h, w, self.dim) + self.level_embed[i] for i, (h, w) in enumerate(shapes)]
        tokens = torch.cat([x.flatten(2).transpose(1, 2) for x in levels], 1)
        for layer in self.encoder:
            tokens = layer(tokens, torch.cat(pos)[None])
        n = tokens.shape[0]
        encoded = [
            part.transpose(1, 2).reshape(n, self.dim, h, w)
            for part, (h, w) in zip(tokens.split([h * w for h, w in shapes], 1), shapes)
        ]
        fpn = self.lateral(maps[0]) + F.interpolate(encoded[0], size=maps[0].shape[-2:], mode="bilinear")
        return self.mask_features(self.output(fpn)), encoded[::-1], pos[::-1]


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int = 4, ffn: int = 256):
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(True), nn.Linear(ffn, dim))

    def forward(self, q: Tensor, q_pos: Tensor, memory: Tensor, m_pos: Tensor, blocked: Tensor) -> Tensor:
        q = self.norms[0](q + self.cross(q + q_pos, memory + m_pos, memory, attn_mask=blocked)[0])
        q = self.norms[1](q + self.self_attn(q + q_pos, q + q_pos, q)[0])
        return self.norms[2](q + self.ffn(q))


class TinyMask2FormerVIS(nn.Module):
    """(B, T, 3, H, W) normalised -> for each prediction set, class logits (B, Q, K + 1) and mask logits
    (B, Q, T, H/4, W/4)."""

    def __init__(self, num_classes: int, dim: int = 64, queries: int = 16, layers: int = 3, heads: int = 4):
        super().__init__()
        self.heads, self.masked_attention = heads, True
        self.backbone, self.pixel_decoder = Backbone(), PixelDecoder(dim)
        self.query_feat, self.query_pos = nn.Embedding(queries, dim), nn.Embedding(queries, dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(True), nn.Linear(dim, dim), nn.ReLU(True), nn.Linear(dim, dim)
        )

    def predict(
        self, q: Tensor, mask_features: Tensor, size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Heads on queries (B, Q, d) and the attention mask (B * heads, Q, T * h * w) for the next layer."""
        q = self.norm(q)
        masks = torch.einsum("bqc,btchw->bqthw", self.mask_embed(q), mask_features)
        b, n, t = masks.shape[:3]
        small = F.interpolate(masks.detach().flatten(1, 2), size=size, mode="bilinear").view(b, n, -1)
        blocked = (small.sigmoid() < 0.5) & self.masked_attention
        blocked[blocked.all(-1)] = False
        return self.classifier(q), masks, blocked.repeat_interleave(self.heads, 0)

    def forward(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        b, t = x.shape[:2]
        mask_features, levels, positions = self.pixel_decoder(self.backbone(x.flatten(0, 1)))
        mask_features = mask_features.view(b, t, *mask_features.shape[1:])
        memories = [m.view(b, t, m.shape[1], -1).permute(0, 1, 3, 2).flatten(1, 2) for m in levels]
        memory_pos = [p.repeat(t, 1)[None] for p in positions]
        sizes = [tuple(m.shape[-2:]) for m in levels]
        q = self.query_feat.weight[None].expand(b, -1, -1)
        q_pos = self.query_pos.weight[None].expand(b, -1, -1)
        logits, masks, blocked = self.predict(q, mask_features, sizes[0])
        outputs = [(logits, masks)]
        for i, layer in enumerate(self.layers):
            q = layer(q, q_pos, memories[i % 3], memory_pos[i % 3], blocked)
            logits, masks, blocked = self.predict(q, mask_features, sizes[(i + 1) % 3])
            outputs.append((logits, masks))
        return outputs


# Matching and losses ----------------------------------------------------------------------------
def pair_costs(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean BCE and 1 - Dice of every (prediction, target): (Q, P) logits, (M, P) -> two (Q, M)."""
    bce = (F.softplus(logits).sum(1, keepdim=True) - logits @ targets.T) / logits.shape[1]
    probs = logits.sigmoid()
    dice = 1 - (2 * probs @ targets.T + 1) / (probs.sum(1)[:, None] + targets.sum(1)[None] + 1)
    return bce, dice


def set_loss(outputs: list, targets: list[dict], scale: float, no_object: Tensor) -> Tensor:
    """Sum over prediction sets of 2 CE + 5 BCE + 5 Dice (Hungarian-matched, clip masks at `scale` x the
    frame size)."""
    size = tuple(round(scale * n) for n in targets[0]["masks"].shape[-2:])
    num_classes = no_object.numel() - 1
    gt = [F.interpolate(t["masks"], size=size, mode="area").gt(0.5).flatten(1).float() for t in targets]
    norm = max(1, sum(len(t["labels"]) for t in targets))
    total = torch.zeros(())
    for logits, masks in outputs:
        b, q = masks.shape[:2]
        pred = F.interpolate(masks.flatten(1, 2), size=size, mode="bilinear").view(b, q, -1)
        classes = torch.full((b, q), num_classes, dtype=torch.long)
        for i, target in enumerate(targets):
            if not len(target["labels"]):
                continue
            with torch.no_grad():
                bce, dice = pair_costs(pred[i], gt[i])
                cost = -2 * logits[i].softmax(-1)[:, target["labels"]] + 5 * bce + 5 * dice
                rows, cols = map(torch.as_tensor, linear_sum_assignment(cost.numpy()))
            classes[i, rows] = target["labels"][cols]
            matched, truth = pred[i, rows], gt[i][cols]
            bce = F.binary_cross_entropy_with_logits(matched, truth, reduction="none").mean(1).sum()
            probs = matched.sigmoid()
            dice = (1 - (2 * (probs * truth).sum(1) + 1) / (probs.sum(1) + truth.sum(1) + 1)).sum()
            total = total + (5 * bce + 5 * dice) / norm
        total = total + 2 * F.cross_entropy(logits.transpose(1, 2), classes, weight=no_object)
    return total


# Inference --------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: TinyMask2FormerVIS, videos: CachedVideos, top_k: int = 10) -> list[dict]:
    """YouTube-VIS results: each video decoded whole, top-k (query, class) pairs."""
    model.eval()
    results = []
    for video in videos.videos:
        x = ((videos.frames[video["id"]].float() - MEAN) / STD)[None]
        logits, masks = model(x)[-1]
        probs = logits[0].softmax(-1)[:, :-1]
        num_classes = probs.shape[1]
        scores, flat = probs.flatten().topk(top_k)
        full = F.interpolate(masks[0], size=(video["height"], video["width"]), mode="bilinear")
        binary = (full > 0).numpy().astype(np.uint8)  # (Q, T, H, W)
        for score, index in zip(scores.tolist(), flat.tolist()):
            segmentations = []
            for frame in binary[index // num_classes]:
                rle = mask_utils.encode(np.asfortranarray(frame)) if frame.any() else None
                if rle is not None:
                    rle["counts"] = rle["counts"].decode("ascii")
                segmentations.append(rle)
            results.append(
                {
                    "video_id": video["id"],
                    "category_id": videos.category_ids[index % num_classes],
                    "score": score,
                    "segmentations": segmentations,
                }
            )
    return results


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--loss-res", choices=sorted(LOSS_SCALES), default="half")
    parser.add_argument("--no-masked-attention", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    train = CachedVideos(args.root, "train")
    model = TinyMask2FormerVIS(len(train.category_ids))
    model.masked_attention = not args.no_masked_attention
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    no_object = torch.ones(len(train.category_ids) + 1)
    no_object[-1] = 0.1
    rng, budget, iterations, decayed = random.Random(args.seed), args.minutes * 60, 0, False
    start = time.time()
    while (elapsed := time.time() - start) < budget:
        if not decayed and elapsed >= 0.9 * budget:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
            decayed = True
        images, targets = zip(*(train.clip(rng) for _ in range(4)))
        loss = set_loss(model(torch.stack(images)), list(targets), LOSS_SCALES[args.loss_res], no_object)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        iterations += 1
        if iterations % 100 == 0:
            print(f"iteration {iterations}  {elapsed:.0f} s  loss {loss.item():.2f}", flush=True)
    train_seconds = time.time() - start

    valid = CachedVideos(args.root, "valid")
    results = predict(model, valid)
    (args.out / "results.json").write_text(json.dumps(results))
    metrics = evaluate_ytvis(json.loads((args.root / "valid.json").read_text()), results)
    summary = {
        "iterations": iterations,
        "train_s": round(train_seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        **{k: round(metrics[k], 4) for k in ("AP", "AP50", "AP75", "AR1", "AR10")},
    }
    (args.out / "summary.json").write_text(json.dumps({**vars(args), **summary}, default=str, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
