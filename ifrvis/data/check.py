"""Validating a YouTube-VIS folder without training (`ifrvis check-data ROOT [--config CONFIG]`).

Prints per split its files, videos, frames and instances per category, then every problem found, each
naming the file, the video and the field (`ytvis.find_problems`, what loading a split checks, plus what
training needs across splits). Fast on a real download: frame files are listed, the first 12 bytes of
each are read (an empty file, or one that does not start as an image does, is a problem; ~6 us a
frame, under a second for a split's ~10^5 frames) and one image header per video (its size against
the declared one); no frame is decoded, masks are checked by their run lengths, not drawn.
The splits are the config's (`data.*_json`, `data.*_images`) or, without one, those of the layout
found under ROOT: 2021 (`train/instances.json`), 2019 (`train.json` + `train/JPEGImages`), OVIS
(`annotations_train.json` + `train/`) or flat (`JPEGImages`, as `ifrvis synth` writes).

Exit status: 0 when clean, 1 when problems were found, 2 on a usage error (no such folder, no layout).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ifrvis.data.splits import annotations_problem, categories_problem
from ifrvis.data.ytvis import DataError, find_problems, read_json

# layout -> split -> (annotation file, frame folder), relative to the root; the first layout whose
# marker files exist is the folder's
LAYOUTS = {
    "YouTube-VIS 2021": {
        "train": ("train/instances.json", "train/JPEGImages"),
        "valid": ("valid/instances.json", "valid/JPEGImages"),
        "test": ("test/instances.json", "test/JPEGImages"),
    },
    "YouTube-VIS 2019": {
        "train": ("train.json", "train/JPEGImages"),
        "valid": ("valid.json", "valid/JPEGImages"),
        "test": ("test.json", "test/JPEGImages"),
    },
    # OVIS as released: the annotation files beside the frame folders, no JPEGImages level
    "OVIS": {
        "train": ("annotations_train.json", "train"),
        "valid": ("annotations_valid.json", "valid"),
        "test": ("annotations_test.json", "test"),
    },
    "flat": {
        "train": ("train.json", "JPEGImages"),
        "valid": ("valid.json", "JPEGImages"),
        "test": ("test.json", "JPEGImages"),
    },
}
MARKERS = {
    "YouTube-VIS 2021": ("train/instances.json",),
    "YouTube-VIS 2019": ("train.json", "train/JPEGImages"),
    "OVIS": ("annotations_train.json", "train"),
    "flat": ("JPEGImages",),
}
TABLE_COLUMNS = 3  # categories side by side
# How the image formats PIL reads start (YouTube-VIS ships JPEG): a frame that starts otherwise is not
# an image (a failed download, an HTML error page, a truncated copy of zeros).
IMAGE_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
)
HEADER_BYTES = 12  # enough for every magic above and WEBP's "RIFF....WEBP"


@dataclass(frozen=True)
class Split:
    name: str
    json: Path
    images: Path


@dataclass
class SplitReport:
    split: Split
    raw: object  # the parsed file, None when it could not be read
    problems: list[str]


def detect_layout(root: Path) -> str:
    """The name of the first layout in LAYOUTS whose marker files exist under `root`."""
    for layout, markers in MARKERS.items():
        if all((root / marker).exists() for marker in markers):
            return layout
    raise DataError(
        f"{root}: no YouTube-VIS layout found: expected train/instances.json (2021), train.json beside "
        "train/JPEGImages (2019), annotations_train.json beside train/ (OVIS) or JPEGImages (flat); "
        "pass --config to name the files"
    )


def layout_splits(root: Path, layout: str) -> list[Split]:
    """The layout's training split and whichever of valid / test exist."""
    return [
        Split(name, root / json_rel, root / images_rel)
        for name, (json_rel, images_rel) in LAYOUTS[layout].items()
        if name == "train" or (root / json_rel).exists()
    ]


def check_split(split: Split) -> SplitReport:
    """Read and validate one split; training needs its annotations."""
    try:
        raw = read_json(split.json)
    except DataError as error:
        return SplitReport(split, None, [str(error)])
    problems = find_problems(raw, str(split.json), split.images)
    if not problems:  # every frame file exists: is each an image, of the declared size?
        problems = frame_problems(raw, str(split.json), split.images)
    needs = annotations_problem(raw, str(split.json)) if split.name == "train" else None
    return SplitReport(split, raw, problems + ([needs] if needs else []))


def header_problem(path: str) -> str | None:
    """Why the file at `path` is not an image, from its first HEADER_BYTES only (empty, unreadable, or
    not starting as an image format does); None when it looks like one."""
    try:  # os.open: half the time of open() (no buffer object), which counts over ~10^5 frames
        fd = os.open(path, os.O_RDONLY)
        try:
            head = os.read(fd, HEADER_BYTES)
        finally:
            os.close(fd)
    except OSError as error:
        return f"cannot be read ({error.strerror or type(error).__name__})"
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    return f"is not an image (it starts with {head[:8]!r})"


