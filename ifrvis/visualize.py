"""Figures 1 and 5: a strip of frames, ground truth above prediction, one colour per track identity
(`ifrvis visualize`, ifrvis.commands.visualize, draws one from a run or a results file).

Every ground-truth instance gets a fixed colour; a predicted track takes the colour of the
ground-truth instance it overlaps most over the whole video (video IoU), unmatched tracks get
colours no ground-truth instance uses. An identity switch then shows as a colour change on one
object between frames, a lost instance as a missing colour, a merge as one colour over two objects.
Writes `<out>/video<ID>.png` (the strip) and `<out>/video<ID>.gif` (all frames, animated).
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ifrvis.data.masks import decode_segmentation, resize_mask

ALPHA = 0.5  # mask opacity over the frame
LABEL_PAD = 1  # pixels of a label's box around its text


def palette(count: int) -> list[tuple[int, int, int]]:
    """`count` well separated RGB colours (golden-ratio hue steps), the same for every video."""
    colours = []
    for i in range(count):
        hue = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0 if i % 2 == 0 else 0.75)
        colours.append((int(255 * r), int(255 * g), int(255 * b)))
    return colours


def _get(instance: Any, name: str, default: Any = None) -> Any:
    """Field of a dict or an object (e.g. an inference `Prediction`)."""
    return instance.get(name, default) if isinstance(instance, dict) else getattr(instance, name, default)


def video_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two mask tubes (T, H, W) bool over the whole video: sum of intersections / sum of unions."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def assign_colours(
    gt_masks: Sequence[np.ndarray], pred_masks: Sequence[np.ndarray], min_iou: float = 0.1
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]], list[int | None]]:
    """Colours for ground-truth instances (by position) and predictions (like their best-overlapping
    ground truth by video IoU when it reaches `min_iou`, else a colour of their own).

    Returns (gt_colours, pred_colours, pred_match) with pred_match[j] the matched ground-truth index."""
    colours = palette(len(gt_masks) + len(pred_masks))
    gt_colours = colours[: len(gt_masks)]
    spare = iter(colours[len(gt_masks) :])
    pred_colours, matches = [], []
    for masks in pred_masks:
        ious = [video_iou(masks, gt) for gt in gt_masks]
        best = int(np.argmax(ious)) if ious else None
        if best is not None and ious[best] >= min_iou:
            pred_colours.append(gt_colours[best])
            matches.append(best)
        else:
            pred_colours.append(next(spare))
            matches.append(None)
    return gt_colours, pred_colours, matches


def _boundary(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: mask pixels with a 4-neighbour outside the mask."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def render_frame(
    frame: np.ndarray,
    masks: Sequence[np.ndarray],
    colours: Sequence[tuple[int, int, int]],
    labels: Sequence[str],
    size: tuple[int, int],
    alpha: float = ALPHA,
) -> Image.Image:
    """One frame (H, W, 3) uint8 with instance masks (each (H, W) bool) blended in their colours, a
    full-colour outline, and each label at the mask's top-left corner; resized to `size` (w, h)."""
    canvas, resized = _blend(frame, masks, colours, size, alpha)
    draw = ImageDraw.Draw(canvas)
    font = _font(size)
    for mask, colour, label in zip(resized, colours, labels):
        ys, xs = np.nonzero(mask)
        if ys.size and label:
            x, y = int(xs.min()), int(ys.min())
            left, top, right, bottom = draw.textbbox((x, y), label, font=font)
            draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=colour)
            draw.text((x, y), label, fill=(0, 0, 0), font=font)
    return canvas


def render_tracks(
    frame: np.ndarray,
    masks: Sequence[np.ndarray],
    colours: Sequence[tuple[int, int, int]],
    labels: Sequence[str],
    size: tuple[int, int],
    alpha: float = ALPHA,
) -> Image.Image:
    """`render_frame` for tracks ranked best first (the overlay of `ifrvis predict`): the best mask and
    label are drawn last, so nothing covers them, and each label sits on a box of its colour where
    `label_boxes` puts it (near the mask's top-left corner, inside the frame, clear of the others)."""
    canvas, resized = _blend(frame, masks[::-1], colours[::-1], size, alpha)
    draw = ImageDraw.Draw(canvas)
    font = _font(size)
    anchors = [_top_left(mask) if label else None for mask, label in zip(resized[::-1], labels)]
    extents = [draw.textbbox((0, 0), label, font=font) if label else (0, 0, 0, 0) for label in labels]
    sizes = [
        (right - left + 2 * LABEL_PAD, bottom - top + 2 * LABEL_PAD) for left, top, right, bottom in extents
    ]
    boxes = label_boxes(anchors, sizes, size)
    for box, colour, label, extent in reversed(list(zip(boxes, colours, labels, extents))):
        if box is not None:
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=colour)
            position = (box[0] + LABEL_PAD - extent[0], box[1] + LABEL_PAD - extent[1])
            draw.text(position, label, fill=(0, 0, 0), font=font)
    return canvas


