"""A tiny YouTube-VIS folder written exactly as the 2019 or 2021 release lays it out, holding what the
real files hold: uncompressed RLE (the real train.json's), compressed RLE, polygons, null frames,
`areas`/`bboxes` lists with nulls, frame names stepping by 5, non-contiguous video and category ids,
validation annotations null (2019) or missing (2021), and videos of different sizes and aspects in one
split. Written with numpy, PIL and pycocotools only, independently of the package's writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

CATEGORIES = [
    {"supercategory": "object", "id": 3, "name": "ape"},
    {"supercategory": "object", "id": 7, "name": "bear"},
    {"supercategory": "object", "id": 12, "name": "cat"},
]
# (video id, folder, (height, width), frames): 16:9 at two sizes (1280x720 and 640x360 scaled down) and
# a 4:3 video (640x480 scaled down), as one real split mixes them.
TRAIN_VIDEOS = [
    (4, "0a1b2c3d4e", (72, 128), 4),
    (9, "1f2e3d4c5b", (36, 64), 3),
    (17, "2aa0bb1cc2", (48, 64), 4),
]
VALID_VIDEOS = [
    (2, "3dd4ee5ff6", (36, 64), 3),
    (11, "4ab5cd6ef7", (72, 128), 4),
]
# Each instance's per-frame format, cycling over the video's frames: what the real files mix.
FORMATS = ("uncompressed", "null", "compressed", "polygon")

LAYOUTS = {
    # split -> (annotation file, frame folder), relative to the root
    "2019": {"train": ("train.json", "train/JPEGImages"), "valid": ("valid.json", "valid/JPEGImages")},
    "2021": {
        "train": ("train/instances.json", "train/JPEGImages"),
        "valid": ("valid/instances.json", "valid/JPEGImages"),
    },
    # `ifrvis synth`'s: both splits' frames in one folder
    "flat": {"train": ("train.json", "JPEGImages"), "valid": ("valid.json", "JPEGImages")},
}


def uncompressed_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> {'size': [H, W], 'counts': [run lengths, column-major, zeros first]}."""
    flat = mask.ravel(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": [0, *counts] if flat[0] else counts}


def box_mask(height: int, width: int, t: int, k: int) -> tuple[np.ndarray, list[int]]:
    """Instance k's box at frame t -> ((H, W) bool mask, [x0, y0, x1, y1] exclusive corners)."""
    h, w = max(4, height // 3), max(4, width // 4)
    y0 = (k * h // 2 + t) % (height - h)
    x0 = (k * w + 2 * t) % (width - w)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0 : y0 + h, x0 : x0 + w] = True
    return mask, [x0, y0, x0 + w, y0 + h]


def segmentation(mask: np.ndarray, corners: list[int], kind: str) -> dict | list | None:
    if kind == "null":
        return None
    if kind == "uncompressed":
        return uncompressed_rle(mask)
    if kind == "compressed":
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    x0, y0, x1, y1 = corners
    return [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]


def write_split(root: Path, split: str, layout: str, videos: list, annotations: str) -> dict:
    """Write one split's frames and JSON; `annotations`: 'list', 'null' or 'missing'. Returns the dict."""
    json_rel, images_rel = LAYOUTS[layout][split]
    rng = np.random.default_rng(len(videos))
    raw: dict = {
        "info": {"description": f"YouTube-VIS {layout} {split}", "version": "1.0", "year": 2019},
        "licenses": [{"id": 1, "name": "CC BY 4.0", "url": ""}],
        "videos": [],
        "categories": CATEGORIES,
    }
    anns = []
    for v, (video_id, folder, (height, width), length) in enumerate(videos):
        names = [f"{folder}/{5 * t:05d}.jpg" for t in range(length)]  # the release keeps every 5th frame
        raw["videos"].append(
            {
                "license": 1,
                "coco_url": "",
                "height": height,
                "width": width,
                "length": length,
                "date_captured": "2019-04-11 00:55:41.903902",
                "file_names": names,
                "flickr_url": "",
                "id": video_id,
            }
        )
        frames = rng.integers(0, 80, size=(length, height, width, 3), dtype=np.uint8)
        for k in range(2):
            segs, areas, bboxes = [], [], []
            for t in range(length):
                mask, corners = box_mask(height, width, t, k)
                frames[t][mask] = (200, 60 + 80 * k, 40)
                seg = segmentation(mask, corners, FORMATS[(t + k) % len(FORMATS)])
                segs.append(seg)
                x0, y0, x1, y1 = corners
                areas.append(None if seg is None else int(mask.sum()))
                bboxes.append(None if seg is None else [float(x0), float(y0), float(x1 - x0), float(y1 - y0)])
            anns.append(
                {
                    "video_id": video_id,
                    "iscrowd": 0,
                    "height": height,
                    "width": width,
                    "length": 1,  # as in the release: not the video's length
                    "segmentations": segs,
                    "bboxes": bboxes,
                    "category_id": CATEGORIES[(v + k) % len(CATEGORIES)]["id"],
                    "id": 100 + 10 * v + k,
                    "areas": areas,
                }
            )
        for t, name in enumerate(names):
            path = root / images_rel / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frames[t]).save(path, quality=90)
    if annotations == "list":
        raw["annotations"] = anns
    elif annotations == "null":
        raw["annotations"] = None
    (root / json_rel).parent.mkdir(parents=True, exist_ok=True)
    (root / json_rel).write_text(json.dumps(raw))
    return raw


def write_release(root: Path, layout: str) -> dict[str, dict]:
    """A `layout` ('2019', '2021' or 'flat') folder under `root`: train with annotations, valid without
    them (null in 2019's valid.json, no key in 2021's). Returns {split: its dict}."""
    return {
        "train": write_split(root, "train", layout, TRAIN_VIDEOS, "list"),
        "valid": write_split(root, "valid", layout, VALID_VIDEOS, "null" if layout == "2019" else "missing"),
    }
