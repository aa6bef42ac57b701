"""Synthetic benchmark: masks survive the round trip, output is deterministic, pycocotools reads it."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ifrvis.cli import main as cli_main
from ifrvis.data.masks import mask_area, mask_bbox
from ifrvis.data.synthetic import (
    CATEGORIES,
    InstanceSpec,
    fold,
    generate,
    render,
    shape_mask,
)
from ifrvis.data.ytvis import load_ytvis

SIZE, WIDTH = 32, 43  # frames 32 x 43: non-square so that H/W mix-ups show


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    drawn = generate(out, seed=3, train_videos=6, valid_videos=3, size=SIZE, frames=7, progress=False)
    return out, drawn


def test_round_trip_masks_areas_bboxes(tiny):
    out, drawn = tiny
    for split in ("train", "valid"):
        data = load_ytvis(out / f"{split}.json", out / "JPEGImages")
        assert data.has_annotations and len(data.raw["annotations"]) == len(drawn[split])
        for ann in data.raw["annotations"]:
            expected = drawn[split][ann["id"]]
            assert expected.shape == (7, SIZE, WIDTH)
            masks, present = data.decode_instance(ann)
            np.testing.assert_array_equal(masks, expected)
            np.testing.assert_array_equal(present, expected.any(axis=(1, 2)))
            for t, mask in enumerate(expected):
                if mask.any():
                    assert ann["areas"][t] == mask_area(mask) and ann["bboxes"][t] == mask_bbox(mask)
                else:
                    assert (
                        ann["segmentations"][t] is None
                        and ann["areas"][t] is None
                        and ann["bboxes"][t] is None
                    )
            assert ann["iscrowd"] == 0
            counts = next(s["counts"] for s in ann["segmentations"] if s is not None)
            # train.json holds uncompressed RLE like the real data, valid.json compressed RLE
            assert isinstance(counts, list if split == "train" else str)


def test_frames_exist_with_declared_size(tiny):
    out, _ = tiny
    data = json.loads((out / "valid.json").read_text())
    assert {c["name"] for c in data["categories"]} == {c["name"] for c in CATEGORIES} and len(CATEGORIES) >= 4
    for video in data["videos"]:
        assert (video["height"], video["width"], video["length"]) == (SIZE, WIDTH, 7)
        for name in video["file_names"]:
            with Image.open(out / "JPEGImages" / name) as image:
                assert image.size == (WIDTH, SIZE) and image.mode == "RGB"


def test_same_seed_same_bytes_other_seed_differs(tmp_path, tiny):
    out, _ = tiny
    generate(tmp_path / "again", seed=3, train_videos=6, valid_videos=3, size=SIZE, frames=7, progress=False)
    generate(tmp_path / "other", seed=4, train_videos=6, valid_videos=3, size=SIZE, frames=7, progress=False)
    for name in ("train.json", "valid.json"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()
        assert (tmp_path / "other" / name).read_bytes() != (out / name).read_bytes()


def test_cli_output_decodes_with_plain_pycocotools(tmp_path):
    out = tmp_path / "cli"
    args = [
        "synth",
        "--out",
        str(out),
        "--seed",
        "1",
        "--train-videos",
        "2",
        "--valid-videos",
        "2",
        "--size",
        "24",
        "--frames",
        "5",
        "--no-progress",
    ]
    assert cli_main(args) == 0
    assert cli_main(args) == 2  # refuses to overwrite without --force: a user's error, one line
    assert cli_main([*args, "--force"]) == 0
    for name in ("train.json", "valid.json"):
        data = json.loads((out / name).read_text())
        for ann in data["annotations"]:
            video = next(v for v in data["videos"] if v["id"] == ann["video_id"])
            h, w = video["height"], video["width"]
            assert (h, w) == (24, 32)
            for seg, area in zip(ann["segmentations"], ann["areas"]):
                if seg is None:
                    continue
                rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
                decoded = mask_utils.decode(rle)
                assert decoded.shape == (h, w) and int(decoded.sum()) == area


def test_default_split_has_absent_frames_and_varied_instances(tmp_path):
    generate(tmp_path, seed=0, train_videos=24, valid_videos=0, size=32, frames=12, progress=False)
    data = json.loads((tmp_path / "train.json").read_text())
    per_video = Counter(a["video_id"] for a in data["annotations"])
    assert set(per_video.values()) <= set(range(1, 6)) and len(set(per_video.values())) >= 3
    assert any(s is None for a in data["annotations"] for s in a["segmentations"])  # entering / leaving
    assert len({a["category_id"] for a in data["annotations"]}) == len(CATEGORIES)


def test_crossing_split_has_same_category_instances_that_occlude(tmp_path):
    drawn = generate(
        tmp_path,
        seed=5,
        train_videos=0,
        valid_videos=4,
        size=48,
        frames=16,
        split_style="crossing",
        progress=False,
    )
    data = json.loads((tmp_path / "valid.json").read_text())
    occluded_somewhere = False
    for video in data["videos"]:
        anns = [a for a in data["annotations"] if a["video_id"] == video["id"]]
        top_category, count = Counter(a["category_id"] for a in anns).most_common(1)[0]
        assert count >= 2
        same = [drawn["valid"][a["id"]] for a in anns if a["category_id"] == top_category]
        areas = np.array([m.sum(axis=(1, 2)) for m in same])  # (instances, T)
        # a visible area that dips while the instance is on screen: someone passes in front of it
        occluded_somewhere |= bool(((areas[:, 1:-1] < 0.8 * areas[:, :-2]) & (areas[:, 2:] > 0)).any())
    assert occluded_somewhere


def _spec(category_id: int, x: float, y: float, radius: float) -> InstanceSpec:
    return InstanceSpec(
        category_id=category_id,
        start=np.array([x, y]),
        velocity=np.zeros(2),
        bounce=False,
        radius=radius,
        growth=0.0,
        angle=0.0,
        spin=0.0,
        colour=np.array([255.0, 0, 0]),
        colour2=np.array([255.0, 0, 0]),
        texture="solid",
        frequency=1.0,
    )


def test_render_ground_truth_is_the_visible_mask():
    far, near = _spec(1, 10, 10, 6), _spec(2, 14, 10, 5)  # a disc partly behind a square
    frames, visible = render([far, near], np.random.default_rng(0), 2, 20, 30)
    ys, xs = np.mgrid[0:20, 0:30].astype(float)
    disc = shape_mask("disc", (xs - 10) / 6, (ys - 10) / 6)
    square = shape_mask("square", (xs - 14) / 5, (ys - 10) / 5)
    np.testing.assert_array_equal(visible[1][0], square)
    np.testing.assert_array_equal(visible[0][0], disc & ~square)
    assert frames.shape == (2, 20, 30, 3) and frames.dtype == np.uint8
    assert (frames[0][square] == [255, 0, 0]).all()


def test_bouncing_reflects_into_bounds():
    np.testing.assert_allclose(fold(np.array([3.0, 12.0, -2.0, 25.0]), 0, 10), [3.0, 8.0, 2.0, 5.0])
