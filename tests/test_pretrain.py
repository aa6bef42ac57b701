"""Backbone pretraining by semantic segmentation (ifrvis pretrain): labels, IoU counts, the file."""

import numpy as np
import pytest
import torch
from conftest import PRETRAINED, TINY_CONFIG

from ifrvis.config import load_config
from ifrvis.engine.pretrain import IGNORE, intersections_unions, main, semantic_labels
from ifrvis.modeling import build_model
from ifrvis.modeling.weights import load_weights


def test_semantic_labels_mark_instances_background_and_padding():
    masks = torch.zeros(2, 2, 4, 6, dtype=torch.bool)  # (M, T, Hp, Wp)
    masks[0, 0, 0, 0] = masks[0, 1, 1, 1] = True
    masks[1, 1, 2, 2] = True
    target = {
        "masks": masks,
        "labels": torch.tensor([3, 0]),
        "image_size": (3, 5),
        "frame_indices": torch.arange(2),
    }
    labels = semantic_labels([target], (4, 6))
    assert labels.shape == (2, 4, 6)
    expected = torch.zeros(2, 4, 6, dtype=torch.int64)
    expected[:, 3, :] = IGNORE
    expected[:, :, 5] = IGNORE
    expected[0, 0, 0] = expected[1, 1, 1] = 4  # class index 3 -> label 4
    expected[1, 2, 2] = 1
    assert torch.equal(labels, expected)


def test_intersections_unions_by_hand():
    labels = torch.tensor([[[0, 1], [1, IGNORE]]])  # (1, 2, 2)
    # Arg-max predictions: [[1, 1], [0, 1]]; the ignored pixel's prediction does not count.
    logits = torch.tensor([[[[0.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 1.0]]]])  # (1, 2, 2, 2)
    counts = intersections_unions(logits, labels, num_classes=1)
    # background: predicted at (1,0), true at (0,0): inter 0, union 2; class 1: predicted (0,0),
    # (0,1); true (0,1), (1,0): inter 1, union 3.
    np.testing.assert_array_equal(counts, [[0, 2], [1, 3]])


def test_pretrain_writes_weights_that_the_tiny_config_loads(tmp_path, tiny_data):
    out = tmp_path / "backbone.pth"
    code = main(
        [
            str(TINY_CONFIG),
            f"data.root={tiny_data}",
            "data.train_short_sides=[64]",
            "--iters",
            "2",
            "--batch-size",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0 and out.exists()
    stored = torch.load(out, weights_only=True)
    assert stored["pretrain"]["iters"] == 2 and 0 <= stored["pretrain"]["valid_iou"]["background"] <= 1
    model = build_model(load_config(TINY_CONFIG, [f"model.weights={out}"]).model)
    report = load_weights(model, out)
    assert not report.missing and not report.unexpected and not report.mismatched
    assert {key.split(".")[0] for key in report.loaded} == {"backbone"}
    for key, value in stored["model"].items():
        assert torch.equal(model.state_dict()[key], value), key


def test_the_tiny_configs_name_the_file_that_pretrain_writes_by_default(tmp_path, tiny_data):
    target = tmp_path / "nested" / PRETRAINED
    args = [
        str(TINY_CONFIG),
        f"data.root={tiny_data}",
        "data.train_short_sides=[64]",
        f"model.weights={target}",
    ]
    assert main([*args, "--iters", "1", "--batch-size", "1", "--no-progress"]) == 0
    assert target.exists()
    assert load_config(TINY_CONFIG).model.weights == "checkpoints/synthetic_tiny_backbone.pth"


def test_missing_weights_say_how_to_make_them(tmp_path):
    cfg = load_config(TINY_CONFIG, [f"model.weights={tmp_path / 'absent.pth'}"])
    with pytest.raises(FileNotFoundError, match="ifrvis pretrain"):
        build_model(cfg.model)
