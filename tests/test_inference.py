"""Inference modes on a small deterministic model that follows the encode/decode contract.

`PixelQueryModel` predicts masks frame by frame (query q responds to colour channel q), so the
whole-video pass, the per-clip passes and flipped or rescaled passes must agree where the geometry
allows; `permute` reorders its queries on every decode call, which only clip linking can undo."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ifrvis.config import DataConfig, InferenceConfig
from ifrvis.data.datasets import resized_shape
from ifrvis.data.masks import decode_segmentation
from ifrvis.evaluation.results import encode_video_predictions
from ifrvis.inference import (
    NO_MASK_LOGIT,
    ClipTracker,
    Prediction,
    QueryResult,
    clip_starts,
    dense_masks,
    load_chunk,
    merge_tta,
    postprocess,
    predict_video,
    run_frames,
    soft_iou,
    tta_augmentations,
    tta_max_long_side,
    tta_pivot_index,
)
from ifrvis.modeling.layers import class_probabilities

NUM_CLASSES = 3


class PixelQueryModel(nn.Module):
    """encode: `(N, 3, H, W)` -> {"maps": [(N, 3, H/4, W/4)]}; decode: 4 queries, query c < 3 segments
    colour channel c, query 3 the background; fixed class logits per query."""

    def __init__(self, permute: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[8.0, 0, 0], [0, 8.0, 0], [0, 0, 8.0], [-8.0, -8.0, -8.0]]))
        self.bias = nn.Parameter(torch.tensor([-3.7, -3.7, -3.7, 4.3]))
        self.class_logits = nn.Parameter(
            torch.tensor([[2.0, -3, -3], [-3, 1.0, -3], [-3, -3, 0.5], [-2.0, -2.5, -4]])
        )
        self.permute = permute
        self.register_buffer("pixel_mean", torch.zeros(1, 3, 1, 1))  # pads frames with 0 (background)
        self.decode_calls = 0
        self.encode_sizes: list[int] = []
        self.decode_sizes: list[int] = []

    def encode(self, frames):
        self.encode_sizes.append(frames.shape[0])
        return {"maps": [F.avg_pool2d(frames / 255.0, 4)]}

    def decode(self, features, batch, frames):
        self.decode_sizes.append(frames)
        maps = features["maps"][0]
        maps = maps.view(batch, frames, *maps.shape[1:])
        masks = torch.einsum("qc,btchw->bqthw", self.weight, maps) + self.bias[None, :, None, None, None]
        logits = self.class_logits[None].expand(batch, -1, -1)
        if self.permute:
            order = torch.roll(torch.arange(4), self.decode_calls)
            masks, logits = masks[:, order], logits[:, order]
        self.decode_calls += 1
        return {"pred_logits": logits, "pred_masks": masks}

    def class_probabilities(self, logits):
        return logits.sigmoid()


class Frames:
    """Stand-in for VideoFrames: `len()`, `[t] -> (3, h, w)` in [0, 255], `.size`, `.orig_size`."""

    def __init__(self, frames: torch.Tensor, orig_size):
        self.frames = frames
        self.size = tuple(frames.shape[-2:])
        self.orig_size = orig_size

    def __len__(self):
        return self.frames.shape[0]

    def __getitem__(self, t):
        return self.frames[t]


def moving_video(num_frames=9, h=32, w=48, static=False) -> torch.Tensor:
    """Three coloured 8x8 squares on black, aligned to the 4-pixel grid; they move unless `static`."""
    video = torch.zeros(num_frames, 3, h, w)
    for t in range(num_frames):
        step = 0 if static else t
        video[t, 0, 4:12, (4 * step) % 40 : (4 * step) % 40 + 8] = 255
        video[t, 1, 20:28, 8:16] = 255
        video[t, 2, (16 + 4 * step) % 24 : (16 + 4 * step) % 24 + 8, 32:40] = 255
    return video


def infer(model, frames, **cfg) -> list:
    with torch.no_grad():
        return predict_video(model.eval(), frames, InferenceConfig(**cfg))


def assert_same_predictions(a, b, max_mask_mismatch=0.0, atol=1e-5):
    """The same predictions in score order: scores equal within `atol`, and each prediction of `a` has
    one of `b` with its label and masks among those whose scores tie with it within `atol` (pairs of a
    random model's (query, class) scores can tie to the last digits, and summation order then decides
    which comes first)."""
    assert np.allclose([p.score for p in a], [p.score for p in b], atol=atol)
    unmatched = list(b)
    for pa in a:
        same = [
            pb
            for pb in unmatched
            if pb.label == pa.label
            and abs(pb.score - pa.score) <= atol
            and pb.masks.shape == pa.masks.shape
            and np.mean(pa.masks != pb.masks) <= max_mask_mismatch
        ]
        assert same, f"no prediction like (label {pa.label}, score {pa.score:.6f}) in the other list"
        unmatched.remove(same[0])


def test_whole_video_outputs_top_k_at_original_size():
    frames = Frames(moving_video(), orig_size=(64, 96))
    predictions = infer(PixelQueryModel(), frames, mode="video", top_k=5)
    assert len(predictions) == 5
    probs = torch.sigmoid(PixelQueryModel().class_logits).flatten()
    assert np.allclose([p.score for p in predictions], probs.topk(5).values.detach().numpy(), atol=1e-6)
    assert [p.label for p in predictions[:3]] == [0, 1, 2]
    for p in predictions:
        assert p.masks.shape == (9, 64, 96) and p.masks.dtype == bool
    # Query 1's square (rows 20:28, cols 8:16 at 32x48) doubled to the original size.
    expected = np.zeros((64, 96), dtype=bool)
    expected[40:56, 16:32] = True
    assert np.mean(predictions[1].masks[0] != expected) < 0.02
    assert len(infer(PixelQueryModel(), frames, mode="video", top_k=100)) == 4 * NUM_CLASSES


def test_encoder_runs_in_bounded_chunks():
    model = PixelQueryModel()
    infer(model, Frames(moving_video(num_frames=9), (32, 48)), mode="video", chunk_frames=4)
    assert model.encode_sizes == [4, 4, 1] and model.decode_sizes == [9]


def test_frames_are_padded_with_the_pixel_mean():
    frames = Frames(moving_video(num_frames=2, h=40, w=60), orig_size=(40, 60))
    mean = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    batch = load_chunk(frames, [1, 0], True, mean)
    assert batch.shape == (2, 3, 64, 64)
    assert (batch[:, :, 40:] == mean).all() and (batch[:, :, :, 60:] == mean).all()
    assert torch.equal(batch[0, :, :40, :60], frames[1].flip(-1))


@pytest.mark.parametrize("static", [True, False])
def test_per_clip_agrees_with_whole_video(static):
    frames = Frames(moving_video(num_frames=9, static=static), orig_size=(32, 48))
    whole = infer(PixelQueryModel(), frames, mode="video", top_k=6)
    model = PixelQueryModel()
    clips = infer(model, frames, mode="clip", clip_frames=4, clip_overlap=1, top_k=6)
    assert model.decode_sizes == [4, 4, 4]  # clips start at frames 0, 3, 5
    assert_same_predictions(whole, clips)


def gliding_video(num_frames=10, h=32, w=48) -> torch.Tensor:
    """`moving_video`'s squares without jumps: the first glides right, the third left, 4 px a frame."""
    video = torch.zeros(num_frames, 3, h, w)
    for t in range(num_frames):
        video[t, 0, 4:12, 4 * t : 4 * t + 8] = 255
        video[t, 1, 20:28, 8:16] = 255
        video[t, 2, 16:24, 40 - 4 * t : 48 - 4 * t] = 255
    return video


