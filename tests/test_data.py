"""YouTube-VIS loader errors, holdout split, training clips, lazy inference frames, resumable sampler."""

from __future__ import annotations

import json
import shutil
from functools import partial

import numpy as np
import pytest
import torch

from ifrvis.config import DataConfig, ModelConfig
from ifrvis.data.datasets import (
    ClipDataset,
    TrainSampler,
    VideoFrames,
    collate_clips,
    resized_shape,
    sample_frame_indices,
)
from ifrvis.data.masks import compressed_rle_counts, encode_rle, segmentation_problem
from ifrvis.data.splits import load_splits
from ifrvis.data.synthetic import generate
from ifrvis.data.ytvis import DataError, build_ytvis, find_problems, load_ytvis

SIZE, WIDTH, FRAMES = 32, 43, 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("ytvis")
    generate(out, seed=11, train_videos=8, valid_videos=2, size=SIZE, frames=FRAMES, progress=False)
    return out


@pytest.fixture
def broken(folder, tmp_path):
    """A writable copy of the folder and its train.json as a dict; `save(data)` rewrites it."""
    shutil.copytree(folder, tmp_path / "copy")
    root = tmp_path / "copy"
    data = json.loads((root / "train.json").read_text())

    def save(changed: dict):
        (root / "train.json").write_text(json.dumps(changed))
        return root / "train.json", root / "JPEGImages"

    return root, data, save


def _cfg(**changes) -> DataConfig:
    cfg = DataConfig(train_short_sides=[32, 48], max_long_side=60, sampling_frame_range=3, clip_length=3)
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


# ---- loading and its errors ----


def test_missing_and_corrupt_json(tmp_path):
    with pytest.raises(DataError, match="nothere.json: file not found"):
        load_ytvis(tmp_path / "nothere.json", tmp_path)
    (tmp_path / "bad.json").write_text('{"videos": [')
    with pytest.raises(DataError, match="bad.json: not a readable JSON"):
        load_ytvis(tmp_path / "bad.json", tmp_path)
    (tmp_path / "novideos.json").write_text('{"categories": []}')
    with pytest.raises(DataError, match="novideos.json: field 'videos'"):
        load_ytvis(tmp_path / "novideos.json", tmp_path)


def test_missing_frame_file(broken):
    root, data, save = broken
    video = data["videos"][2]
    (root / "JPEGImages" / video["file_names"][4]).unlink()
    with pytest.raises(
        DataError, match=rf"train.json: video {video['id']}: field 'file_names\[4\]'.*missing"
    ):
        load_ytvis(*save(data))
    assert load_ytvis(*save(data), check_files=False).videos[2]["id"] == video["id"]


def test_segmentation_count_differs_from_length(broken):
    _, data, save = broken
    ann = data["annotations"][0]
    ann["segmentations"] = ann["segmentations"][:-1]
    pattern = rf"train.json: video {ann['video_id']}: field 'annotations\[id={ann['id']}\].segmentations'"
    with pytest.raises(DataError, match=pattern + f": {FRAMES - 1} entries for a video of {FRAMES} frames"):
        load_ytvis(*save(data))


def test_mask_size_differs_from_video(broken):
    _, data, save = broken
    ann = data["annotations"][1]
    ann["segmentations"][2] = encode_rle(np.ones((WIDTH, SIZE), dtype=bool), compressed=False)  # H/W swapped
    pattern = rf"video {ann['video_id']}: field 'annotations\[id={ann['id']}\].segmentations\[2\]': mask size"
    with pytest.raises(DataError, match=pattern):
        load_ytvis(*save(data))


def test_unknown_category(broken):
    _, data, save = broken
    data["annotations"][3]["category_id"] = 99
    with pytest.raises(DataError, match=r"field 'annotations\[id=4\].category_id': unknown category id 99"):
        load_ytvis(*save(data))


@pytest.mark.parametrize(
    "section, pattern",
    [
        ("videos", r"train.json: video 1: field 'videos.id': duplicate video id"),
        ("annotations", r"train.json: video \d+: field 'annotations\[id=1\].id': duplicate annotation id"),
        ("categories", r"train.json: field 'categories\[1\].id': duplicate category id 1"),
    ],
)
def test_duplicate_ids(broken, section, pattern):
    _, data, save = broken
    data[section][1]["id"] = data[section][0]["id"]
    with pytest.raises(DataError, match=pattern):
        load_ytvis(*save(data))


