"""A validated YouTube-VIS 2019/2021 data set (`train.json` / `valid.json` / `test.json` + `JPEGImages`).

    ytvis = load_ytvis("data/ytvis2019/train.json", "data/ytvis2019/JPEGImages")
    masks, present = ytvis.decode_instance(ytvis.annotations_of(ytvis.videos[0]["id"])[0])

Segmentations may be uncompressed RLE (the real train.json), compressed RLE, polygons, or null when
the instance is absent. valid.json / test.json of the real data have no `annotations` key: such a set
has `has_annotations == False`. Bad input raises `DataError` naming the file, the video and the field.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ifrvis.data.masks import decode_segmentation
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


def load_ytvis(json_path: str | Path, image_root: str | Path, check_files: bool = True) -> YTVIS:
    """Read and validate a YouTube-VIS JSON; with `check_files` every frame file must exist."""
    json_path = Path(json_path)
    try:
        raw = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{json_path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{json_path}: not a readable JSON file: {error}") from None
    return build_ytvis(raw, str(json_path), Path(image_root), check_files=check_files)


def build_ytvis(raw: dict, source: str, image_root: Path, check_files: bool = False) -> YTVIS:
    """Validate a parsed YouTube-VIS dict (`source` names it in errors) and index it."""
    if not isinstance(raw, dict):
        raise DataError(f"{source}: the top level must be an object")
    for key in ("videos", "categories"):
        if not isinstance(raw.get(key), list):
            raise DataError(f"{_where(source, None, key)}: missing or not a list")
    categories = _check_categories(raw["categories"], source)
    videos = {}
    for i, video in enumerate(raw["videos"]):
        _check_video(video, i, source)
        if video["id"] in videos:
            raise DataError(f"{_where(source, video['id'], 'videos.id')}: duplicate video id")
        videos[video["id"]] = video
        if check_files:
            _check_frames_exist(video, image_root, source)
    has_annotations = "annotations" in raw
    annotations: dict[int, list[dict]] = {}
    if has_annotations:
        if not isinstance(raw["annotations"], list):
            raise DataError(f"{_where(source, None, 'annotations')}: not a list")
        seen: set = set()
        for i, ann in enumerate(raw["annotations"]):
            _check_annotation(ann, i, videos, categories, seen, source)
            annotations.setdefault(ann["video_id"], []).append(ann)
    return YTVIS(
        raw=raw,
        source=source,
        image_root=image_root,
        videos=list(raw["videos"]),
        categories=sorted(raw["categories"], key=lambda c: c["id"]),
        category_ids=sorted(categories),
        annotations=annotations,
        has_annotations=has_annotations,
        _video_by_id=videos,
    )


def _check_categories(categories: list, source: str) -> set[int]:
    ids: set[int] = set()
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
            raise DataError(f"{_where(source, None, f'categories[{i}]')}: needs an integer 'id' and a 'name'")
        if cat["id"] in ids:
            raise DataError(
                f"{_where(source, None, f'categories[{i}].id')}: duplicate category id {cat['id']}"
            )
        ids.add(cat["id"])
    return ids


def _check_video(video: dict, index: int, source: str) -> None:
    if not isinstance(video, dict) or not isinstance(video.get("id"), int):
        raise DataError(f"{_where(source, None, f'videos[{index}].id')}: missing or not an integer")
    for key in ("width", "height"):
        if not isinstance(video.get(key), int) or video[key] <= 0:
            raise DataError(f"{_where(source, video['id'], key)}: missing or not a positive integer")
    names = video.get("file_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{_where(source, video['id'], 'file_names')}: missing, empty or not a list of paths")
    if "length" in video and video["length"] != len(names):
        raise DataError(
            f"{_where(source, video['id'], 'length')}: {video['length']} but {len(names)} file_names"
        )


def _check_frames_exist(video: dict, image_root: Path, source: str) -> None:
    for t, name in enumerate(video["file_names"]):
        if not (image_root / name).is_file():
            where = _where(source, video["id"], f"file_names[{t}]")
            raise DataError(f"{where}: frame file {image_root / name} is missing")


def _check_annotation(ann: dict, index: int, videos: dict, categories: set, seen: set, source: str) -> None:
    if not isinstance(ann, dict) or not isinstance(ann.get("id"), int):
        raise DataError(f"{_where(source, None, f'annotations[{index}].id')}: missing or not an integer")
    prefix = f"annotations[id={ann['id']}]"
    if ann["id"] in seen:
        raise DataError(f"{_where(source, ann.get('video_id'), f'{prefix}.id')}: duplicate annotation id")
    seen.add(ann["id"])
    video = videos.get(ann.get("video_id"))
    if video is None:
        raise DataError(f"{_where(source, ann.get('video_id'), f'{prefix}.video_id')}: unknown video id")
    vid = video["id"]
    if ann.get("category_id") not in categories:
        where = _where(source, vid, f"{prefix}.category_id")
        raise DataError(f"{where}: unknown category id {ann.get('category_id')!r}")
    segmentations = ann.get("segmentations")
    length = len(video["file_names"])
    if not isinstance(segmentations, list) or len(segmentations) != length:
        count = len(segmentations) if isinstance(segmentations, list) else "no"
        where = _where(source, vid, f"{prefix}.segmentations")
        raise DataError(f"{where}: {count} entries for a video of {length} frames")
    for t, seg in enumerate(segmentations):
        _check_segmentation(seg, video, source, f"{prefix}.segmentations[{t}]")


def _check_segmentation(seg: object, video: dict, source: str, field_name: str) -> None:
    """Cheap structural check (no decoding): RLE size must be the video's (height, width)."""
    where = _where(source, video["id"], field_name)
    if seg is None:
        return
    if isinstance(seg, list):
        if not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg):
            raise DataError(f"{where}: polygons must be lists of >= 3 (x, y) pairs")
        return
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise DataError(f"{where}: neither null, polygons nor an RLE with 'size' and 'counts'")
    size = list(seg["size"]) if isinstance(seg["size"], (list, tuple)) else seg["size"]
    if size != [video["height"], video["width"]]:
        raise DataError(
            f"{where}: mask size {seg['size']} differs from the video's [height, width] "
            f"[{video['height']}, {video['width']}]"
        )
    counts = seg["counts"]
    if isinstance(counts, list) and sum(counts) != video["height"] * video["width"]:
        raise DataError(f"{where}: uncompressed RLE counts sum to {sum(counts)}, not height * width")
