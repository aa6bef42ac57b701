"""Masks <-> YouTube-VIS segmentations (uncompressed RLE, compressed RLE, polygons, null)."""

from __future__ import annotations

import numpy as np
from PIL import Image
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


def compressed_rle_counts(text: str) -> np.ndarray:
    """COCO's compressed RLE string -> its run lengths (N,) int64, as pycocotools' rleFrString reads it
    (6 bits a character from '0', 5 of value, a continuation bit; runs after the second stored as the
    difference to the run two before). Raises ValueError on characters or numbers it cannot hold."""
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    if codes.min() < 0 or codes.max() > 63:
        raise ValueError("characters outside '0'..'o'")
    more = (codes & 0x20) != 0
    if more[-1]:
        raise ValueError("the string ends inside a number")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    digits = ends - starts + 1
    if digits.max() > 12:  # 60 bits: no run of a real mask comes near
        raise ValueError("a number of more than 12 characters")
    place = np.arange(codes.size) - np.repeat(starts, digits)  # a character's position in its number
    values = np.add.reduceat((codes & 0x1F) << (5 * place), starts)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * digits[negative])  # the sign bit extends
    counts = values.copy()
    counts[1::2] = np.cumsum(values[1::2])
    counts[2::2] = np.cumsum(values[2::2])
    return counts


def segmentation_problem(segmentation: object, height: int, width: int) -> str | None:
    """Why one frame's segmentation is not a valid (height, width) mask, None when it is: null, polygons
    (lists of >= 3 (x, y) pairs), or an RLE of that size whose runs are non-negative and cover the frame.

    Cheap (no mask is drawn); pycocotools' decoder trusts the runs and writes past the mask otherwise."""
    if segmentation is None:
        return None
    if isinstance(segmentation, list):
        for polygon in segmentation:
            if not (isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0):
                return "polygons must be lists of >= 3 (x, y) pairs"
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon):
                return "polygon coordinates must be numbers"
        return None
    if not isinstance(segmentation, dict) or "size" not in segmentation or "counts" not in segmentation:
        return "neither null, polygons nor an RLE with 'size' and 'counts'"
    size = segmentation["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) for s in size)):
        return f"mask size {size!r} is not [height, width]"
    if list(size) != [height, width]:
        return f"mask size {size[0]}x{size[1]} differs from the video's {height}x{width}"
    return _counts_problem(segmentation["counts"], height * width)


def _counts_problem(counts: object, pixels: int) -> str | None:
    """Why RLE `counts` (a list of runs, or a compressed string) do not cover `pixels`, None if they do."""
    if isinstance(counts, list):
        kind = "uncompressed RLE counts"
        try:  # min and sum run in C: a real train.json holds ~10^5 of these lists
            lowest, total = (min(counts) if counts else 0), sum(counts)
        except TypeError:
            return f"{kind} must be numbers"
    elif isinstance(counts, str):
        kind = "compressed RLE counts"
        try:
            runs = compressed_rle_counts(counts)
        except ValueError as error:  # UnicodeEncodeError is one
            return f"bad {kind}: {error}"
        lowest, total = (int(runs.min()) if runs.size else 0), int(runs.sum())
    else:
        return f"RLE counts must be a list of run lengths or a compressed string, not {type(counts).__name__}"
    if lowest < 0:
        return f"bad {kind}: a negative run length"
    if total != pixels:
        return f"bad {kind}: runs sum to {total}, not height * width = {pixels}"
    return None


def decode_segmentation(segmentation: dict | list | None, height: int, width: int) -> np.ndarray:
    """One frame's segmentation -> (H, W) bool; null -> all False.

    Raises ValueError when it is not a valid (height, width) mask (`segmentation_problem`)."""
    problem = segmentation_problem(segmentation, height, width)
    if problem is not None:
        raise ValueError(problem)
    if segmentation is None:
        return np.zeros((height, width), dtype=bool)
    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects(segmentation, height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": [height, width], "counts": counts.encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool -> `size` = (h, w) bool, with PIL's NEAREST as detectron2's ResizeTransform resizes
    segmentations (torch's `nearest` picks other pixels: edges move by up to 1 px)."""
    if mask.shape == tuple(size):
        return mask
    image = Image.fromarray(mask.astype(np.uint8)).resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(image).astype(bool)


def mask_area(mask: np.ndarray) -> int:
    return int(mask.sum())


def mask_bbox(mask: np.ndarray) -> list[float] | None:
    """Tight [x, y, w, h] box of a (H, W) mask in COCO convention, None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