@pytest.mark.parametrize(
    "clip_frames, overlap, num_frames",
    # Tracked on shared frames; each frame alone, tracked from the frame before.
    [(4, 2, 10), (1, 0, 10)],
)
def test_tracking_restores_identity_when_queries_are_permuted_between_clips(clip_frames, overlap, num_frames):
    frames = Frames(gliding_video(num_frames=num_frames), orig_size=(32, 48))
    model = PixelQueryModel(permute=True)
    first = model.decode({"maps": [torch.rand(2, 3, 2, 2)]}, 1, 2)["pred_logits"]
    second = model.decode({"maps": [torch.rand(2, 3, 2, 2)]}, 1, 2)["pred_logits"]
    assert not torch.equal(first, second)  # the permutation is real
    model.decode_calls = 0
    linked = infer(model, frames, mode="clip", clip_frames=clip_frames, clip_overlap=overlap, top_k=6)
    assert model.decode_calls == len(clip_starts(num_frames, clip_frames, overlap)) > 1
    assert_same_predictions(infer(PixelQueryModel(), frames, mode="video", top_k=6), linked)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_clip_tracking_on_a_gpu_gives_the_cpus_predictions():
    """The tracker's track ids stay on the CPU while its sums follow the model's device: a CUDA mask
    once indexed the CPU ids at the first clip."""
    frames = Frames(gliding_video(num_frames=7), orig_size=(32, 48))
    on_cpu = infer(PixelQueryModel(), frames, mode="clip", clip_frames=3, clip_overlap=1, top_k=6)
    on_gpu = infer(PixelQueryModel().cuda(), frames, mode="clip", clip_frames=3, clip_overlap=1, top_k=6)
    assert_same_predictions(on_cpu, on_gpu)


