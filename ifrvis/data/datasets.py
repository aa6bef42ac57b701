"""Training clips, their collation, lazy inference frames, and the resumable training sampler.

Reproducibility: `TrainSampler` yields `(item, draw)` pairs, `draw` being the sample's position in the
global stream (unique across ranks). `ClipDataset[(item, draw)]` draws its frames, size and flip from a
`numpy.random.Generator` seeded by (dataset seed, item, draw), so the same sampler position gives the
same clip in any worker process and after a resume. `ClipDataset[item]` is `ClipDataset[(item, 0)]`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ifrvis.config import DataConfig
from ifrvis.data.masks import resize_mask
from ifrvis.data.ytvis import YTVIS, DataError

SIZE_DIVISIBILITY = 32


def resized_shape(height: int, width: int, short_side: int, max_long_side: int) -> tuple[int, int]:
    """(h, w) with the shorter side `short_side`, scaled down further so the longer is <= `max_long_side`."""
    scale = short_side / min(height, width)
    if max(height, width) * scale > max_long_side:
        scale = max_long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def frame_tensor(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """An image resized (bilinear) to `size` = (h, w) -> (3, h, w) float32 RGB in [0, 255]."""
    image = image.convert("RGB")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)


def load_frame(ytvis: YTVIS, video: dict, t: int, size: tuple[int, int]) -> torch.Tensor:
    """Frame t of `video` resized (bilinear) to `size` = (h, w) -> (3, h, w) float32 RGB in [0, 255]."""
    path = ytvis.frame_path(video, t)
    try:
        with Image.open(path) as image:
            return frame_tensor(image, size)
    except OSError as error:
        where = f"{ytvis.source}: video {video['id']}: field 'file_names[{t}]'"
        raise DataError(f"{where}: cannot read frame {path}: {error}") from None


def sample_frame_indices(
    rng: np.random.Generator, length: int, clip_length: int, frame_range: int
) -> np.ndarray:
    """`clip_length` sorted frame indices of a `length`-frame video, drawn as Mask2Former-VIS's dataset
    mapper does: a reference frame uniformly, then `clip_length - 1` others uniformly and with replacement
    among the frames at most `frame_range` from it, the reference excluded (a one-frame video repeats its
    frame). For two frames every gap 1..frame_range is about equally likely away from the video's ends."""
    reference = int(rng.integers(length))
    if clip_length == 1:
        return np.array([reference], dtype=np.int64)
    window = np.arange(max(0, reference - frame_range), min(length, reference + frame_range + 1))
    others = window[window != reference]
    if others.size == 0:
        others = np.array([reference])
    picked = rng.choice(others, size=clip_length - 1, replace=True)
    return np.sort(np.append(picked, reference)).astype(np.int64)