def test_length_field_must_match_file_names(broken):
    _, data, save = broken
    data["videos"][0]["length"] = FRAMES + 1
    with pytest.raises(DataError, match=f"video {data['videos'][0]['id']}: field 'length'"):
        load_ytvis(*save(data))


def test_corrupt_rle_is_reported_on_load_and_on_decode(broken):
    _, data, save = broken
    ann = data["annotations"][0]
    t = next(t for t, s in enumerate(ann["segmentations"]) if s is not None)
    good = ann["segmentations"][t]
    ytvis = load_ytvis(*save(data))
    ann["segmentations"][t] = {"size": [SIZE, WIDTH], "counts": "\x7f\x7f!!garbage"}
    where = rf"video {ann['video_id']}: field 'annotations\[id={ann['id']}\].segmentations\[{t}\]'"
    with pytest.raises(DataError, match=where + ": bad compressed RLE counts: characters outside"):
        load_ytvis(*save(data))
    # A dict changed after loading is caught before pycocotools' decoder trusts its runs.
    ytvis.annotations_of(ann["video_id"])[0]["segmentations"][t] = {"size": [SIZE, WIDTH], "counts": "0"}
    with pytest.raises(DataError, match=rf"{where}: cannot decode: .*runs sum to 0, not"):
        ytvis.decode_instance(ytvis.annotations_of(ann["video_id"])[0])
    assert good is not None


def test_load_names_the_first_problem_and_how_many_more(broken):
    _, data, save = broken
    for ann in data["annotations"][:3]:
        ann["category_id"] = 99
    with pytest.raises(DataError, match=r"unknown category id 99 \(and 2 more problems; `ifrvis check-data`"):
        load_ytvis(*save(data))
    problems = find_problems(data, "train.json")
    assert [p.split("field ")[1] for p in problems] == [
        f"'annotations[id={a['id']}].category_id': unknown category id 99" for a in data["annotations"][:3]
    ]


def test_compressed_rle_counts_match_pycocotools():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (40, 300), (300, 40)]:
        for density in (0.0, 0.02, 0.5, 1.0):
            mask = rng.random(shape) < density
            compressed = encode_rle(mask)
            assert compressed_rle_counts(compressed["counts"]).tolist() == encode_rle(mask, False)["counts"]
            assert segmentation_problem(compressed, *shape) is None
    runs = encode_rle(np.eye(4, dtype=bool))["counts"]
    assert segmentation_problem({"size": [4, 4], "counts": runs[:-1]}, 4, 4).startswith("bad compressed")
    assert "runs sum to 17" in segmentation_problem({"size": [4, 4], "counts": [0, 17]}, 4, 4)
    assert "negative" in segmentation_problem({"size": [4, 4], "counts": [-1, 17]}, 4, 4)


def test_null_annotations_are_a_split_without_ground_truth(broken):
    _, data, save = broken
    ytvis = load_ytvis(*save({**data, "annotations": None}))
    assert not ytvis.has_annotations and ytvis.annotations_of(1) == []
    with pytest.raises(DataError, match="train.json: field 'annotations': neither a list nor null"):
        load_ytvis(*save({**data, "annotations": {}}))


def test_split_without_annotations_and_polygons(broken):
    _, data, save = broken
    no_gt = {k: v for k, v in data.items() if k != "annotations"}
    ytvis = load_ytvis(*save(no_gt))
    assert not ytvis.has_annotations and ytvis.annotations_of(1) == []
    with pytest.raises(DataError, match="need a split with 'annotations'"):
        ClipDataset(ytvis, _cfg())
    ann = data["annotations"][0]
    ann["segmentations"][0] = [[2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]]
    masks, present = load_ytvis(*save(data)).decode_instance(ann)
    assert present[0] and masks[0].sum() == 4 * 3 and masks[0][1:4, 2:6].all()


def test_category_ids_sorted_and_contiguous_labels(folder):
    ytvis = load_ytvis(folder / "train.json", folder / "JPEGImages")
    assert ytvis.category_ids == sorted(c["id"] for c in ytvis.categories)
    assert [ytvis.label_of(c) for c in ytvis.category_ids] == list(range(len(ytvis.category_ids)))


# ---- holdout split (Sec. 4.3) ----


