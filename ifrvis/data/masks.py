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


# What a mask read from a file may be, so that pycocotools can hold it: a frame side of at most
# MAX_FRAME_SIDE px (16K video; its frame's runs then fit pycocotools' 32-bit counts, and the numbers of a
# compressed RLE string fit RLE_NUMBER_CHARS characters); polygon coordinates within one frame size of the
# frame (x in [-width, 2 * width], y in [-height, 2 * height]), at most MAX_POLYGON_POINTS points a frame
# and a boundary of at most MAX_POLYGON_BOUNDARY * (height + width) px (max(|dx|, |dy|) summed over the
# edges): pycocotools' rasteriser allocates ~80 bytes per boundary pixel, and casts coordinates to int.
MAX_FRAME_SIDE = 16384
MAX_POLYGON_POINTS = 10_000
MAX_POLYGON_BOUNDARY = 100
# A number of a compressed RLE string: 5 bits a character, so 6 characters hold -2^29 .. 2^29 - 1, more
# than any run (or difference of runs) of a frame of MAX_FRAME_SIDE^2 = 2^28 pixels. pycocotools computes
# a 7th character's bits in a 32-bit int (they overflow): a longer number is refused, not decoded.
RLE_NUMBER_CHARS = 6
_CHUNK_CHARS = 1 << 18  # compressed RLE characters parsed at once (~8 MB of arrays: they stay in cache)
# syntax codes of _parse_compressed, and what they mean
_BAD_CHARACTER, _OPEN_END, _LONG_NUMBER = 1, 2, 3
# a number's last character (less '0') -> its 5 bits, sign-extended from bit 4
_SIGNED = np.array([(c & 0x1F) - ((c & 0x10) << 1) for c in range(256)], dtype=np.int32)
_SYNTAX = {
    _BAD_CHARACTER: "characters outside '0'..'o'",
    _OPEN_END: "the string ends inside a number",
    _LONG_NUMBER: f"a number of more than {RLE_NUMBER_CHARS} characters",
}


def frame_size_problem(height: object, width: object) -> str | None:
    """Why (height, width) is not a frame size masks can be read for, None when it is."""
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_FRAME_SIDE:
            return f"{name} {short_repr(value)} is not an integer in 1..{MAX_FRAME_SIDE}"
    return None


