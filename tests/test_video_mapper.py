"""Mask2Former-VIS's training data mapper, detail by detail, against the reference's logic on small cases:
the clip's class from its last frame ("no object" where the instance is absent there), crowd annotations
dropped, masks resized with PIL NEAREST, batches grouped by aspect ratio, the 2021 Swin-L baseline tested
at its published size."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ifrvis.config import DataConfig, LossConfig, ModelConfig, load_config
from ifrvis.data.datasets import (
    ClipBatches,
    ClipDataset,
    TrainSampler,
    collate_clips,
    landscape_items,
)
from ifrvis.data.masks import encode_rle, resize_mask
from ifrvis.data.synthetic import generate
from ifrvis.data.ytvis import build_ytvis, load_ytvis
from ifrvis.modeling.criterion import SetCriterion
from ifrvis.modeling.matcher import HungarianMatcher, class_cost_matrix, matching_probabilities

SIZE, WIDTH, FRAMES = 32, 43, 6
CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("ytvis")
    generate(out, seed=5, train_videos=4, valid_videos=1, size=SIZE, frames=FRAMES, progress=False)
    return out


@pytest.fixture
def one_instance(folder, tmp_path):
    """A copy of the data whose first video's first instance (category 3 -> class 2) is a box shown in
    frame 0 only; `load(**changes)` applies `changes` to that annotation and loads the split."""
    root = tmp_path / "copy"
    shutil.copytree(folder, root)
    data = json.loads((root / "train.json").read_text())
    video = data["videos"][0]
    ann = next(a for a in data["annotations"] if a["video_id"] == video["id"])
    mask = np.zeros((SIZE, WIDTH), dtype=bool)
    mask[4:12, 5:15] = True
    ann["segmentations"] = [encode_rle(mask, compressed=False)] + [None] * (FRAMES - 1)
    ann["category_id"] = 3

    def load(**changes):
        ann.update(changes)
        (root / "train.json").write_text(json.dumps(data))
        return load_ytvis(root / "train.json", root / "JPEGImages"), ann["id"]

    return load


def two_frame_cfg(**changes) -> DataConfig:
    settings = {"train_short_sides": [SIZE], "max_long_side": 64, "hflip": False, **changes}
    return DataConfig(clip_length=2, sampling_frame_range=1, **settings)


# ---- 1. the clip's class is its last frame's ----


@pytest.mark.parametrize("clip_label", ["last_frame", "category"])
def test_instance_absent_from_the_last_frame_is_no_object(one_instance, clip_label):
    """The reference takes a clip's classes from its last frame, where an absent instance is a dummy
    annotation of class K: the instance shown in frame 0 only is "no object" in clips (0, 1); its mask in
    frame 0 is still a target. `clip_label: category` keeps its class."""
    ytvis, ann_id = one_instance()
    num_classes = len(ytvis.category_ids)
    dataset = ClipDataset(ytvis, two_frame_cfg(clip_label=clip_label))
    seen = 0
    for draw in range(40):
        item = dataset[(0, draw)]
        if item["frame_indices"].tolist() != [0, 1]:
            assert ann_id not in item["instance_ids"].tolist()  # absent from both frames: dropped
            continue
        seen += 1
        row = item["instance_ids"].tolist().index(ann_id)
        expected = num_classes if clip_label == "last_frame" else ytvis.label_of(3)
        assert item["labels"][row] == expected
        assert item["present"][row].tolist() == [True, False] and item["masks"][row, 0].sum() == 80
        others = [r for r in range(len(item["labels"])) if r != row]
        assert all(item["labels"][r] < num_classes for r in others if item["present"][r, 1])
    assert seen > 0


def _clip_with_no_object() -> tuple[dict, dict]:
    """One clip, 2 queries, K = 3: instance 0 of class 1, instance 1 "no object" (label 3)."""
    gt = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    gt[0, :, :2, :2] = True
    gt[1, 0, 2:, 2:] = True
    target = {
        "labels": torch.tensor([1, 3]),
        "masks": gt,
        "present": torch.tensor([[True, True], [True, False]]),
    }
    masks = torch.zeros(1, 2, 2, 4, 4)
    masks[0, 0] = 6 * gt[0].float() - 3
    masks[0, 1] = 6 * gt[1].float() - 3
    return {"pred_logits": torch.tensor([[[-1.0, 2.0, -3.0], [0.5, -0.5, 1.5]]]), "pred_masks": masks}, target


def test_focal_no_object_target_is_an_all_zero_row():
    """IFR's sigmoid focal head: the query matched to a "no object" instance is pushed to 0 on every class,
    as an unmatched query is; its masks are matched and supervised; the class cost of such a target is 0."""
    outputs, target = _clip_with_no_object()
    cfg = LossConfig(num_points=0, deep_supervision=False, lambda_e=0.0)
    ((queries, instances),) = HungarianMatcher(cfg)(outputs, [target])
    assert dict(zip(queries.tolist(), instances.tolist())) == {0: 0, 1: 1}
    losses = SetCriterion(cfg, num_classes=3)(outputs, [target])
    onehot = torch.zeros(1, 2, 3)
    onehot[0, 0, 1] = 1.0  # query 1's row stays zero
    logits = outputs["pred_logits"]
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    p_t = p * onehot + (1 - p) * (1 - onehot)
    focal = (ce * (1 - p_t) ** 2 * (0.25 * onehot + 0.75 * (1 - onehot))).sum() / 2  # 2 instances
    assert losses["loss_cls"].item() == pytest.approx(cfg.class_weight * focal.item(), rel=1e-6)
    probs = matching_probabilities(logits[0], "focal")
    cost = class_cost_matrix(probs, target["labels"], "focal", 0.25, 2.0)
    assert cost[:, 1].tolist() == [0.0, 0.0] and (cost[:, 0] != 0).all()


def test_softmax_no_object_target_is_class_k():
    """Mask2Former-VIS's softmax head: the matched "no object" instance's query is trained towards class K
    (weighted `no_object_weight`, as every query there) and costs -p(no object) in matching."""
    outputs, target = _clip_with_no_object()
    logits = torch.cat([outputs["pred_logits"], torch.tensor([[[0.2], [1.0]]])], -1)  # K + 1 logits
    outputs = {**outputs, "pred_logits": logits}
    cfg = LossConfig(num_points=0, deep_supervision=False, lambda_e=0.0, class_loss="softmax")
    losses = SetCriterion(cfg, num_classes=3)(outputs, [target])
    ((queries, instances),) = HungarianMatcher(cfg)(outputs, [target])
    assert dict(zip(queries.tolist(), instances.tolist())) == {0: 0, 1: 1}
    log_p = logits[0].log_softmax(-1)
    weights = [1.0, 0.1]  # query 0: class 1 (weight 1); query 1: "no object" (weight 0.1)
    expected = -(weights[0] * log_p[0, 1] + weights[1] * log_p[1, 3]) / sum(weights)
    assert losses["loss_cls"].item() == pytest.approx(cfg.class_weight * expected.item(), rel=1e-6)
    probs = matching_probabilities(logits[0], "softmax")
    cost = class_cost_matrix(probs, target["labels"], "prob", 0.25, 2.0)
    assert torch.allclose(cost[:, 1], -logits[0].softmax(-1)[:, 3])


# ---- 2. crowd annotations ----


def test_crowd_annotation_is_no_target(one_instance):
    """The reference keeps `obj.get("iscrowd", 0) == 0` only: a crowd instance gives no target."""
    ytvis, ann_id = one_instance(iscrowd=1)
    dataset = ClipDataset(ytvis, two_frame_cfg(clip_label="category"))
    for draw in range(20):
        assert ann_id not in dataset[(0, draw)]["instance_ids"].tolist()
    ytvis, ann_id = one_instance(iscrowd=0)
    dataset = ClipDataset(ytvis, two_frame_cfg(clip_label="category"))
    assert any(ann_id in dataset[(0, draw)]["instance_ids"].tolist() for draw in range(20))


# ---- 3. masks resized with PIL NEAREST ----


def _disc(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return (ys - 0.41 * height) ** 2 + (xs - 0.57 * width) ** 2 < (0.3 * min(height, width)) ** 2


@pytest.mark.parametrize(
    "source, size", [((187, 333), (100, 178)), ((96, 128), (150, 200)), ((720, 1280), (360, 640))]
)
def test_resize_mask_is_pil_nearest(source, size):
    """detectron2 resizes segmentations with PIL NEAREST; torch's `nearest` picks other pixels (the
    control: the two differ on the first case)."""
    mask = _disc(*source)
    expected = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(size[::-1], Image.NEAREST)) > 0
    np.testing.assert_array_equal(resize_mask(mask, size), expected)
    if source == (187, 333):
        torch_nearest = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=size, mode="nearest")
        assert (torch_nearest[0, 0].bool().numpy() != expected).sum() > 0


def test_clip_masks_are_resized_with_pil_nearest(folder):
    """Through the dataset: a 32x43 video trained at short side 45 (masks upscaled to 45x60)."""
    ytvis = load_ytvis(folder / "train.json", folder / "JPEGImages")
    dataset = ClipDataset(ytvis, two_frame_cfg(train_short_sides=[45], clip_label="category"))
    item = dataset[(1, 3)]
    assert item["masks"].shape[-2:] == (45, 60) and len(item["instance_ids"]) > 0
    for ann_id, masks in zip(item["instance_ids"].tolist(), item["masks"]):
        ann = next(a for a in ytvis.raw["annotations"] if a["id"] == ann_id)
        for t, mask in zip(item["frame_indices"].tolist(), masks):
            full = ytvis.decode_frame(ann, t).astype(np.uint8)
            pil = np.asarray(Image.fromarray(full).resize((60, 45), Image.NEAREST)) > 0
            np.testing.assert_array_equal(mask.numpy(), pil)


# ---- 4. aspect-ratio grouping ----


def reference_grouping(keys: list, landscape: list[bool], size: int) -> list[list]:
    """detectron2's AspectRatioGroupedDataset over a stream: bucket 0 if w > h else 1, a batch when a
    bucket holds `size`."""
    buckets, batches = ([], []), []
    for key in keys:
        bucket = buckets[0 if landscape[key[0]] else 1]
        bucket.append(key)
        if len(bucket) == size:
            batches.append(bucket[:])
            del bucket[:]
    return batches


def mixed_aspect_ytvis():
    """Seven videos, three of them portrait, as a validated split (no frame files needed)."""
    sizes = [(96, 128), (128, 96), (96, 128), (90, 160), (160, 90), (100, 100), (96, 128)]
    videos = [
        {"id": i + 1, "height": h, "width": w, "length": 1, "file_names": [f"{i}/0.jpg"]}
        for i, (h, w) in enumerate(sizes)
    ]
    raw = {"videos": videos, "categories": [{"id": 1, "name": "a"}], "annotations": []}
    return build_ytvis(raw, "mixed.json", Path("."))


def test_batches_are_grouped_by_orientation_as_detectron2():
    ytvis = mixed_aspect_ytvis()
    landscape = landscape_items(ytvis)
    assert landscape == [True, False, True, True, False, False, True]  # square: not landscape, as detectron2
    sampler = TrainSampler(len(landscape), seed=3)
    stream = iter(TrainSampler(len(landscape), seed=3))
    expected = reference_grouping([next(stream) for _ in range(200)], landscape, 4)
    batches = iter(ClipBatches(sampler, 4, landscape))
    got = [next(batches) for _ in range(len(expected))]
    assert got == expected
    assert all(len({landscape[item] for item, _ in batch}) == 1 for batch in got)
    assert any(not landscape[batch[0][0]] for batch in got) and any(landscape[batch[0][0]] for batch in got)
    ungrouped = iter(ClipBatches(TrainSampler(len(landscape), seed=3), 4))
    stream = iter(TrainSampler(len(landscape), seed=3))
    assert next(ungrouped) == [next(stream) for _ in range(4)]


@pytest.mark.parametrize("workers", [0, 1])
def test_grouped_batches_resume_where_they_stopped(folder, workers):
    """A state taken after k batches, loaded before the loader starts (whose workers draw at once),
    continues with batch k + 1 of the uninterrupted stream."""
    landscape = [True, False, True, True]
    whole = iter(ClipBatches(TrainSampler(4, seed=1, rank=1, world_size=2), 2, landscape))
    expected = [next(whole) for _ in range(9)]
    state = ClipBatches(TrainSampler(4, seed=1, rank=1, world_size=2), 2, landscape).state_dict(batches=6)
    resumed = ClipBatches(TrainSampler(4, seed=1, rank=1, world_size=2), 2, landscape)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    ytvis = load_ytvis(folder / "train.json", folder / "JPEGImages")
    loader = torch.utils.data.DataLoader(
        ClipDataset(ytvis, two_frame_cfg()),
        batch_sampler=resumed,
        collate_fn=partial(collate_clips, pad_value=ModelConfig().pixel_mean),
        num_workers=workers,
    )
    batches = iter(loader)
    for keys in expected[6:]:
        _, targets = next(batches)
        assert [t["video_id"] for t in targets] == [int(ytvis.videos[item]["id"]) for item, _ in keys]
    with pytest.raises(ValueError, match="world_size"):
        ClipBatches(TrainSampler(4, seed=1), 2).load_state_dict(state)


# ---- 5. test sizes ----


@pytest.mark.parametrize("name", ["ytvis21_swin_l_mask2former", "ytvis21_swin_l_200_mask2former"])
def test_2021_swin_l_baselines_test_at_the_published_360(name):
    """Mask2Former-VIS's 2021 Swin-L config keeps MIN_SIZE_TEST 360 (480 commented out: OOM)."""
    assert load_config(CONFIGS / f"{name}.yaml").data.test_short_side == 360
    assert load_config(CONFIGS / f"{name}_holdout.yaml").data.test_short_side == 360
    assert load_config(CONFIGS / "ytvis21_swin_l.yaml").data.test_short_side == 480  # IFR: the paper's