class ClipDataset(torch.utils.data.Dataset):
    """Clips of `data_cfg.clip_length` frames, one item per video of `ytvis`.

    Item: `images (T, 3, H, W)` float32 RGB in [0, 255], `labels (M,)` int64 contiguous class indices
    (K, the number of categories, for "no object"), `masks (M, T, H, W)` bool, `present (M, T)` bool,
    `instance_ids (M,)` int64, `video_id` int, `frame_indices (T,)` int64.

    The targets are Mask2Former-VIS's video mapper's: crowd annotations (`iscrowd` != 0) are dropped;
    masks are resized as detectron2 resizes them (PIL NEAREST); an instance whose mask is empty in all T
    frames at the new size is dropped; with `data.clip_label = "last_frame"` an instance absent (null
    segmentation) from the clip's last frame is "no object" for the whole clip, its masks still targets
    ("category": its annotation's category). Training: shorter side drawn from `train_short_sides`
    (longer side <= `max_long_side`), horizontal flip of the whole clip. Evaluation (`train=False`):
    `test_short_side`, no flip."""

    def __init__(self, ytvis: YTVIS, data_cfg: DataConfig, train: bool = True, seed: int = 0):
        if data_cfg.clip_length < 1:
            raise ValueError(f"data.clip_length must be >= 1, got {data_cfg.clip_length}")
        if data_cfg.sampling_frame_range < 0:
            raise ValueError(f"data.sampling_frame_range must be >= 0, got {data_cfg.sampling_frame_range}")
        if train and not data_cfg.train_short_sides:
            raise ValueError("data.train_short_sides is empty")
        if not ytvis.has_annotations:
            raise DataError(f"{ytvis.source}: training clips need a split with 'annotations'")
        self.ytvis, self.cfg, self.train, self.seed = ytvis, data_cfg, train, seed

    def __len__(self) -> int:
        return len(self.ytvis.videos)

    def rng_for(self, item: int, draw: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, item, draw])

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        item, draw = (key, 0) if isinstance(key, (int, np.integer)) else key
        item, draw = int(item), int(draw)
        rng = self.rng_for(item, draw)
        video = self.ytvis.videos[item]
        frames = sample_frame_indices(
            rng, len(video["file_names"]), self.cfg.clip_length, self.cfg.sampling_frame_range
        )
        if self.train:
            short_side = int(self.cfg.train_short_sides[int(rng.integers(len(self.cfg.train_short_sides)))])
            flip = bool(self.cfg.hflip and rng.random() < 0.5)
        else:
            short_side, flip = self.cfg.test_short_side, False
        size = resized_shape(int(video["height"]), int(video["width"]), short_side, self.cfg.max_long_side)
        images = torch.stack([load_frame(self.ytvis, video, int(t), size) for t in frames])
        instances = self._instances(video, frames, size)
        if flip:
            images = images.flip(-1)
            instances["masks"] = instances["masks"].flip(-1)
        return {
            "images": images,
            **instances,
            "video_id": int(video["id"]),
            "frame_indices": torch.from_numpy(frames),
        }

    def _instances(self, video: dict, frames: np.ndarray, size: tuple[int, int]) -> dict:
        """The clip's training targets at `frames`, masks resized to `size` (see the class docstring)."""
        no_object = len(self.ytvis.category_ids)
        last = int(frames[-1])  # frames are sorted
        labels, ids, masks = [], [], []
        for ann in self.ytvis.annotations_of(video["id"]):
            if ann.get("iscrowd", 0) != 0 or all(ann["segmentations"][int(t)] is None for t in frames):
                continue
            shown_last = ann["segmentations"][last] is not None
            category = self.ytvis.label_of(ann["category_id"])
            labels.append(category if shown_last or self.cfg.clip_label == "category" else no_object)
            ids.append(int(ann["id"]))
            masks.append(np.stack([resize_mask(self.ytvis.decode_frame(ann, int(t)), size) for t in frames]))
        if not masks:
            return {
                "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros((0, len(frames), *size), dtype=torch.bool),
                "present": torch.zeros((0, len(frames)), dtype=torch.bool),
                "instance_ids": torch.zeros(0, dtype=torch.int64),
            }
        resized = torch.from_numpy(np.stack(masks))  # (M, T, h, w)
        present = resized.flatten(2).any(-1)
        keep = present.any(-1)  # an instance may vanish at the new size
        return {
            "labels": torch.tensor(labels, dtype=torch.int64)[keep],
            "masks": resized[keep],
            "present": present[keep],
            "instance_ids": torch.tensor(ids, dtype=torch.int64)[keep],
        }


def padded_shape(height: int, width: int, divisibility: int = SIZE_DIVISIBILITY) -> tuple[int, int]:
    return math.ceil(height / divisibility) * divisibility, math.ceil(width / divisibility) * divisibility