def _parse_compressed(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """COCO compressed RLE strings -> (runs (N,) int32 of all strings one after the other, the index of
    each string's first run (S,), its number of runs (S,), its syntax code (S,): 0 when readable, else
    a key of _SYNTAX), all at once in NumPy, as pycocotools' rleFrString reads them: 6 bits a character
    from '0' (5 of value and a continuation bit; the last character's bit 4 is the sign), each run after
    the third stored as the difference to the run two before, in 32-bit arithmetic (a run it reads as
    2^31 or more is negative here). A string's runs are garbage where its syntax code is not 0, but never
    spill into the next string's."""
    count = len(texts)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=count)
    syntax = np.zeros(count, dtype=np.int8)
    try:
        raw = "".join(texts).encode("ascii")
    except UnicodeEncodeError:  # a string with a non-ASCII character: all its characters are bad
        ascii_only = np.fromiter((t.isascii() for t in texts), dtype=bool, count=count)
        syntax[~ascii_only] = _BAD_CHARACTER
        raw = "".join(t if ok else "~" * len(t) for t, ok in zip(texts, ascii_only)).encode("ascii")
    codes = np.frombuffer(raw, dtype=np.uint8) - np.uint8(48)  # wraps around below '0'
    if codes.size == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(count, np.int64), np.zeros(count, np.int64), syntax
    string_ends = np.cumsum(lengths)
    string_starts = string_ends - lengths
    bad = codes > 63
    if bad.any():
        syntax[np.searchsorted(string_ends, np.flatnonzero(bad), side="right")] = _BAD_CHARACTER
    more = codes > 31  # the continuation bit, for the characters that are not bad
    nonempty = np.flatnonzero(lengths)
    last = string_ends[nonempty] - 1
    open_end = nonempty[more[last]]
    syntax[open_end[syntax[open_end] == 0]] = _OPEN_END
    more[last] = False  # a number ends with its string, whatever its last character says
    ends = np.flatnonzero(~more)  # of the numbers, each a run or a difference of runs
    digits = np.empty_like(ends)
    digits[0] = ends[0] + 1
    np.subtract(ends[1:], ends[:-1], out=digits[1:])
    if digits.max() > RLE_NUMBER_CHARS:
        strings = np.searchsorted(string_ends, ends[digits > RLE_NUMBER_CHARS], side="right")
        syntax[strings[syntax[strings] == 0]] = _LONG_NUMBER
    low = codes & np.uint8(0x1F)
    values = _SIGNED[codes[ends]]  # the last character, then Horner down the others (most have none)
    longer = np.flatnonzero(digits > 1)
    longer_ends, longer_digits = ends[longer], digits[longer]
    for place in range(1, RLE_NUMBER_CHARS):
        values[longer] = (values[longer] << 5) | low[longer_ends - place]
        more_digits = longer_digits > place + 1
        if not more_digits.any():
            break
        longer, longer_ends, longer_digits = (
            longer[more_digits],
            longer_ends[more_digits],
            longer_digits[more_digits],
        )
    first = np.searchsorted(ends, string_starts)
    runs_per_string = np.diff(first, append=ends.size)
    # run k of a string = value k for k < 3, else value k + run k - 2: per string, a cumulative sum over
    # its odd positions and one over its even ones (k = 0 left out); a string's runs keep the parity of
    # their global index, so one cumulative sum per parity, restarted at each string, gives every run
    starts = first[runs_per_string > 0]
    steps = values.copy()
    steps[starts] = 0
    runs = np.empty_like(values)
    for parity in (0, 1):
        part = steps[parity::2]  # a view: the restarts below write into `steps`
        if starts.size > 1:  # less the previous string's sum at each start: the sum restarts there
            segments = np.unique((starts + 1 - parity) // 2)  # each string's first index in `part`
            segments = segments[segments < part.size]
            totals = np.add.reduceat(part, segments)
            part[segments[1:]] -= totals[:-1]
        np.cumsum(part, out=runs[parity::2])
    runs[starts] = values[starts]
    return runs, first, runs_per_string, syntax


def compressed_rle_counts(text: str) -> np.ndarray:
    """COCO's compressed RLE string -> its run lengths (N,) int32, as pycocotools' rleFrString reads it
    (`_parse_compressed`). Raises ValueError on characters or numbers it cannot hold."""
    runs, _, _, syntax = _parse_compressed([text])
    if syntax[0]:
        raise ValueError(_SYNTAX[int(syntax[0])])
    return runs


def compressed_rles_valid(texts: list[str], pixels: np.ndarray | list[int]) -> np.ndarray:
    """(S,) bool: whether each compressed RLE string is readable, with non-negative runs (at most
    pixels + 1) summing to its frame's `pixels` (height * width): what `segmentation_problem` checks of
    one, for many at once (~5x faster than one by one). `segmentation_problem` says what is wrong with
    one that is not."""
    pixels = np.asarray(pixels, dtype=np.int64)
    valid = np.zeros(len(texts), dtype=bool)
    begin, chars = 0, 0
    for end, text in enumerate(texts, 1):
        chars += len(text)
        if chars < _CHUNK_CHARS and end < len(texts):
            continue
        runs, first, runs_per_string, syntax = _parse_compressed(texts[begin:end])
        some = runs_per_string > 0
        if some.any():
            frame = pixels[begin:end][some]
            lowest = np.minimum.reduceat(runs, first[some])
            total = np.add.reduceat(runs, first[some], dtype=np.int64)
            ok = (syntax[some] == 0) & (lowest >= 0) & (total == frame) & (runs_per_string[some] <= frame + 1)
            valid[begin:end][some] = ok
        begin, chars = end, 0
    return valid


class CompressedRLEBatch:
    """Compressed RLE strings checked at once (`compressed_rles_valid`): `add` each with its frame size
    and a label (where it is), then `problems()` gives (label, what is wrong) of the bad ones, in the
    order added, and empties the batch."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.texts: list[str] = []
        self.pixels: list[int] = []
        self.labels: list[object] = []

    def add(self, text: str, height: int, width: int, label: object) -> None:
        self.texts.append(text)
        self.pixels.append(height * width)
        self.labels.append(label)

    def problems(self) -> list[tuple[object, str]]:
        valid = compressed_rles_valid(self.texts, self.pixels)
        found = [
            (self.labels[i], _counts_problem(self.texts[i], self.pixels[i]) or "bad compressed RLE counts")
            for i in np.flatnonzero(~valid)
        ]
        self._clear()
        return found


def segmentation_problem(
    segmentation: object, height: int, width: int, compressed_counts: bool = True
) -> str | None:
    """Why one frame's segmentation is not a valid (height, width) mask, None when it is: null, polygons
    (lists of >= 3 (x, y) pairs, within the bounds above), or an RLE of that size whose runs are
    non-negative and cover the frame. With `compressed_counts=False` the runs of a compressed RLE string
    are left to the caller (`compressed_rles_valid`, many at once).

    Cheap (no mask is drawn); pycocotools' decoder trusts the runs and writes past the mask otherwise,
    and its polygon rasteriser allocates by the coordinates."""
    if segmentation is None:
        return None
    if isinstance(segmentation, list):
        return _polygons_problem(segmentation, height, width)
    if not isinstance(segmentation, dict) or "size" not in segmentation or "counts" not in segmentation:
        return "neither null, polygons nor an RLE with 'size' and 'counts'"
    size = segmentation["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) for s in size)):
        return f"mask size {short_repr(size)} is not [height, width]"
    if list(size) != [height, width]:
        return (
            f"mask size {short_repr(size[0])}x{short_repr(size[1])} differs from the video's {height}x{width}"
        )
    if isinstance(segmentation["counts"], str) and not compressed_counts:
        return None
    return _counts_problem(segmentation["counts"], height * width)


def _polygons_problem(polygons: list, height: int, width: int) -> str | None:
    """Why a frame's polygons are not ones pycocotools can rasterise in bounded memory (above)."""
    points, boundary = 0, 0.0
    for polygon in polygons:
        if not (isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0):
            return "polygons must be lists of >= 3 (x, y) pairs"
        points += len(polygon) // 2
        if points > MAX_POLYGON_POINTS:
            return f"more than {MAX_POLYGON_POINTS} polygon points in one frame"
        if not all(type(v) in (int, float) for v in polygon):  # not bool, not a subclass
            return "polygon coordinates must be numbers"
        try:
            xy = np.array(polygon, dtype=np.float64).reshape(-1, 2)
        except OverflowError:  # an int beyond a float's range
            xy = np.full((1, 2), np.inf)
        x, y = xy[:, 0], xy[:, 1]  # NaN compares False: out of bounds
        if not ((x >= -width) & (x <= 2 * width) & (y >= -height) & (y <= 2 * height)).all():
            return (
                f"a polygon coordinate is outside the frame by more than the frame's size "
                f"(x in [-{width}, {2 * width}], y in [-{height}, {2 * height}])"
            )
        boundary += float(np.abs(xy - np.roll(xy, 1, axis=0)).max(axis=1).sum())
    if boundary > MAX_POLYGON_BOUNDARY * (height + width):
        return (
            f"polygon boundary of {boundary:.0f} px in one frame, more than {MAX_POLYGON_BOUNDARY} x "
            f"(height + width) = {MAX_POLYGON_BOUNDARY * (height + width)}"
        )
    return None


def short_repr(value: object, limit: int = 40) -> str:
    """repr of a value read from a file, cut to `limit` characters (an int may have thousands of digits)."""
    if isinstance(value, int) and not -(10**limit) < value < 10**limit:
        return "<an integer of more than 40 digits>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _counts_problem(counts: object, pixels: int) -> str | None:
    """Why RLE `counts` (a list of runs, or a compressed string) do not cover `pixels`, None if they do."""
    if isinstance(counts, list):
        kind, number = "uncompressed RLE counts", len(counts)
        try:  # min and sum run in C: a real train.json holds ~10^5 of these lists
            lowest, total = (min(counts) if counts else 0), sum(counts)
        except TypeError:
            return f"{kind} must be numbers"
        if not isinstance(total, int):  # a float among them (pycocotools would truncate it)
            return f"{kind} must be integers"
    elif isinstance(counts, str):
        kind = "compressed RLE counts"
        try:
            runs = compressed_rle_counts(counts)
        except ValueError as error:
            return f"bad {kind}: {error}"
        number, lowest, total = (
            runs.size,
            (int(runs.min()) if runs.size else 0),
            int(runs.sum(dtype=np.int64)),
        )
    else:
        return f"RLE counts must be a list of run lengths or a compressed string, not {type(counts).__name__}"
    if lowest < 0:
        return f"bad {kind}: a negative run length"
    if number > pixels + 1:  # empty runs: pycocotools' merge holds at most pixels + 1
        return f"bad {kind}: {number} runs, more than height * width + 1 = {pixels + 1}"
    if total != pixels:
        return f"bad {kind}: runs sum to {short_repr(total)}, not height * width = {pixels}"
    return None


def decode_segmentation(segmentation: dict | list | None, height: int, width: int) -> np.ndarray:
    """One frame's segmentation -> (H, W) bool; null -> all False.

    Raises ValueError when it is not a valid (height, width) mask (`segmentation_problem`)."""
    problem = segmentation_problem(segmentation, height, width)
    if problem is not None:
        raise ValueError(problem)
    if not segmentation:  # null, or no polygon
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