def test_an_object_that_jumps_starts_a_new_track():
    """IFC's tracking: an instance whose soft IoU with every track is 0.05 or less starts a track. The
    third square of `moving_video` jumps from rows 20-28 to 0-8 at frame 2: tracked frame by frame it
    becomes two tracks, of the same class, one before the jump and one after (the first linker paired
    every query of a clip with a track whatever their IoU, and kept it one)."""
    frames = Frames(moving_video(num_frames=6), orig_size=(32, 48))
    whole = infer(PixelQueryModel(), frames, mode="video", top_k=6)
    tracked = infer(PixelQueryModel(), frames, mode="clip", clip_frames=1, clip_overlap=0, top_k=6)
    (square,) = [p for p in whole if p.label == 2 and p.masks.any()]
    halves = [p for p in tracked if p.label == 2 and p.masks.any()]
    assert len(halves) == 2 and all(p.score == pytest.approx(square.score) for p in halves)
    shown = [set(np.flatnonzero(p.masks.any((1, 2)))) for p in halves]
    assert sorted(map(sorted, shown)) == [[0, 1], [2, 3, 4, 5]]
    assert (halves[0].masks | halves[1].masks == square.masks).all()


def one_row_clip(masks: list[list[list[float]]], probs: list[float]) -> QueryResult:
    """A clip of mask probabilities `masks[query][frame]` on a 1-row grid, one class."""
    return QueryResult(
        probs=torch.tensor(probs)[:, None],
        mask_logits=torch.logit(torch.tensor(masks).clamp(1e-6, 1 - 1e-6))[:, :, None, :],
        image_size=(4, 4 * len(masks[0][0])),
        padded_size=(4, 4 * len(masks[0][0])),
    )


def row(*on: range, value: float = 1.0, width: int = 20) -> list[float]:
    return [value if any(x in r for r in on) else 0.0 for x in range(width)]


@pytest.mark.parametrize("overlap_probability, expected_track", [(0.04, 2), (0.06, 1)])
def test_clip_tracker_matches_above_the_threshold_and_averages_over_the_clips_that_held_a_track(
    overlap_probability, expected_track
):
    """By hand, two 2-frame clips sharing frame 1, on a 20-cell row. Instance x of the second clip
    covers half of track 0 on frame 1 (IoU 0.5): it continues it. Instance y lies over track 1 (20
    cells) at probability p: soft IoU 20p / 20 = p, which continues track 1 for p = 0.06 and starts
    track 2 for p = 0.04 (IFC's threshold 0.05). Track 0's class probability is the mean of its two
    clips' (0.9, 0.7); its mask logit on frame 1 the mean of theirs, on frames 0 and 2 its one clip's."""
    tracker = ClipTracker(top_k=2)
    first = one_row_clip([[row(range(4)), row(range(4))], [row(range(20)), row(range(20))]], [0.9, 0.8])
    second = one_row_clip(
        [[row(range(2)), row(range(2))], [row(range(20), value=overlap_probability)] * 2], [0.7, 0.6]
    )
    before = tracker.add(0, first)
    assert before.mask_logits.shape[1] == 0  # nothing before frame 0
    handed = tracker.add(1, second)
    probs, last = tracker.finish()
    assert tracker.num_tracks == (3 if expected_track == 2 else 2)
    masks = dense_masks([before, handed, last], tracker.num_tracks)[:, :, 0]  # (R, T, 20)
    assert probs[0, 0] == pytest.approx(0.8)  # (0.9 + 0.7) / 2
    assert probs[expected_track, 0] == pytest.approx(0.6 if expected_track == 2 else (0.8 + 0.6) / 2)
    logit = torch.logit(torch.tensor([1 - 1e-6, 1e-6]))  # a cell on, off
    assert torch.allclose(masks[0, 0, :4], logit[0].expand(4))  # frame 0: the first clip's alone
    assert torch.allclose(
        masks[0, 1, 2:4], logit.mean().expand(2)
    )  # frame 1: on in one clip, off in the other
    assert torch.allclose(masks[0, 2, :2], logit[0].expand(2))  # frame 2: the second clip's alone
    if expected_track == 2:  # a track no clip held on frame 0 is empty there
        assert (masks[2, 0] == NO_MASK_LOGIT).all() and (masks[1, 2] == NO_MASK_LOGIT).all()


