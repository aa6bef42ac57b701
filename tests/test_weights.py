"""model.weights: Mask2Former's published COCO checkpoints (names and shapes), the restricted unpickler,
IFR's initialisation (model.ifr_init), extra learned queries and the `ifrvis weights` report."""

import collections
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG
from published_checkpoints import Shapes, published_shapes

from ifrvis.cli import main as cli_main
from ifrvis.config import load_config
from ifrvis.modeling import build_model, load_weights
from ifrvis.modeling.weights import CheckpointError, read_checkpoint

BACKBONES = ("resnet50", "resnet101", "swin_t", "swin_s", "swin_b", "swin_l")
PAPER_CONFIG = "experiments/configs/ytvis19_{}.yaml"
RECURRENT = ("frame_cross_attn", "frame_self_attn", "frame_ffn")  # Eqs. 2-3
CLIP = ("temporal_cross_attn", "clip_self_attn", "clip_ffn")


def paper_model(backbone: str, *overrides: str):
    """The paper config's model for `backbone`, on the meta device: real shapes, no memory."""
    name = backbone.replace("resnet", "r")
    cfg = load_config(PAPER_CONFIG.format(name), ["model.weights=", *overrides])
    with torch.device("meta"):
        return build_model(cfg.model)


def write_float_pkl(path, shapes: Shapes):
    """A detectron2-style .pkl of zero arrays of `shapes`: float16 (floating point as the published
    float32, in half the bytes: an integer file would be a dtype mismatch), the index buffers int64."""
    model = {
        key: np.zeros(shape, np.int64 if key.endswith("relative_position_index") else np.float16)
        for key, shape in shapes.items()
    }
    with path.open("wb") as handle:
        pickle.dump({"model": model, "__author__": "Mask2Former"}, handle, protocol=4)
    return path


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """backbone -> a .pkl with the keys and shapes of Mask2Former's COCO instance model (written once)."""
    folder = tmp_path_factory.mktemp("published")
    paths = {}

    def path(backbone: str):
        if backbone not in paths:
            target = folder / f"mask2former_coco_{backbone}.pkl"
            paths[backbone] = write_float_pkl(target, published_shapes(backbone))
        return paths[backbone]

    return path


def layer_block(key: str) -> str | None:
    return key.split(".")[3] if key.startswith("decoder.layers.") else None


@pytest.mark.parametrize("backbone", BACKBONES)
def test_published_coco_checkpoint_loads_whole_backbone_and_heads(published, backbone):
    model = paper_model(backbone)
    report = load_weights(model, published(backbone))
    shapes = published_shapes(backbone)
    assert report.unexpected == [] and report.mismatched == [] and report.missing == []
    # every backbone tensor of the file has a place, and every backbone tensor of the model is given
    model_backbone = {k for k in report.model_keys if k.startswith("backbone.")}
    file_backbone = [k for k in shapes if k.startswith("backbone.")]
    assert model_backbone <= set(report.loaded)
    assert len(model_backbone) == len(file_backbone)
    assert not any(k.startswith("backbone.") for k in report.skipped)
    # the heads: the pixel decoder whole; the decoder's queries, level embedding, norm and mask head
    assert {k for k in report.model_keys if k.startswith("pixel_decoder.")} <= set(report.loaded)
    decoder = {k for k in report.model_keys if k.startswith("decoder.")}
    blocks = {k for k in decoder if layer_block(k) in RECURRENT + CLIP}
    class_head = {"decoder.heads_out.class_embed.weight", "decoder.heads_out.class_embed.bias"}
    assert set(report.random) == blocks | class_head  # model.ifr_init=random, 40 vs 81 classes
    assert decoder - blocks - class_head <= set(report.loaded)
    assert len(report.loaded) + len(report.random) == len(report.model_keys)
    summary = report.summary()
    assert "backbone 100%, pixel_decoder 100%" in summary
    assert "0 missing, 0 unexpected, 0 mismatched" in summary


@pytest.mark.parametrize("smaller, bigger", [("resnet50", "resnet101"), ("swin_t", "swin_s")])
def test_a_bigger_models_file_is_incomplete_though_every_key_of_the_model_loads(published, smaller, bigger):
    """A ResNet-101 file holds every key of a ResNet-50 at its shape (res4 has 23 blocks, not 6), a Swin-S
    every key of a Swin-T (18 blocks in stage 3, not 6): only the file's extra blocks tell the wrong model,
    so a file with keys the model has no place for is not complete, and a run refuses it."""
    report = load_weights(paper_model(smaller), published(bigger))
    assert report.missing == [] and report.mismatched == []
    assert report.unexpected and report.foreign == report.unexpected
    assert all(key.startswith("backbone.") for key in report.foreign) and not report.complete
    assert load_weights(paper_model(bigger), published(bigger)).complete


