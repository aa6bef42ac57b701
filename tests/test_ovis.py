"""OVIS: a tiny folder written as the release lays it out (annotations_{train,valid,test}.json beside
{train,valid,test}/<video>/img_<n>.jpg; the valid and test files list `"annotations": null`), read by
`ifrvis check-data` and by the dataset reader with the OVIS configs, every one of which loads.
Written with numpy, PIL and pycocotools only, independently of the package's writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image
from pycocotools import mask as mask_utils

from ifrvis.cli import main
from ifrvis.config import load_config, semantic_dict
from ifrvis.data.check import LAYOUTS
from ifrvis.data.datasets import ClipDataset, VideoFrames, collate_clips
from ifrvis.data.splits import load_splits, split_files
from ifrvis.modeling import build_model

CONFIG_DIR = ROOT / "experiments" / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("ovis_*.yaml"))
# The names as the release's JSON spells them (its "Giant_panda" and "Vehical"), ids 1-25.
OVIS_NAMES = (
    "Person Bird Cat Dog Horse Sheep Cow Elephant Bear Zebra Giraffe Poultry Giant_panda Lizard Parrot "
    "Monkey Rabbit Tiger Fish Turtle Bicycle Motorcycle Airplane Boat Vehical"
).split()
CATEGORIES = [{"supercategory": "object", "id": i + 1, "name": n} for i, n in enumerate(OVIS_NAMES)]
# split -> [(video id, folder, (height, width), frames)]: 16:9 and 4:3 videos in one split
VIDEOS = {
    "train": [(1, "2fb5a55b", (36, 64), 3), (2, "5d24e4ea", (48, 64), 2), (3, "9c0e1a77", (36, 64), 2)],
    "valid": [(1, "0b97736c", (36, 64), 2), (2, "61a2c3f0", (48, 64), 3)],
    "test": [(1, "7e1dd0a2", (36, 64), 2)],
}


def rle(mask: np.ndarray, compressed: bool) -> dict:
    """(H, W) bool -> COCO RLE: compressed ('counts' a string) or uncompressed (run lengths)."""
    if compressed:
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": list(mask.shape), "counts": encoded["counts"].decode("ascii")}
    flat = mask.ravel(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": [0, *counts] if flat[0] else counts}


def instance(video_id: int, k: int, size: tuple[int, int], length: int, frames: np.ndarray) -> dict:
    """Instance k of a video: a box moving right, absent (null) in its last frame when k is odd;
    painted into `frames` (T, H, W, 3)."""
    height, width = size
    segmentations, areas, bboxes = [], [], []
    for t in range(length):
        if k % 2 and t == length - 1:
            segmentations.append(None), areas.append(None), bboxes.append(None)
            continue
        y0, x0, h, w = 4 + 12 * k, 2 + 5 * t + 20 * k, 10, 14
        mask = np.zeros(size, dtype=bool)
        mask[y0 : y0 + h, x0 : x0 + w] = True
        frames[t][mask] = (200, 40 + 90 * k, 60)
        segmentations.append(rle(mask, compressed=(t + k) % 2 == 0))
        areas.append(int(mask.sum()))
        bboxes.append([float(x0), float(y0), float(w), float(h)])
    return {
        "id": 10 * video_id + k,
        "video_id": video_id,
        "category_id": CATEGORIES[(video_id + 7 * k) % len(CATEGORIES)]["id"],
        "segmentations": segmentations,
        "areas": areas,
        "bboxes": bboxes,
        "iscrowd": 0,
        "height": height,
        "width": width,
        "length": 1,
    }


def write_split(root: Path, split: str) -> dict:
    """annotations_<split>.json and <split>/<video>/img_0000001.jpg, ...; annotations for train only."""
    raw: dict = {
        "info": {"description": f"OVIS {split}", "version": "1.0", "year": 2021},
        "licenses": [{"id": 1, "name": "CC BY-NC-SA 4.0", "url": ""}],
        "videos": [],
        "categories": CATEGORIES,
        "annotations": [] if split == "train" else None,
    }
    rng = np.random.default_rng(0)
    for video_id, folder, size, length in VIDEOS[split]:
        names = [f"{folder}/img_{t + 1:07d}.jpg" for t in range(length)]
        raw["videos"].append(
            {
                "id": video_id,
                "width": size[1],
                "height": size[0],
                "length": length,
                "file_names": names,
                "license": 1,
                "flickr_url": "",
                "coco_url": "",
                "date_captured": "2021-03-01 00:00:00.000000",
            }
        )
        frames = rng.integers(0, 80, size=(length, *size, 3), dtype=np.uint8)
        for k in range(2):
            ann = instance(video_id, k, size, length, frames)
            if split == "train":
                raw["annotations"].append(ann)
        for t, name in enumerate(names):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(frames[t]).save(root / split / name, quality=90)
    (root / f"annotations_{split}.json").write_text(json.dumps(raw))
    return raw


@pytest.fixture
def ovis(tmp_path) -> Path:
    for split in VIDEOS:
        write_split(tmp_path, split)
    return tmp_path


def check(capsys, *args) -> tuple[int, str]:
    status = main(["check-data", *map(str, args)])
    return status, capsys.readouterr().out


def load(path: Path, *overrides: str):
    return load_config(path, ["model.weights=", *overrides])  # the COCO checkpoints are not shipped


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_ovis_config_loads(path):
    cfg = load(path)
    assert cfg.model.num_classes == len(OVIS_NAMES) and cfg.dataset.startswith("ovis")
    assert (cfg.solver.max_iters, cfg.solver.steps, cfg.solver.batch_size) == (10000, [7000], 16)
    assert cfg.data.test_short_side == (480 if cfg.model.backbone == "swin_l" else 360)
    assert cfg.model.num_queries == (200 if "_200" in path.stem else 100)
    assert (cfg.loss.class_loss == "softmax") == ("_mask2former" in path.stem)
    assert cfg.name == path.stem
    # the config reads the files where check-data's OVIS layout finds them
    files = {name: (json, images) for name, (json, images) in LAYOUTS["OVIS"].items() if name != "test"}
    expected = files if cfg.data.holdout_videos == 0 else {"train": files["train"]}
    assert {k: (str(j), str(i)) for k, (j, i) in split_files(cfg.data).items()} == {
        k: (f"{cfg.data.root}/{j}", f"{cfg.data.root}/{i}") for k, (j, i) in expected.items()
    }


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem.endswith("_holdout")], ids=lambda p: p.stem)
def test_holdout_configs_change_only_the_validation_split(path):
    holdout, base = load(path), load(path.with_name(path.stem.removesuffix("_holdout") + ".yaml"))
    assert holdout.dataset == "ovis-holdout"
    left, right = semantic_dict(holdout), semantic_dict(base)
    assert {k: (left[k], right[k]) for k in left if left[k] != right[k]} == {
        "data.valid_json": ("", "annotations_valid.json"),
        "data.holdout_videos": (100, 0),
    }


def test_check_data_passes_on_the_release_layout(capsys, ovis):
    status, out = check(capsys, ovis)
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0] == f"{ovis} (OVIS layout)" and lines[-1] == "no problems found"
    assert "train: annotations_train.json, frames in train" in lines
    assert "  3 videos, 7 frames, 6 instances" in lines
    assert "  2 videos, 5 frames, no annotations" in lines
    assert "test: annotations_test.json, frames in test" in lines
    status, out = check(capsys, ovis, "--config", CONFIG_DIR / "ovis_r50.yaml")  # 25 classes
    assert status == 0, out


def test_check_data_names_a_missing_frame(capsys, ovis):
    (ovis / "valid" / "61a2c3f0" / "img_0000002.jpg").unlink()
    status, out = check(capsys, ovis)
    assert status == 1
    missing = f"frame file {ovis / 'valid' / '61a2c3f0' / 'img_0000002.jpg'} is missing"
    assert f"annotations_valid.json: video 2: field 'file_names[1]': {missing}" in out
    assert out.splitlines()[-1] == "1 problem found (valid 1)"


def test_the_reader_reads_a_clip_and_a_video(ovis):
    cfg = load(CONFIG_DIR / "ovis_r50.yaml", f"data.root={ovis}", "data.train_short_sides=[36]")
    train_set, valid_set = load_splits(cfg.data)
    assert len(train_set) == 3 and train_set.has_annotations and not valid_set.has_annotations
    assert [c["name"] for c in train_set.categories] == OVIS_NAMES
    item = ClipDataset(train_set, cfg.data, seed=0)[0]  # video 1: 3 frames of 64x36
    assert item["images"].shape == (2, 3, 36, 64) and item["masks"].shape[:2] == (2, 2)
    last = int(item["frame_indices"][-1])  # an instance absent there is "no object" (K = 25) for the clip
    assert item["labels"].tolist() == [
        train_set.label_of(a["category_id"]) if a["segmentations"][last] is not None else len(OVIS_NAMES)
        for a in train_set.annotations_of(1)
    ]
    images, targets = collate_clips([item], cfg.model.pixel_mean)
    assert images.shape == (1, 2, 3, 64, 64) and targets[0]["image_size"] == (36, 64)
    frames = VideoFrames(valid_set, 2, cfg.data.test_short_side, cfg.data.max_long_side)
    assert len(frames) == 3 and frames[2].shape == (3, *frames.size) and frames.orig_size == (48, 64)


def test_the_holdout_split_draws_from_train(ovis):
    cfg = load(CONFIG_DIR / "ovis_r50_holdout.yaml", f"data.root={ovis}", "data.holdout_videos=1")
    train_set, valid_set = load_splits(cfg.data)
    assert (len(train_set), len(valid_set)) == (2, 1) and valid_set.has_annotations


@pytest.mark.parametrize("name", ["ovis_r50", "ovis_r50_mask2former"])
def test_the_model_predicts_ovis_categories(name):
    """25 class logits (+ the no-object one for the baseline); R50 only: Swin-L builds take seconds,
    and test_paper_configs builds every backbone already."""
    cfg = load(CONFIG_DIR / f"{name}.yaml")
    model = build_model(cfg.model, cfg.loss.class_loss).eval()
    with torch.no_grad():
        outputs = model(torch.rand(1, 2, 3, 64, 64) * 255)
    assert outputs["pred_logits"].shape == (1, 100, 25 + (cfg.loss.class_loss == "softmax"))
