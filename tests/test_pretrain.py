"""Pretraining (ifrvis pretrain): semantic labels, IoU counts, the file both tiny configs load, its
provenance and check_pretrained, and the shipped file."""

import hashlib
import json
import shlex
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PRETRAINED, ROOT, TINY_CONFIG

from ifrvis.commands.pretrain import build_parser, main, pretrain_options
from ifrvis.config import config_hash, load_config
from ifrvis.data.synthetic import generate_split, write_json
from ifrvis.engine.pretrain import IGNORE, intersections_unions, semantic_labels
from ifrvis.engine.provenance import check_pretrained, provenance_path, signature
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


# Provenance: `ifrvis pretrain` writes `<file>.json`; check_pretrained compares a config with it.
SHIPPED = ROOT / "checkpoints" / "synthetic_tiny_pretrained.pth"
TINY_CONFIGS = [TINY_CONFIG, TINY_CONFIG.with_name("synthetic_tiny_mask2former.yaml")]
SHORT = ["--backbone-iters", "2", "--iters", "2", "--batch-size", "2", "--no-progress"]


@pytest.fixture(scope="module")
def short_pretrain(tmp_path_factory, tiny_data) -> tuple[Path, list[str]]:
    """A short `ifrvis pretrain` into a folder of its own: the file, and the overrides of the config
    it was made with (its data, and the file as model.weights)."""
    out = tmp_path_factory.mktemp("pretrained") / "pretrained.pth"
    overrides = [f"data.root={tiny_data}", "data.train_short_sides=[64]"]
    assert main([str(TINY_CONFIG), *overrides, "--out", str(out), *SHORT]) == 0
    return out, [*overrides, f"model.weights={out}"]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pretrain_records_how_the_file_was_made(short_pretrain, tiny_data):
    out, overrides = short_pretrain
    record = json.loads(provenance_path(out).read_text())
    cfg = load_config(TINY_CONFIG, overrides[:2])  # the command's config
    assert record["file"] == out.name
    assert record["sha256"] == sha256_of(out) and record["bytes"] == out.stat().st_size
    assert record["command"] == shlex.join(
        ["ifrvis", "pretrain", str(TINY_CONFIG), *overrides[:2], "--out", str(out), *SHORT]
    )
    assert record["config"] == str(TINY_CONFIG) and record["config_hash"] == config_hash(cfg)
    settings = record["settings"]
    assert record["signature"] == signature(settings)
    assert set(settings) == {"model", "loss", "data", "train_data", "pretrain"}
    assert settings["model"]["hidden_dim"] == 64 and settings["model"]["num_queries"] == 16
    assert "decoder" not in settings["model"] and "lambda_e" not in settings["loss"]
    assert settings["data"] == {"train_short_sides": [64], "max_long_side": 128, "hflip": True}
    assert settings["train_data"]["sha256"] == sha256_of(tiny_data / "train.json")
    assert settings["pretrain"] == {
        "backbone_iters": 2,
        "image_iters": 2,
        "lr": 1e-3,
        "batch_size": 2,
        "num_points": 1024,
        "class_loss": "focal",
        "seed": 0,
    }
    assert record["data_seed"] == 3  # conftest's `generate(seed=3)`
    assert len(record["commit"]) == 40 and isinstance(record["uncommitted"], list)
    assert record["torch"] == torch.__version__ and record["created"]
    assert record["pretrain"] == torch.load(out, weights_only=True)["pretrain"]


@pytest.mark.parametrize(
    "run_only",
    [
        [],
        ["model.decoder=mask2former", "loss.class_loss=softmax"],
        ["loss.lambda_e=0.5"],
        ["model.ifr_init=checkpoint"],
        ["solver.max_iters=7", "solver.lr=0.01"],
        ["loss.num_points=0"],
        ["seed=4"],
    ],
)
def test_a_run_s_own_settings_share_the_file(short_pretrain, run_only):
    _, overrides = short_pretrain
    check_pretrained(load_config(TINY_CONFIG, [*overrides, *run_only]))


@pytest.mark.parametrize(
    "change, named",
    [
        ("model.hidden_dim=32", "model.hidden_dim is 32 here, 64 in the file"),
        ("model.dec_layers=2", "model.dec_layers is 2 here, 3 in the file"),
        ("data.train_short_sides=[48]", r"data.train_short_sides is \[48\] here, \[64\] in the file"),
        ("loss.mask_weight=2.0", "loss.mask_weight is 2.0 here, 5.0 in the file"),
    ],
)
def test_a_changed_setting_of_the_file_is_named_with_the_rebuild_command(short_pretrain, change, named):
    _, overrides = short_pretrain
    with pytest.raises(CheckpointError, match=named) as error:
        check_pretrained(load_config(TINY_CONFIG, [*overrides, change]))
    assert f"rebuild it: `ifrvis pretrain {TINY_CONFIG}" in str(error.value)


