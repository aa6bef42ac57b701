"""The synthetic VIS benchmark: a YouTube-VIS-format folder drawn deterministically from a seed.

    ifrvis synth --out data/synthetic --seed 0

Categories differ only by shape (colours and textures are random per instance) on textured, panning
backgrounds; instances move linearly or bounce, change scale, occlude each other by depth order (the
ground truth is the visible mask) and enter or leave the frame (null segmentations). `crossing` videos
have several instances of one category crossing paths: identity is hard to keep (the paper's Fig. 1).
Every video is drawn from its own generator seeded by (seed, split, index): same arguments, same bytes.
See docs/synthetic_data.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ifrvis.data.masks import encode_rle, mask_area, mask_bbox

SHAPES = ("disc", "square", "triangle", "cross", "ring")
CATEGORIES = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]
TEXTURES = ("solid", "stripes", "checker", "dots", "gradient")
MOTIONS = ("linear", "bounce", "pass")
SPLIT_CODES = {"train": 0, "valid": 1}
MIN_VISIBLE_PIXELS = 6  # a visible part smaller than this is treated as absent (not drawn, null)
CROSSING_FRACTION = 0.25  # share of crossing videos in a `default` split
JPEG_QUALITY = 90
RANDOM_FRAMES = (8, 24)  # a video's length when none is given: drawn in this range, bounds included
# What one run may ask for, so that it fits in memory: a video is drawn whole (~100 bytes a frame pixel,
# 2^24 px: 24 frames of 720 x 960, ~1.7 GB), its camera pans over a canvas that grows with its length,
# and a split's annotations are held until its JSON is written (~40 bytes a video x frame x pixel row).
MIN_SIZE = 16
MAX_FRAMES = 1000
MAX_VIDEO_PIXELS = 2**24  # frames x height x width of one video
MAX_SPLIT_ROWS = 2**26  # videos x frames x height of one split


@dataclass
class InstanceSpec:
    """How one instance looks and moves. Positions in pixels (x, y), radius in pixels."""

    category_id: int
    start: np.ndarray  # (2,) centre at t = 0
    velocity: np.ndarray  # (2,) pixels per frame
    bounce: bool
    radius: float
    growth: float  # radius(t) = radius * exp(growth * t)
    angle: float
    spin: float  # radians per frame
    colour: np.ndarray  # (3,)
    colour2: np.ndarray  # (3,)
    texture: str
    frequency: float


@dataclass
class SyntheticVideo:
    """frames (T, H, W, 3) uint8; per instance its category id and visible masks (T, H, W) bool."""

    frames: np.ndarray
    category_ids: list[int]
    masks: list[np.ndarray]
    crossing: bool


# ---- drawing ----


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in instance coordinates (u, v), unit circumradius."""
    r2 = u * u + v * v
    if shape == "disc":
        return r2 <= 1.0
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= 0.5**2)
    if shape == "square":
        return (np.abs(u) <= 0.72) & (np.abs(v) <= 0.72)
    if shape == "triangle":  # regular, circumradius 1, apothem 0.5
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            phi = np.pi / 2 + 2 * np.pi * k / 3
            inside &= u * np.cos(phi) + v * np.sin(phi) <= 0.5
        return inside
    if shape == "cross":
        arm = 0.3
        return ((np.abs(u) <= arm) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0))
    raise ValueError(f"unknown shape {shape!r}")


