"""The training and validation splits a config names."""

from __future__ import annotations

from pathlib import Path

from ifrvis.config import DataConfig
from ifrvis.data.ytvis import YTVIS, load_ytvis


def load_splits(data: DataConfig) -> tuple[YTVIS, YTVIS | None]:
    """Training split and the validation split: a file of its own, a held-out part of train
    (`holdout_videos`, Sec. 4.3), or none."""
    root = Path(data.root)
    train_set = load_ytvis(root / data.train_json, root / data.train_images)
    if data.holdout_videos > 0:
        return train_set.holdout_split(data.holdout_videos, data.holdout_seed)
    if data.valid_json:
        return train_set, load_ytvis(root / data.valid_json, root / data.valid_images)
    return train_set, None
