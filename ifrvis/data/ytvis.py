"""A validated YouTube-VIS 2019/2021 (or OVIS, same format) split: an annotation file and its frame folder.

    ytvis = load_ytvis("data/ytvis2019/train.json", "data/ytvis2019/train/JPEGImages")
    masks, present = ytvis.decode_instance(ytvis.annotations_of(ytvis.videos[0]["id"])[0])

Segmentations may be uncompressed RLE (the real train.json), compressed RLE, polygons, or null when
the instance is absent. The validation and test files of the real data hold `"annotations": null` or
no such key: such a set has `has_annotations == False`. Bad input raises `DataError` naming the file,
the video and the field; `find_problems` lists every problem (what `ifrvis check-data` prints).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ifrvis.data.masks import (
    MAX_FRAME_SIDE,
    CompressedRLEBatch,
    decode_segmentation,
    segmentation_problem,
    short_repr,
)
from ifrvis.errors import UserError

# The most frames a video may have (the evaluation walks every frame of every video, whatever it holds).
MAX_VIDEO_FRAMES = 100_000


class DataError(UserError):
    """A YouTube-VIS file or folder is missing, corrupt or inconsistent."""


def _where(source: str, video_id: object = None, field_name: str | None = None) -> str:
    """'<file>: video <id>: field '<name>'' prefix for error messages."""
    parts = [source]
    if video_id is not None:
        parts.append(f"video {video_id}")
    if field_name is not None:
        parts.append(f"field '{field_name}'")
    return ": ".join(parts)


@dataclass
class YTVIS:
    """One split. `videos`/`categories` are the JSON's dicts; `category_ids` is sorted and the contiguous
    class index of a category is its position in it; `annotations` maps video id -> its instances."""

    raw: dict
    source: str
    image_root: Path
    videos: list[dict]
    categories: list[dict]
    category_ids: list[int]
    annotations: dict[int, list[dict]]
    has_annotations: bool
    _video_by_id: dict[int, dict] = field(repr=False, default_factory=dict)

    def __len__(self) -> int:
        return len(self.videos)

    def video(self, video_id: int) -> dict:
        try:
            return self._video_by_id[int(video_id)]
        except KeyError:
            raise DataError(f"{self.source}: no video with id {video_id}") from None

    def annotations_of(self, video_id: int) -> list[dict]:
        return self.annotations.get(int(video_id), [])

    def label_of(self, category_id: int) -> int:
        """Contiguous class index of a dataset category id."""
        return self.category_ids.index(int(category_id))

    def frame_path(self, video: dict | int, t: int) -> Path:
        video = video if isinstance(video, dict) else self.video(video)
        return self.image_root / video["file_names"][t]

    def decode_instance(self, ann: dict) -> tuple[np.ndarray, np.ndarray]:
        """Instance annotation -> (masks (T, H, W) bool, present (T,) bool); null frames are empty."""
        masks = np.stack([self.decode_frame(ann, t) for t in range(len(ann["segmentations"]))])
        present = np.array([s is not None for s in ann["segmentations"]]) & masks.any(axis=(1, 2))
        return masks, present

    def decode_frame(self, ann: dict, t: int) -> np.ndarray:
        """Frame t of an instance annotation -> (H, W) bool."""
        video = self.video(ann["video_id"])
        try:
            return decode_segmentation(ann["segmentations"][t], int(video["height"]), int(video["width"]))
        except Exception as error:  # pycocotools raises bare exceptions on malformed RLE / polygons
            where = _where(self.source, video["id"], f"annotations[id={ann['id']}].segmentations[{t}]")
            raise DataError(f"{where}: cannot decode: {error}") from None

    def holdout_split(self, k: int, seed: int) -> tuple[YTVIS, YTVIS]:
        """(train, valid): `k` videos chosen at random by `seed` form the validation split (with
        ground truth, Sec. 4.3); both `raw` dicts are complete YouTube-VIS ground-truth dicts."""
        if not self.has_annotations:
            raise DataError(f"{self.source}: holdout_split needs a split with 'annotations'")
        if not 0 < k < len(self.videos):
            raise DataError(f"{self.source}: holdout of {k} videos out of {len(self.videos)} is impossible")
        chosen = np.random.default_rng(seed).choice(len(self.videos), size=k, replace=False)
        valid_ids = {int(self.videos[i]["id"]) for i in chosen}
        parts = []
        for name, keep in (
            ("train", lambda vid: vid not in valid_ids),
            ("valid", lambda vid: vid in valid_ids),
        ):
            raw = {
                key: _copied(value, self.source, key)
                for key, value in self.raw.items()
                if key not in ("videos", "annotations")
            }
            raw["videos"] = [v for v in self.raw["videos"] if keep(int(v["id"]))]
            raw["annotations"] = [a for a in self.raw["annotations"] if keep(int(a["video_id"]))]
            parts.append(
                build_ytvis(raw, f"{self.source}[holdout {name}, k={k}, seed={seed}]", self.image_root)
            )
        return parts[0], parts[1]


def _copied(value: object, source: str, key: str) -> object:
    """A deep copy of a field of a split's file; DataError when it is nested too deeply to copy."""
    try:
        return copy.deepcopy(value)
    except RecursionError:  # ~3 frames a level: a field nested ~300 deep, which JSON reads
        raise DataError(f"{_where(source, None, key)}: nested too deeply") from None


