import math

import pytest
import torch
import torch.nn.functional as F

from ifrvis.modeling.ifr_decoder import IFRDecoder, IFRDecoderLayer, per_frame_attention_mask
from ifrvis.modeling.layers import (
    CrossAttentionLayer,
    SelfAttentionLayer,
    masked_attention_mask,
    sine_position_2d,
    sine_position_3d,
)
from ifrvis.modeling.mask2former_decoder import Mask2FormerVISDecoder
from ifrvis.modeling.query_decoder import QueryDecoder

DIM, HEADS, QUERIES, CLASSES, MASK_DIM = 32, 4, 6, 3, 16
SIZES = [(2, 3), (4, 6), (8, 12)]  # coarse to fine
MASK_SIZE = (16, 24)


def make_decoder(kind: str, layers: int = 3, class_loss: str = "focal"):
    cls = IFRDecoder if kind == "ifr" else Mask2FormerVISDecoder
    return cls(
        CLASSES,
        QUERIES,
        DIM,
        HEADS,
        ffn_dim=64,
        layers=layers,
        mask_dim=MASK_DIM,
        dropout=0.0,
        pre_norm=False,
        class_loss=class_loss,
    )


def make_features(b: int, t: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    multi_scale = [torch.randn(b, t, DIM, h, w, generator=gen) for h, w in SIZES]
    mask_features = torch.randn(b, t, MASK_DIM, *MASK_SIZE, generator=gen)
    return multi_scale, mask_features


@pytest.mark.parametrize("kind", ["ifr", "mask2former"])
def test_either_decoder_takes_either_class_head(kind):
    """focal: K logits from the focal prior (every class at probability 0.01), sigmoid probabilities;
    softmax: K + 1 logits (the last "no object") from nn.Linear's initialisation, softmax probabilities
    without the last column."""
    multi_scale, mask_features = make_features(2, 2)
    torch.manual_seed(0)
    focal = make_decoder(kind, class_loss="focal").eval()
    logits = focal(multi_scale, mask_features)["pred_logits"]
    assert logits.shape == (2, QUERIES, CLASSES)
    assert torch.allclose(focal.heads_out.class_embed.bias, torch.full((CLASSES,), -math.log(99.0)))
    assert torch.equal(focal.heads_out.probabilities(logits), logits.sigmoid())
    torch.manual_seed(0)
    softmax = make_decoder(kind, class_loss="softmax").train()
    outputs = softmax(multi_scale, mask_features)
    assert outputs["pred_logits"].shape == (2, QUERIES, CLASSES + 1)
    assert all(aux["pred_logits"].shape == (2, QUERIES, CLASSES + 1) for aux in outputs["aux_outputs"])
    assert softmax.heads_out.class_embed.bias.abs().max() < 1.0  # no focal prior
    probs = softmax.heads_out.probabilities(outputs["pred_logits"])
    assert probs.shape == (2, QUERIES, CLASSES)
    assert torch.allclose(probs, outputs["pred_logits"].softmax(-1)[..., :CLASSES])
    assert (probs.sum(-1) < 1).all()
    with pytest.raises(ValueError, match="loss.class_loss"):
        make_decoder(kind, class_loss="sigmoid")


def with_frame_changed(multi_scale, mask_features, frame: int):
    """The same features except frame `frame`, replaced by noise."""
    multi_scale = [x.clone() for x in multi_scale]
    mask_features = mask_features.clone()
    for x in multi_scale:
        x[:, frame] = torch.randn_like(x[:, frame])
    mask_features[:, frame] = torch.randn_like(mask_features[:, frame])
    return multi_scale, mask_features


@pytest.mark.parametrize("kind", ["ifr", "mask2former"])
@pytest.mark.parametrize("frames", [1, 3])
def test_output_contract_shapes(kind, frames):
    torch.manual_seed(0)
    decoder = make_decoder(kind).train()
    outputs = decoder(*make_features(2, frames))
    assert outputs["pred_logits"].shape == (2, QUERIES, CLASSES)
    assert outputs["pred_masks"].shape == (2, QUERIES, frames, *MASK_SIZE)
    assert len(outputs["aux_outputs"]) == 3  # initial queries + every layer but the last
    has_cross = kind == "ifr" and frames > 1
    assert ("pred_cross_masks" in outputs) == has_cross
    for aux in outputs["aux_outputs"]:
        assert aux["pred_masks"].shape == outputs["pred_masks"].shape
        assert ("pred_cross_masks" in aux) == has_cross
    if has_cross:
        cross = outputs["pred_cross_masks"]
        assert cross.shape == (2, QUERIES, frames, frames, *MASK_SIZE)
        for t in range(frames):
            torch.testing.assert_close(cross[:, :, t, t], outputs["pred_masks"][:, :, t])
    decoder.eval()
    with torch.no_grad():
        evaluated = decoder(*make_features(2, frames))
    assert set(evaluated) == {"pred_logits", "pred_masks"}


def test_cross_masks_apply_frame_t1_queries_to_frame_t2_pixels():
    """Recompute [b, q, t1, t2] from the last layer's frame queries, captured with a hook."""
    torch.manual_seed(0)
    decoder = make_decoder("ifr").train()
    captured = {}
    decoder.layers[-1].register_forward_hook(lambda m, i, out: captured.update(frames=out[0]))
    multi_scale, mask_features = make_features(1, 2)
    outputs = decoder(multi_scale, mask_features)
    embedding = decoder.heads_out.mask_embed(decoder.heads_out.norm(captured["frames"]))  # (B, T, Q, D)
    for t1 in range(2):
        for t2 in range(2):
            expected = (embedding[0, t1][:, :, None, None] * mask_features[0, t2][None]).sum(1)
            torch.testing.assert_close(
                outputs["pred_cross_masks"][0, :, t1, t2], expected, atol=1e-5, rtol=1e-5
            )


def torch_attention_layer(layer, tgt, memory=None, attn_mask=None, pos=None, query_pos=None):
    """The attention layer computed with nn.MultiheadAttention's own forward on its parameters."""
    x = layer.norm(tgt) if layer.pre_norm else tgt
    q = x if query_pos is None else x + query_pos
    if memory is None:  # self-attention
        k, v = q, x
    else:
        k, v = (memory if pos is None else memory + pos), memory
    out = tgt + layer.attn(q, k, v, attn_mask=attn_mask, need_weights=False)[0]
    return out if layer.pre_norm else layer.norm(out)


@pytest.mark.parametrize("pre_norm", [False, True])
@pytest.mark.parametrize("kind", ["self", "cross"])
def test_attention_layers_equal_torch_multihead_attention(kind, pre_norm):
    """Our attention (one projection of the memory, SDPA, fewer op calls) gives nn.MultiheadAttention's
    outputs and gradients, with and without Eq. 1's mask."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    tgt = torch.randn(2, QUERIES, DIM, generator=gen)
    memory, pos = torch.randn(2, 10, DIM, generator=gen), torch.randn(10, DIM, generator=gen)
    query_pos = torch.randn(2, QUERIES, DIM, generator=gen)
    blocked = torch.rand(2 * HEADS, QUERIES, 10 if kind == "cross" else QUERIES, generator=gen) < 0.5
    blocked[..., 0] = False
    if kind == "self":
        layer = SelfAttentionLayer(DIM, HEADS, pre_norm=pre_norm)
        ours, theirs = (
            (lambda: layer(tgt, query_pos)),
            (lambda: torch_attention_layer(layer, tgt, None, None, None, query_pos)),
        )
        cases = [(ours, theirs)]
    else:
        layer = CrossAttentionLayer(DIM, HEADS, pre_norm=pre_norm)
        cases = [
            (
                lambda m=m: layer(tgt, memory, m, pos, query_pos),
                lambda m=m: torch_attention_layer(layer, tgt, memory, m, pos, query_pos),
            )
            for m in (None, blocked)
        ]
    for ours, theirs in cases:
        grads = []
        for run in (ours, theirs):
            layer.zero_grad()
            out = run()
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            grads.append((out.detach(), [p.grad.clone() for p in layer.parameters()]))
        torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
        for a, b in zip(grads[0][1], grads[1][1]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def reference_ifr_layer(layer: IFRDecoderLayer, clip, memory, memory_pos, blocked, query_pos):
    """Eqs. 1-3 frame by frame, with no batching over frames nor shared projections, each attention
    nn.MultiheadAttention's own forward: Q^0 = Q; for each t both halves of Eq. 2 computed separately
    with frame t's mask, then Eq. 3; then the clip update."""
    n = clip.shape[1]
    previous, frame_queries = clip, []
    for t in range(memory.shape[1]):
        mask_t = None if blocked is None else blocked[:, t].flatten(0, 1)
        attn = layer.frame_cross_attn
        recurrent = torch_attention_layer(attn, previous, memory[:, t], mask_t, memory_pos, query_pos)
        clip_half = torch_attention_layer(attn, clip, memory[:, t], mask_t, memory_pos, query_pos)
        joint = torch_attention_layer(
            layer.frame_self_attn,
            torch.cat([recurrent, clip_half], 1),
            None,
            None,
            None,
            torch.cat([query_pos, query_pos], 1),
        )
        previous = layer.frame_ffn(joint)[:, :n]
        frame_queries.append(previous)
    stacked = torch.stack(frame_queries, 1)
    keys = stacked.flatten(1, 2)
    new_clip = torch_attention_layer(
        layer.temporal_cross_attn, clip, keys, None, query_pos.repeat(1, len(frame_queries), 1), query_pos
    )
    return stacked, layer.clip_ffn(
        torch_attention_layer(layer.clip_self_attn, new_clip, None, None, None, query_pos)
    )


def random_layer_inputs(b=2, t=3, tokens=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    clip = torch.randn(b, QUERIES, DIM, generator=gen)
    memory = torch.randn(b, t, tokens, DIM, generator=gen)
    memory_pos = torch.randn(tokens, DIM, generator=gen)
    query_pos = torch.randn(b, QUERIES, DIM, generator=gen)
    blocked = torch.rand(b, t, 1, QUERIES, tokens, generator=gen) < 0.5
    blocked[..., 0] = False  # every query sees at least one token
    return clip, memory, memory_pos, blocked.expand(-1, -1, HEADS, -1, -1).contiguous(), query_pos


@pytest.mark.parametrize("masked", [False, True])
def test_ifr_layer_matches_frame_by_frame_reference(masked):
    torch.manual_seed(0)
    layer = IFRDecoderLayer(DIM, HEADS, 64).eval()
    clip, memory, memory_pos, blocked, query_pos = random_layer_inputs()
    blocked = blocked if masked else None
    frames, new_clip = layer(clip, memory, memory_pos, blocked, query_pos)
    ref_frames, ref_clip = reference_ifr_layer(layer, clip, memory, memory_pos, blocked, query_pos)
    torch.testing.assert_close(frames, ref_frames, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new_clip, ref_clip, atol=1e-5, rtol=1e-5)


def test_q0_is_a_copy_of_the_clip_queries():
    """At t = 1 both halves of Eq. 2 equal Attn(Q_i, F_1), so the two groups of Eq. 3 are identical."""
    torch.manual_seed(0)
    layer = IFRDecoderLayer(DIM, HEADS, 64).eval()
    clip, memory, memory_pos, _, query_pos = random_layer_inputs(t=1)
    half = layer.frame_cross_attn(clip, memory[:, 0], pos=memory_pos, query_pos=query_pos)
    joint = layer.frame_self_attn(torch.cat([half, half], 1), torch.cat([query_pos, query_pos], 1))
    torch.testing.assert_close(joint[:, :QUERIES], joint[:, QUERIES:])
    frames, _ = layer(clip, memory, memory_pos, None, query_pos)
    torch.testing.assert_close(frames[:, 0], layer.frame_ffn(joint[:, :QUERIES]), atol=1e-6, rtol=1e-6)


def test_frame_queries_are_causal_and_recurrent_in_a_layer():
    torch.manual_seed(0)
    layer = IFRDecoderLayer(DIM, HEADS, 64).eval()
    clip, memory, memory_pos, blocked, query_pos = random_layer_inputs(t=4)
    frames, _ = layer(clip, memory, memory_pos, blocked, query_pos)
    for t in range(3):
        changed = memory.clone()
        changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :])
        frames_changed, _ = layer(clip, changed, memory_pos, blocked, query_pos)
        # frames <= t do not see later frames ...
        torch.testing.assert_close(frames_changed[:, : t + 1], frames[:, : t + 1])
        # ... and frame t + 1 depends on frame t through Q^t (the recurrence), not only on F_{t+1}
        only_previous = memory.clone()
        only_previous[:, t] = torch.randn_like(only_previous[:, t])
        frames_prev, _ = layer(clip, only_previous, memory_pos, blocked, query_pos)
        assert (frames_prev[:, t + 1] - frames[:, t + 1]).abs().max() > 1e-4