def test_window_iou_is_averaged_over_the_window_clips_that_held_the_track():
    """IFC's sIoU, by hand: 3-frame clips at frames 0 and 1 held track 0; a clip at frame 2 shares
    frame 2 with the first and frames 2-3 with the second. Instance z (cells 0-1) against the first
    clip's track on frame 2 (cells 0-3): 2 / 4; against the second's on frames 2 and 3 (cells 0-3,
    then 0-7): (2 + 2) / (4 + 8). sIoU: their mean, 5 / 12 (pooling the frames would give 6 / 16)."""
    tracker = ClipTracker(top_k=1)
    tracker.add(0, one_row_clip([[row(range(4))] * 3], [0.9]))
    tracker.add(1, one_row_clip([[row(range(4)), row(range(4)), row(range(8))]], [0.9]))
    z = torch.tensor([row(range(2))] * 3)[None, :, None, :]  # (1 instance, 3 frames, 1, 20)
    iou = tracker.window_iou([(2, 2), (3, 3)], 2, z)
    assert iou.shape == (1, 1) and iou[0, 0] == pytest.approx((2 / 4 + 4 / 12) / 2, abs=1e-4)


def test_tta_with_identical_augmentations_equals_single_pass():
    frames = Frames(moving_video(), orig_size=(40, 60))
    single = infer(PixelQueryModel(), frames, mode="video")
    tta = infer(PixelQueryModel(), frames, mode="tta", tta_short_sides=[32, 32, 32])
    assert_same_predictions(single, tta)


@pytest.mark.parametrize("width", [48, 64])  # 48 is padded to 64
def test_tta_undoes_flips_exactly(width):
    frames = Frames(moving_video(w=width), orig_size=(32, width))
    single = infer(PixelQueryModel(), frames, mode="video")
    flipped = infer(PixelQueryModel(), frames, mode="tta", tta_short_sides=[32], tta_flip=True)
    assert_same_predictions(single, flipped)


def test_tta_over_input_sizes_stays_close_to_single_pass():
    frames = Frames(moving_video(w=64), orig_size=(32, 64))
    single = infer(PixelQueryModel(), frames, mode="video")
    sizes = infer(PixelQueryModel(), frames, mode="tta", tta_short_sides=[32, 48, 64], tta_flip=True)
    assert_same_predictions(single, sizes, max_mask_mismatch=0.02)  # edges of the squares only


@pytest.mark.parametrize("orig_size", [(720, 1280), (1280, 720), (1080, 1920), (480, 640)])
def test_tta_sizes_stay_distinct_under_the_long_side_cap(orig_size):
    """A fixed 768 cap would resize 16:9 videos at 432 and 480 to the same 432 x 768."""
    data = DataConfig(test_short_side=360, max_long_side=768)
    sides = [288, 360, 432, 480]
    shapes = [resized_shape(*orig_size, side, tta_max_long_side(side, data)) for side in sides]
    assert len(set(shapes)) == len(sides)
    assert shapes[1] == resized_shape(*orig_size, data.test_short_side, data.max_long_side)