def test_holdout_split_disjoint_complete_valid(folder):
    ytvis = load_ytvis(folder / "train.json", folder / "JPEGImages")
    train, valid = ytvis.holdout_split(3, seed=0)
    train_ids = {v["id"] for v in train.videos}
    valid_ids = {v["id"] for v in valid.videos}
    assert len(valid_ids) == 3 and not train_ids & valid_ids
    assert train_ids | valid_ids == {v["id"] for v in ytvis.videos}
    for part, ids in ((train, train_ids), (valid, valid_ids)):
        assert {a["video_id"] for a in part.raw["annotations"]} <= ids
        assert part.raw["categories"] == ytvis.raw["categories"]
        rebuilt = build_ytvis(json.loads(json.dumps(part.raw)), "roundtrip", part.image_root)  # plain JSON
        assert rebuilt.has_annotations
    assert len(train.raw["annotations"]) + len(valid.raw["annotations"]) == len(ytvis.raw["annotations"])
    assert ytvis.holdout_split(3, seed=0)[1].raw == valid.raw
    assert {v["id"] for v in ytvis.holdout_split(3, seed=1)[1].videos} != valid_ids
    with pytest.raises(DataError, match="holdout of 8 videos out of 8"):
        ytvis.holdout_split(8, seed=0)


def test_load_splits_from_files_a_holdout_or_none(folder):
    flat = DataConfig(root=str(folder), train_images="JPEGImages", valid_images="JPEGImages")
    train, valid = load_splits(flat)
    assert (len(train), len(valid)) == (8, 2) and valid.source == str(folder / "valid.json")
    train, valid = load_splits(DataConfig(**{**vars(flat), "holdout_videos": 3, "valid_json": "absent.json"}))
    assert (len(train), len(valid)) == (5, 3) and valid.has_annotations
    assert load_splits(DataConfig(**{**vars(flat), "valid_json": ""}))[1] is None


def test_load_splits_needs_training_annotations_and_the_same_categories(broken):
    root, data, _ = broken
    flat = DataConfig(root=str(root), train_images="JPEGImages", valid_images="JPEGImages")
    valid = json.loads((root / "valid.json").read_text())
    valid["categories"][0]["name"] = "blob"
    (root / "valid.json").write_text(json.dumps(valid))
    with pytest.raises(DataError, match=r"valid.json: field 'categories': differ from .*train.json's"):
        load_splits(flat)
    (root / "train.json").write_text(json.dumps({**data, "annotations": None}))
    with pytest.raises(DataError, match="train.json: field 'annotations': null or missing, but training"):
        load_splits(flat)


# ---- training clips ----


def test_clip_shapes_and_sampling(folder):
    ytvis = load_ytvis(folder / "train.json", folder / "JPEGImages")
    dataset = ClipDataset(ytvis, _cfg(), seed=0)
    assert len(dataset) == 8
    sizes = set()
    for draw in range(12):
        item = dataset[(draw % 8, draw)]
        t, three, h, w = item["images"].shape
        assert (t, three) == (3, 3) and item["images"].dtype == torch.float32
        assert 0 <= item["images"].min() and item["images"].max() <= 255
        assert min(h, w) in (32, 48) or max(h, w) == 60
        assert max(h, w) <= 60
        sizes.add((h, w))
        frames = item["frame_indices"]
        assert frames.shape == (3,) and (frames[1:] >= frames[:-1]).all()
        assert any((frames - r).abs().max() <= 3 for r in frames)  # all within 3 of the reference frame
        m = item["labels"].shape[0]
        assert item["masks"].shape == (m, 3, h, w) and item["masks"].dtype == torch.bool
        assert item["present"].shape == (m, 3) and item["present"].any(-1).all()
        assert torch.equal(item["present"], item["masks"].flatten(2).any(-1))
        assert item["instance_ids"].shape == (m,) and item["video_id"] == ytvis.videos[draw % 8]["id"]
    assert sizes == {(32, 43), (45, 60)}  # 48 * 43/32 = 64.5 > 60 -> long side capped at 60


def exact_gap_distribution(length: int, frame_range: int) -> np.ndarray:
    """P(|t2 - t1| = g) of Mask2Former-VIS's two-frame draw, by enumeration: a uniform reference, then a
    uniform other frame within `frame_range` of it."""
    probs = np.zeros(frame_range + 1)
    for ref in range(length):
        others = [t for t in range(max(0, ref - frame_range), min(length, ref + frame_range + 1)) if t != ref]
        for t in others:
            probs[abs(t - ref)] += 1 / (length * len(others))
    return probs


