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
from ifrvis.data.masks import encode_rle
from ifrvis.errors import UserError


class ResultsError(UserError):
    """A ground-truth or results file (or list) that does not follow the YouTube-VIS format."""


@dataclass(frozen=True)
class VideoInfo:
    id: int
    height: int
    width: int
    length: int


def load_ground_truth(gt: str | Path | dict) -> dict:
    """A YouTube-VIS ground-truth JSON path or the already-loaded dict -> the dict (not copied)."""
    if isinstance(gt, dict):
        data, source = gt, "ground truth"
    else:
        source = str(gt)
        try:
            data = json.loads(Path(gt).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ResultsError(f"{source}: cannot read the ground-truth JSON: {err}") from err
    for key in ("videos", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ResultsError(f"{source}: ground truth has no list under '{key}'")
    return data


def video_infos(gt: dict) -> dict[int, VideoInfo]:
    """Video id -> size and length, from the ground truth's `videos` (length defaults to the number
    of `file_names`, as YouTube-VIS 2019 has both)."""
    infos = {}
    for index, video in enumerate(gt["videos"]):
        try:
            length = video["length"] if "length" in video else len(video["file_names"])
            info = VideoInfo(int(video["id"]), int(video["height"]), int(video["width"]), int(length))
        except (KeyError, TypeError, ValueError) as err:
            raise ResultsError(f"ground truth videos[{index}]: missing or bad field {err}") from err
        infos[info.id] = info
    return infos


def annotations_by_video(gt: dict, videos: dict[int, VideoInfo]) -> dict[int, list[dict]]:
    """Ground-truth annotations grouped by video id (file order kept, as ytvoseval), every video
    present. Raises ResultsError for an unknown video or a segmentation list of the wrong length."""
    grouped: dict[int, list[dict]] = {vid: [] for vid in videos}
    for index, ann in enumerate(gt["annotations"]):
        where = f"ground truth annotations[{index}] (id {ann.get('id')})"
        video = videos.get(int(ann.get("video_id", -1)))
        if video is None:
            raise ResultsError(f"{where}: video_id {ann.get('video_id')} is not among the videos")
        segs = ann.get("segmentations")
        if not isinstance(segs, list) or len(segs) != video.length:
            got = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise ResultsError(
                f"{where}: 'segmentations' has {got} frames, video {video.id} has {video.length}"
            )
        grouped[video.id].append(ann)
    return grouped


def _check_segmentation(seg, where: str, video: VideoInfo) -> dict | None:
    if seg is None:
        return None
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise ResultsError(f"{where}: a segmentation must be a compressed RLE {{size, counts}} or null")
    counts = seg["counts"]
    if not isinstance(counts, (str, bytes)):
        raise ResultsError(f"{where}: 'counts' must be a compressed RLE string, got {type(counts).__name__}")
    size = [int(s) for s in seg["size"]]
    if size != [video.height, video.width]:
        raise ResultsError(
            f"{where}: mask size {size[0]}x{size[1]} differs from video {video.id}'s "
            f"{video.height}x{video.width}"
        )
    return {"size": size, "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def load_results(results: str | Path | list, gt: str | Path | dict) -> list[dict]:
    """Read and validate results against the ground truth's videos and categories.

    Returns new dicts (the input is not modified) with int ids, float score and str RLE counts.
    Raises ResultsError naming the entry and field: unknown video or category id, a segmentation
    list whose length differs from the video's, a mask size differing from the video's, a score
    that is not a finite number."""
    source = "results"
    if not isinstance(results, list):
        source = str(results)
        try:
            results = json.loads(Path(results).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ResultsError(f"{source}: cannot read the results JSON: {err}") from err
        if not isinstance(results, list):
            raise ResultsError(f"{source}: the results JSON must be a list of predictions")
    gt = load_ground_truth(gt)
    videos = video_infos(gt)
    category_ids = {int(c["id"]) for c in gt["categories"]}
    checked = []
    for index, entry in enumerate(results):
        where = f"{source}[{index}]"
        if not isinstance(entry, dict):
            raise ResultsError(f"{where}: a prediction must be a dict")
        missing = [k for k in ("video_id", "category_id", "score", "segmentations") if k not in entry]
        if missing:
            raise ResultsError(f"{where}: missing field(s) {', '.join(missing)}")
        video = videos.get(int(entry["video_id"]))
        if video is None:
            raise ResultsError(f"{where}: video_id {entry['video_id']} is not in the ground truth")
        if int(entry["category_id"]) not in category_ids:
            raise ResultsError(f"{where}: category_id {entry['category_id']} is not in the ground truth")
        score = entry["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ResultsError(f"{where}: score must be a finite number, got {score!r}")
        segs = entry["segmentations"]
        if not isinstance(segs, list) or len(segs) != video.length:
            got = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise ResultsError(
                f"{where}: 'segmentations' has {got} frames, video {video.id} has {video.length}"
            )
        checked.append(
            {
                "video_id": video.id,
                "category_id": int(entry["category_id"]),
                "score": float(score),
                "segmentations": [
                    _check_segmentation(seg, f"{where}.segmentations[{t}]", video)
                    for t, seg in enumerate(segs)
                ],
            }
        )
    return checked


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
