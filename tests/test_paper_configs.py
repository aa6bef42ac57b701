"""Every paper configuration loads, and its model builds on the CPU and runs one tiny forward."""

from pathlib import Path

import pytest
import torch

from ifrvis.config import load_config
from ifrvis.data.datasets import resized_shape
from ifrvis.modeling import build_model

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("ytvis*.yaml"))


def test_the_paper_grid_is_complete():
    names = {path.stem for path in CONFIGS}
    for year in ("19", "21"):
        for backbone in ("r50", "r101", "swin_t", "swin_s", "swin_b", "swin_l", "swin_l_200"):
            assert f"ytvis{year}_{backbone}" in names and f"ytvis{year}_{backbone}_mask2former" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_paper_config(path):
    cfg = load_config(path, ["model.weights="])  # the COCO checkpoints are not shipped
    assert (cfg.loss.class_weight, cfg.loss.mask_weight, cfg.loss.dice_weight) == (2.0, 5.0, 5.0)
    assert cfg.loss.lambda_e == 0.3 and cfg.data.clip_length == 2 and cfg.model.num_classes == 40
    assert cfg.model.num_queries == (200 if "swin_l_200" in path.stem else 100)
    assert cfg.solver.backbone_lr_multiplier == 0.1
    # Sec. 4.1: shorter side 360 or 480, also for 16:9 videos (no long-side cap binding).
    for side in cfg.data.train_short_sides:
        assert resized_shape(720, 1280, side, cfg.data.max_long_side)[0] == side
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        outputs = model(torch.rand(1, 2, 3, 64, 64) * 255)
    assert outputs["pred_logits"].shape == (1, cfg.model.num_queries, 40)
    assert outputs["pred_masks"].shape == (1, cfg.model.num_queries, 2, 16, 16)