def test_two_frame_gaps_follow_mask2former_vis_draw():
    """Gaps of 20000 draws against the enumerated law (within 4 standard errors per gap). Away from the
    ends every gap 1..20 is equally likely: the law is flat, not the triangle of a window drawn first."""
    rng = np.random.default_rng(0)
    length, frame_range, draws = 200, 20, 20000
    gaps = [np.diff(sample_frame_indices(rng, length, 2, frame_range))[0] for _ in range(draws)]
    observed = np.bincount(gaps, minlength=frame_range + 1)[: frame_range + 1] / draws
    expected = exact_gap_distribution(length, frame_range)
    assert observed[0] == expected[0] == 0
    stderr = np.sqrt(expected * (1 - expected) / draws)
    assert (np.abs(observed - expected) <= 4 * stderr + 1e-12).all()
    assert observed[1] / observed[20] < 1.5  # a window of 21 drawn first, then 2 frames in it: 20 / 1
    assert sample_frame_indices(rng, 1, 2, frame_range).tolist() == [0, 0]  # a one-frame video
    assert sample_frame_indices(rng, 5, 1, frame_range).shape == (1,)


def test_clip_masks_align_with_ground_truth(folder):
    ytvis = load_ytvis(folder / "train.json", folder / "JPEGImages")
    dataset = ClipDataset(ytvis, _cfg(train_short_sides=[SIZE], hflip=False), seed=0)
    for draw in range(8):
        item = dataset[(draw, draw)]
        frames = item["frame_indices"].numpy()
        for ann_id, masks in zip(item["instance_ids"].tolist(), item["masks"]):
            ann = next(a for a in ytvis.raw["annotations"] if a["id"] == ann_id)
            full, _ = ytvis.decode_instance(ann)
            np.testing.assert_array_equal(masks.numpy(), full[frames])
        in_clip = [
            a["id"]
            for a in ytvis.annotations_of(item["video_id"])
            if any(a["segmentations"][t] is not None for t in frames)
        ]
        assert sorted(item["instance_ids"].tolist()) == sorted(in_clip)


def test_flip_is_consistent_across_the_clip(folder):
    ytvis = load_ytvis(folder / "train.json", folder / "JPEGImages")
    plain = ClipDataset(ytvis, _cfg(hflip=False), seed=4)
    flipping = ClipDataset(ytvis, _cfg(hflip=True), seed=4)
    flipped_count = 0
    for draw in range(16):
        a, b = plain[(draw % 8, draw)], flipping[(draw % 8, draw)]
        assert torch.equal(a["frame_indices"], b["frame_indices"])
        if torch.equal(a["images"], b["images"]):
            assert torch.equal(a["masks"], b["masks"])
            continue
        flipped_count += 1
        assert torch.equal(b["images"], a["images"].flip(-1))  # every frame flipped
        assert torch.equal(b["masks"], a["masks"].flip(-1))
    assert 0 < flipped_count < 16


def test_clip_determinism(folder):
    ytvis = load_ytvis(folder / "train.json", folder / "JPEGImages")
    one, two = ClipDataset(ytvis, _cfg(), seed=7), ClipDataset(ytvis, _cfg(), seed=7)
    for key in [(3, 10), (3, 11), 5]:
        a, b = one[key], two[key]
        assert all(torch.equal(a[k], b[k]) for k in ("images", "masks", "labels", "frame_indices"))
    different = [one[(3, d)]["frame_indices"].tolist() + [one[(3, d)]["images"].shape[-1]] for d in range(10)]
    assert len({tuple(x) for x in different}) > 1  # draws of one video differ