def test_a_changed_file_fails_on_its_sha256(short_pretrain, tmp_path):
    out, overrides = short_pretrain
    copy = tmp_path / out.name
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    shutil.copy(provenance_path(out), provenance_path(copy))
    cfg = load_config(TINY_CONFIG, [*overrides, f"model.weights={copy}"])
    with pytest.raises(CheckpointError, match="sha256 is not the one .* records .*ifrvis pretrain"):
        check_pretrained(cfg)
    copy.write_bytes(out.read_bytes()[:-100])  # a partial file
    with pytest.raises(CheckpointError, match="sha256"):
        check_pretrained(cfg)


def test_other_data_of_the_same_generator_and_seed_fails_another_data_set_does_not(
    short_pretrain, tiny_data, tmp_path
):
    _, overrides = short_pretrain
    raw = json.loads((tiny_data / "train.json").read_text())
    raw["videos"] = raw["videos"][:-1]  # what another version of `ifrvis synth` might write
    (tmp_path / "train.json").write_text(json.dumps(raw))
    cfg = load_config(TINY_CONFIG, [*overrides, f"data.root={tmp_path}"])
    with pytest.raises(CheckpointError, match="train.json .* is not the one the file was made on"):
        check_pretrained(cfg)
    raw["info"]["seed"] = 4  # another data set (Table 2's crossing set): the file is its pretrained start
    (tmp_path / "train.json").write_text(json.dumps(raw))
    check_pretrained(cfg)


def test_a_file_without_provenance_is_not_checked(tiny_data):
    # conftest's file comes from `pretrain()`, not the command: the runs load it with 8 queries, 2 layers.
    assert not provenance_path(tiny_data / PRETRAINED).exists()
    run = ["model.num_queries=8", "model.dec_layers=2", f"model.weights={tiny_data / PRETRAINED}"]
    check_pretrained(load_config(TINY_CONFIG, run))


def test_the_check_command_says_what_it_checked(short_pretrain, capsys):
    out, overrides = short_pretrain
    assert main([str(TINY_CONFIG), *overrides, "--check"]) == 0
    record = json.loads(provenance_path(out).read_text())
    assert f"matches {TINY_CONFIG} (pretrain signature {record['signature']})" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="model.hidden_dim"):
        main([str(TINY_CONFIG), *overrides, "model.hidden_dim=32", "--check"])


def write_synthetic_train_json(folder: Path) -> Path:
    """The train.json of `ifrvis synth --out data/synthetic --seed 0` (the default data: 300 videos of
    96x128 frames), drawn again without its frames."""
    raw, _ = generate_split(None, "train", 0, 300, 96, 128, None, crossing_only=False, progress=False)
    write_json(raw, folder / "train.json")
    return folder / "train.json"


def test_the_shipped_file_matches_both_tiny_configs(tmp_path):
    """A config change (or a change of the synthetic generator, or of pretrain's defaults) that forgot
    to rebuild the shipped file fails here: rebuild with `ifrvis pretrain` on the tiny config."""
    record = json.loads(provenance_path(SHIPPED).read_text())
    command = [word for word in shlex.split(record["command"]) if word != "--no-progress"]
    assert command == ["ifrvis", "pretrain", str(TINY_CONFIG.relative_to(ROOT))]  # the default command
    defaults = pretrain_options(build_parser().parse_args([str(TINY_CONFIG)]))
    assert record["settings"]["pretrain"] == {**defaults, "class_loss": "focal", "seed": 0}
    assert record["settings"]["train_data"]["sha256"] == sha256_of(write_synthetic_train_json(tmp_path))
    for config in TINY_CONFIGS:
        cfg = load_config(config, [f"data.root={tmp_path}", f"model.weights={SHIPPED}"])
        check_pretrained(cfg)
        with torch.device("meta"):
            model = build_model(replace(cfg.model, weights=""), cfg.loss.class_loss)
        report = load_weights(model, SHIPPED, cfg.model.ifr_init)
        assert not report.missing and not report.unexpected and not report.mismatched, config