def test_swin_l_with_100_queries_keeps_the_first_of_200_or_refuses(published):
    path = published("swin_l")
    report = load_weights(paper_model("swin_l"), path, extra_queries="first")
    note = "kept the first 100 of the file's 200 learned queries"
    assert any(note in n for n in report.notes) and note in report.summary() and note in report.render()
    assert {"decoder.query_feat.weight", "decoder.query_embed.weight"} <= set(report.loaded)
    with pytest.raises(CheckpointError, match="200 learned queries.*model.extra_queries=first"):
        load_weights(paper_model("swin_l"), path, extra_queries="error")
    exact = load_weights(paper_model("swin_l_200"), path, extra_queries="error")  # 200 into 200
    assert exact.notes == [] and exact.mismatched == []


def test_first_queries_are_the_files_first_rows(tmp_path):
    torch.manual_seed(0)
    small = dict(hidden_dim=32, mask_dim=32, enc_layers=1, dec_layers=1, dec_ffn_dim=32, enc_ffn_dim=32)
    cfg = load_config(TINY_CONFIG, ["model.weights=", *(f"model.{k}={v}" for k, v in small.items())])
    source = build_model(cfg.model).state_dict()  # 16 queries
    fewer = load_config(TINY_CONFIG, ["model.weights=", "model.num_queries=5"]).model
    path = tmp_path / "tiny.pth"
    torch.save({"model": source}, path)
    model = build_model(type(fewer)(**{**vars(fewer), **small}))
    load_weights(model, path)
    assert torch.equal(model.decoder.query_feat.weight, source["decoder.query_feat.weight"][:5])
    assert torch.equal(model.decoder.query_embed.weight, source["decoder.query_embed.weight"][:5])


