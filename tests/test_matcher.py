"""Eq. 4 matcher: cost against an independent element-wise computation, assignment against brute force."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from ifrvis.config import LossConfig
from ifrvis.modeling.layers import class_probabilities
from ifrvis.modeling.matcher import (
    HungarianMatcher,
    class_cost_matrix,
    clip_mask_pairs,
    hungarian,
    matching_probabilities,
)
from ifrvis.modeling.point_sampling import point_sample, uncertain_point_coords


def reference_cost(logit_row, mask_logits, label, gt, wc=2.0, wm=5.0, wd=5.0) -> float:
    """Eq. 4 for one (query, instance) pair, element by element in float64: the class term is the
    sigmoid probability, BCE the mean over all pixels of all frames, Dice over the whole clip."""
    p_class = 1 / (1 + math.exp(-float(logit_row[label])))
    xs = mask_logits.double().flatten().tolist()
    ys = gt.double().flatten().tolist()
    bce, inter, sum_p = 0.0, 0.0, 0.0
    for x, y in zip(xs, ys):
        p = 1 / (1 + math.exp(-x))
        bce += -(y * math.log(p) + (1 - y) * math.log(1 - p))
        inter += p * y
        sum_p += p
    bce /= len(xs)
    dice = (2 * inter + 1) / (sum_p + sum(ys) + 1)
    return -wc * p_class + wm * bce + wd * (1 - dice)


def make_matcher(**kw) -> HungarianMatcher:
    """The paper's matcher (`LossConfig`'s defaults), dense unless `num_points`."""
    return HungarianMatcher(LossConfig(**{"num_points": 0, **kw}))


def random_case(generator, q, m, t=2, k=3, size=4, scale=1):
    logits = torch.randn(1, q, k, generator=generator) * 2
    masks = torch.randn(1, q, t, size, size, generator=generator) * 3
    gt = torch.rand(m, t, size * scale, size * scale, generator=generator) > 0.5
    labels = torch.randint(0, k, (m,), generator=generator)
    return {"pred_logits": logits, "pred_masks": masks}, [{"labels": labels, "masks": gt}]


def test_cost_matrix_equals_independent_computation_when_dense():
    g = torch.Generator().manual_seed(0)
    outputs, (target,) = random_case(g, q=3, m=2)
    matcher = make_matcher()
    cost = matcher.cost_matrix(
        outputs["pred_logits"][0].sigmoid(), outputs["pred_masks"][0], target["labels"], target["masks"]
    )
    for q in range(3):
        for i in range(2):
            expected = reference_cost(
                outputs["pred_logits"][0, q],
                outputs["pred_masks"][0, q],
                int(target["labels"][i]),
                target["masks"][i],
            )
            assert cost[q, i].item() == pytest.approx(expected, abs=1e-5)


def test_dense_cost_upsamples_predictions_to_target_resolution():
    g = torch.Generator().manual_seed(1)
    outputs, (target,) = random_case(g, q=2, m=2, size=2, scale=4)  # targets 4x the prediction
    matcher = make_matcher()
    cost = matcher.cost_matrix(
        outputs["pred_logits"][0].sigmoid(), outputs["pred_masks"][0], target["labels"], target["masks"]
    )
    up = F.interpolate(outputs["pred_masks"][0], size=(8, 8), mode="bilinear", align_corners=False)
    for q in range(2):
        for i in range(2):
            expected = reference_cost(
                outputs["pred_logits"][0, q], up[q], int(target["labels"][i]), target["masks"][i]
            )
            assert cost[q, i].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("seed", range(12))
def test_assignment_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    q = 3 + seed % 2
    m = 1 + seed % q
    outputs, targets = random_case(g, q=q, m=m)
    ((rows, cols),) = make_matcher()(outputs, targets)
    assert len(rows) == m and sorted(cols.tolist()) == list(range(m))
    pair = [
        [
            reference_cost(
                outputs["pred_logits"][0, a],
                outputs["pred_masks"][0, a],
                int(targets[0]["labels"][i]),
                targets[0]["masks"][i],
            )
            for i in range(m)
        ]
        for a in range(q)
    ]
    best = min(sum(pair[qs[i]][i] for i in range(m)) for qs in itertools.permutations(range(q), m))
    best_queries = min(
        itertools.permutations(range(q), m), key=lambda qs: sum(pair[qs[i]][i] for i in range(m))
    )
    found = sum(pair[a][i] for a, i in zip(rows.tolist(), cols.tolist()))
    assert found == pytest.approx(best, abs=1e-6)
    assert {i: a for a, i in zip(rows.tolist(), cols.tolist())} == dict(enumerate(best_queries))


def test_points_are_shared_by_all_frames():
    pred = torch.randn(3, 1, 8, 8).expand(3, 4, 8, 8)  # every frame identical
    gt = (torch.rand(2, 1, 32, 32) > 0.5).expand(2, 4, 32, 32)
    flat_pred, flat_gt = clip_mask_pairs(pred, gt, num_points=50)
    assert flat_pred.shape == (3, 200) and flat_gt.shape == (2, 200)
    per_frame = flat_pred.view(3, 4, 50)
    assert torch.equal(per_frame, per_frame[:, :1].expand_as(per_frame))
    per_frame_gt = flat_gt.view(2, 4, 50)
    assert torch.equal(per_frame_gt, per_frame_gt[:, :1].expand_as(per_frame_gt))


def test_sampled_cost_approximates_dense_cost():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    outputs, _ = random_case(g, q=3, m=0, size=8)
    # Logit 0 on the outer ring: there zero padding (detectron2's, the points within half a pixel of the
    # edge) reads what the dense bilinear upsampling reads.
    outputs["pred_masks"][..., [0, -1], :] = 0
    outputs["pred_masks"][..., :, [0, -1]] = 0
    # Blocky ground truth: bilinear sampling blurs it only near block edges.
    blocks = torch.rand(2, 2, 4, 4, generator=g) > 0.5
    gt = blocks.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)  # (2, 2, 32, 32)
    args = (outputs["pred_logits"][0].sigmoid(), outputs["pred_masks"][0], torch.tensor([0, 1]), gt)
    dense = make_matcher().cost_matrix(*args)
    sampled = make_matcher(num_points=20000).cost_matrix(*args)
    assert torch.allclose(dense, sampled, rtol=0.03)


def test_focal_class_cost_and_bad_option():
    probs = torch.tensor([[0.9, 0.2], [0.3, 0.6]])
    labels = torch.tensor([1, 0])
    assert torch.equal(
        class_cost_matrix(probs, labels, "prob", 0.25, 2.0), -torch.tensor([[0.2, 0.9], [0.6, 0.3]])
    )
    focal = class_cost_matrix(probs, labels, kind="focal", alpha=0.25, gamma=2.0)
    p = 0.6  # query 1, label 1 -> column 0
    expected = 0.25 * (1 - p) ** 2 * -math.log(p) - 0.75 * p**2 * -math.log(1 - p)
    assert focal[1, 0].item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="matcher_class_cost"):
        make_matcher(matcher_class_cost="softmax")


def test_softmax_class_cost_is_minus_the_softmax_probability_of_the_label():
    """Mask2Former-VIS's matcher: -λ_c softmax(logits)[c] over K + 1 logits (K = 2, the last
    "no object"). Query 0 has the higher sigmoid at class 0 but, with most of its mass on
    "no object", the lower softmax probability: softmax matching picks query 1."""
    rows = [[3.0, 0.0, 5.0], [2.0, 0.0, -3.0]]
    softmax = [[math.exp(x) / sum(math.exp(y) for y in row) for x in row] for row in rows]
    outputs = {"pred_logits": torch.tensor([rows]), "pred_masks": torch.zeros(1, 2, 1, 2, 2)}
    target = {"labels": torch.tensor([0]), "masks": torch.ones(1, 1, 2, 2, dtype=torch.bool)}
    probs = class_probabilities(outputs["pred_logits"][0], "softmax")
    assert probs.shape == (2, 2)
    assert torch.allclose(probs, torch.tensor([row[:2] for row in softmax]), atol=1e-7)
    softmax_matcher = make_matcher(mask_weight=0.0, dice_weight=0.0, class_loss="softmax")
    cost = softmax_matcher.cost_matrix(probs, outputs["pred_masks"][0], target["labels"], target["masks"])
    assert cost[:, 0].tolist() == pytest.approx([-2.0 * softmax[0][0], -2.0 * softmax[1][0]], rel=1e-6)
    ((rows_idx, _),) = softmax_matcher(outputs, [target])
    assert rows_idx.tolist() == [1]
    focal = make_matcher(mask_weight=0.0, dice_weight=0.0)
    ((rows_idx, _),) = focal({**outputs, "pred_logits": outputs["pred_logits"][..., :2]}, [target])
    assert rows_idx.tolist() == [0]
    with pytest.raises(ValueError, match="needs loss.class_loss 'focal'"):
        make_matcher(matcher_class_cost="focal", class_loss="softmax")


def test_empty_targets_and_bad_inputs():
    outputs = {"pred_logits": torch.randn(1, 3, 2), "pred_masks": torch.randn(1, 3, 2, 4, 4)}
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 2, 4, 4, dtype=torch.bool)}
    ((rows, cols),) = make_matcher()(outputs, [empty])
    assert rows.numel() == 0 and cols.numel() == 0
    target = {"labels": torch.tensor([0]), "masks": torch.ones(1, 2, 4, 4, dtype=torch.bool)}
    with pytest.raises(ValueError, match="targets"):
        make_matcher()(outputs, [target, target])
    outputs["pred_masks"][0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):  # the trainer's divergence, not a user's value
        make_matcher()(outputs, [target])


def test_point_sample_reads_pixel_centres_exactly():
    maps = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    ij = [(0, 0), (3, 4), (1, 2)]
    coords = torch.tensor([[((j + 0.5) / 5, (i + 0.5) / 4) for i, j in ij]] * 2)
    values = point_sample(maps, coords)
    for n in range(2):
        for p, (i, j) in enumerate(ij):
            assert torch.equal(values[n, :, p], maps[n, :, i, j])


def test_point_sample_pads_with_zeros_as_detectron2_and_border_on_request():
    """A point on the map's edge, half a pixel past the last pixel centre, reads half of it with zero
    padding (detectron2's `point_sample`), the pixel itself with border padding (a dense resize's edge)."""
    maps = torch.full((1, 1, 2, 2), 8.0)
    coords = torch.tensor([[[1.0, 0.5], [0.5, 0.5]]])  # (x, y): the right edge, then the middle
    assert point_sample(maps, coords)[0, 0].tolist() == [4.0, 8.0]
    assert point_sample(maps, coords, padding_mode="border")[0, 0].tolist() == [8.0, 8.0]


def test_uncertain_points_prefer_the_decision_boundary():
    torch.manual_seed(0)
    logits = torch.full((1, 1, 8, 8), 10.0)
    logits[..., :, :4] = 0.0  # left half uncertain
    coords = uncertain_point_coords(logits, num_points=40, oversample_ratio=10, importance_sample_ratio=1.0)
    assert coords.shape == (1, 40, 2)
    assert (coords[0, :, 0] < 0.5).all()
    mixed = uncertain_point_coords(logits, num_points=40, oversample_ratio=3, importance_sample_ratio=0.5)
    assert mixed.shape == (1, 40, 2)
    with pytest.raises(ValueError, match="oversample_ratio"):
        uncertain_point_coords(logits, 10, oversample_ratio=0.5, importance_sample_ratio=0.5)


@pytest.mark.parametrize("num_points", [0, 40])
def test_batched_matching_equals_clip_by_clip(num_points):
    """All clips' cost matrices at once (padded to the largest M, one point set per clip drawn clip after
    clip) give each clip's own Eq. 4 matrix and assignment; a clip without instances gets none."""
    gen = torch.Generator().manual_seed(3)
    counts = [3, 0, 1, 5]
    logits = torch.randn(len(counts), 6, 4, generator=gen)
    masks = torch.randn(len(counts), 6, 2, 4, 4, generator=gen) * 3
    targets = [
        {
            "labels": torch.randint(0, 4, (m,), generator=gen),
            "masks": torch.rand(m, 2, 8, 8, generator=gen) > 0.5,
        }
        for m in counts
    ]
    targets[3]["labels"][0] = 4  # "no object"
    matcher = make_matcher(num_points=num_points)
    torch.manual_seed(0)
    batched = matcher({"pred_logits": logits, "pred_masks": masks}, targets)
    torch.manual_seed(0)
    for b, target in enumerate(targets):
        if not counts[b]:
            assert batched[b][0].numel() == batched[b][1].numel() == 0
            continue
        probs = matching_probabilities(logits[b], "focal")
        cost = matcher.cost_matrix(probs, masks[b], target["labels"], target["masks"])
        assert cost.shape == (6, counts[b])
        rows, cols = hungarian(cost)
        assert torch.equal(batched[b][0], rows) and torch.equal(batched[b][1], cols)
