"""YouTube-VIS data: loading and validation, training clips, inference frames, the synthetic benchmark."""

from ifrvis.data.datasets import ClipDataset, TrainSampler, VideoFrames, collate_clips
from ifrvis.data.masks import decode_segmentation, encode_rle, mask_area, mask_bbox, segmentation_problem
from ifrvis.data.ytvis import YTVIS, DataError, find_problems, load_ytvis

__all__ = [
    "YTVIS",
    "ClipDataset",
    "DataError",
    "TrainSampler",
    "VideoFrames",
    "collate_clips",
    "decode_segmentation",
    "encode_rle",
    "find_problems",
    "load_ytvis",
    "mask_area",
    "mask_bbox",
    "segmentation_problem",
]