def test_first_decoder_layer_is_causal_later_layers_mix_frames():
    torch.manual_seed(0)
    decoder = make_decoder("ifr").train()  # aux outputs hold the per-layer predictions; dropout is 0
    multi_scale, mask_features = make_features(1, 3)
    outputs = decoder(multi_scale, mask_features)
    changed = decoder(*with_frame_changed(multi_scale, mask_features, frame=2))
    first_layer = 1  # aux_outputs[0] is the prediction from the initial queries
    torch.testing.assert_close(
        changed["aux_outputs"][first_layer]["pred_masks"][:, :, :2],
        outputs["aux_outputs"][first_layer]["pred_masks"][:, :, :2],
    )
    # Through the clip-level queries, the last layer's frame-0 masks do see frame 2.
    assert (changed["pred_masks"][:, :, 0] - outputs["pred_masks"][:, :, 0]).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["ifr", "mask2former"])
def test_gradients_reach_every_parameter(kind):
    torch.manual_seed(0)
    decoder = make_decoder(kind).train()
    outputs = decoder(*make_features(2, 2))
    loss = sum(
        o["pred_logits"].sigmoid().mean() + o["pred_masks"].sigmoid().square().mean()
        for o in [outputs, *outputs["aux_outputs"]]
    )
    loss.backward()
    for name, param in decoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_whole_video_inference_on_40_frames():
    torch.manual_seed(0)
    decoder = make_decoder("ifr").eval()
    with torch.no_grad():
        outputs = decoder(*make_features(1, 40))
    assert outputs["pred_masks"].shape == (1, QUERIES, 40, *MASK_SIZE)
    assert torch.isfinite(outputs["pred_masks"]).all()


