"""The training and validation splits a config names."""

from __future__ import annotations

from pathlib import Path

from ifrvis.config import DataConfig
from ifrvis.data.ytvis import YTVIS, load_ytvis


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
    (`holdout_videos`, Sec. 4.3), or none."""
    files = split_files(data)
    train_set = load_ytvis(*files["train"])
    if data.holdout_videos > 0:
        return train_set.holdout_split(data.holdout_videos, data.holdout_seed)
    valid = files.get("valid")
    return train_set, (load_ytvis(*valid) if valid else None)