def padded_batch(shape: tuple[int, ...], pad_value: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """A float32 tensor of `shape` (..., 3, Hp, Wp) filled with `pad_value` (3 values, one per channel).

    Images are padded with the model's pixel mean, i.e. with zero after normalisation, as Mask2Former
    pads: what its COCO weights saw."""
    fill = torch.as_tensor(pad_value, dtype=torch.float32).reshape(3, 1, 1)
    return fill.expand(shape).clone()


def collate_clips(items: Sequence[dict], pad_value: Sequence[float]) -> tuple[torch.Tensor, list[dict]]:
    """Items -> (images (B, T, 3, Hp, Wp) padded to a multiple of 32 with `pad_value` (`model.pixel_mean`),
    targets with masks padded with False). Each target keeps the item's keys except `images`, plus
    `image_size` (h, w) before padding."""
    heights = [item["images"].shape[-2] for item in items]
    widths = [item["images"].shape[-1] for item in items]
    hp, wp = padded_shape(max(heights), max(widths))
    t = items[0]["images"].shape[0]
    images = padded_batch((len(items), t, 3, hp, wp), pad_value)
    targets = []
    for b, item in enumerate(items):
        h, w = item["images"].shape[-2:]
        images[b, :, :, :h, :w] = item["images"]
        masks = torch.zeros((*item["masks"].shape[:2], hp, wp), dtype=torch.bool)
        masks[..., :h, :w] = item["masks"]
        target = {key: value for key, value in item.items() if key != "images"}
        target["masks"] = masks
        target["image_size"] = (int(h), int(w))
        targets.append(target)
    return images, targets


def landscape_items(ytvis: YTVIS) -> list[bool]:
    """One bool per video of `ytvis`: wider than high (detectron2's aspect-ratio bucket 0)."""
    return [int(video["width"]) > int(video["height"]) for video in ytvis.videos]


class VideoFrames:
    """The frames of one video for inference, read and resized only when indexed.

    `len()`, `[t] -> (3, h, w)` float32 RGB in [0, 255], `.size` (h, w) after resizing, `.orig_size`
    (H, W) as declared by the data set."""

    def __init__(self, ytvis: YTVIS, video: dict | int, short_side: int, max_long_side: int):
        self.ytvis = ytvis
        self.video = video if isinstance(video, dict) else ytvis.video(video)
        self.orig_size = (int(self.video["height"]), int(self.video["width"]))
        self.size = resized_shape(*self.orig_size, short_side, max_long_side)

    def __len__(self) -> int:
        return len(self.video["file_names"])

    def __getitem__(self, t: int) -> torch.Tensor:
        if not -len(self) <= t < len(self):
            raise IndexError(f"frame {t} of a {len(self)}-frame video")
        return load_frame(self.ytvis, self.video, t % len(self), self.size)


class TrainSampler(torch.utils.data.Sampler):
    """Endless deterministic stream of `(item, draw)` for this rank: the global stream concatenates
    seeded permutations of `range(num_items)`; rank r takes global positions r, r + world_size, ...;
    `draw` is the global position. `state_dict()` holds the position, so a resumed sampler continues
    the very same stream."""

    def __init__(self, num_items: int, seed: int, rank: int = 0, world_size: int = 1):
        if num_items < 1:
            raise ValueError(f"TrainSampler needs at least one item, got {num_items}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.num_items, self.seed, self.rank, self.world_size = num_items, seed, rank, world_size
        self.position = 0  # samples this rank has yielded

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_items)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, permutation = -1, None
        while True:
            draw = self.position * self.world_size + self.rank
            if draw // self.num_items != epoch:
                epoch = draw // self.num_items
                permutation = self._permutation(epoch)
            self.position += 1
            yield int(permutation[draw % self.num_items]), draw

    def state_dict(self) -> dict:
        return {
            "position": self.position,
            "seed": self.seed,
            "num_items": self.num_items,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "num_items", "world_size"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]}, this sampler {getattr(self, key)}")
        self.position = int(state["position"])


class ClipBatches(torch.utils.data.Sampler):
    """A DataLoader's `batch_sampler`: batches of `size` keys from `sampler`'s stream. With `landscape`
    (one bool per item: its video's width > height), a batch holds one orientation only, as detectron2's
    AspectRatioGroupedDataset groups them: a key waits in its orientation's bucket until that bucket
    holds `size` keys.

    The batches are a function of the sampler's stream from its start; `state_dict(batches)` is the
    state after `batches` batches, and a loaded state replays the stream past them (cheap: keys only,
    no clip is read), so a resumed run continues with the very batches an uninterrupted one draws."""

    def __init__(self, sampler: TrainSampler, size: int, landscape: Sequence[bool] | None = None):
        self.sampler, self.size = sampler, size
        self.landscape = None if landscape is None else np.asarray(landscape, dtype=bool)
        self.done = 0  # batches to pass over before the first one yielded

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        self.sampler.position = 0
        batches = self._batches()
        for _ in range(self.done):
            next(batches)
        yield from batches

    def _batches(self) -> Iterator[list[tuple[int, int]]]:
        buckets: dict[bool, list[tuple[int, int]]] = {False: [], True: []}
        for key in self.sampler:
            bucket = buckets[self.landscape is None or bool(self.landscape[key[0]])]
            bucket.append(key)
            if len(bucket) == self.size:
                yield bucket[:]
                bucket.clear()

    def state_dict(self, batches: int) -> dict:
        return {**self.sampler.state_dict(), "position": 0, "batches": batches}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict({**state, "position": 0})
        self.done = int(state["batches"])
