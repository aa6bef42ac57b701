"""The paper's base configs train on folders laid out as the YouTube-VIS 2019 and 2021 releases, holding
what the real files hold (tests/real_layout.py); the validation split has no ground truth, so the run
ends with results.json and the evaluation server's zip, and no AP."""

from __future__ import annotations

import json
import zipfile
from collections import defaultdict

import numpy as np
import pytest
from conftest import ROOT
from real_layout import CATEGORIES, TRAIN_VIDEOS, VALID_VIDEOS, box_mask, write_release

from ifrvis import run_folder, runstore
from ifrvis.config import load_config
from ifrvis.data.splits import load_splits
from ifrvis.engine.train import train

TINY = [
    "model.backbone=tiny",
    'model.weights=""',
    "model.num_queries=4",
    "model.hidden_dim=32",
    "model.mask_dim=32",
    "model.enc_layers=1",
    "model.enc_heads=2",
    "model.enc_ffn_dim=64",
    "model.dec_layers=2",
    "model.dec_heads=2",
    "model.dec_ffn_dim=64",
    f"model.num_classes={len(CATEGORIES)}",
    "loss.num_points=256",
    "solver.max_iters=2",
    "solver.batch_size=1",
    "data.num_workers=0",
    "data.train_short_sides=[64]",
    "data.test_short_side=64",
    "data.max_long_side=128",
    "device=cpu",
    "logging.visualize=false",
    "logging.progress=false",
]


@pytest.fixture(params=["2019", "2021"])
def release(request, tmp_path):
    """(layout, the run's config): the base config of that release with only `data.root` pointing at
    a folder written in its layout, and a tiny model."""
    layout = request.param
    write_release(tmp_path / "data", layout)
    overrides = [
        f"data.root={tmp_path / 'data'}",
        *TINY,
        f"logging.mlflow_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"logging.output_dir={tmp_path / 'outputs'}",
    ]
    return layout, load_config(ROOT / "experiments" / "configs" / "base" / f"ytvis{layout}.yaml", overrides)


def test_every_segmentation_format_decodes_to_the_written_mask(release):
    _, cfg = release
    train_set, valid_set = load_splits(cfg.data)
    assert not valid_set.has_annotations and valid_set.annotations_of(VALID_VIDEOS[0][0]) == []
    assert train_set.category_ids == [3, 7, 12] and train_set.label_of(12) == 2
    assert [v["id"] for v in train_set.videos] == [v[0] for v in TRAIN_VIDEOS]
    for video_id, _, (height, width), length in TRAIN_VIDEOS:
        anns = train_set.annotations_of(video_id)
        assert len(anns) == 2
        for k, ann in enumerate(anns):
            masks, present = train_set.decode_instance(ann)
            assert masks.shape == (length, height, width)
            for t in range(length):
                expected = box_mask(height, width, t, k)[0] if ann["segmentations"][t] is not None else 0
                np.testing.assert_array_equal(masks[t], expected)
            assert present.tolist() == [s is not None for s in ann["segmentations"]]


def test_a_run_trains_and_writes_the_servers_zip_without_ap(release):
    layout, cfg = release
    metrics = train(cfg)
    assert not any(key.startswith(("AP", "AR")) for key in metrics)
    out = run_folder.run_dir(cfg)
    with zipfile.ZipFile(out / "results.zip") as archive:
        assert archive.namelist() == ["results.json"]
        results = json.loads(archive.read("results.json"))
    assert results == json.loads((out / "results.json").read_text())
    by_video = defaultdict(list)
    for entry in results:
        by_video[entry["video_id"]].append(entry)
    assert sorted(by_video) == sorted(v[0] for v in VALID_VIDEOS)
    assert len({len(entries) for entries in by_video.values()}) == 1  # top-k per video
    category_ids = {c["id"] for c in CATEGORIES}
    for video_id, _, (height, width), length in VALID_VIDEOS:
        entries = by_video[video_id]
        assert 1 <= len(entries) <= cfg.inference.top_k
        for entry in entries:
            assert entry["category_id"] in category_ids and 0 <= entry["score"] <= 1
            assert len(entry["segmentations"]) == length
            sizes = [s["size"] for s in entry["segmentations"] if s is not None]
            assert all(size == [height, width] for size in sizes)
        assert any(s is not None for entry in entries for s in entry["segmentations"])
    run = runstore.find_runs(runstore.client(cfg.logging.mlflow_uri), cfg.logging.experiment)[0]
    assert run.info.status == "FINISHED" and run.data.tags["dataset"] == f"ytvis{layout}"
    artifacts = {a.path for a in runstore.client(cfg.logging.mlflow_uri).list_artifacts(run.info.run_id)}
    assert {"results.json", "results.zip"} <= artifacts
    assert not any(key.startswith("AP") for key in run.data.metrics)