class RunsCommand:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_restricted_unpickler_refuses_code_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final.pkl"
    payload = {"model": {"backbone.stem.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}}
    payload["__author__"] = RunsCommand(f"touch {marker}")
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match=rf"{path}.*(posix|os)\.system"):
        load_weights(build_model(load_config(TINY_CONFIG, ["model.weights="]).model), path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("container", [dict, collections.OrderedDict])
def test_restricted_unpickler_reads_detectron2_pickles(tmp_path, protocol, container):
    rng = np.random.default_rng(0)
    arrays = {
        "backbone.res2.0.conv1.weight": rng.standard_normal((64, 64, 1, 1)).astype(np.float32),
        "backbone.layers.0.blocks.0.attn.relative_position_index": rng.integers(0, 169, (49, 49)),
        "sem_seg_head.predictor.query_feat.weight": rng.standard_normal((3, 4)).astype(np.float16),
        "step": np.float32(1.5),  # a NumPy scalar: not a tensor, dropped
    }
    path = tmp_path / "model_final.pkl"
    payload = {"model": container(arrays), "__author__": "Mask2Former", "matching_heuristics": True}
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    state = read_checkpoint(path)
    assert sorted(state) == sorted(arrays)[:3]
    for key, tensor in state.items():
        np.testing.assert_array_equal(tensor.numpy(), arrays[key])
        assert tensor.dtype == torch.from_numpy(arrays[key]).dtype


def test_restricted_unpickler_reads_numpy_1_pickles(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = pickle.dumps({"model": {"w": array}}, protocol=2)
    path = tmp_path / "numpy1.pkl"
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))  # NumPy 1's name
    assert b"numpy.core.multiarray\n_reconstruct" in path.read_bytes()
    np.testing.assert_array_equal(read_checkpoint(path)["w"].numpy(), array)


def test_unreadable_pickle_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "truncated.pkl"
    path.write_bytes(pickle.dumps({"model": {"a": np.zeros(8)}}, protocol=2)[:40])
    with pytest.raises(CheckpointError, match="not a readable pickle"):
        read_checkpoint(path)


def tiny_models():
    """The tiny baseline (the image model `ifrvis pretrain` writes) and the tiny IFR model."""
    torch.manual_seed(0)
    baseline = build_model(load_config(TINY_CONFIG, ["model.weights=", "model.decoder=mask2former"]).model)
    torch.manual_seed(1)
    ifr = build_model(load_config(TINY_CONFIG, ["model.weights="]).model)
    return baseline, ifr


@pytest.mark.parametrize("ifr_init", ["random", "checkpoint"])
def test_ifr_init_decides_the_recurrent_blocks_from_an_image_model(tmp_path, ifr_init):
    baseline, ifr = tiny_models()
    path = tmp_path / "synthetic_tiny_pretrained.pth"
    torch.save({"model": baseline.state_dict()}, path)
    initial = {k: v.clone() for k, v in ifr.state_dict().items()}
    report = load_weights(ifr, path, ifr_init=ifr_init)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    state, source = ifr.state_dict(), baseline.state_dict()
    recurrent = [k for k in state if layer_block(k) in RECURRENT]
    clip = [k for k in state if layer_block(k) in CLIP]
    for key in recurrent:
        image_key = key.replace("frame_cross_attn", "cross_attn").replace("frame_self_attn", "self_attn")
        expected = source[image_key.replace("frame_ffn", "ffn")] if ifr_init == "checkpoint" else initial[key]
        assert torch.equal(state[key], expected), key
    assert all(torch.equal(state[k], initial[k]) for k in clip)
    random = set(clip) | (set(recurrent) if ifr_init == "random" else set())
    assert set(report.random) == random
    assert torch.equal(state["decoder.query_feat.weight"], source["decoder.query_feat.weight"])
    text = report.render()
    assert ("IFR recurrent blocks" in text) == (ifr_init == "random")
    assert "decoder.layers.*.temporal_cross_attn x" in text


def test_an_ifr_checkpoint_loads_whole_whatever_ifr_init(tmp_path):
    _, ifr = tiny_models()
    path = tmp_path / "ifr.pth"
    torch.save(ifr.state_dict(), path)
    _, other = tiny_models()
    report = load_weights(other, path, ifr_init="random")
    assert report.random == {} and report.missing == [] and len(report.loaded) == len(report.model_keys)


def test_ifrvis_weights_prints_the_report(published, capsys):
    config = PAPER_CONFIG.format("r50")
    assert cli_main(["weights", config, str(published("resnet50")), "model.num_classes=25"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"model.weights {published('resnet50')}")
    assert "  backbone " in out and "100%" in out
    assert "decoder.layers.*.frame_cross_attn x9 (54 tensors)" in out
    assert "class head (81 outputs in the file, 25 in the model)" in out  # focal: K logits
    assert cli_main(["weights", config, str(published("resnet50")), "loss.class_loss=softmax"]) == 0
    assert "class head (81 outputs in the file, 41 in the model)" in capsys.readouterr().out
    assert "missing: 0" in out and "unexpected (file keys with no place in the model): 0" in out
    assert cli_main(["weights", config, "absent.pkl"]) == 2  # a one-line user error


def tiny_backbone_pkl(path, change=None):
    """The tiny model's backbone (BatchNorms with their 0-d `num_batches_tracked`) as a detectron2-style
    .pkl of NumPy arrays; `change(arrays)` edits it first."""
    model = build_model(load_config(TINY_CONFIG, ["model.weights="]).model)
    arrays = {k: v.numpy() for k, v in model.state_dict().items() if k.startswith("backbone.")}
    if change:
        change(arrays)
    path.write_bytes(pickle.dumps({"model": arrays, "__author__": "test"}, protocol=2))
    return path


def test_0d_arrays_keep_their_shape(tmp_path):
    path = tiny_backbone_pkl(tmp_path / "backbone.pkl")
    counters = [k for k in read_checkpoint(path) if k.endswith("num_batches_tracked")]
    assert counters and all(read_checkpoint(path)[k].shape == () for k in counters)
    report = load_weights(build_model(load_config(TINY_CONFIG, ["model.weights="]).model), path)
    assert report.mismatched == [] and report.missing == []
    assert set(counters) <= set(report.loaded)


def test_a_mismatched_key_is_listed_once(tmp_path):
    key = "backbone.stem.0.weight"
    path = tiny_backbone_pkl(tmp_path / "backbone.pkl", lambda arrays: arrays.update({key: arrays[key][:1]}))
    report = load_weights(build_model(load_config(TINY_CONFIG, ["model.weights="]).model), path)
    assert [m.key for m in report.mismatches] == [key] and report.missing == []
    assert "0 missing, 0 unexpected, 1 mismatched" in report.summary()


def test_ifrvis_weights_exit_status_says_whether_the_file_gave_everything(tmp_path, capsys):
    complete = tiny_backbone_pkl(tmp_path / "complete.pkl")
    assert cli_main(["weights", str(TINY_CONFIG), str(complete)]) == 0
    assert "missing: 0" in capsys.readouterr().out
    key = "backbone.stem.0.weight"
    mismatched = tiny_backbone_pkl(tmp_path / "mismatched.pkl", lambda a: a.update({key: a[key][:1]}))
    assert cli_main(["weights", str(TINY_CONFIG), str(mismatched)]) == 1
    out = capsys.readouterr().out
    assert "mismatched: 1" in out and "missing: 0" in out
    missing = tiny_backbone_pkl(tmp_path / "missing.pkl", lambda arrays: arrays.pop(key))
    assert cli_main(["weights", str(TINY_CONFIG), str(missing)]) == 1
    assert "missing: 1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["weights", "--help"])
    assert "exit status: 0 when" in " ".join(capsys.readouterr().out.split())


def test_a_file_for_another_model_is_incomplete_and_refused_before_a_run(tmp_path, capsys):
    """A file none of whose tensors has a place in the model (everything unexpected, so nothing counts
    as missing) once gave exit status 0 and a silent start from scratch: now exit 1, and `preflight`
    refuses it, naming how much loaded, unless model.partial_weights=true."""
    from ifrvis.engine.train import preflight
    from ifrvis.modeling.meta_arch import check_weights_fit

    other = tmp_path / "other.pth"
    torch.save({"encoder.fc.weight": torch.zeros(4, 4)}, other)
    assert cli_main(["weights", str(TINY_CONFIG), str(other)]) == 1
    assert "loaded 0/" in capsys.readouterr().out
    cfg = load_config(TINY_CONFIG, [f"model.weights={other}", f"logging.output_dir={tmp_path / 'out'}"])
    with pytest.raises(
        CheckpointError,
        match=r"0/\d+ tensors loaded .*refusing to start from a partial load or another model's file",
    ):
        preflight(cfg)
    assert not (tmp_path / "out").exists()
    key = "backbone.stem.0.weight"
    backbone_only = tiny_backbone_pkl(tmp_path / "missing.pkl", lambda arrays: arrays.pop(key))
    with pytest.raises(CheckpointError, match="1 missing"):
        check_weights_fit(load_config(TINY_CONFIG, [f"model.weights={backbone_only}"]).model, "focal")
    check_weights_fit(
        load_config(TINY_CONFIG, [f"model.weights={other}", "model.partial_weights=true"]).model, "focal"
    )
    check_weights_fit(
        load_config(TINY_CONFIG, [f"model.weights={tiny_backbone_pkl(tmp_path / 'b.pkl')}"]).model, "focal"
    )


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"PK\x03\x04 not a zip", "File is not a zip file"),
        (b"", "File is not a zip file"),
    ],
)
def test_a_corrupt_pth_is_one_line_as_a_corrupt_pkl(tmp_path, capsys, data, reason):
    path = tmp_path / "model.pth"
    path.write_bytes(data)
    assert cli_main(["weights", str(TINY_CONFIG), str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ifrvis weights: error: model.weights: {path} is not")
    assert reason in err


def test_an_unsafe_pth_is_refused_in_one_line(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "x": RunsCommand(f"touch {marker}")}, path)
    assert cli_main(["weights", str(TINY_CONFIG), str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused: its pickle has a call to posix.system" in err
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 5])
def test_arrays_of_any_byte_order_and_memory_layout_read_as_they_were(tmp_path, protocol):
    rng = np.random.default_rng(0)
    arrays = {
        "big_endian": rng.standard_normal((3, 4)).astype(">f4"),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4))),
        "transposed": rng.integers(0, 9, (2, 3, 4)).transpose(2, 0, 1),  # protocol 5: order 'K'
        "bool": rng.random(5) > 0.5,
        "half": rng.standard_normal(3).astype(np.float16),
        "empty": np.zeros((0, 4), np.uint8),
    }
    path = tmp_path / "layouts.pkl"
    path.write_bytes(pickle.dumps({"model": arrays}, protocol=protocol))
    state = read_checkpoint(path)
    for key, array in arrays.items():
        assert state[key].shape == array.shape, key
        np.testing.assert_array_equal(state[key].numpy(), array)
