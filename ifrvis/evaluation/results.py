"""YouTube-VIS ground truth and results files: loading with validation, writing the server's zip.

Results use the official format, one dict per predicted instance track:
`{"video_id", "category_id", "score", "segmentations": [compressed RLE or None per frame]}`.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ifrvis import run_folder
from ifrvis.data.masks import (
    CompressedRLEBatch,
    encode_rle,
    frame_size_problem,
    segmentation_problem,
    short_repr,
)
from ifrvis.data.ytvis import MAX_VIDEO_FRAMES, DataError, areas_problem, is_int64, read_json
from ifrvis.errors import UserError


class ResultsError(UserError):
    """A ground-truth or results file (or list) that does not follow the YouTube-VIS format."""


@dataclass(frozen=True)
class VideoInfo:
    id: int
    height: int
    width: int
    length: int


class CheckedResults(list):
    """What `load_results` returns: results validated against the ground-truth dict `ground_truth`
    (`load_results` given it again with that dict returns it as is). Its entries are `load_results`'s
    own: modifying them voids the check."""

    def __init__(self, entries: list[dict], ground_truth: dict):
        super().__init__(entries)
        self.ground_truth = ground_truth


def _read_json(path: str | Path, what: str) -> object:
    """A JSON file from elsewhere; ResultsError naming it when it cannot be read (`ytvis.read_json`)."""
    try:
        return read_json(path)
    except DataError as err:
        raise ResultsError(f"{err} (the {what} file)") from None


def _ground_truth_data(gt: str | Path | dict) -> tuple[dict, str]:
    """(the ground-truth dict, read when `gt` is a path; what to call it in errors), its top level
    checked: an object with lists under 'videos', 'annotations' and 'categories'."""
    if isinstance(gt, dict):
        data, source = gt, "ground truth"
    else:
        source = str(gt)
        data = _read_json(gt, "ground-truth")
        if not isinstance(data, dict):
            raise ResultsError(
                f"{source}: the ground-truth JSON must be an object, not {type(data).__name__}"
            )
    for key in ("videos", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ResultsError(f"{source}: ground truth has no list under '{key}'")
    return data, source


@dataclass(frozen=True)
class GroundTruth:
    """A ground truth read and checked by `read_ground_truth`: its dict, what errors call it, its videos,
    category ids and annotations by video id."""

    data: dict
    source: str
    videos: dict[int, VideoInfo]
    category_ids: list[int]
    by_video: dict[int, list[dict]]


def read_ground_truth(gt: str | Path | dict | GroundTruth) -> GroundTruth:
    """A YouTube-VIS ground-truth JSON path or the already-loaded dict, all of it checked
    (`video_infos`, `category_ids`, `annotations_by_video`): ResultsError naming the file, the entry,
    its video and the field. A GroundTruth is given back as is."""
    if isinstance(gt, GroundTruth):
        return gt
    data, source = _ground_truth_data(gt)
    videos = video_infos(data, source)
    categories = category_ids(data, source)
    return GroundTruth(data, source, videos, categories, annotations_by_video(data, videos, source))


def load_ground_truth(gt: str | Path | dict | GroundTruth) -> dict:
    """A YouTube-VIS ground-truth JSON path or the already-loaded dict -> the dict (not copied), all of
    it checked (`read_ground_truth`)."""
    return read_ground_truth(gt).data


def _finite_number(value: object) -> bool:
    """An int or a float (not a bool) that is finite as a float (NaN, inf, 10**400 are not)."""
    try:
        return type(value) in (int, float) and math.isfinite(value)
    except OverflowError:  # an int beyond a float's range
        return False


def video_infos(gt: dict, source: str = "ground truth") -> dict[int, VideoInfo]:
    """Video id -> size and length, from the ground truth's `videos` (length defaults to the number
    of `file_names`, as YouTube-VIS 2019 has both). ResultsError for a video without an integer id
    (or a duplicate one), a size masks cannot be read for (`masks.frame_size_problem`), or a length
    that is not in 1..MAX_VIDEO_FRAMES."""
    infos = {}
    for index, video in enumerate(gt["videos"]):
        where = f"{source}: videos[{index}]"
        if not isinstance(video, dict) or not is_int64(video.get("id")):
            raise ResultsError(f"{where}: not an object with a (64-bit) integer 'id'")
        where = f"{where} (video {video['id']})"
        if video["id"] in infos:
            raise ResultsError(f"{where}: duplicate video id")
        problem = frame_size_problem(video.get("height"), video.get("width"))
        if problem:
            raise ResultsError(f"{where}: {problem}")
        names = video.get("file_names")
        length = video["length"] if "length" in video else len(names) if isinstance(names, list) else None
        if not is_int64(length) or not 0 < length <= MAX_VIDEO_FRAMES:
            raise ResultsError(
                f"{where}: 'length' (or the number of 'file_names') {short_repr(length)} is not an integer "
                f"in 1..{MAX_VIDEO_FRAMES}"
            )
        infos[video["id"]] = VideoInfo(video["id"], video["height"], video["width"], length)
    return infos


def category_ids(gt: dict, source: str = "ground truth") -> list[int]:
    """The sorted ids of the ground truth's categories; ResultsError for one without an integer id."""
    ids = set()
    for index, category in enumerate(gt["categories"]):
        if not isinstance(category, dict) or not is_int64(category.get("id")):
            raise ResultsError(f"{source}: categories[{index}]: not an object with a (64-bit) integer 'id'")
        ids.add(category["id"])
    return sorted(ids)