def test_collate_pads_to_multiple_of_32_with_the_pixel_mean(folder):
    ytvis = load_ytvis(folder / "train.json", folder / "JPEGImages")
    dataset = ClipDataset(ytvis, _cfg(), seed=0)
    items = [dataset[(0, 0)], dataset[(1, 1)], dataset[(2, 2)]]
    mean = torch.tensor(ModelConfig().pixel_mean).view(3, 1, 1)
    images, targets = collate_clips(items, ModelConfig().pixel_mean)
    hp, wp = images.shape[-2:]
    assert any(item["images"].shape[-1] < wp for item in items)  # some padding to check
    assert hp % 32 == 0 and wp % 32 == 0 and images.shape[:3] == (3, 3, 3)
    assert hp == -(-max(i["images"].shape[-2] for i in items) // 32) * 32
    for b, (item, target) in enumerate(zip(items, targets)):
        h, w = item["images"].shape[-2:]
        assert target["image_size"] == (h, w)
        assert torch.equal(images[b, :, :, :h, :w], item["images"])
        # Padding is zero after normalisation, as Mask2Former pads.
        assert (images[b, :, :, h:] == mean).all() and (images[b, :, :, :, w:] == mean).all()
        assert target["masks"].shape[-2:] == (hp, wp)
        assert (
            torch.equal(target["masks"][..., :h, :w], item["masks"]) and not target["masks"][..., h:, :].any()
        )
        assert torch.equal(target["labels"], item["labels"]) and "images" not in target


def test_dataloader_with_sampler_batches(folder):
    ytvis = load_ytvis(folder / "train.json", folder / "JPEGImages")
    dataset = ClipDataset(ytvis, _cfg(), seed=0)
    sampler = TrainSampler(len(dataset), seed=0)
    stream = iter(sampler)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[[next(stream) for _ in range(2)]],
        collate_fn=partial(collate_clips, pad_value=ModelConfig().pixel_mean),
    )
    images, targets = next(iter(loader))
    assert images.shape[:3] == (2, 3, 3) and len(targets) == 2


# ---- inference frames ----


def test_video_frames_are_lazy(folder, monkeypatch):
    import ifrvis.data.datasets as datasets

    ytvis = load_ytvis(folder / "valid.json", folder / "JPEGImages")
    opened = []
    real_open = datasets.Image.open
    monkeypatch.setattr(datasets.Image, "open", lambda path: opened.append(path) or real_open(path))
    frames = VideoFrames(ytvis, ytvis.videos[1], short_side=64, max_long_side=1000)
    assert opened == [] and len(frames) == FRAMES
    assert frames.orig_size == (SIZE, WIDTH) and frames.size == (64, 86)
    frame = frames[4]
    assert opened == [ytvis.frame_path(ytvis.videos[1], 4)]
    assert frame.shape == (3, 64, 86) and frame.dtype == torch.float32 and frame.max() <= 255
    assert torch.equal(frames[-1], frames[FRAMES - 1])
    with pytest.raises(IndexError):
        frames[FRAMES]


def test_video_frames_missing_or_corrupt_file_raises_on_access(broken):
    root, data, save = broken
    video = data["videos"][0]
    (root / "JPEGImages" / video["file_names"][1]).unlink()
    (root / "JPEGImages" / video["file_names"][2]).write_bytes(b"not a jpeg")
    ytvis = load_ytvis(*save(data), check_files=False)
    frames = VideoFrames(ytvis, video["id"], 32, 100)
    assert frames[0].shape == (3, 32, 43)
    for t in (1, 2):
        pattern = (
            rf"train.json: video {video['id']}: field 'file_names\[{t}\]': cannot read frame .*0000{t}.jpg"
        )
        with pytest.raises(DataError, match=pattern):
            frames[t]


def test_resized_shape():
    assert resized_shape(720, 1280, 360, 768) == (360, 640)
    assert resized_shape(720, 1280, 480, 768) == (432, 768)  # long side capped
    assert resized_shape(1280, 720, 360, 768) == (640, 360)


# ---- sampler ----


def _take(sampler: TrainSampler, n: int) -> list:
    stream = iter(sampler)
    return [next(stream) for _ in range(n)]


def test_sampler_resume_gives_the_same_stream():
    sampler = TrainSampler(7, seed=3)
    _take(sampler, 17)
    state = sampler.state_dict()
    expected = _take(sampler, 20)
    resumed = TrainSampler(7, seed=3)
    resumed.load_state_dict(state)
    assert _take(resumed, 20) == expected
    with pytest.raises(ValueError, match="num_items"):
        TrainSampler(8, seed=3).load_state_dict(state)


def test_sampler_epochs_are_permutations_and_ranks_shard():
    single = _take(TrainSampler(5, seed=1), 15)
    for epoch in range(3):
        assert sorted(i for i, _ in single[epoch * 5 : epoch * 5 + 5]) == list(range(5))
    assert [d for _, d in single] == list(range(15))
    assert [i for i, _ in single[:5]] != [i for i, _ in single[5:10]]  # reshuffled each epoch
    rank0, rank1 = _take(TrainSampler(5, 1, 0, 2), 5), _take(TrainSampler(5, 1, 1, 2), 5)
    merged = sorted(rank0 + rank1, key=lambda pair: pair[1])
    assert merged == single[:10]  # the ranks split one global stream
    assert _take(TrainSampler(5, seed=2), 15) != single
