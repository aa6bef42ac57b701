import pickle

import pytest
import torch
from torchvision.models import resnet50, swin_t
from torchvision.models import swin_transformer as tv_swin
from torchvision.ops.misc import FrozenBatchNorm2d

from ifrvis.config import ModelConfig
from ifrvis.modeling import build_model, load_weights
from ifrvis.modeling.backbone import build_backbone
from ifrvis.modeling.weights import detectron2_resnet_name

CHANNELS = {
    "tiny": (32, 64, 128, 256),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
    "swin_t": (96, 192, 384, 768),
    "swin_s": (96, 192, 384, 768),
    "swin_b": (128, 256, 512, 1024),
    "swin_l": (192, 384, 768, 1536),
}
SLOW = {"swin_l"}  # ~4 s to initialise


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CHANNELS]
)
def test_backbone_pyramid(name):
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 64))
    assert list(features) == ["res2", "res3", "res4", "res5"]
    for (level, feature), channels in zip(features.items(), CHANNELS[name]):
        stride = backbone.strides[level]
        assert feature.shape == (1, channels, 64 // stride, 64 // stride), level
        assert backbone.out_channels[level] == channels
        assert torch.isfinite(feature).all()


def test_resnet_batchnorm_is_frozen():
    backbone = build_backbone("resnet50")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    assert isinstance(backbone.bn1, FrozenBatchNorm2d)
    backbone.train()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        first = backbone(x)["res5"]
        second = backbone(x)["res5"]  # training mode updates no statistics
    torch.testing.assert_close(first, second)
    assert all(p.requires_grad for p in backbone.parameters())  # FREEZE_AT 0: only BatchNorm is frozen


def resnet_model():
    return build_model(
        ModelConfig(
            backbone="resnet50",
            hidden_dim=32,
            mask_dim=32,
            enc_layers=1,
            dec_layers=1,
            num_queries=4,
            num_classes=3,
            dec_ffn_dim=32,
            enc_ffn_dim=32,
        )
    )


def test_load_torchvision_resnet_state_dict_reports_keys(tmp_path):
    torch.manual_seed(0)
    state = resnet50().state_dict()
    del state["layer3.1.conv2.weight"]
    path = tmp_path / "r50.pth"
    torch.save(state, path)
    model = resnet_model()
    report = load_weights(model, path)
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    assert report.missing == ["backbone.layer3.1.conv2.weight"]  # only inside the covered module
    assert report.mismatched == []
    assert torch.equal(model.backbone.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    assert torch.equal(model.backbone.bn1.running_var, state["bn1.running_var"])


def torchvision_to_detectron2(key: str) -> str:
    """The inverse renaming, written out independently of weights.py (detectron2's ResNet names)."""
    parts = key.split(".")
    if parts[0] == "conv1":
        return f"backbone.stem.conv1.{parts[1]}"
    if parts[0] == "bn1":
        return f"backbone.stem.conv1.norm.{parts[1]}"
    stage = int(parts[0][len("layer") :]) + 1
    block, module, leaf = parts[1], parts[2], parts[-1]
    if module == "downsample":
        return f"backbone.res{stage}.{block}.shortcut{'.norm' if parts[3] == '1' else ''}.{leaf}"
    if module.startswith("bn"):
        return f"backbone.res{stage}.{block}.conv{module[2:]}.norm.{leaf}"
    return f"backbone.res{stage}.{block}.{module}.{leaf}"


def test_detectron2_resnet_names():
    assert detectron2_resnet_name("backbone.res2.0.conv1.norm.weight") == "backbone.layer1.0.bn1.weight"
    assert detectron2_resnet_name("backbone.res5.2.conv3.weight") == "backbone.layer4.2.conv3.weight"
    assert (
        detectron2_resnet_name("backbone.res3.0.shortcut.weight") == "backbone.layer2.0.downsample.0.weight"
    )
    assert (
        detectron2_resnet_name("backbone.res4.0.shortcut.norm.bias") == "backbone.layer3.0.downsample.1.bias"
    )
    assert detectron2_resnet_name("backbone.stem.conv1.weight") == "backbone.conv1.weight"
    assert detectron2_resnet_name("sem_seg_head.predictor.query_feat.weight") is None


def test_load_detectron2_pickle(tmp_path):
    torch.manual_seed(0)
    state = {k: v for k, v in resnet50().state_dict().items() if not k.startswith("fc.")}
    d2 = {torchvision_to_detectron2(k): v.numpy() for k, v in state.items() if "num_batches" not in k}
    d2["sem_seg_head.predictor.future_module.weight"] = torch.zeros(100, 256).numpy()  # no rule maps it
    path = tmp_path / "model_final.pkl"
    with path.open("wb") as handle:
        pickle.dump({"model": d2, "__author__": "test"}, handle)
    model = resnet_model()
    report = load_weights(model, path)
    assert report.unexpected == ["sem_seg_head.predictor.future_module.weight"]
    assert report.missing == []
    assert len(report.loaded) == len(d2) - 1
    for key, value in state.items():
        if "num_batches" in key:
            continue
        assert torch.equal(model.state_dict()[f"backbone.{key}"], value), key


def test_load_torchvision_swin_and_shape_mismatch(tmp_path):
    torch.manual_seed(0)
    state = swin_t().state_dict()
    state["features.0.0.weight"] = torch.zeros(1, 2, 3)
    path = tmp_path / "swin_t.pth"
    torch.save(state, path)
    model = build_model(
        ModelConfig(
            backbone="swin_t",
            hidden_dim=32,
            mask_dim=32,
            enc_layers=1,
            dec_layers=1,
            num_queries=4,
            num_classes=3,
            dec_ffn_dim=32,
            enc_ffn_dim=32,
        )
    )
    report = load_weights(model, path)
    assert sorted(report.unexpected) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert report.mismatched == [
        "features.0.0.weight: (1, 2, 3) vs backbone.features.0.0.weight: (96, 3, 4, 4)"
    ]
    # the mismatched key is listed once (mismatched), not also as missing
    assert set(report.missing) == {k for k in model.state_dict() if k.startswith("backbone.out_norms.")}
    assert torch.equal(model.backbone.features[7][1].mlp[0].weight, state["features.7.1.mlp.0.weight"])


def test_unreadable_weights_raise_naming_the_field(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="model.weights"):
        load_weights(resnet_model(), path)


def project_to_mask2former(key: str, ifr: bool) -> str | None:
    """Mask2Former's name for one of this project's head keys, written out independently of weights.py;
    None for IFR's temporal/clip blocks, which Mask2Former does not have."""
    parts = key.split(".")
    head = "sem_seg_head.predictor"
    if parts[0] == "pixel_decoder":
        rest = ".".join(parts[1:])
        if parts[1] == "layers":
            return f"sem_seg_head.pixel_decoder.transformer.encoder.{rest}"
        if parts[1] == "level_embed":
            return "sem_seg_head.pixel_decoder.transformer.level_embed"
        if parts[1] in ("lateral_conv", "output_conv"):
            module = "adapter_1" if parts[1] == "lateral_conv" else "layer_1"
            return f"sem_seg_head.pixel_decoder.{module}." + (
                "weight" if parts[2] == "0" else f"norm.{parts[3]}"
            )
        return f"sem_seg_head.pixel_decoder.{rest}"
    if parts[1] == "heads_out":
        module = "decoder_norm" if parts[2] == "norm" else parts[2]
        return ".".join([head, module, *parts[3:]])
    if parts[1] != "layers":
        return ".".join([head, *parts[1:]])
    index, block, rest = parts[2], parts[3], parts[4:]
    names = {
        ("frame_cross_attn" if ifr else "cross_attn"): (
            "transformer_cross_attention_layers",
            "multihead_attn",
        ),
        ("frame_self_attn" if ifr else "self_attn"): ("transformer_self_attention_layers", "self_attn"),
    }
    if block in names:
        layer_list, attn = names[block]
        inner = [attn, *rest[1:]] if rest[0] == "attn" else rest
        return ".".join([head, layer_list, index, *inner])
    if block == ("frame_ffn" if ifr else "ffn"):
        return ".".join([head, "transformer_ffn_layers", index, *rest])
    return None


IFR_RECURRENT = ("frame_cross_attn", "frame_self_attn", "frame_ffn")  # Eqs. 2-3
IFR_CLIP = ("temporal_cross_attn", "clip_self_attn", "clip_ffn")


@pytest.mark.parametrize(
    "decoder, ifr_init", [("ifr", "random"), ("ifr", "checkpoint"), ("mask2former", "random")]
)
def test_load_mask2former_coco_checkpoint_heads(tmp_path, decoder, ifr_init):
    torch.manual_seed(0)
    cfg = dict(
        backbone="tiny",
        hidden_dim=32,
        mask_dim=32,
        enc_layers=2,
        dec_layers=3,
        num_queries=4,
        num_classes=3,
        dec_ffn_dim=32,
        enc_ffn_dim=32,
        decoder=decoder,
    )
    source = build_model(ModelConfig(**cfg)).state_dict()
    renamed = {
        project_to_mask2former(k, decoder == "ifr"): v
        for k, v in source.items()
        if not k.startswith("backbone.")
    }
    renamed.pop(None, None)
    renamed["sem_seg_head.predictor.class_embed.weight"] = torch.zeros(81, 32)  # COCO's 80 + "no object"
    renamed["sem_seg_head.predictor.class_embed.bias"] = torch.zeros(81)
    path = tmp_path / "mask2former_coco.pkl"
    with path.open("wb") as handle:
        pickle.dump({"model": {k: v.numpy() for k, v in renamed.items()}}, handle)
    torch.manual_seed(1)
    model = build_model(ModelConfig(**cfg))
    initial = model.state_dict()
    report = load_weights(model, path, ifr_init=ifr_init)
    assert report.unexpected == [] and report.mismatched == [] and report.missing == []

    def block(key):
        return key.split(".")[3] if key.startswith("decoder.layers.") else None

    class_head = {"decoder.heads_out.class_embed.weight", "decoder.heads_out.class_embed.bias"}
    recurrent = {k for k in source if block(k) in IFR_RECURRENT and ifr_init == "random"}
    clip = {k for k in source if block(k) in IFR_CLIP}
    assert (decoder == "ifr") == bool(clip)
    assert set(report.random) == class_head | recurrent | clip
    assert (
        report.random["decoder.heads_out.class_embed.bias"]
        == "class head (81 outputs in the file, 3 in the model)"
    )
    assert set(report.skipped) == {
        "sem_seg_head.predictor.class_embed.weight",
        "sem_seg_head.predictor.class_embed.bias",
    } | {project_to_mask2former(k, True) for k in recurrent}
    loaded = model.state_dict()
    heads = {k for k in source if not k.startswith("backbone.")}  # the file has no backbone
    assert set(report.loaded) == heads - set(report.random)
    for key in report.loaded:
        assert torch.equal(loaded[key], source[key]), key
    for key in report.random:
        assert torch.equal(loaded[key], initial[key]), key  # left at the model's own initialisation
    assert "0 missing, 0 unexpected, 0 mismatched" in report.summary()


def torchvision_swin_to_official(key: str) -> str | None:
    """Official Swin / Mask2Former name of a torchvision `features.*` key, written out independently."""
    parts = key.split(".")
    index = int(parts[1])
    if index == 0:
        return f"backbone.patch_embed.{'proj' if parts[2] == '0' else 'norm'}.{parts[3]}"
    if index % 2 == 0:
        return f"backbone.layers.{index // 2 - 1}.downsample.{'.'.join(parts[2:])}"
    stage, block, rest = (index - 1) // 2, parts[2], parts[3:]
    if rest[0] == "mlp":
        rest = ["mlp", "fc1" if rest[1] == "0" else "fc2", rest[2]]
    return f"backbone.layers.{stage}.blocks.{block}.{'.'.join(rest)}"


def test_load_mask2former_swin_backbone(tmp_path):
    torch.manual_seed(0)
    state = swin_t().state_dict()
    official = {torchvision_swin_to_official(k): v for k, v in state.items() if k.startswith("features.")}
    official.update({f"backbone.norm{i}.weight": torch.full((96 * 2**i,), float(i)) for i in range(4)})
    official["backbone.layers.0.blocks.1.attn_mask"] = torch.zeros(4, 49, 49)  # a buffer torchvision lacks
    path = tmp_path / "swin_mask2former.pth"
    torch.save({"model": official}, path)
    model = build_model(
        ModelConfig(
            backbone="swin_t",
            hidden_dim=32,
            mask_dim=32,
            enc_layers=1,
            dec_layers=1,
            num_queries=4,
            num_classes=3,
            dec_ffn_dim=32,
            enc_ffn_dim=32,
        )
    )
    report = load_weights(model, path)
    assert report.unexpected == ["backbone.layers.0.blocks.1.attn_mask"]
    assert report.mismatched == []
    assert report.missing == [f"backbone.out_norms.{i}.bias" for i in range(4)]
    loaded = model.state_dict()
    for key, value in state.items():
        if key.startswith("features."):
            assert torch.equal(loaded[f"backbone.{key}"], value), key
    assert torch.equal(model.backbone.out_norms[3].weight, torch.full((768,), 3.0))


def reference_shifted_window_attention(x, attn, window, shift):
    """Mask2Former's shifted-window attention for one image `x (H, W, C)`, token by token: zero-pad to
    window multiples, roll by -shift, attend within each window with the relative position bias and
    -100 between tokens from different regions of the rolled map, roll back, crop."""
    h, w, c = x.shape
    heads = attn.num_heads
    hp, wp = -(-h // window) * window, -(-w // window) * window
    padded = torch.zeros(hp, wp, c)
    padded[:h, :w] = x
    rolled = torch.roll(padded, (-shift, -shift), (0, 1))

    def region(i, size):  # Swin's slices (0, -window), (-window, -shift), (-shift, None)
        return (i >= size - window).long() + (i >= size - shift).long()

    qkv = attn.qkv(rolled).view(hp, wp, 3, heads, c // heads)
    table = attn.relative_position_bias_table  # ((2 window - 1)^2, heads)
    out = torch.zeros(hp, wp, c)
    offsets = torch.arange(window)
    for y in range(hp):
        for x0 in range(wp):
            # the keys: every position of the query's window
            ky = (y // window * window + offsets)[:, None].expand(window, window).flatten()
            kx = (x0 // window * window + offsets)[None, :].expand(window, window).flatten()
            bias = table[(y - ky + window - 1) * (2 * window - 1) + (x0 - kx + window - 1)]  # (L, heads)
            scores = (qkv[y, x0, 0] * qkv[ky, kx, 1]).sum(-1) / (c // heads) ** 0.5 + bias
            query_region = region(torch.tensor(y), hp) * 3 + region(torch.tensor(x0), wp)
            apart = (region(ky, hp) * 3 + region(kx, wp)) != query_region
            weights = (scores - 100.0 * (apart[:, None] & (shift > 0))).softmax(0)  # over the L keys
            out[y, x0] = (weights[..., None] * qkv[ky, kx, 2]).sum(0).flatten()
    out = torch.roll(attn.proj(out), (shift, shift), (0, 1))
    return out[:h, :w]


@pytest.mark.parametrize("size, window", [((3, 5), 4), ((12, 20), 12)])  # (12, 20): stage 4 at 360x640
def test_swin_shifts_as_mask2former_where_one_window_covers_the_map(size, window):
    torch.manual_seed(0)
    backbone = build_backbone("swin_t")
    attn = backbone.features[1][1].attn  # stage 1's shifted block
    assert attn.shift_size == [3, 3]
    dim, heads = 8, 2
    ours = type(attn)(dim, [window, window], [window // 2, window // 2], heads)
    stock = tv_swin.ShiftedWindowAttention(dim, [window, window], [window // 2, window // 2], heads)
    stock.load_state_dict(ours.state_dict())
    x = torch.randn(1, *size, dim)
    with torch.no_grad():
        expected = reference_shifted_window_attention(x[0], ours, window, window // 2)
        torch.testing.assert_close(ours(x)[0], expected, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(stock(x)[0], expected, atol=1e-3)  # torchvision skips the row shift
        ours.shift_size = stock.shift_size = [0, 0]  # the non-shifted blocks: as torchvision's
        torch.testing.assert_close(ours(x), stock(x))