def annotations_by_video(
    gt: dict, videos: dict[int, VideoInfo], source: str = "ground truth"
) -> dict[int, list[dict]]:
    """Ground-truth annotations grouped by video id (file order kept, as ytvoseval), every video
    present. Raises ResultsError naming the annotation, its video and the field for an unknown video,
    a category id that is not an integer, a segmentation list of the wrong length, a segmentation that
    is not a valid mask of the video's size (`masks.segmentation_problem`: pycocotools would write
    past the mask, or rasterise without bound) or `areas` that are not per-frame areas."""
    grouped: dict[int, list[dict]] = {vid: [] for vid in videos}
    batch = CompressedRLEBatch()  # compressed RLE strings: their runs are checked all at once
    try:
        for index, ann in enumerate(gt["annotations"]):
            where = f"{source}: annotations[{index}]"
            if not isinstance(ann, dict):
                raise ResultsError(f"{where}: not an object")
            where = f"{where} (id {short_repr(ann.get('id'))})"
            video_id = ann.get("video_id")
            video = videos.get(video_id) if is_int64(video_id) else None
            if video is None:
                raise ResultsError(f"{where}: video_id {short_repr(video_id)} is not among the videos")
            where = f"{where}: video {video.id}"
            if not is_int64(ann.get("category_id")):
                raise ResultsError(
                    f"{where}: category_id {short_repr(ann.get('category_id'))} is not an integer"
                )
            segs = ann.get("segmentations")
            if not isinstance(segs, list) or len(segs) != video.length:
                got = len(segs) if isinstance(segs, list) else type(segs).__name__
                raise ResultsError(f"{where}: 'segmentations' has {got} frames, the video {video.length}")
            size = [video.height, video.width]
            for t, seg in enumerate(segs):
                if _plain_compressed(seg, size):  # the common case: only its runs to check
                    batch.add(seg["counts"], video.height, video.width, (where, t))
                    continue
                problem = segmentation_problem(seg, video.height, video.width, compressed_counts=False)
                if problem:
                    raise ResultsError(f"{where}: segmentations[{t}]: {problem}")
                if isinstance(seg, dict) and isinstance(seg["counts"], str):
                    batch.add(seg["counts"], video.height, video.width, (where, t))
            areas = ann.get("areas")
            if areas is not None:
                if not isinstance(areas, list) or len(areas) != video.length:
                    got = len(areas) if isinstance(areas, list) else type(areas).__name__
                    raise ResultsError(f"{where}: 'areas' has {got} frames, the video {video.length}")
                if problem := areas_problem(areas):
                    raise ResultsError(f"{where}: 'areas': {problem}")
            grouped[video.id].append(ann)
    except ResultsError:
        _raise_first(batch)  # an earlier frame's bad runs are the first problem
        raise
    _raise_first(batch)
    return grouped


def _plain_compressed(seg: object, size: list[int]) -> bool:
    """Whether a frame's segmentation is a compressed RLE dict of the video's `size` [height, width],
    whose string's runs alone are left to check (`CompressedRLEBatch`)."""
    return type(seg) is dict and type(seg.get("counts")) is str and seg.get("size") == size


def _raise_first(batch: CompressedRLEBatch) -> None:
    """ResultsError for the first bad string of `batch` (labels: (where, frame index)), if any."""
    for (where, t), problem in batch.problems()[:1]:
        raise ResultsError(f"{where}: segmentations[{t}]: {problem}")


def _check_segmentation(seg, where: str, t: int, video: VideoInfo, batch: CompressedRLEBatch) -> dict | None:
    """One frame of a result: null, or a compressed RLE of the video's size (its runs checked in
    `batch`) -> its normalised copy."""
    if seg is None:
        return None
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise ResultsError(
            f"{where}: segmentations[{t}]: a segmentation must be a compressed RLE {{size, counts}} or null"
        )
    counts = seg["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")  # not ASCII: a bad character
    if not isinstance(counts, str):
        kind = type(counts).__name__
        raise ResultsError(
            f"{where}: segmentations[{t}]: 'counts' must be a compressed RLE string, got {kind}"
        )
    problem = segmentation_problem(
        {"size": seg["size"], "counts": counts}, video.height, video.width, compressed_counts=False
    )
    if problem:
        raise ResultsError(f"{where}: segmentations[{t}]: {problem}")
    batch.add(counts, video.height, video.width, (where, t))
    return {"size": [video.height, video.width], "counts": counts}