def test_tta_pivot_is_the_largest_unflipped_pass():
    passes = tta_augmentations(InferenceConfig(tta_short_sides=[288, 480, 360], tta_flip=True))
    assert passes[0] == (480, False)
    assert sorted(passes) == sorted((side, flip) for side in (288, 360, 480) for flip in (False, True))


def test_tta_matches_permuted_passes_to_the_pivot():
    g = torch.Generator().manual_seed(0)
    pivot = QueryResult(
        probs=torch.rand(4, NUM_CLASSES, generator=g),
        mask_logits=torch.randn(4, 2, 8, 8, generator=g) * 4,
        image_size=(32, 32),
        padded_size=(32, 32),
    )
    order = torch.tensor([2, 0, 3, 1])
    other = QueryResult(pivot.probs[order], pivot.mask_logits[order], (32, 32), (32, 32))
    merged = merge_tta([pivot, other])
    assert torch.allclose(merged.probs, pivot.probs, atol=1e-6)
    assert torch.allclose(merged.mask_logits.sigmoid(), pivot.mask_logits.sigmoid(), atol=1e-5)


def test_tta_pivot_largest_or_random_seeded_by_run_and_video():
    largest = InferenceConfig(tta_pivot="largest")
    assert {tta_pivot_index(8, largest, (seed, video)) for seed in range(3) for video in range(20)} == {0}
    random = InferenceConfig(tta_pivot="random")
    draws = [tta_pivot_index(8, random, (0, video)) for video in range(40)]
    assert draws == [tta_pivot_index(8, random, (0, video)) for video in range(40)]  # reproducible
    assert len(set(draws)) > 3 and all(0 <= i < 8 for i in draws)  # varies across videos
    assert draws != [tta_pivot_index(8, random, (1, video)) for video in range(40)]  # and seeds
    torch.manual_seed(123)
    np.random.seed(123)
    assert draws == [tta_pivot_index(8, random, (0, video)) for video in range(40)]  # no global RNG


def square_result(size: int, flipped: bool = False) -> QueryResult:
    """Two queries on one frame of a `size` x `size` unpadded input: query 0 the left half (which a
    flip moves), query 1 a centred square; `flipped`: the pass saw the frame flipped."""
    grid = size // 4
    masks = torch.full((2, 1, grid, grid), -6.0)
    masks[0, 0, :, : grid // 2] = 6.0
    masks[1, 0, grid // 4 : 3 * grid // 4, grid // 4 : 3 * grid // 4] = 6.0
    if flipped:
        masks = masks.flip(-1)
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.7]])
    return QueryResult(probs, masks, (size, size), (size, size), flipped)


@pytest.mark.parametrize("pivot", [0, 1, 2])
@pytest.mark.parametrize("finest_flipped", [False, True])
def test_tta_result_lies_on_the_finest_grid_whichever_the_pivot(pivot, finest_flipped):
    """The pivot decides the matching only: the masks are averaged on the finest pass's grid, un-flipped
    (on the pivot's, a random coarse pivot coarsened every mask of the video)."""
    results = [square_result(32), square_result(64, flipped=finest_flipped), square_result(48, flipped=True)]
    merged = merge_tta(results, pivot)
    finest = square_result(64)
    assert merged.mask_logits.shape == finest.mask_logits.shape
    assert (merged.image_size, merged.padded_size, merged.flipped) == (
        finest.image_size,
        finest.padded_size,
        False,
    )
    assert torch.allclose(merged.probs, finest.probs)
    assert torch.equal(merged.mask_logits > 0, finest.mask_logits > 0)


def test_tta_random_pivot_through_run_inference_uses_the_seed_and_video_id(tmp_path):
    from ifrvis.config import Config
    from ifrvis.data.datasets import VideoFrames
    from ifrvis.inference import run_inference

    ytvis = write_tiny_ytvis(tmp_path)
    video = ytvis.videos[0]
    cfg = Config()
    cfg.data.test_short_side, cfg.data.max_long_side = 32, 200
    cfg.inference.mode, cfg.inference.top_k, cfg.inference.tta_short_sides = "tta", 4, [32, 48, 64]
    for seed in (0, 1, 2):
        cfg.seed = seed
        results = run_inference(PixelQueryModel(), ytvis, cfg, progress=False)
        direct = predict_video(
            PixelQueryModel().eval(),
            VideoFrames(ytvis, video, 32, 200),
            cfg.inference,
            lambda side: VideoFrames(ytvis, video, side, tta_max_long_side(side, cfg.data)),
            pivot_seed=(seed, video["id"]),
        )
        assert results == encode_video_predictions(video["id"], direct, [5, 9, 11])