def read_json(json_path: str | Path) -> object:
    """The parsed JSON file; DataError naming the file when it is missing or unreadable: not UTF-8, not
    JSON, nested deeper than Python's recursion limit, an integer of more digits than Python converts."""
    json_path = Path(json_path)
    try:
        return json.loads(json_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{json_path}: file not found") from None
    except RecursionError:
        raise DataError(f"{json_path}: not a readable JSON file: nested too deeply") from None
    except (OSError, ValueError) as error:  # UnicodeDecodeError, JSONDecodeError, the digits limit
        raise DataError(f"{json_path}: not a readable JSON file: {error}") from None


def load_ytvis(json_path: str | Path, image_root: str | Path, check_files: bool = True) -> YTVIS:
    """Read and validate a YouTube-VIS JSON; with `check_files` every frame file must exist and not be
    empty (a training run's preflight: one stat a frame)."""
    return build_ytvis(read_json(json_path), str(json_path), Path(image_root), check_files=check_files)


def build_ytvis(raw: dict, source: str, image_root: Path, check_files: bool = False) -> YTVIS:
    """Validate a parsed YouTube-VIS dict (`source` names it in errors) and index it. Raises DataError
    with the first of `find_problems` and how many more there are."""
    problems = find_problems(raw, source, image_root if check_files else None, empty_frames=check_files)
    if problems:
        more = f" (and {len(problems) - 1} more problems; `ifrvis check-data` lists them all)"
        raise DataError(problems[0] + (more if len(problems) > 1 else ""))
    has_annotations = isinstance(raw.get("annotations"), list)
    annotations: dict[int, list[dict]] = {}
    for ann in raw["annotations"] if has_annotations else []:
        annotations.setdefault(ann["video_id"], []).append(ann)
    return YTVIS(
        raw=raw,
        source=source,
        image_root=image_root,
        videos=list(raw["videos"]),
        categories=sorted(raw["categories"], key=lambda c: c["id"]),
        category_ids=sorted(c["id"] for c in raw["categories"]),
        annotations=annotations,
        has_annotations=has_annotations,
        _video_by_id={video["id"]: video for video in raw["videos"]},
    )


def find_problems(
    raw: object, source: str, image_root: Path | None = None, empty_frames: bool = False
) -> list[str]:
    """Every problem of a parsed YouTube-VIS dict, each as '<source>: video <id>: field '<name>': <what>';
    empty when it is valid. With `image_root`, every frame file must exist there (listed, not read),
    and with `empty_frames` not be empty (0 bytes; `ifrvis check-data` reads every frame's header
    instead, `check.frame_problems`). `annotations` may be null or missing (valid.json / test.json). A
    problem in one entry does not hide those of the others; an entry that cannot be indexed (no integer
    id, unknown video) is not checked further, so that one mistake is reported once."""
    if not isinstance(raw, dict):
        return [f"{source}: the top level must be an object"]
    problems: list[str] = []
    categories = _check_categories(raw.get("categories"), source, problems)
    videos = _check_videos(raw.get("videos"), source, problems)
    if image_root is not None and videos:
        usable = [v for v in videos.values() if v is not None]
        _check_frames_exist(usable, image_root, source, problems, empty_frames)
    annotations = raw.get("annotations")
    if annotations is not None and not isinstance(annotations, list):
        problems.append(f"{_where(source, None, 'annotations')}: neither a list nor null")
    elif annotations is not None and isinstance(raw.get("videos"), list):  # else all would be unknown
        seen: set[int] = set()
        batch = CompressedRLEBatch()  # compressed RLE strings: their runs are checked all at once
        for index, ann in enumerate(annotations):
            _check_annotation(ann, index, videos, categories, seen, source, problems, batch)
        for (position, video_id, prefix, t), problem in reversed(batch.problems()):  # as if found in order
            where = _where(source, video_id, f"{prefix}.segmentations[{t}]")
            problems.insert(position, f"{where}: {problem}")
    return problems


def _check_categories(categories: object, source: str, problems: list[str]) -> set[int]:
    """The category ids; problems with the list appended to `problems`."""
    if not isinstance(categories, list):
        problems.append(f"{_where(source, None, 'categories')}: missing or not a list")
        return set()
    ids: set[int] = set()
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not is_int64(cat.get("id")) or "name" not in cat:
            problems.append(f"{_where(source, None, f'categories[{i}]')}: needs an integer 'id' and a 'name'")
        elif cat["id"] in ids:
            where = _where(source, None, f"categories[{i}].id")
            problems.append(f"{where}: duplicate category id {cat['id']}")
        else:
            ids.add(cat["id"])
    return ids


def _check_videos(videos: object, source: str, problems: list[str]) -> dict[int, dict | None]:
    """Video id -> the video (the first of a duplicate id), None when its size or frames are unusable."""
    if not isinstance(videos, list):
        problems.append(f"{_where(source, None, 'videos')}: missing or not a list")
        return {}
    by_id: dict[int, dict | None] = {}
    for index, video in enumerate(videos):
        if not isinstance(video, dict) or not is_int64(video.get("id")):
            problems.append(
                f"{_where(source, None, f'videos[{index}].id')}: missing or not a (64-bit) integer"
            )
        elif video["id"] in by_id:
            problems.append(f"{_where(source, video['id'], 'videos.id')}: duplicate video id")
        else:
            by_id[video["id"]] = video if _check_video(video, source, problems) else None
    return by_id


def _check_video(video: dict, source: str, problems: list[str]) -> bool:
    """Whether the video's size and frames are usable to check its annotations (a `length` that
    differs from the frame count is a problem, but the frames are what counts)."""
    usable = True
    for key in ("width", "height"):
        if not is_int64(video.get(key)) or video[key] <= 0:
            problems.append(f"{_where(source, video['id'], key)}: missing or not a positive integer")
            usable = False
        elif video[key] > MAX_FRAME_SIDE:  # masks of larger frames cannot be read (masks.py)
            problems.append(
                f"{_where(source, video['id'], key)}: {short_repr(video[key])} px, more than {MAX_FRAME_SIDE}"
            )
            usable = False
    names = video.get("file_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        where = _where(source, video["id"], "file_names")
        problems.append(f"{where}: missing, empty or not a list of paths")
        usable = False
    elif len(names) > MAX_VIDEO_FRAMES:
        problems.append(f"{_where(source, video['id'], 'file_names')}: more than {MAX_VIDEO_FRAMES} frames")
        usable = False
    elif "length" in video and video["length"] != len(names):
        where = _where(source, video["id"], "length")
        problems.append(f"{where}: {short_repr(video['length'])} but {len(names)} file_names")
    return usable


def _check_frames_exist(
    videos: Iterable[dict], image_root: Path, source: str, problems: list[str], empty_frames: bool = False
) -> None:
    """Every frame file must exist (with `empty_frames`, and not be empty: one stat a frame): each folder
    is listed once, names are split as strings (a real split has ~10^5 frames: pathlib per frame would
    take seconds)."""
    if not image_root.is_dir():
        problems.append(f"{source}: frame folder {image_root} is missing")
        return
    listings: dict[str, dict[str, os.DirEntry] | None] = {}
    for video in videos:
        for t, name in enumerate(video["file_names"]):
            folder, _, file_name = name.rpartition("/")
            if folder not in listings:
                listings[folder] = _files_in(os.path.join(image_root, folder))
            files = listings[folder]
            if files is None:  # one problem for the video, not one a frame
                where = _where(source, video["id"], f"file_names[{t}]")
                problems.append(f"{where}: frame folder {image_root / folder} is missing")
                break
            if file_name not in files:
                where = _where(source, video["id"], f"file_names[{t}]")
                problems.append(f"{where}: frame file {image_root / name} is missing")
            elif empty_frames and _is_empty(files[file_name]):
                where = _where(source, video["id"], f"file_names[{t}]")
                problems.append(f"{where}: frame file {image_root / name} is empty (0 bytes)")


def _files_in(folder: str) -> dict[str, os.DirEntry] | None:
    """The files in `folder` by name, None when it is not a folder (or cannot be listed)."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name: entry for entry in entries if entry.is_file()}
    except OSError:
        return None


def _is_empty(entry: os.DirEntry) -> bool:
    """Whether a listed file holds 0 bytes (a failed download or copy); its stat, nothing read."""
    try:
        return entry.stat().st_size == 0
    except OSError:  # gone since it was listed: as good as empty
        return True


def _check_annotation(
    ann: object,
    index: int,
    videos: dict[int, dict | None],
    categories: set[int],
    seen: set[int],
    source: str,
    problems: list[str],
    batch: CompressedRLEBatch,
) -> None:
    if not isinstance(ann, dict) or not is_int64(ann.get("id")):
        problems.append(
            f"{_where(source, None, f'annotations[{index}].id')}: missing or not a (64-bit) integer"
        )
        return
    prefix = f"annotations[id={ann['id']}]"
    video_id = ann.get("video_id")
    if ann["id"] in seen:
        problems.append(f"{_where(source, video_id, f'{prefix}.id')}: duplicate annotation id")
    seen.add(ann["id"])
    if not is_int64(video_id) or video_id not in videos:
        problems.append(f"{_where(source, video_id, f'{prefix}.video_id')}: unknown video id")
        return
    video = videos[video_id]
    if video is None:  # its own problem is reported: nothing to check the segmentations against
        return
    category_id = ann.get("category_id")
    if not is_int64(category_id) or category_id not in categories:  # a list is not hashable
        where = _where(source, video_id, f"{prefix}.category_id")
        problems.append(f"{where}: unknown category id {short_repr(category_id)}")
    length, height, width = len(video["file_names"]), video["height"], video["width"]
    segmentations = ann.get("segmentations")
    if not isinstance(segmentations, list) or len(segmentations) != length:
        count = len(segmentations) if isinstance(segmentations, list) else "no"
        where = _where(source, video_id, f"{prefix}.segmentations")
        problems.append(f"{where}: {count} entries for a video of {length} frames")
    for t, seg in enumerate(segmentations if isinstance(segmentations, list) else []):
        problem = segmentation_problem(seg, height, width, compressed_counts=False)
        if problem is not None:
            problems.append(f"{_where(source, video_id, f'{prefix}.segmentations[{t}]')}: {problem}")
        elif isinstance(seg, dict) and isinstance(seg["counts"], str):
            batch.add(seg["counts"], height, width, (len(problems), video_id, prefix, t))
    for key in ("areas", "bboxes"):  # optional; the evaluation reads `areas` for the area ranges
        values = ann.get(key)
        if values is not None and (not isinstance(values, list) or len(values) != length):
            count = len(values) if isinstance(values, list) else "no list of"
            where = _where(source, video_id, f"{prefix}.{key}")
            problems.append(f"{where}: {count} entries for a video of {length} frames")
        elif key == "areas" and values is not None and (problem := areas_problem(values)):
            problems.append(f"{_where(source, video_id, f'{prefix}.areas')}: {problem}")


def areas_problem(areas: list) -> str | None:
    """Why per-frame `areas` are not each null or a finite number >= 0 (the evaluation averages them
    for its area ranges, as ytvoseval, whatever the masks' areas), None when they are."""
    for area in areas:
        if area is not None and (type(area) not in (int, float) or not 0 <= area < 2**53):  # NaN: False
            return f"an entry {short_repr(area)} is neither null nor a finite number >= 0"
    return None


def is_int64(value: object) -> bool:
    """An integer (not a bool) in int64's range, as NumPy and torch hold ids and sizes."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