def _blend(
    frame: np.ndarray,
    masks: Sequence[np.ndarray],
    colours: Sequence[tuple[int, int, int]],
    size: tuple[int, int],
    alpha: float,
) -> tuple[Image.Image, list[np.ndarray]]:
    """(the frame (H, W, 3) uint8 resized to `size` (w, h) with the masks blended in their colours and
    outlined, in order: the last on top; the masks (h, w) bool at that size)."""
    image = np.asarray(Image.fromarray(frame).convert("RGB").resize(size, Image.BILINEAR)).astype(np.float32)
    resized = [resize_mask(m, (size[1], size[0])) for m in masks]  # size: PIL's (w, h)
    for mask, colour in zip(resized, colours):
        image[mask] = (1 - alpha) * image[mask] + alpha * np.asarray(colour, np.float32)
        image[_boundary(mask)] = colour
    return Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8)), resized


def _top_left(mask: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of an (H, W) bool mask's top-left bounding-box corner; None when it is empty."""
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min())) if ys.size else None


def label_boxes(
    anchors: Sequence[tuple[int, int] | None], sizes: Sequence[tuple[int, int]], frame: tuple[int, int]
) -> list[tuple[int, int, int, int] | None]:
    """Where each label goes: a box (x0, y0, x1, y1), x1 and y1 excluded, of its (w, h) size, in the
    frame (W, H), for each (x, y) anchor (None: no label). In order, the most important first: a label
    starts at its anchor moved inside the frame, then steps by its own height and width, nearest first
    (up and down before sideways), to the first place clear of the labels placed before it; where
    none is clear (more labels than the frame holds), the place overlapping them least."""
    placed: list[tuple[int, int, int, int]] = []
    boxes: list[tuple[int, int, int, int] | None] = []
    for anchor, (width, height) in zip(anchors, sizes):
        if anchor is None:
            boxes.append(None)
            continue
        x = min(max(anchor[0], 0), max(frame[0] - width, 0))
        y = min(max(anchor[1], 0), max(frame[1] - height, 0))
        steps = sorted(
            ((sx, sy) for sx in _steps(x, width, frame[0]) for sy in _steps(y, height, frame[1])),
            key=lambda step: (abs(step[0]) + abs(step[1]), abs(step[0])),
        )
        candidates = [
            (x + sx * width, y + sy * height, x + sx * width + width, y + sy * height + height)
            for sx, sy in steps
        ]
        clear = (c for c in candidates if not any(_overlap(c, other) for other in placed))
        box = next(clear, None) or min(candidates, key=lambda c: sum(_overlap(c, other) for other in placed))
        placed.append(box)
        boxes.append(box)
    return boxes


def _steps(start: int, length: int, extent: int) -> range:
    """The k for which [start + k * length, start + (k + 1) * length) lies in [0, extent), given
    0 <= start <= extent - length; k = 0 alone when one length does not fit."""
    if length > extent or length <= 0:
        return range(1)
    return range(-(start // length), (extent - length - start) // length + 1)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """The area two (x0, y0, x1, y1) boxes share."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _font(size: tuple[int, int]) -> ImageFont.ImageFont:
    """Pillow's default font at about a sixteenth of the cell's height (at least 10 px): legible at
    the size a strip is shown."""
    return ImageFont.load_default(size=max(10, size[1] // 16))


def stamp_frame_index(image: Image.Image, t: int, size: tuple[int, int]) -> None:
    """Write `t=<index>` at the bottom right of the ground-truth cell (this also keeps identical frames
    distinct, so the GIF holds every frame)."""
    draw = ImageDraw.Draw(image)
    text, font = f"t={t}", _font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = size[0] - (right - left) - 2, size[1] - (bottom - top) - 3
    draw.text((x, y), text, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0), font=font)


def _label(instance: Any, categories: dict[int, str]) -> str:
    label = _get(instance, "label", _get(instance, "category_id"))
    name = categories.get(label, str(label)) if label is not None else ""
    score = _get(instance, "score")
    return f"{name} {score:.2f}" if score is not None else name


def frame_indices(num_frames: int, max_frames: int) -> list[int]:
    """Up to `max_frames` indices spread evenly over `num_frames` frames, the first and last included."""
    if num_frames <= max_frames:
        return list(range(num_frames))
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, max_frames)})