def test_softmax_head_scores_drop_no_object_before_top_k():
    """2 queries, K = 2 classes plus "no object": the probabilities are the softmax over the 3 logits
    with the last column dropped, and top-k runs over the 2 x 2 (query, class) pairs, as
    Mask2Former-VIS's inference. Query 1's largest probability is "no object" (0.84): never a score."""
    rows = [[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]]
    softmax = [[math.exp(x) / sum(math.exp(y) for y in row) for x in row] for row in rows]
    probs = class_probabilities(torch.tensor(rows), "softmax")
    result = QueryResult(probs, torch.full((2, 1, 4, 4), 5.0), (16, 16), (16, 16))
    predictions = postprocess(result, (16, 16), InferenceConfig(top_k=3))
    assert [p.label for p in predictions] == [0, 1, 1]  # (query 0, class 0), (1, 1), (0, 1)
    expected = [softmax[0][0], softmax[1][1], softmax[0][1]]
    assert [p.score for p in predictions] == pytest.approx(expected, rel=1e-6)
    assert len(postprocess(result, (16, 16), InferenceConfig(top_k=10))) == 4


def test_real_softmax_model_probabilities_flow_through_every_mode():
    """Whole video, per clip (on a static video every 2-frame clip equals the first two frames) and
    TTA (one pass) all score with the softmax probabilities without "no object"."""
    model = tiny_real_model("mask2former", class_loss="softmax")
    static = moving_video(num_frames=4, static=True)
    pair = Frames(static[:2], orig_size=(32, 48))
    with torch.no_grad():
        logits = model(load_chunk(pair, range(2), False, model.pixel_mean)[None])["pred_logits"][0]
        result = run_frames(model, pair, range(2), chunk_frames=2)
    assert result.probs.shape == (5, NUM_CLASSES)
    assert torch.allclose(result.probs, logits.softmax(-1)[:, :NUM_CLASSES], atol=1e-6)
    top = result.probs.flatten().topk(6).values.tolist()
    assert [p.score for p in infer(model, pair, mode="video", top_k=6)] == pytest.approx(top, rel=1e-5)
    assert [p.score for p in infer(model, pair, mode="tta", top_k=6, tta_short_sides=[32])] == pytest.approx(
        top, rel=1e-5
    )
    clips = infer(model, Frames(static, (32, 48)), mode="clip", top_k=6, clip_frames=2)
    assert [p.score for p in clips] == pytest.approx(top, rel=1e-4)


def test_score_with_mask_multiplies_by_mean_mask_probability():
    g = torch.Generator().manual_seed(1)
    result = QueryResult(
        probs=torch.rand(2, 2, generator=g),
        mask_logits=torch.randn(2, 3, 4, 4, generator=g) * 3,
        image_size=(16, 16),
        padded_size=(16, 16),
    )
    plain = postprocess(result, (16, 16), InferenceConfig(top_k=4))
    weighted = postprocess(result, (16, 16), InferenceConfig(top_k=4, score_with_mask=True))
    up = F.interpolate(result.mask_logits, size=(16, 16), mode="bilinear", align_corners=False).sigmoid()
    for p, w in zip(plain, weighted):
        query = int(torch.nonzero(result.probs == p.score)[0, 0])  # the score is that query's class prob
        probs = up[query].numpy()
        expected = p.score * probs[p.masks].sum() / max(p.masks.sum(), 1)
        assert w.score == pytest.approx(expected, rel=1e-4)