def texture_colours(spec: InstanceSpec, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(..., 3) float colours of the instance's texture, fixed to the instance (moves with it)."""
    f = spec.frequency
    if spec.texture == "solid":
        weight = np.zeros_like(u)
    elif spec.texture == "stripes":
        weight = (np.sin(f * u) > 0).astype(float)
    elif spec.texture == "checker":
        weight = (np.sin(f * u) * np.sin(f * v) > 0).astype(float)
    elif spec.texture == "dots":
        weight = (np.cos(f * u) + np.cos(f * v) > 1.0).astype(float)
    else:  # gradient
        weight = np.clip((u + 1) / 2, 0, 1)
    return spec.colour * (1 - weight[..., None]) + spec.colour2 * weight[..., None]


def fold(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Reflect positions into [low, high] (bouncing off the walls)."""
    span = high - low
    y = np.mod(x - low, 2 * span)
    return low + np.where(y <= span, y, 2 * span - y)


def trajectory(spec: InstanceSpec, length: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(centres (T, 2) as (x, y), radii (T,))."""
    t = np.arange(length, dtype=float)
    radii = np.clip(spec.radius * np.exp(spec.growth * t), 0.06 * height, 0.4 * height)
    centres = spec.start[None, :] + spec.velocity[None, :] * t[:, None]
    if spec.bounce:
        centres = np.stack([fold(centres[:, 0], 0, width - 1), fold(centres[:, 1], 0, height - 1)], axis=1)
    return centres, radii


def instance_coords(
    spec: InstanceSpec, centre, radius: float, t: int, xs, ys
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel grid -> instance coordinates (rotated by the instance's angle, scaled by its radius)."""
    angle = spec.angle + spec.spin * t
    dx, dy = (xs - centre[0]) / radius, (ys - centre[1]) / radius
    cos, sin = np.cos(angle), np.sin(angle)
    return cos * dx + sin * dy, -sin * dx + cos * dy


def background(rng: np.random.Generator, length: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) float: smooth colour noise plus a drifting grating, panned by a moving camera."""
    pan = rng.uniform(-1.2, 1.2, size=2)
    margin = int(np.ceil(np.abs(pan).max() * (length - 1))) + 1
    canvas_h, canvas_w = height + 2 * margin, width + 2 * margin
    coarse = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    canvas = np.asarray(Image.fromarray(coarse).resize((canvas_w, canvas_h), Image.BICUBIC), dtype=float)
    direction = rng.uniform(0, np.pi)
    wavelength = rng.uniform(6, 20)
    ys, xs = np.mgrid[0:canvas_h, 0:canvas_w]
    grating_phase = (xs * np.cos(direction) + ys * np.sin(direction)) * 2 * np.pi / wavelength
    grating_colour = rng.uniform(-50, 50, size=3)
    drift = rng.uniform(-0.6, 0.6)
    frames = np.empty((length, height, width, 3))
    for t in range(length):
        oy, ox = (margin + np.round(pan * t)).astype(int)
        grating = np.sin(grating_phase + drift * t)[..., None] * grating_colour
        frame = (canvas + grating)[oy : oy + height, ox : ox + width]
        frames[t] = frame + rng.normal(0, 5, size=frame.shape)
    return frames


def render(specs: list[InstanceSpec], rng, length: int, height: int, width: int) -> tuple[np.ndarray, list]:
    """Draw `specs` (listed far to near) -> (frames (T, H, W, 3) uint8, visible masks per spec)."""
    frames = background(rng, length, height, width)
    ys, xs = np.mgrid[0:height, 0:width].astype(float)
    paths = [trajectory(spec, length, height, width) for spec in specs]
    visible = [np.zeros((length, height, width), dtype=bool) for _ in specs]
    for t in range(length):
        coords = [instance_coords(s, c[t], r[t], t, xs, ys) for s, (c, r) in zip(specs, paths)]
        shapes = [shape_mask(SHAPES[s.category_id - 1], u, v) for s, (u, v) in zip(specs, coords)]
        while True:  # drop slivers, which may uncover the instances below them
            owner = np.full((height, width), -1)
            for i, mask in enumerate(shapes):
                owner[mask] = i
            areas = np.bincount(owner.ravel() + 1, minlength=len(specs) + 1)[1:]
            slivers = [i for i, a in enumerate(areas) if 0 < a < MIN_VISIBLE_PIXELS]
            if not slivers:
                break
            for i in slivers:
                shapes[i] = np.zeros_like(shapes[i])
        for i, (spec, (u, v)) in enumerate(zip(specs, coords)):
            mine = owner == i
            visible[i][t] = mine
            frames[t][mine] = texture_colours(spec, u[mine], v[mine])
    return np.clip(np.round(frames), 0, 255).astype(np.uint8), visible


# ---- drafting videos ----


def random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def draft_instance(
    rng: np.random.Generator, length: int, height: int, width: int, category_id: int
) -> InstanceSpec:
    """An instance with random look and one of the motions: linear, bouncing, or passing through the
    frame (enters and/or leaves it)."""
    scale = height / 96
    radius = rng.uniform(0.1, 0.22) * height
    motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
    if motion == "pass":
        side = int(rng.integers(4))
        entry, exit_ = _border_points(rng, side, height, width, radius)
        duration = rng.uniform(0.6, 1.3) * length
        velocity = (exit_ - entry) / duration
        start = entry - velocity * rng.uniform(-0.35, 0.5) * length
    else:
        start = np.array([rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height])
        speed = rng.uniform(0.5, 2.0) * scale if motion == "linear" else rng.uniform(2.0, 4.5) * scale
        heading = rng.uniform(0, 2 * np.pi)
        velocity = speed * np.array([np.cos(heading), np.sin(heading)])
    return InstanceSpec(
        category_id=category_id,
        start=start,
        velocity=velocity,
        bounce=motion == "bounce",
        radius=radius,
        growth=rng.uniform(-0.03, 0.03),
        angle=rng.uniform(0, 2 * np.pi),
        spin=rng.uniform(-0.08, 0.08),
        colour=random_colour(rng),
        colour2=random_colour(rng),
        texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
        frequency=rng.uniform(3, 9),
    )


def _border_points(rng, side: int, height: int, width: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Entry just outside border `side` (0 left, 1 right, 2 top, 3 bottom), exit outside the opposite one."""
    across = (-radius, (width if side < 2 else height) + radius)
    if side in (1, 3):
        across = across[::-1]
    along = width if side >= 2 else height
    entry, exit_ = [np.array([a, rng.uniform(0.2, 0.8) * along]) for a in across]
    return (entry, exit_) if side < 2 else (entry[::-1].copy(), exit_[::-1].copy())


def draft_crossing(rng: np.random.Generator, length: int, height: int, width: int) -> list[InstanceSpec]:
    """2-4 instances of one category, similar looks, passing through nearly the same point at nearly
    the same time from different directions, plus sometimes one distractor of another category."""
    category_id = int(rng.integers(len(SHAPES))) + 1
    count = int(rng.integers(2, 5))
    meet = np.array([width / 2, height / 2]) + rng.uniform(-0.15, 0.15, size=2) * height
    meet_time = rng.uniform(0.35, 0.65) * (length - 1)
    base_colour, base_colour2 = random_colour(rng), random_colour(rng)
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    radius = rng.uniform(0.13, 0.2) * height
    headings = (
        rng.uniform(0, 2 * np.pi) + np.arange(count) * 2 * np.pi / count + rng.uniform(-0.3, 0.3, count)
    )
    specs = []
    for heading in headings:
        # apart at the start, together near `meet_time`, apart again at the end
        speed = rng.uniform(0.7, 1.0) * height / max(length - 1, 1)
        velocity = speed * np.array([np.cos(heading), np.sin(heading)])
        offset = rng.uniform(-0.08, 0.08, size=2) * height
        specs.append(
            InstanceSpec(
                category_id=category_id,
                start=meet + offset - velocity * (meet_time + rng.uniform(-1.5, 1.5)),
                velocity=velocity,
                bounce=False,
                radius=radius * rng.uniform(0.9, 1.1),
                growth=rng.uniform(-0.015, 0.015),
                angle=rng.uniform(0, 2 * np.pi),
                spin=rng.uniform(-0.05, 0.05),
                colour=np.clip(base_colour + rng.uniform(-25, 25, size=3), 0, 255),
                colour2=np.clip(base_colour2 + rng.uniform(-25, 25, size=3), 0, 255),
                texture=texture,
                frequency=rng.uniform(4, 7),
            )
        )
    if rng.random() < 0.5:
        other = (category_id + int(rng.integers(1, len(SHAPES)))) % len(SHAPES) + 1
        specs.append(draft_instance(rng, length, height, width, other))
    return specs


def make_video(
    rng: np.random.Generator, length: int, height: int, width: int, crossing: bool
) -> SyntheticVideo:
    """Draft, shuffle into a depth order and draw; instances never visible are dropped, and a video
    left without instances is drafted again (from the same generator, so still deterministic)."""
    while True:
        if crossing:
            specs = draft_crossing(rng, length, height, width)
        else:
            count = int(rng.integers(1, 6))
            specs = [
                draft_instance(rng, length, height, width, int(rng.integers(len(SHAPES))) + 1)
                for _ in range(count)
            ]
        specs = [specs[i] for i in rng.permutation(len(specs))]  # depth order, far to near
        frames, visible = render(specs, rng, length, height, width)
        kept = [i for i, masks in enumerate(visible) if masks.any()]
        if kept:
            return SyntheticVideo(
                frames=frames,
                category_ids=[specs[i].category_id for i in kept],
                masks=[visible[i] for i in kept],
                crossing=crossing,
            )


# ---- writing ----


def video_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_CODES[split], index])


def segmentation_entries(masks: np.ndarray, compressed: bool) -> tuple[list, list, list]:
    """(T, H, W) visible masks -> (segmentations, areas, bboxes) with null for absent frames."""
    segmentations, areas, bboxes = [], [], []
    for mask in masks:
        present = bool(mask.any())
        segmentations.append(encode_rle(mask, compressed=compressed) if present else None)
        areas.append(mask_area(mask) if present else None)
        bboxes.append(mask_bbox(mask) if present else None)
    return segmentations, areas, bboxes


def generate_split(
    out: Path | None,
    split: str,
    seed: int,
    num_videos: int,
    height: int,
    width: int,
    frames: int | None,
    crossing_only: bool,
    progress: bool = True,
    keep_masks: bool = True,
) -> tuple[dict, dict[int, np.ndarray | None]]:
    """Draw one split; write its JPEGs under `out/JPEGImages` when `out` is given.

    Returns (the YouTube-VIS dict, {annotation id: drawn visible masks (T, H, W) bool, or None without
    `keep_masks`})."""
    raw = {
        "info": {"description": f"ifrvis synthetic VIS benchmark, {split} split", "seed": seed},
        "licenses": [],
        "videos": [],
        "categories": [dict(c) for c in CATEGORIES],
        "annotations": [],
    }
    drawn: dict[int, np.ndarray] = {}
    for index in tqdm(range(num_videos), desc=f"synth {split}", disable=not progress, dynamic_ncols=True):
        rng = video_rng(seed, split, index)
        length = frames if frames is not None else int(rng.integers(RANDOM_FRAMES[0], RANDOM_FRAMES[1] + 1))
        crossing = crossing_only or rng.random() < CROSSING_FRACTION
        video = make_video(rng, length, height, width, crossing)
        name = f"{split}_{index:04d}"
        file_names = [f"{name}/{t:05d}.jpg" for t in range(length)]
        video_id = index + 1
        raw["videos"].append(
            {"id": video_id, "width": width, "height": height, "length": length, "file_names": file_names}
        )
        if out is not None:
            (out / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
            for frame, file_name in zip(video.frames, file_names):
                Image.fromarray(frame).save(out / "JPEGImages" / file_name, quality=JPEG_QUALITY)
        for category_id, masks in zip(video.category_ids, video.masks):
            ann_id = len(raw["annotations"]) + 1
            # train.json: uncompressed RLE like the real data; valid.json: compressed RLE
            segmentations, areas, bboxes = segmentation_entries(masks, compressed=split != "train")
            raw["annotations"].append(
                {
                    "id": ann_id,
                    "video_id": video_id,
                    "category_id": category_id,
                    "iscrowd": 0,
                    "width": width,
                    "height": height,
                    "length": length,
                    "segmentations": segmentations,
                    "areas": areas,
                    "bboxes": bboxes,
                }
            )
            drawn[ann_id] = masks if keep_masks else None
    return raw, drawn


def write_json(raw: dict, path: Path) -> None:
    path.write_text(json.dumps(raw, separators=(",", ":")))


def argument_problem(
    seed: int, train_videos: int, valid_videos: int, size: int, frames: int | None, split_style: str
) -> str | None:
    """Why `generate` cannot draw a data set of these arguments (within the bounds above), None when
    it can; the names are `ifrvis synth`'s options."""
    if split_style not in ("default", "crossing"):
        return f"--split-style must be default or crossing, got {split_style!r}"
    if seed < 0:
        return f"--seed must be >= 0, got {seed}"
    if train_videos < 0 or valid_videos < 0:
        return f"video counts must be >= 0, got --train-videos {train_videos} --valid-videos {valid_videos}"
    if frames is not None and not 1 <= frames <= MAX_FRAMES:
        return f"--frames must be in 1..{MAX_FRAMES}, got {frames}"
    if size < MIN_SIZE:
        return f"--size must be >= {MIN_SIZE}, got {size}"
    length = RANDOM_FRAMES[1] if frames is None else frames
    if length * size * round(size * 4 / 3) > MAX_VIDEO_PIXELS:
        largest = int((MAX_VIDEO_PIXELS / length * 3 / 4) ** 0.5)
        return (
            f"--size {size}: a video of {length} frames of {size} x {round(size * 4 / 3)} px is more than "
            f"{MAX_VIDEO_PIXELS} px to draw at once (at most --size {largest} for {length} frames)"
        )
    videos = max(train_videos, valid_videos)
    if videos * length * size > MAX_SPLIT_ROWS:
        return (
            f"{videos} videos of {length} frames of {size} px rows are more annotations than a split may "
            f"hold in memory (videos x frames x size <= {MAX_SPLIT_ROWS})"
        )
    return None


def generate(
    out: str | Path,
    seed: int,
    train_videos: int = 300,
    valid_videos: int = 50,
    size: int = 96,
    frames: int | None = None,
    split_style: str = "default",
    progress: bool = True,
    keep_masks: bool = True,
) -> dict[str, dict[int, np.ndarray | None]]:
    """Write train.json, valid.json (with ground truth) and JPEGImages/ under `out`.

    Frames are `size` px tall and round(size * 4 / 3) wide. `split_style`: `default` mixes crossing
    videos into both splits; `crossing` makes every validation video a crossing video.
    Returns {split: {annotation id: drawn visible masks (T, H, W) bool, or None without `keep_masks`
    (all of them take ~1 byte a pixel of every frame)}}. ValueError for arguments outside the bounds
    (`argument_problem`), before anything is written."""
    problem = argument_problem(seed, train_videos, valid_videos, size, frames, split_style)
    if problem:
        raise ValueError(problem)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    width = round(size * 4 / 3)
    drawn = {}
    for split, count in (("train", train_videos), ("valid", valid_videos)):
        crossing_only = split == "valid" and split_style == "crossing"
        raw, drawn[split] = generate_split(
            out, split, seed, count, size, width, frames, crossing_only, progress, keep_masks
        )
        write_json(raw, out / f"{split}.json")
    return drawn
