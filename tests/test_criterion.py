"""Criterion (Eqs. 5-7): every term against an element-wise computation on a hand-built clip."""

import inspect
import math

import pytest
import torch

from ifrvis.config import Config, LossConfig
from ifrvis.modeling.criterion import SetCriterion, build_criterion
from ifrvis.modeling.matcher import HungarianMatcher

CROSS_KEYS = {"loss_mask_cross", "loss_dice_cross"}


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def frame_bce(logits: torch.Tensor, gt: torch.Tensor) -> float:
    """Mean BCE over the pixels of one frame, element by element."""
    xs, ys = logits.flatten().tolist(), gt.float().flatten().tolist()
    return sum(-(y * math.log(sig(x)) + (1 - y) * math.log(1 - sig(x))) for x, y in zip(xs, ys)) / len(xs)


def frame_dice_loss(logits: torch.Tensor, gt: torch.Tensor) -> float:
    xs, ys = logits.flatten().tolist(), gt.float().flatten().tolist()
    ps = [sig(x) for x in xs]
    return 1 - (2 * sum(p * y for p, y in zip(ps, ys)) + 1) / (sum(ps) + sum(ys) + 1)


def focal_sum(logits: torch.Tensor, onehot: torch.Tensor, alpha=0.25, gamma=2.0) -> float:
    total = 0.0
    for x, y in zip(logits.flatten().tolist(), onehot.flatten().tolist()):
        p = sig(x)
        ce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
        p_t = p if y else 1 - p
        a_t = alpha if y else 1 - alpha
        total += a_t * (1 - p_t) ** gamma * ce
    return total


def tiny_case():
    """1 clip, 2 queries, 3 classes, 2 frames, 4x4 masks (prediction and target at the same size so
    that the bilinear upsampling is the identity). Instance 0 (class 2) is a 2x2 square in both
    frames, instance 1 (class 0) is present only in frame 0; query 1 resembles instance 0."""
    g = torch.Generator().manual_seed(0)
    gt = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    gt[0, 0, :2, :2] = True
    gt[0, 1, 1:3, 1:3] = True
    gt[1, 0, 2:, 2:] = True
    target = {
        "labels": torch.tensor([2, 0]),
        "masks": gt,
        "present": torch.tensor([[True, True], [True, False]]),
    }
    logits = torch.tensor([[[1.5, -1.0, -2.0], [-1.0, -0.5, 2.5]]])
    masks = torch.randn(1, 2, 2, 4, 4, generator=g)
    masks[0, 1] += 4 * gt[0].float() - 2  # query 1 <-> instance 0
    masks[0, 0] += 4 * gt[1].float() - 2  # query 0 <-> instance 1
    cross = torch.randn(1, 2, 2, 2, 4, 4, generator=g)
    cross[:, :, 0, 0], cross[:, :, 1, 1] = masks[:, :, 0], masks[:, :, 1]  # the diagonal is pred_masks
    outputs = {"pred_logits": logits, "pred_masks": masks, "pred_cross_masks": cross}
    return outputs, [target]


def criterion(num_points=0, **kw) -> SetCriterion:
    """The paper's criterion (`LossConfig`'s defaults) for 3 classes, dense unless `num_points`."""
    return SetCriterion(LossConfig(num_points=num_points, **kw), num_classes=3)


def test_every_term_equals_hand_computation():
    outputs, targets = tiny_case()
    losses = criterion(lambda_e=0.3)(outputs, targets)
    assert set(losses) == {"loss_cls", "loss_mask", "loss_dice"} | CROSS_KEYS
    gt, masks, cross = targets[0]["masks"], outputs["pred_masks"][0], outputs["pred_cross_masks"][0]
    pairs = [(1, 0), (0, 1)]  # (query, instance), built into tiny_case
    num = 2
    onehot = torch.zeros(2, 3)
    onehot[1, 2] = onehot[0, 0] = 1
    assert losses["loss_cls"].item() == pytest.approx(
        2.0 * focal_sum(outputs["pred_logits"][0], onehot) / num, rel=1e-5
    )
    # Eqs. 6-7: per-frame terms summed over frames; instance 1's empty frame 1 is a valid target.
    bce = sum(frame_bce(masks[q, t], gt[i, t]) for q, i in pairs for t in range(2))
    dice = sum(frame_dice_loss(masks[q, t], gt[i, t]) for q, i in pairs for t in range(2))
    assert losses["loss_mask"].item() == pytest.approx(5.0 * bce / num, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(5.0 * dice / num, rel=1e-5)
    off = [(0, 1), (1, 0)]  # (t1, t2), t1 != t2: frame t1's query against frame t2's ground truth
    bce_x = sum(frame_bce(cross[q, t1, t2], gt[i, t2]) for q, i in pairs for t1, t2 in off)
    dice_x = sum(frame_dice_loss(cross[q, t1, t2], gt[i, t2]) for q, i in pairs for t1, t2 in off)
    assert losses["loss_mask_cross"].item() == pytest.approx(5.0 * 0.3 * bce_x / num, rel=1e-5)
    assert losses["loss_dice_cross"].item() == pytest.approx(5.0 * 0.3 * dice_x / num, rel=1e-5)


def test_matching_in_tiny_case_is_the_built_one():
    outputs, targets = tiny_case()
    ((rows, cols),) = HungarianMatcher(LossConfig(num_points=0))(outputs, targets)
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 1, 1: 0}