def test_clip_starts_cover_the_video_with_overlap():
    assert clip_starts(10, 4, 1) == [0, 3, 6]
    assert clip_starts(11, 4, 1) == [0, 3, 6, 7]
    assert clip_starts(3, 4, 1) == [0]
    assert clip_starts(10, 4, 0) == [0, 4, 6]
    assert clip_starts(3, 1, 0) == [0, 1, 2]
    for bad in [(10, 4, -1), (10, 4, 4), (10, 0, 0)]:
        with pytest.raises(ValueError, match="clip_overlap"):
            clip_starts(*bad)


def test_soft_iou_of_binary_masks_is_iou():
    a = torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]])
    b = torch.tensor([[1.0, 1, 1, 0]])
    assert torch.allclose(soft_iou(a, b), torch.tensor([[2 / 3], [1 / 4]]))


def test_bad_mode_is_named():
    with pytest.raises(ValueError, match="inference.mode"):
        infer(PixelQueryModel(), Frames(moving_video(2), (32, 48)), mode="frames")


def test_results_entries_in_official_format():
    frames = Frames(moving_video(num_frames=3), orig_size=(32, 48))
    predictions = infer(PixelQueryModel(), frames, mode="video", top_k=4)
    entries = encode_video_predictions(7, predictions, category_ids=[10, 20, 30])
    assert len(entries) == 4
    for entry, p in zip(entries, predictions):
        assert entry["video_id"] == 7 and entry["category_id"] == [10, 20, 30][p.label]
        assert len(entry["segmentations"]) == 3
        for seg, mask in zip(entry["segmentations"], p.masks):
            if not mask.any():
                assert seg is None
            else:
                assert isinstance(seg["counts"], str)
                assert np.array_equal(decode_segmentation(seg, 32, 48), mask)


def write_tiny_ytvis(root, num_frames=3):
    """One 32x48 video of PNG frames (coloured squares) and three categories, in YouTube-VIS format."""
    from PIL import Image

    from ifrvis.data.ytvis import load_ytvis

    video = moving_video(num_frames=num_frames)
    names = []
    (root / "JPEGImages" / "v1").mkdir(parents=True)
    for t in range(num_frames):
        names.append(f"v1/{t:05d}.png")
        array = video[t].permute(1, 2, 0).numpy().astype(np.uint8)
        Image.fromarray(array).save(root / "JPEGImages" / names[-1])
    raw = {
        "videos": [{"id": 4, "width": 48, "height": 32, "length": num_frames, "file_names": names}],
        "categories": [{"id": cid, "name": f"c{cid}"} for cid in (5, 9, 11)],
    }
    (root / "valid.json").write_text(__import__("json").dumps(raw))
    return load_ytvis(root / "valid.json", root / "JPEGImages")


@pytest.mark.parametrize("mode", ["video", "tta"])
def test_run_inference_on_a_ytvis_split(tmp_path, mode):
    from ifrvis.config import Config
    from ifrvis.data.datasets import VideoFrames
    from ifrvis.inference import run_inference

    ytvis = write_tiny_ytvis(tmp_path)
    cfg = Config()
    cfg.data.test_short_side, cfg.data.max_long_side = 32, 200
    cfg.inference.mode, cfg.inference.top_k, cfg.inference.tta_short_sides = mode, 4, [32, 64]
    results = run_inference(PixelQueryModel(), ytvis, cfg, progress=False)
    expected = infer(PixelQueryModel(), VideoFrames(ytvis, ytvis.videos[0], 32, 200), mode="video", top_k=4)
    assert len(results) == 4
    assert [r["category_id"] for r in results] == [[5, 9, 11][p.label] for p in expected]
    for entry, p in zip(results, expected):
        assert entry["video_id"] == 4 and len(entry["segmentations"]) == 3
        masks = np.stack([decode_segmentation(s, 32, 48) for s in entry["segmentations"]])
        assert np.mean(masks != p.masks) <= (0.0 if mode == "video" else 0.03)