def draw_video_strip(
    frames: Sequence[np.ndarray | Image.Image],
    gt_instances: Sequence[Any],
    pred_instances: Sequence[Any],
    out_path: str | Path,
    categories: dict[int, str] | None = None,
    max_frames: int = 8,
    max_height: int = 240,
    gif: bool = True,
    min_height: int = 0,
    gif_ms: int = 400,
) -> dict[str, Path]:
    """Write the strip PNG `out_path` (and its GIF beside it): ground truth above prediction.

    frames: T images (H, W, 3) uint8 RGB (or PIL images). gt_instances / pred_instances: dicts or
    objects with `masks` (T, H, W) bool, `label` (or `category_id`), optional `score`. `categories`
    maps a label to its display name. Each cell is the frame scaled to at most `max_height` pixels
    high, and up to at least `min_height` (small frames, as the synthetic set's 96 px, drawn where they
    are shown at a fixed size); the strip is (2 * h, n * w) for the n frames picked evenly (at most
    `max_frames`).
    Returns {"png": path, "gif": path}."""
    frames = [np.asarray(f.convert("RGB") if isinstance(f, Image.Image) else f) for f in frames]
    if not frames:
        raise ValueError("draw_video_strip: no frames")
    height, width = frames[0].shape[:2]
    for name, instances in (("ground truth", gt_instances), ("prediction", pred_instances)):
        for i, instance in enumerate(instances):
            shape = np.shape(_get(instance, "masks"))
            if shape != (len(frames), height, width):
                raise ValueError(
                    f"draw_video_strip: {name} instance {i} has masks of shape {shape}, "
                    f"expected {(len(frames), height, width)} (T, H, W)"
                )
    categories = categories or {}
    scale = min(max(1.0, min_height / height), max_height / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    gt_masks = [np.asarray(_get(i, "masks"), bool) for i in gt_instances]
    pred_masks = [np.asarray(_get(i, "masks"), bool) for i in pred_instances]
    gt_colours, pred_colours, _ = assign_colours(gt_masks, pred_masks)
    gt_labels = [_label(i, categories) for i in gt_instances]
    pred_labels = [_label(i, categories) for i in pred_instances]

    def pair(t: int) -> Image.Image:
        top = render_frame(frames[t], [m[t] for m in gt_masks], gt_colours, gt_labels, size)
        bottom = render_frame(frames[t], [m[t] for m in pred_masks], pred_colours, pred_labels, size)
        both = Image.new("RGB", (size[0], 2 * size[1]))
        both.paste(top, (0, 0))
        both.paste(bottom, (0, size[1]))
        stamp_frame_index(both, t, size)
        return both

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    picked = frame_indices(len(frames), max_frames)
    strip = Image.new("RGB", (size[0] * len(picked), 2 * size[1]))
    for column, t in enumerate(picked):
        strip.paste(pair(t), (column * size[0], 0))
    strip.save(out_path)
    paths = {"png": out_path}
    if gif:
        animation = [pair(t) for t in range(len(frames))]
        paths["gif"] = out_path.with_suffix(".gif")
        animation[0].save(paths["gif"], save_all=True, append_images=animation[1:], duration=gif_ms, loop=0)
    return paths


# ---- reading a YouTube-VIS folder and a results file (json + PIL only) ----


def load_video(
    gt_json: Path, image_root: Path, video_id: int | None
) -> tuple[dict, list[np.ndarray], list, dict]:
    """(video, frames, ground-truth instances, categories {id: name}) of one video of `gt_json`;
    the first video when `video_id` is None."""
    try:
        data = json.loads(Path(gt_json).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{gt_json}: cannot read ground truth: {error}") from None
    videos = data.get("videos") or []
    if not videos:
        raise ValueError(f"{gt_json}: no 'videos'")
    if video_id is None:
        video = videos[0]
    else:
        video = next((v for v in videos if v["id"] == video_id), None)
        if video is None:
            raise ValueError(f"{gt_json}: no video with id {video_id}")
    height, width = int(video["height"]), int(video["width"])
    frames = []
    for name in video["file_names"]:
        path = Path(image_root) / name
        try:
            frames.append(np.asarray(Image.open(path).convert("RGB")))
        except OSError as error:
            raise ValueError(f"{gt_json}: video {video['id']}: cannot read frame {path}: {error}") from None
    instances = []
    for ann in data.get("annotations") or []:
        if ann["video_id"] != video["id"]:
            continue
        masks = np.stack([decode_segmentation(s, height, width) for s in ann["segmentations"]])
        instances.append({"id": ann["id"], "label": ann["category_id"], "masks": masks})
    categories = {c["id"]: c["name"] for c in data.get("categories") or []}
    return video, frames, instances, categories


def load_predictions(
    results: list[dict], video: dict, score_threshold: float = 0.3, top_n: int = 10
) -> list[dict]:
    """The video's predictions with score >= `score_threshold`, the `top_n` best, masks (T, H, W) bool."""
    height, width, length = int(video["height"]), int(video["width"]), len(video["file_names"])
    chosen = [r for r in results if r["video_id"] == video["id"] and r["score"] >= score_threshold]
    chosen = sorted(chosen, key=lambda r: r["score"], reverse=True)[:top_n]
    predictions = []
    for r in chosen:
        if len(r["segmentations"]) != length:
            raise ValueError(
                f"results: video {video['id']}: a prediction has {len(r['segmentations'])} frames, "
                f"the video {length}"
            )
        masks = np.stack([decode_segmentation(s, height, width) for s in r["segmentations"]])
        predictions.append({"label": r["category_id"], "score": float(r["score"]), "masks": masks})
    return predictions