def log_softmax_at(row: list[float], c: int) -> float:
    return row[c] - math.log(sum(math.exp(x) for x in row))


def test_softmax_cross_entropy_weights_no_object_as_mask2former():
    """Mask2Former-VIS's class loss by hand: 2 clips x 2 queries, K = 2 classes plus "no object"
    (index 2). Clip 0: query 0 <-> instance of class 1, query 1 <-> instance of class 0; clip 1 has no
    instance, both its queries are "no object", weighted 0.1. F.cross_entropy(weight=w) is the
    weighted mean sum(w_y CE) / sum(w_y), NOT divided by the instance count (2)."""
    rows = [[0.5, 2.0, -1.0], [1.0, -0.5, 0.3], [0.2, 0.1, -0.4], [-1.0, 0.7, 1.5]]
    logits = torch.tensor(rows).view(2, 2, 3)
    gt = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    gt[0, :, :2, :2] = True
    gt[1, :, 2:, 2:] = True
    masks = torch.full((2, 2, 2, 4, 4), -4.0)
    masks[0, :2] = 8 * gt.float() - 4  # query q segments instance q exactly
    targets = [
        {"labels": torch.tensor([1, 0]), "masks": gt, "present": torch.ones(2, 2, dtype=torch.bool)},
        {
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 2, 4, 4, dtype=torch.bool),
            "present": torch.zeros(0, 2, dtype=torch.bool),
        },
    ]
    loss_cfg = LossConfig(num_points=0, lambda_e=0.0, class_loss="softmax", no_object_weight=0.1)
    crit = SetCriterion(loss_cfg, num_classes=2)
    losses = crit({"pred_logits": logits, "pred_masks": masks}, targets)
    ce = [
        -log_softmax_at(rows[0], 1),
        -log_softmax_at(rows[1], 0),
        -log_softmax_at(rows[2], 2),
        -log_softmax_at(rows[3], 2),
    ]
    expected = 2.0 * (ce[0] + ce[1] + 0.1 * (ce[2] + ce[3])) / (1 + 1 + 0.1 + 0.1)
    assert losses["loss_cls"].item() == pytest.approx(expected, rel=1e-6)
    reference = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), torch.tensor([[1, 0], [2, 2]]), torch.tensor([1.0, 1.0, 0.1])
    )
    assert losses["loss_cls"].item() == pytest.approx(2.0 * reference.item(), rel=1e-6)


def test_softmax_criterion_needs_the_no_object_logit():
    outputs, targets = tiny_case()  # 3 logits per query: K = 3 for focal, K = 2 for softmax
    with pytest.raises(ValueError, match="class_loss = 'softmax' needs 4"):
        criterion(class_loss="softmax")(outputs, targets)
    cfg = Config()
    cfg.model.num_classes, cfg.loss.class_loss, cfg.loss.no_object_weight = 3, "softmax", 0.2
    crit = build_criterion(cfg)
    assert (
        crit.cfg.class_loss == crit.matcher.cfg.class_loss == "softmax" and crit.cfg.no_object_weight == 0.2
    )
    padded = dict(outputs, pred_logits=torch.cat([outputs["pred_logits"], torch.zeros(1, 2, 1)], -1))
    assert torch.isfinite(crit(padded, targets)["loss_cls"])