def test_masked_attention_mask_rule():
    logits = torch.full((1, 3, 2, 4, 4), -5.0)
    logits[0, 0, 0, :2, :2] = 5.0  # query 0: top-left of frame 0 only
    logits[0, 1, 1] = 5.0  # query 1: all of frame 1
    # query 2: empty everywhere -> attends everywhere
    blocked = masked_attention_mask(logits, (2, 2), heads=2)
    assert blocked.shape == (2, 3, 8)
    expected_q0 = torch.ones(8, dtype=torch.bool)
    expected_q0[0] = False
    assert torch.equal(blocked[0, 0], expected_q0)
    assert torch.equal(blocked[0, 1], torch.tensor([True] * 4 + [False] * 4))
    assert not blocked[0, 2].any()
    assert torch.equal(blocked[0], blocked[1])  # same mask for every head
    # Per frame: query 1 is empty on frame 0, so it attends to all of frame 0.
    per_frame = per_frame_attention_mask(logits, (2, 2), heads=2)
    assert per_frame.shape == (1, 2, 2, 3, 4)
    assert not per_frame[0, 0, 0, 1].any() and not per_frame[0, 1, 0, 1].any()
    assert torch.equal(per_frame[0, 0, 0, 0], torch.tensor([False, True, True, True]))
    assert per_frame[0, 1, 0, 0].sum() == 0  # query 0 is empty on frame 1 too