def tiny_real_model(decoder: str, class_loss: str = "focal"):
    from ifrvis.config import ModelConfig
    from ifrvis.modeling.meta_arch import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(
        decoder=decoder,
        backbone="tiny",
        num_classes=NUM_CLASSES,
        num_queries=5,
        hidden_dim=32,
        enc_layers=1,
        enc_heads=4,
        enc_ffn_dim=64,
        mask_dim=32,
        dec_layers=2,
        dec_heads=4,
        dec_ffn_dim=64,
    )
    model = build_model(cfg, class_loss).eval()
    # Random decoder layers at nn.Linear's default initialisation (about half xavier's scale): the random
    # model's queries then differ enough that no two tie in the matchings these tests compare. From
    # Mask2Former's xavier start, several predict the same all-or-nothing masks and tie.
    for module in model.decoder.layers.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()
        elif isinstance(module, nn.MultiheadAttention):
            module._reset_parameters()
    return model


class PermutingModel(nn.Module):
    """Wraps a model and rolls its query order by one more place at every decode call."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.pixel_mean = model.pixel_mean
        self.calls = 0

    def encode(self, frames):
        return self.model.encode(frames)

    def class_probabilities(self, logits):
        return self.model.class_probabilities(logits)

    def decode(self, features, batch, frames):
        outputs = self.model.decode(features, batch, frames)
        order = torch.roll(torch.arange(outputs["pred_logits"].shape[1]), self.calls)
        self.calls += 1
        return {key: outputs[key][:, order] for key in ("pred_logits", "pred_masks")}


@pytest.mark.parametrize("decoder", ["ifr", "mask2former"])
def test_real_model_whole_video_chunked_top_k_and_tta(decoder):
    model = tiny_real_model(decoder)
    frames = Frames(moving_video(num_frames=5), orig_size=(48, 72))
    single = infer(model, frames, mode="video", top_k=7, chunk_frames=5)
    assert len(single) == 7 and all(p.masks.shape == (5, 48, 72) for p in single)
    # Chunked encoding sums in another order: a logit at the threshold may flip one pixel.
    chunked = infer(model, frames, mode="video", top_k=7, chunk_frames=2)
    assert_same_predictions(single, chunked, max_mask_mismatch=1e-3)
    tta = infer(model, frames, mode="tta", top_k=7, tta_short_sides=[32, 32])
    assert_same_predictions(single, tta, max_mask_mismatch=1e-3)


@pytest.mark.parametrize("decoder", ["ifr", "mask2former"])
def test_real_model_per_clip_on_static_video_and_linking(decoder):
    model = tiny_real_model(decoder)
    static = moving_video(num_frames=8, static=True)
    # Every clip of 4 frames sees the same content as this 4-frame video: the clips agree with it.
    whole = infer(model, Frames(static[:4], (32, 48)), mode="video", top_k=6)
    clips = infer(model, Frames(static, (32, 48)), mode="clip", clip_frames=4, clip_overlap=2, top_k=6)
    assert_same_predictions(
        [Prediction(p.label, p.score, p.masks[:1]) for p in whole],
        [Prediction(p.label, p.score, p.masks[:1]) for p in clips],
    )
    moving = Frames(moving_video(num_frames=8), (32, 48))
    reference = infer(model, moving, mode="clip", clip_frames=4, clip_overlap=2, top_k=6)
    permuted = infer(PermutingModel(model), moving, mode="clip", clip_frames=4, clip_overlap=2, top_k=6)
    assert_same_predictions(reference, permuted)


@pytest.mark.parametrize("class_loss", ["focal", "softmax"])
@pytest.mark.parametrize("decoder", ["ifr", "mask2former"])
def test_real_model_per_clip_of_two_frames(decoder, class_loss):
    """Table 4's T = 2 with the default overlap of one frame: clips (0, 1), (1, 2), ... each decoded
    alone and linked on their shared frame; on a static video every clip equals a 2-frame video."""
    model = tiny_real_model(decoder, class_loss)
    static = moving_video(num_frames=5, static=True)
    assert clip_starts(5, 2, InferenceConfig().clip_overlap) == [0, 1, 2, 3]
    clips = infer(model, Frames(static, (32, 48)), mode="clip", clip_frames=2, top_k=6)
    assert len(clips) == 6 and all(p.masks.shape == (5, 32, 48) for p in clips)
    pair = infer(model, Frames(static[:2], (32, 48)), mode="video", top_k=6)
    assert_same_predictions(
        [Prediction(p.label, p.score, p.masks[:1]) for p in pair],
        [Prediction(p.label, p.score, p.masks[:1]) for p in clips],
    )