def test_lambda_e_zero_removes_exactly_the_cross_terms():
    outputs, targets = tiny_case()
    outputs["aux_outputs"] = [{k: v + 0.1 for k, v in outputs.items()}]
    with_cross = criterion(lambda_e=0.3)(outputs, targets)
    without = criterion(lambda_e=0.0)(outputs, targets)
    assert set(with_cross) - set(without) == CROSS_KEYS | {f"{k}_0" for k in CROSS_KEYS}
    for key, value in without.items():
        assert torch.equal(value, with_cross[key]), key
    total_difference = sum(with_cross.values()) - sum(without.values())
    cross_sum = sum(v for k, v in with_cross.items() if k.startswith(("loss_mask_cross", "loss_dice_cross")))
    assert total_difference.item() == pytest.approx(cross_sum.item(), rel=1e-5)
    assert torch.allclose(
        criterion(lambda_e=0.6)(outputs, targets)["loss_dice_cross"], 2 * with_cross["loss_dice_cross"]
    )


def test_baseline_outputs_without_cross_masks_have_no_cross_terms():
    outputs, targets = tiny_case()
    del outputs["pred_cross_masks"]
    assert set(criterion()(outputs, targets)) == {"loss_cls", "loss_mask", "loss_dice"}


def test_deep_supervision_rematches_every_layer():
    outputs, targets = tiny_case()
    swapped = {k: v.flip(1) for k, v in outputs.items()}  # queries in the other order
    outputs["aux_outputs"] = [swapped, dict(swapped)]
    losses = criterion()(outputs, targets)
    alone = criterion()(swapped, targets)
    main = criterion()({k: v for k, v in outputs.items() if k != "aux_outputs"}, targets)
    for i in range(2):
        for key, value in alone.items():
            assert torch.allclose(losses[f"{key}_{i}"], value), (key, i)
    for key, value in main.items():
        assert torch.allclose(value, alone[key])  # re-matched: same loss whatever the query order
    assert len(losses) == 3 * 5
    assert set(criterion(deep_supervision=False)(outputs, targets)) == set(main)


def test_instance_absent_from_every_frame_is_dropped():
    outputs, targets = tiny_case()
    reference = criterion()(outputs, targets)
    t = targets[0]
    ghost = {
        "labels": torch.cat([t["labels"], torch.tensor([1])]),
        "masks": torch.cat([t["masks"], torch.zeros(1, 2, 4, 4, dtype=torch.bool)]),
        "present": torch.cat([t["present"], torch.zeros(1, 2, dtype=torch.bool)]),
    }
    losses = criterion()(outputs, [ghost])
    for key, value in reference.items():
        assert torch.equal(losses[key], value), key


@pytest.mark.parametrize("num_points", [0, 16])
def test_gradients_finite_and_reach_every_input(num_points):
    torch.manual_seed(0)
    outputs, targets = tiny_case()
    outputs = {k: v.clone().requires_grad_(True) for k, v in outputs.items()}
    empty = {
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 2, 4, 4, dtype=torch.bool),
        "present": torch.zeros(0, 2, dtype=torch.bool),
    }
    batch = {k: torch.cat([v, v.detach() * 0.5]) for k, v in outputs.items()}  # second clip has no instance
    batch["aux_outputs"] = [{k: v * 2 for k, v in batch.items()}]
    losses = criterion(num_points=num_points)(batch, targets + [empty])
    total = sum(losses.values())
    total.backward()
    for key, tensor in outputs.items():
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), key
        assert tensor.grad.abs().sum() > 0, key
    assert all(torch.isfinite(v) for v in losses.values())


def test_point_sampled_losses_approximate_dense_losses():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    # Blocky 32x32 ground truth (bilinear point sampling blurs it only near block edges), 8x8 predictions.
    blocks = torch.rand(2, 2, 4, 4, generator=g) > 0.5
    gt = blocks.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    targets = [{"labels": torch.tensor([0, 1]), "masks": gt, "present": torch.ones(2, 2, dtype=torch.bool)}]
    outputs = {
        "pred_logits": torch.randn(1, 3, 3, generator=g),
        "pred_masks": torch.randn(1, 3, 2, 8, 8, generator=g),
        "pred_cross_masks": torch.randn(1, 3, 2, 2, 8, 8, generator=g),
    }
    dense = criterion(num_points=0)(outputs, targets)
    sampled = criterion(num_points=20000, oversample_ratio=1.0, importance_sample_ratio=0.0)(outputs, targets)
    assert sampled["loss_cls"] == dense["loss_cls"]
    for key in ("loss_mask", "loss_dice", "loss_mask_cross", "loss_dice_cross"):
        assert sampled[key].item() == pytest.approx(dense[key].item(), rel=0.05), key