def test_masked_attention_blocks_hidden_tokens():
    """Eq. 1: a blocked token has no influence on the query's output."""
    torch.manual_seed(0)
    layer = IFRDecoderLayer(DIM, HEADS, 64).eval()
    clip, memory, memory_pos, blocked, query_pos = random_layer_inputs(b=1, t=1)
    blocked[..., 1:] = True
    blocked[..., 0] = False
    frames, _ = layer(clip, memory, memory_pos, blocked, query_pos)
    changed = memory.clone()
    changed[:, :, 1:] = torch.randn_like(changed[:, :, 1:])
    frames_changed, _ = layer(clip, changed, memory_pos, blocked, query_pos)
    torch.testing.assert_close(frames, frames_changed)


def reference_sine(position: float, dim: int, temperature: float = 10000.0) -> list[float]:
    """Channel 2k: sin(p / T^(2k/dim)); channel 2k + 1: cos(p / T^(2k/dim))."""
    out = []
    for k in range(dim // 2):
        angle = position / temperature ** (2 * k / dim)
        out += [math.sin(angle), math.cos(angle)]
    return out


def test_sine_positions_match_formula():
    h, w, dim, frames = 3, 5, 8, 4
    pos2d = sine_position_2d(h, w, dim)
    assert pos2d.shape == (dim, h, w)
    scale = 2 * math.pi
    y, x = 2, 3
    expected = reference_sine((y + 1) / (h + 1e-6) * scale, dim // 2) + reference_sine(
        (x + 1) / (w + 1e-6) * scale, dim // 2
    )
    torch.testing.assert_close(pos2d[:, y, x], torch.tensor(expected), atol=1e-5, rtol=0)
    pos3d = sine_position_3d(frames, h, w, dim)
    assert pos3d.shape == (frames, dim, h, w)
    t = 1
    temporal = torch.tensor(reference_sine((t + 1) / (frames + 1e-6) * scale, dim))
    torch.testing.assert_close(pos3d[t, :, y, x], torch.tensor(expected) + temporal, atol=1e-5, rtol=0)


def test_baseline_attends_to_all_frames_of_a_scale():
    """Mask2Former-VIS has no frame order: its frame-0 masks see frame 2 from the first layer on."""
    torch.manual_seed(0)
    decoder = make_decoder("mask2former").train()
    multi_scale, mask_features = make_features(1, 3)
    outputs = decoder(multi_scale, mask_features)
    changed = decoder(*with_frame_changed(multi_scale, mask_features, frame=2))
    diff = changed["aux_outputs"][1]["pred_masks"][:, :, 0] - outputs["aux_outputs"][1]["pred_masks"][:, :, 0]
    assert diff.abs().max() > 1e-4
    assert F.mse_loss(changed["pred_logits"], outputs["pred_logits"]) > 0


# state_dict keys and shapes of both decoders with `make_decoder(kind, layers=2)`, as shipped: the
# pretrained checkpoints and the published-checkpoint loader depend on them.
ATTENTION = [
    ("attn.in_proj_weight", (96, 32)),
    ("attn.in_proj_bias", (96,)),
    ("attn.out_proj.weight", (32, 32)),
    ("attn.out_proj.bias", (32,)),
    ("norm.weight", (32,)),
    ("norm.bias", (32,)),
]
FFN = [
    ("linear1.weight", (64, 32)),
    ("linear1.bias", (64,)),
    ("linear2.weight", (32, 64)),
    ("linear2.bias", (32,)),
    ("norm.weight", (32,)),
    ("norm.bias", (32,)),
]
LAYER_BLOCKS = {
    "ifr": [
        ("frame_cross_attn", ATTENTION),
        ("frame_self_attn", ATTENTION),
        ("frame_ffn", FFN),
        ("temporal_cross_attn", ATTENTION),
        ("clip_self_attn", ATTENTION),
        ("clip_ffn", FFN),
    ],
    "mask2former": [("cross_attn", ATTENTION), ("self_attn", ATTENTION), ("ffn", FFN)],
}


def expected_state_dict(kind: str, logits: int) -> list[tuple[str, tuple[int, ...]]]:
    queries = [
        ("query_feat.weight", (QUERIES, DIM)),
        ("query_embed.weight", (QUERIES, DIM)),
        ("level_embed.weight", (3, DIM)),
    ]
    layers = [
        (f"layers.{i}.{block}.{name}", shape)
        for i in range(2)
        for block, params in LAYER_BLOCKS[kind]
        for name, shape in params
    ]
    heads = [
        ("heads_out.norm.weight", (32,)),
        ("heads_out.norm.bias", (32,)),
        ("heads_out.class_embed.weight", (logits, 32)),
        ("heads_out.class_embed.bias", (logits,)),
        ("heads_out.mask_embed.layers.0.weight", (32, 32)),
        ("heads_out.mask_embed.layers.0.bias", (32,)),
        ("heads_out.mask_embed.layers.1.weight", (32, 32)),
        ("heads_out.mask_embed.layers.1.bias", (32,)),
        ("heads_out.mask_embed.layers.2.weight", (MASK_DIM, 32)),
        ("heads_out.mask_embed.layers.2.bias", (MASK_DIM,)),
    ]
    return queries + layers + heads


@pytest.mark.parametrize("class_loss, logits", [("focal", CLASSES), ("softmax", CLASSES + 1)])
@pytest.mark.parametrize("kind", ["ifr", "mask2former"])
def test_state_dict_keys_and_shapes_are_the_shipped_ones(kind, class_loss, logits):
    state = make_decoder(kind, layers=2, class_loss=class_loss).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == expected_state_dict(kind, logits)


@pytest.mark.parametrize("kind", ["ifr", "mask2former"])
def test_layers_go_round_robin_over_the_scales(kind):
    """`QueryDecoder`: layer i attends to scale i mod 3, coarse to fine; a wrong level count is named."""
    torch.manual_seed(0)
    decoder = make_decoder(kind, layers=4).eval()
    assert isinstance(decoder, QueryDecoder)
    tokens = []
    for layer in decoder.layers:
        layer.register_forward_hook(lambda m, inputs, out: tokens.append(inputs[1].shape[-2]))
    multi_scale, mask_features = make_features(1, 2)
    with torch.no_grad():
        decoder(multi_scale, mask_features)
    per_frame = [h * w for h, w in SIZES]
    expected = per_frame if kind == "ifr" else [2 * n for n in per_frame]  # baseline: both frames at once
    assert tokens == expected + expected[:1]
    with pytest.raises(ValueError, match=f"{type(decoder).__name__} expects 3 feature levels, got 2"):
        decoder(multi_scale[:2], mask_features)


@pytest.mark.parametrize("kind", ["ifr", "mask2former"])
def test_decoder_layers_start_xavier_uniform_as_mask2formers(kind):
    """Every matrix of every decoder layer (attention in/out projections, FFN) has xavier-uniform's std
    sqrt(2 / (fan_in + fan_out)) (Mask2Former's `_reset_parameters`), not nn.Linear's ~half of it; biases
    and LayerNorms keep PyTorch's. Paper-sized layers (256 channels, FFN 2048): the sample std of 0.5-5 M
    uniform draws is within 1 % of the law's."""
    torch.manual_seed(0)
    layer_class = IFRDecoderLayer if kind == "ifr" else Mask2FormerVISDecoder.layer_class
    layer = layer_class(dim=256, heads=8, ffn_dim=2048)
    matrices = {name: p for name, p in layer.named_parameters() if p.dim() > 1}
    assert len(matrices) == (12 if kind == "ifr" else 6)  # in_proj + out_proj per attention, 2 per FFN
    for name, param in matrices.items():
        fan_out, fan_in = param.shape
        expected = math.sqrt(2 / (fan_in + fan_out))
        assert param.std().item() == pytest.approx(expected, rel=0.01), name
    assert all(
        param.abs().max() <= math.sqrt(3) * math.sqrt(2 / sum(param.shape)) for param in matrices.values()
    )
