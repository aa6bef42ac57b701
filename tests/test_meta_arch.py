import time

import pytest
import torch

from ifrvis.config import ConfigError, LossConfig, ModelConfig, load_config
from ifrvis.modeling import VISModel, build_model, concat_features
from ifrvis.modeling.weights import CheckpointError


def tiny_config(decoder: str = "ifr", **overrides) -> ModelConfig:
    settings = dict(
        decoder=decoder,
        backbone="tiny",
        hidden_dim=64,
        mask_dim=64,
        enc_layers=1,
        dec_layers=3,
        num_queries=16,
        dec_ffn_dim=256,
        enc_ffn_dim=256,
        num_classes=5,
    )
    settings.update(overrides)
    return ModelConfig(**settings)


def clip(b=2, t=2, h=64, w=96, seed=0):
    return torch.rand(b, t, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.mark.parametrize("decoder", ["ifr", "mask2former"])
def test_forward_contract(decoder):
    torch.manual_seed(0)
    model = build_model(tiny_config(decoder)).train()
    assert isinstance(model, VISModel)
    outputs = model(clip())
    assert outputs["pred_logits"].shape == (2, 16, 5)
    assert outputs["pred_masks"].shape == (2, 16, 2, 16, 24)
    assert len(outputs["aux_outputs"]) == 3
    if decoder == "ifr":
        assert outputs["pred_cross_masks"].shape == (2, 16, 2, 2, 16, 24)
    else:
        assert "pred_cross_masks" not in outputs


def test_decoder_switch_changes_only_the_decoder():
    ifr = build_model(tiny_config("ifr")).state_dict()
    baseline = build_model(tiny_config("mask2former")).state_dict()
    shared = lambda sd: {k: v.shape for k, v in sd.items() if not k.startswith("decoder.")}  # noqa: E731
    assert shared(ifr) == shared(baseline)


@pytest.mark.parametrize("decoder", ["ifr", "mask2former"])
def test_encode_in_chunks_then_decode_equals_forward(decoder):
    torch.manual_seed(0)
    model = build_model(tiny_config(decoder)).eval()
    images = clip(b=1, t=5)
    with torch.no_grad():
        whole = model(images)
        chunks = [model.encode(images[0, i : i + 2]) for i in range(0, 5, 2)]
        chunked = model.decode(concat_features(chunks), 1, 5)
    assert set(whole) == {"pred_logits", "pred_masks"}
    torch.testing.assert_close(chunked["pred_logits"], whole["pred_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(chunked["pred_masks"], whole["pred_masks"], atol=1e-4, rtol=1e-4)


def test_encode_normalises_pixels():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg).eval()
    frames = clip(b=1, t=2)[0]
    mean = torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.pixel_std).view(1, 3, 1, 1)
    with torch.no_grad():
        features = model.encode(frames)
        expected, _ = model.pixel_decoder(model.backbone((frames - mean) / std))
    torch.testing.assert_close(features["mask_features"], expected)
    assert [tuple(x.shape) for x in features["multi_scale"]] == [(2, 64, 2, 3), (2, 64, 4, 6), (2, 64, 8, 12)]


@pytest.mark.parametrize("decoder", ["ifr", "mask2former"])
def test_gradients_reach_the_whole_model(decoder):
    torch.manual_seed(0)
    model = build_model(tiny_config(decoder)).train()
    outputs = model(clip())
    terms = [outputs, *outputs["aux_outputs"]]
    loss = sum(o["pred_logits"].sigmoid().mean() + o["pred_masks"].sigmoid().square().mean() for o in terms)
    if decoder == "ifr":
        loss = loss + outputs["pred_cross_masks"].sigmoid().mean()
    loss.backward()
    # At Deformable DETR's initialisation the sampling ignores the query, hence its positional level
    # embedding (zero-initialised offset/weight projections): exactly zero gradient, by design.
    zero_at_init = {"pixel_decoder.level_embed"}
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        if name not in zero_at_init:
            assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("decoder", ["ifr", "mask2former"])
def test_class_loss_sets_the_class_head_and_its_probabilities(decoder):
    torch.manual_seed(0)
    model = build_model(tiny_config(decoder), class_loss="softmax").eval()
    with torch.no_grad():
        logits = model(clip())["pred_logits"]
    assert logits.shape == (2, 16, 6)
    assert torch.allclose(model.class_probabilities(logits), logits.softmax(-1)[..., :5])
    focal = build_model(tiny_config(decoder)).eval()  # loss.class_loss's default
    assert focal.decoder.heads_out.class_loss == LossConfig().class_loss == "focal"
    with torch.no_grad():
        logits = focal(clip())["pred_logits"]
    assert logits.shape == (2, 16, 5)
    assert torch.equal(focal.class_probabilities(logits), logits.sigmoid())


def test_backbone_parameters_are_named_backbone():
    model = build_model(tiny_config())
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith("backbone.") for n in names)
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    for name, param in model.named_parameters():
        assert name.startswith("backbone.") == (id(param) in backbone_ids), name


def test_bad_settings_raise_naming_the_field():
    with pytest.raises(ConfigError, match="'model.decoder' = 'detr' is not one of"):
        load_config(None, ["model.decoder=detr"])  # a config is checked when it is loaded
    with pytest.raises(ValueError, match="model.backbone"):
        build_model(tiny_config(backbone="vgg"))
    model = build_model(tiny_config())
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        model(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="expected 2 x 3"):
        model.decode(model.encode(torch.rand(4, 3, 64, 64)), 2, 3)


def test_build_model_loads_weights_file(tmp_path):
    torch.manual_seed(0)
    trained = build_model(tiny_config())
    path = tmp_path / "model.pth"
    torch.save({"model": trained.state_dict()}, path)
    torch.manual_seed(1)
    loaded = build_model(tiny_config(weights=str(path)))
    for (name, a), b in zip(trained.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="model.weights"):
        build_model(tiny_config(weights=str(tmp_path / "absent.pth")))


@pytest.mark.parametrize("decoder", ["ifr", "mask2former"])
def test_tiny_training_step_is_fast(decoder):
    """A 2-frame 96x128 clip, batch 4, forward + backward: ~0.3 s (IFR) and ~0.2 s (baseline) on one
    thread. One thread because on a shared 2-core machine OpenMP's threads wait for each other on the
    decoder's many small matrix products; the bound is loose so that a busy machine does not fail it."""
    torch.manual_seed(0)
    model = build_model(tiny_config(decoder, enc_layers=2)).train()
    images = clip(b=4, t=2, h=96, w=128)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            outputs = model(images)
            (outputs["pred_masks"].mean() + outputs["pred_logits"].mean()).backward()
            timings.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    assert min(timings) < 3.0
