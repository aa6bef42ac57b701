"""The training and validation splits a config names, and what a run needs of them together."""

from __future__ import annotations

from pathlib import Path

from ifrvis.config import DataConfig
from ifrvis.data.ytvis import YTVIS, DataError, load_ytvis


def split_files(data: DataConfig) -> dict[str, tuple[Path, Path]]:
    """Split name -> (annotation file, frame folder) of the files a run reads: 'train', and 'valid'
    unless there is none or it is held out of train (`holdout_videos`)."""
    root = Path(data.root)
    files = {"train": (root / data.train_json, root / data.train_images)}
    if data.valid_json and data.holdout_videos == 0:
        files["valid"] = (root / data.valid_json, root / data.valid_images)
    return files


def load_splits(data: DataConfig) -> tuple[YTVIS, YTVIS | None]:
    """Training split and the validation split: a file of its own, a held-out part of train
    (`holdout_videos`, Sec. 4.3), or none. DataError when a split is invalid, the training split has
    no annotations, or the validation split's categories are not the training split's."""
    files = split_files(data)
    train_set = load_ytvis(*files["train"])
    problem = annotations_problem(train_set.raw, train_set.source)
    if problem:
        raise DataError(problem)
    if data.holdout_videos > 0:
        return train_set.holdout_split(data.holdout_videos, data.holdout_seed)
    if "valid" not in files:
        return train_set, None
    valid_set = load_ytvis(*files["valid"])
    problem = categories_problem(train_set.raw, train_set.source, valid_set.raw, valid_set.source)
    if problem:
        raise DataError(problem)
    return train_set, valid_set


def annotations_problem(train_raw: object, source: str) -> str | None:
    """Training needs the split's annotations: a problem when they are null or missing."""
    if isinstance(train_raw, dict) and train_raw.get("annotations") is None:
        return f"{source}: field 'annotations': null or missing, but training needs them"
    return None


def categories_problem(train_raw: object, train_source: str, raw: object, source: str) -> str | None:
    """Another split must have the training split's categories (the model predicts those, and its
    results carry their ids): a problem when the (id, name) pairs differ."""
    train_categories, categories = _categories(train_raw), _categories(raw)
    if train_categories is None or categories is None or categories == train_categories:
        return None
    return f"{source}: field 'categories': differ from {train_source}'s"


def _categories(raw: object) -> list[tuple[str, str]] | None:
    """Sorted (id, name) pairs, None when there is no list of categories."""
    if not isinstance(raw, dict) or not isinstance(raw.get("categories"), list):
        return None
    return sorted((str(c.get("id")), str(c.get("name"))) for c in raw["categories"] if isinstance(c, dict))
