"""Pretraining (ifrvis pretrain): semantic labels, IoU counts, and the file both tiny configs load."""

import numpy as np
import pytest
import torch
from conftest import PRETRAINED, TINY_CONFIG

from ifrvis.config import load_config
from ifrvis.engine.pretrain import IGNORE, intersections_unions, main, semantic_labels
from ifrvis.modeling import build_model
from ifrvis.modeling.weights import CheckpointError, load_weights


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


INTER_FRAME_BLOCKS = ("temporal_cross_attn", "clip_self_attn", "clip_ffn")  # the clip update
RECURRENT_BLOCKS = ("frame_cross_attn", "frame_self_attn", "frame_ffn")  # Eqs. 2-3


def test_pretrain_writes_a_model_that_both_tiny_configs_load(tmp_path, tiny_data):
    out = tmp_path / "pretrained.pth"
    args = [str(TINY_CONFIG), f"data.root={tiny_data}", "data.train_short_sides=[64]", "--out", str(out)]
    code = main([*args, "--backbone-iters", "2", "--iters", "2", "--batch-size", "2", "--no-progress"])
    assert code == 0 and out.exists()
    stored = torch.load(out, weights_only=True)
    summary = stored["pretrain"]
    assert summary["semantic_segmentation"]["iters"] == 2
    assert 0 <= summary["semantic_segmentation"]["valid_iou"]["background"] <= 1
    assert summary["image_instance_segmentation"]["iters"] == 2
    assert 0 <= summary["image_instance_segmentation"]["valid"]["AP"] <= 1

    baseline = build_model(load_config(TINY_CONFIG, ["model.decoder=mask2former", "model.weights="]).model)
    report = load_weights(baseline, out)
    assert not report.missing and not report.unexpected and not report.mismatched
    assert {key.split(".")[0] for key in report.loaded} == {"backbone", "pixel_decoder", "decoder"}
    for key, value in stored["model"].items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(baseline.state_dict()[key], value), key

    # IFR (Sec. 4.1): the inter-frame recurrent blocks start at random (model.ifr_init=random), or
    # are copied from the image model's decoder blocks (checkpoint, the ablation); the clip blocks
    # have no image-model counterpart and always start at random.
    layer = "decoder.layers.1"
    for ifr_init in ("random", "checkpoint"):
        ifr = build_model(load_config(TINY_CONFIG, ["model.weights=", f"model.ifr_init={ifr_init}"]).model)
        report = load_weights(ifr, out, ifr_init=ifr_init)
        assert not report.missing and not report.unexpected and not report.mismatched
        blocks = {key.split(".")[3] for key in report.random}
        assert blocks == set(INTER_FRAME_BLOCKS) | (set(RECURRENT_BLOCKS) if ifr_init == "random" else set())
        state = ifr.state_dict()
        copied = [
            torch.equal(
                state[f"{layer}.frame_ffn.linear1.weight"], stored["model"][f"{layer}.ffn.linear1.weight"]
            ),
            torch.equal(
                state[f"{layer}.frame_cross_attn.attn.in_proj_weight"],
                stored["model"][f"{layer}.cross_attn.attn.in_proj_weight"],
            ),
        ]
        assert copied == [ifr_init == "checkpoint"] * 2


def test_the_tiny_configs_name_the_file_that_pretrain_writes_by_default(tmp_path, tiny_data):
    target = tmp_path / "nested" / PRETRAINED
    args = [
        str(TINY_CONFIG),
        f"data.root={tiny_data}",
        "data.train_short_sides=[64]",
        f"model.weights={target}",
    ]
    assert main([*args, "--backbone-iters", "1", "--iters", "1", "--batch-size", "1", "--no-progress"]) == 0
    assert target.exists()
    assert load_config(TINY_CONFIG).model.weights == "checkpoints/synthetic_tiny_pretrained.pth"


def test_missing_weights_say_how_to_make_them(tmp_path):
    cfg = load_config(TINY_CONFIG, [f"model.weights={tmp_path / 'absent.pth'}"])
    with pytest.raises(CheckpointError, match="ifrvis pretrain"):
        build_model(cfg.model)