def load_results(results: str | Path | list, gt: str | Path | dict | GroundTruth) -> CheckedResults:
    """Read and validate results against the ground truth's videos and categories.

    Returns new dicts (the input is not modified) with int ids, float score and str RLE counts, as a
    `CheckedResults` list (given back as is when passed again with the same ground-truth dict).
    Raises ResultsError naming the file, the entry, its video and the field: unknown video or category
    id, a segmentation list whose length differs from the video's, a segmentation that is not a
    compressed RLE of the video's size whose runs cover the frame (`masks.segmentation_problem`:
    pycocotools' decoder would write past the mask), a score that is not a finite number."""
    if isinstance(results, CheckedResults) and results.ground_truth is (
        gt.data if isinstance(gt, GroundTruth) else gt
    ):
        return results
    source = "results"
    if not isinstance(results, list):
        source = str(results)
        results = _read_json(results, "results")
        if not isinstance(results, list):
            raise ResultsError(f"{source}: the results JSON must be a list of predictions")
    if isinstance(gt, GroundTruth):  # already read and checked: its videos and categories at hand
        data, videos, known_categories = gt.data, gt.videos, set(gt.category_ids)
    else:
        data, gt_source = _ground_truth_data(gt)
        videos = video_infos(data, gt_source)
        known_categories = set(category_ids(data, gt_source))
    checked = []
    batch = CompressedRLEBatch()  # compressed RLE strings: their runs are checked all at once
    try:
        for index, entry in enumerate(results):
            where = f"{source}[{index}]"
            if not isinstance(entry, dict):
                raise ResultsError(f"{where}: a prediction must be a dict")
            missing = [k for k in ("video_id", "category_id", "score", "segmentations") if k not in entry]
            if missing:
                raise ResultsError(f"{where}: missing field(s) {', '.join(missing)}")
            video = videos.get(entry["video_id"]) if is_int64(entry["video_id"]) else None
            if video is None:
                raise ResultsError(
                    f"{where}: video_id {short_repr(entry['video_id'])} is not in the ground truth"
                )
            category = entry["category_id"]
            if not is_int64(category) or category not in known_categories:
                raise ResultsError(f"{where}: category_id {short_repr(category)} is not in the ground truth")
            score = entry["score"]
            if not _finite_number(score):
                raise ResultsError(f"{where}: score must be a finite number, got {short_repr(score)}")
            segs = entry["segmentations"]
            if not isinstance(segs, list) or len(segs) != video.length:
                got = len(segs) if isinstance(segs, list) else type(segs).__name__
                raise ResultsError(
                    f"{where}: 'segmentations' has {got} frames, video {video.id} has {video.length}"
                )
            where, size, frames = f"{where}: video {video.id}", [video.height, video.width], []
            for t, seg in enumerate(segs):
                if _plain_compressed(seg, size):  # the common case: only its runs to check
                    batch.add(seg["counts"], video.height, video.width, (where, t))
                    frames.append({"size": [video.height, video.width], "counts": seg["counts"]})
                else:
                    frames.append(_check_segmentation(seg, where, t, video, batch))
            checked.append(
                {
                    "video_id": video.id,
                    "category_id": category,
                    "score": float(score),
                    "segmentations": frames,
                }
            )
    except ResultsError:
        _raise_first(batch)  # an earlier frame's bad runs are the first problem
        raise
    _raise_first(batch)
    return CheckedResults(checked, data)


def frame_segmentation(mask: np.ndarray) -> dict | None:
    """One frame's (H, W) bool mask -> its compressed RLE, or None when empty (the official format)."""
    return encode_rle(mask) if mask.any() else None


def results_json(results: list[dict]) -> str:
    """The text of a results file: compact JSON, as the evaluation servers take it."""
    return json.dumps(results, separators=(",", ":"))


def result_entry(video_id: int, category_id: int, score: float, segmentations: list[dict | None]) -> dict:
    """One track in the official results format: a segmentation (compressed RLE, or None) per frame."""
    return {
        "video_id": int(video_id),
        "category_id": int(category_id),
        "score": float(score),
        "segmentations": segmentations,
    }


def encode_video_predictions(
    video_id: int, predictions: list, category_ids: list[int] | tuple[int, ...]
) -> list[dict]:
    """Per-video predictions -> official results dicts.

    predictions: items `(label, score, masks)` or objects with those attributes, where `label`
    is the contiguous class index (position in the sorted `category_ids`), `masks (T, H, W)` bool.
    An empty frame mask becomes null (`frame_segmentation`)."""
    out = []
    for pred in predictions:
        label, score, masks = (pred.label, pred.score, pred.masks) if hasattr(pred, "masks") else tuple(pred)
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3:
            raise ValueError(f"video {video_id}: prediction masks must be (T, H, W), got shape {masks.shape}")
        segs = [frame_segmentation(frame) for frame in masks]
        out.append(result_entry(video_id, category_ids[int(label)], score, segs))
    return out


def write_results(results: list[dict], out_dir: str | Path) -> tuple[Path, Path]:
    """Write `results.json` and `results.zip` (holding `results.json` at its root, the layout the
    YouTube-VIS evaluation server expects) into out_dir; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, zip_path = out_dir / run_folder.RESULTS, out_dir / run_folder.RESULTS_ZIP
    text = results_json(results)
    json_path.write_text(text)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("results.json", text)  # the name the servers read, whatever the file's
    return json_path, zip_path
