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

from ifrvis.data.masks import decode_segmentation, segmentation_problem
from ifrvis.errors import UserError


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
                key: copy.deepcopy(value)
                for key, value in self.raw.items()
                if key not in ("videos", "annotations")
            }
            raw["videos"] = [v for v in self.raw["videos"] if keep(int(v["id"]))]
            raw["annotations"] = [a for a in self.raw["annotations"] if keep(int(a["video_id"]))]
            parts.append(
                build_ytvis(raw, f"{self.source}[holdout {name}, k={k}, seed={seed}]", self.image_root)
            )
        return parts[0], parts[1]


def read_json(json_path: str | Path) -> object:
    """The parsed JSON file; DataError naming the file when it is missing or unreadable."""
    json_path = Path(json_path)
    try:
        return json.loads(json_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{json_path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{json_path}: not a readable JSON file: {error}") from None


def load_ytvis(json_path: str | Path, image_root: str | Path, check_files: bool = True) -> YTVIS:
    """Read and validate a YouTube-VIS JSON; with `check_files` every frame file must exist."""
    return build_ytvis(read_json(json_path), str(json_path), Path(image_root), check_files=check_files)


def build_ytvis(raw: dict, source: str, image_root: Path, check_files: bool = False) -> YTVIS:
    """Validate a parsed YouTube-VIS dict (`source` names it in errors) and index it. Raises DataError
    with the first of `find_problems` and how many more there are."""
    problems = find_problems(raw, source, image_root if check_files else None)
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


def find_problems(raw: object, source: str, image_root: Path | None = None) -> list[str]:
    """Every problem of a parsed YouTube-VIS dict, each as '<source>: video <id>: field '<name>': <what>';
    empty when it is valid. With `image_root`, every frame file must exist there (listed, not read).
    `annotations` may be null or missing (valid.json / test.json). A problem in one entry does not hide
    those of the others; an entry that cannot be indexed (no integer id, unknown video) is not checked
    further, so that one mistake is reported once."""
    if not isinstance(raw, dict):
        return [f"{source}: the top level must be an object"]
    problems: list[str] = []
    categories = _check_categories(raw.get("categories"), source, problems)
    videos = _check_videos(raw.get("videos"), source, problems)
    if image_root is not None and videos:
        _check_frames_exist([v for v in videos.values() if v is not None], image_root, source, problems)
    annotations = raw.get("annotations")
    if annotations is not None and not isinstance(annotations, list):
        problems.append(f"{_where(source, None, 'annotations')}: neither a list nor null")
    elif annotations is not None and isinstance(raw.get("videos"), list):  # else all would be unknown
        seen: set[int] = set()
        for index, ann in enumerate(annotations):
            _check_annotation(ann, index, videos, categories, seen, source, problems)
    return problems


def _check_categories(categories: object, source: str, problems: list[str]) -> set[int]:
    """The category ids; problems with the list appended to `problems`."""
    if not isinstance(categories, list):
        problems.append(f"{_where(source, None, 'categories')}: missing or not a list")
        return set()
    ids: set[int] = set()
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or "name" not in cat:
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
        if not isinstance(video, dict) or not _is_int(video.get("id")):
            problems.append(f"{_where(source, None, f'videos[{index}].id')}: missing or not an integer")
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
        if not _is_int(video.get(key)) or video[key] <= 0:
            problems.append(f"{_where(source, video['id'], key)}: missing or not a positive integer")
            usable = False
    names = video.get("file_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        where = _where(source, video["id"], "file_names")
        problems.append(f"{where}: missing, empty or not a list of paths")
        usable = False
    elif "length" in video and video["length"] != len(names):
        where = _where(source, video["id"], "length")
        problems.append(f"{where}: {video['length']} but {len(names)} file_names")
    return usable


def _check_frames_exist(videos: Iterable[dict], image_root: Path, source: str, problems: list[str]) -> None:
    """Every frame file must exist: each folder is listed once, names are split as strings (a real
    split has ~10^5 frames: pathlib per frame would take seconds)."""
    if not image_root.is_dir():
        problems.append(f"{source}: frame folder {image_root} is missing")
        return
    listings: dict[str, set[str] | None] = {}
    for video in videos:
        for t, name in enumerate(video["file_names"]):
            folder, _, file_name = name.rpartition("/")
            if folder not in listings:
                listings[folder] = _file_names_in(os.path.join(image_root, folder))
            files = listings[folder]
            if files is None:  # one problem for the video, not one a frame
                where = _where(source, video["id"], f"file_names[{t}]")
                problems.append(f"{where}: frame folder {image_root / folder} is missing")
                break
            if file_name not in files:
                where = _where(source, video["id"], f"file_names[{t}]")
                problems.append(f"{where}: frame file {image_root / name} is missing")


def _file_names_in(folder: str) -> set[str] | None:
    """Names of the files in `folder`, None when it is not a folder."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries if entry.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return None


def _check_annotation(
    ann: object,
    index: int,
    videos: dict[int, dict | None],
    categories: set[int],
    seen: set[int],
    source: str,
    problems: list[str],
) -> None:
    if not isinstance(ann, dict) or not _is_int(ann.get("id")):
        problems.append(f"{_where(source, None, f'annotations[{index}].id')}: missing or not an integer")
        return
    prefix = f"annotations[id={ann['id']}]"
    video_id = ann.get("video_id")
    if ann["id"] in seen:
        problems.append(f"{_where(source, video_id, f'{prefix}.id')}: duplicate annotation id")
    seen.add(ann["id"])
    if not _is_int(video_id) or video_id not in videos:
        problems.append(f"{_where(source, video_id, f'{prefix}.video_id')}: unknown video id")
        return
    video = videos[video_id]
    if video is None:  # its own problem is reported: nothing to check the segmentations against
        return
    if ann.get("category_id") not in categories:
        where = _where(source, video_id, f"{prefix}.category_id")
        problems.append(f"{where}: unknown category id {ann.get('category_id')!r}")
    length, height, width = len(video["file_names"]), video["height"], video["width"]
    segmentations = ann.get("segmentations")
    if not isinstance(segmentations, list) or len(segmentations) != length:
        count = len(segmentations) if isinstance(segmentations, list) else "no"
        where = _where(source, video_id, f"{prefix}.segmentations")
        problems.append(f"{where}: {count} entries for a video of {length} frames")
    for t, seg in enumerate(segmentations if isinstance(segmentations, list) else []):
        problem = segmentation_problem(seg, height, width)
        if problem is not None:
            problems.append(f"{_where(source, video_id, f'{prefix}.segmentations[{t}]')}: {problem}")
    for key in ("areas", "bboxes"):  # optional; the evaluation reads `areas` for the area ranges
        values = ann.get(key)
        if values is not None and (not isinstance(values, list) or len(values) != length):
            count = len(values) if isinstance(values, list) else "no list of"
            where = _where(source, video_id, f"{prefix}.{key}")
            problems.append(f"{where}: {count} entries for a video of {length} frames")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