def test_dense_loss_upsamples_predictions_to_target_resolution():
    outputs, targets = tiny_case()
    # (2, 2) predictions, (4, 4) targets
    low = {k: v if k == "pred_logits" else v[..., ::2, ::2] for k, v in outputs.items()}
    losses = criterion(lambda_e=0.0)(low, targets)
    up = torch.nn.functional.interpolate(
        low["pred_masks"][0], size=(4, 4), mode="bilinear", align_corners=False
    )
    gt = targets[0]["masks"]
    bce = sum(frame_bce(up[q, t], gt[i, t]) for q, i in [(1, 0), (0, 1)] for t in range(2))
    assert losses["loss_mask"].item() == pytest.approx(5.0 * bce / 2, rel=1e-5)


def test_build_criterion_and_float32_under_autocast():
    cfg = Config()
    cfg.model.num_classes = 3
    cfg.loss.num_points = 0
    cfg.loss.lambda_e = 0.5
    crit = build_criterion(cfg)
    assert crit.cfg.lambda_e == 0.5 and crit.matcher.cfg.num_points == 0 and crit.num_classes == 3
    outputs, targets = tiny_case()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = crit({k: v.bfloat16() for k, v in outputs.items()}, targets)
    assert all(v.dtype == torch.float32 for v in losses.values())
    cfg.model.num_classes = 4
    with pytest.raises(ValueError, match="num_classes"):
        build_criterion(cfg)(outputs, targets)


@pytest.mark.parametrize("class_loss", ["focal", "softmax"])
@pytest.mark.parametrize("decoder", ["ifr", "mask2former"])
def test_real_model_outputs_train_with_finite_gradients(decoder, class_loss):
    from ifrvis.modeling.meta_arch import build_model

    torch.manual_seed(0)
    cfg = Config()
    cfg.model.decoder, cfg.model.backbone, cfg.model.num_classes, cfg.model.num_queries = (
        decoder,
        "tiny",
        3,
        4,
    )
    cfg.model.hidden_dim = cfg.model.mask_dim = 32
    cfg.model.enc_layers, cfg.model.enc_heads, cfg.model.enc_ffn_dim = 1, 4, 64
    cfg.model.dec_layers, cfg.model.dec_heads, cfg.model.dec_ffn_dim = 2, 4, 64
    cfg.loss.num_points, cfg.loss.class_loss = 64, class_loss
    model = build_model(cfg.model, class_loss).train()
    images = torch.rand(2, 2, 3, 32, 32) * 255
    masks = torch.zeros(2, 2, 32, 32, dtype=torch.bool)
    masks[0, :, 4:20, 4:20] = True
    masks[1, 0, 16:, 10:30] = True
    present = torch.tensor([[True, True], [True, False]])
    targets = [
        {"labels": torch.tensor([0, 2]), "masks": masks, "present": present},
        {"labels": torch.tensor([1]), "masks": masks[:1], "present": present[:1]},
    ]
    losses = build_criterion(cfg)(model(images), targets)
    expected = {"loss_cls", "loss_mask", "loss_dice"} | (CROSS_KEYS if decoder == "ifr" else set())
    assert expected <= set(losses) and {f"{k}_0" for k in expected} <= set(losses)
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_criterion_and_matcher_take_every_setting_from_the_loss_config():
    """`LossConfig` is the one place of the loss settings: the classes have no defaults of their own,
    and the criterion and its matcher read the same settings (num_points included)."""
    for cls in (SetCriterion, HungarianMatcher):
        params = list(inspect.signature(cls).parameters.values())
        assert all(p.default is inspect.Parameter.empty for p in params), cls.__name__
    cfg = Config()
    cfg.model.num_classes = 3
    crit = build_criterion(cfg)
    assert crit.cfg == cfg.loss == crit.matcher.cfg and crit.matcher.cfg.num_points == cfg.loss.num_points
    cfg.loss.num_points = 0  # the criterion keeps the settings it was built with
    assert crit.cfg.num_points == crit.matcher.cfg.num_points == LossConfig().num_points
