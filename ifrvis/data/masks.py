"""Masks <-> YouTube-VIS segmentations (uncompressed RLE, compressed RLE, polygons, null)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode_rle(mask: np.ndarray, compressed: bool = True) -> dict:
    """(H, W) bool -> RLE dict. Compressed: `counts` is a str (results files); uncompressed: a list
    of run lengths starting with zeros in column-major order (what the real train.json holds)."""
    mask = np.asfortranarray(mask.astype(np.uint8))
    if compressed:
        rle = mask_utils.encode(mask)
        return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def decode_segmentation(segmentation: dict | list | None, height: int, width: int) -> np.ndarray:
    """One frame's segmentation -> (H, W) bool; null -> all False.

    Raises ValueError when an RLE's size differs from (height, width)."""
    if segmentation is None:
        return np.zeros((height, width), dtype=bool)
    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects(segmentation, height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    size = [int(s) for s in segmentation["size"]]
    if size != [height, width]:
        raise ValueError(f"mask size {size[0]}x{size[1]} differs from the video's {height}x{width}")
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def mask_area(mask: np.ndarray) -> int:
    return int(mask.sum())


def mask_bbox(mask: np.ndarray) -> list[float] | None:
    """Tight [x, y, w, h] box of a (H, W) mask in COCO convention, None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