def unreadable_frames(raw: dict, images: Path) -> dict[tuple[object, int], str]:
    """(video id, frame index) -> why the frame file is not an image (`header_problem`), for the frames
    of every video; os.path, not pathlib: a real split has ~10^5 frames."""
    bad = {}
    for video in raw.get("videos") or []:
        for t, name in enumerate(video["file_names"]):
            problem = header_problem(os.path.join(images, name))
            if problem:
                bad[(video["id"], t)] = problem
    return bad


def frame_problems(raw: dict, source: str, images: Path) -> list[str]:
    """Frames that are empty or not images, then videos whose first frame is not of the declared size;
    a frame is named once (a first frame that is not an image is not also measured)."""
    bad = unreadable_frames(raw, images)
    problems = []
    for video in raw.get("videos") or []:
        for t, name in enumerate(video["file_names"]):
            if (video["id"], t) in bad:
                where = f"{source}: video {video['id']}: field 'file_names[{t}]'"
                problems.append(f"{where}: frame file {images / name} {bad[(video['id'], t)]}")
    measured = [v for v in raw.get("videos") or [] if (v["id"], 0) not in bad]
    return problems + frame_size_problems(measured, source, images)


def frame_size_problems(videos: list[dict], source: str, images: Path) -> list[str]:
    """Videos whose first frame is not `width` x `height` (masks and results would not fit it), or
    whose first frame PIL cannot open; only its header is read."""
    problems = []
    for video in videos:
        where = f"{source}: video {video['id']}"
        first = video["file_names"][0]
        try:
            with Image.open(images / first) as frame:
                width, height = frame.size
        except (OSError, Image.DecompressionBombError) as error:  # a header PIL does not understand
            problems.append(
                f"{where}: field 'file_names[0]': frame file {images / first} cannot be opened as an"
                f" image ({type(error).__name__})"
            )
            continue
        if (width, height) != (video["width"], video["height"]):
            problems.append(
                f"{where}: field 'width'/'height': {video['width']}x{video['height']} "
                f"declared, but {first} is {width}x{height}"
            )
    return problems


def add_cross_split_problems(reports: list[SplitReport], num_classes: int | None) -> None:
    """What a run needs across splits, added to the report of the file at fault: the training split's
    categories in every split, and `model.num_classes` of them when a config is given. `reports[0]`
    is the training split."""
    train = reports[0]
    if not _has_list(train.raw, "categories"):
        return
    for report in reports[1:]:
        problem = categories_problem(train.raw, str(train.split.json), report.raw, str(report.split.json))
        if problem:
            report.problems.append(problem)
    count = len(train.raw["categories"])
    if num_classes is not None and num_classes != count:
        train.problems.append(
            f"{train.split.json}: field 'categories': {count} categories, "
            f"but the config's model.num_classes is {num_classes}"
        )


def summary_lines(report: SplitReport, root: Path) -> list[str]:
    """Videos, frames, and instances per category (a table) of a split that could be read."""
    split = report.split
    head = f"{split.name}: {_relative(split.json, root)}, frames in {_relative(split.images, root)}"
    if not _has_list(report.raw, "videos"):
        return [head]
    videos = [v for v in report.raw["videos"] if isinstance(v, dict)]
    frames = sum(len(v["file_names"]) for v in videos if isinstance(v.get("file_names"), list))
    counts = f"  {len(report.raw['videos'])} videos, {frames} frames, "
    if not _has_list(report.raw, "annotations"):
        return [head, counts + "no annotations"]
    annotations = [a for a in report.raw["annotations"] if isinstance(a, dict)]
    lines = [head, counts + f"{len(report.raw['annotations'])} instances"]
    if _has_list(report.raw, "categories"):
        per_category = Counter(c for a in annotations if isinstance(c := a.get("category_id"), int))
        lines += category_table(report.raw["categories"], per_category)
    return lines


def category_table(categories: list, counts: Counter) -> list[str]:
    """A header and rows of (name, id, instances) cells, TABLE_COLUMNS side by side, in id order."""
    rows = sorted(
        (c["id"], str(c.get("name")))
        for c in categories
        if isinstance(c, dict) and isinstance(c.get("id"), int)
    )
    if not rows:
        return []
    width = max(len(name) for _, name in [*rows, (0, "category")])
    cells = [f"{name:<{width}} {cid:>4} {counts.get(cid, 0):>9}" for cid, name in rows]
    header = f"{'category':<{width}} {'id':>4} {'instances':>9}"
    lines = ["  " + " | ".join([header] * min(TABLE_COLUMNS, len(cells)))]
    for start in range(0, len(cells), TABLE_COLUMNS):
        lines.append("  " + " | ".join(cells[start : start + TABLE_COLUMNS]))
    return lines


def _has_list(raw: object, key: str) -> bool:
    return isinstance(raw, dict) and isinstance(raw.get(key), list)


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
