import dataclasses
import os
import re
import subprocess
import sys
import typing

import pandas as pd
import pytest
from conftest import ROOT

from ifrvis.config import (
    Config,
    ConfigError,
    config_hash,
    dump_config,
    load_config,
    run_identity,
    semantic_dict,
)

TINY = ROOT / "experiments" / "configs" / "synthetic_tiny.yaml"


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_are_the_papers_settings():
    cfg = Config()
    assert (cfg.loss.class_weight, cfg.loss.mask_weight, cfg.loss.dice_weight) == (2.0, 5.0, 5.0)
    assert cfg.loss.lambda_e == 0.3 and cfg.data.clip_length == 2 and cfg.model.num_queries == 100
    assert cfg.solver.backbone_lr_multiplier == 0.1


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "model:\n  hidden_dim: 64\n  num_queries: 16\nloss:\n  lambda_e: 0.5\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\nmodel:\n  num_queries: 8\n")
    cfg = load_config(child, ["model.decoder=mask2former", "loss.lambda_e=1", "seed=2", "solver.lr=1e-4"])
    assert cfg.model.hidden_dim == 64 and cfg.model.num_queries == 8
    assert cfg.model.decoder == "mask2former" and cfg.seed == 2
    assert cfg.loss.lambda_e == 1.0 and isinstance(cfg.loss.lambda_e, float)
    assert cfg.solver.lr == pytest.approx(1e-4)


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path / "bad.yaml", "model:\n  hiden_dim: 64\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.hiden_dim"):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown config key 'loss.lamda_e'"):
        load_config(None, ["loss.lamda_e=0.1"])
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        load_config(None, ["modle.decoder=ifr"])


def test_a_retired_key_says_what_replaced_it(tmp_path):
    """A run folder of an earlier version keeps `data.max_frame_gap` in its config.yaml."""
    path = write(tmp_path / "config.yaml", "data:\n  max_frame_gap: 20\n")
    for source in (lambda: load_config(path), lambda: load_config(None, ["data.max_frame_gap=20"])):
        retired = "'data.max_frame_gap' is retired: replaced by data.sampling_frame_range"
        with pytest.raises(ConfigError, match=retired):
            source()


def test_wrong_types_are_errors(tmp_path):
    path = write(tmp_path / "bad.yaml", "solver:\n  max_iters: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*solver\.max_iters.*int"):
        load_config(path)
    with pytest.raises(ConfigError, match="data.train_short_sides"):
        load_config(None, ["data.train_short_sides=96"])
    with pytest.raises(ConfigError, match="should be int, not bool"):
        load_config(None, ["seed=true"])
    with pytest.raises(ConfigError, match="needs a mapping"):
        load_config(None, ["model=3"])


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="not found"):
        load_config("does/not/exist.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["seed"])


def test_dump_and_reload_round_trip(tmp_path):
    cfg = load_config(None, ["model.decoder=mask2former", "data.train_short_sides=[96, 112]", "seed=3"])
    dump_config(cfg, tmp_path / "cfg.yaml")
    assert load_config(tmp_path / "cfg.yaml") == cfg


def test_hash_ignores_seed_and_logging_but_not_semantics():
    base = load_config()
    assert config_hash(base) == config_hash(load_config(None, ["seed=4", "logging.output_dir=/x"]))
    assert config_hash(base) != config_hash(load_config(None, ["loss.lambda_e=0.5"]))
    assert run_identity(base) != run_identity(load_config(None, ["seed=4"]))
    assert not any(k.startswith("logging.") for k in semantic_dict(base))


def test_a_setting_added_later_keeps_earlier_runs_identities_at_its_default():
    """The consistency experiment's committed IFR run of seed 0 (default split, 800 clip iterations),
    logged before `solver.compile` existed, has the identity today's config gives it; the option
    switched on is another run."""
    rows = pd.read_csv(ROOT / "benchmarks/results/consistency2/consistency_runs.csv")
    logged = rows[
        (rows["config"] == "synthetic_tiny") & (rows["dataset"] == "synthetic") & (rows["seed"] == 0)
    ]
    overrides = ["seed=0", "solver.max_iters=800", "solver.steps=[640]"]
    cfg = load_config(ROOT / "experiments/configs/synthetic_tiny.yaml", overrides)
    assert list(logged["run_identity"]) == [run_identity(cfg)]
    compiled = load_config(
        ROOT / "experiments/configs/synthetic_tiny.yaml", [*overrides, "solver.compile=true"]
    )
    assert run_identity(compiled) != run_identity(cfg)


def test_hash_is_stable_across_processes():
    code = "from ifrvis.config import load_config, config_hash; print(config_hash(load_config()))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == config_hash(load_config())


CONFIGS = ROOT / "experiments" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_loads(path):
    """The range checks refuse no value a shipped config (or base fragment) sets."""
    load_config(path)


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("solver.lr=nan", "'solver.lr' = nan .*a finite number > 0"),
        ("solver.lr=inf", "'solver.lr' = inf .*a finite number > 0"),
        ("solver.lr=-1", r"'solver.lr' = -1\.0 .*a finite number > 0"),
        ("solver.lr=0", r"'solver.lr' = 0\.0 .*a finite number > 0"),
        ("solver.lr=" + "9" * 400, "'solver.lr' = 9+ is too large"),
        ("logging.checkpoint_every=0", "'logging.checkpoint_every' = 0 .*an integer >= 1"),
        ("logging.log_every=0", "'logging.log_every' = 0 .*an integer >= 1"),
        ("seed=-1", r"'seed' = -1 .*an integer in \[0, 4294967295\]"),
        ("seed=99999999999999999999", r"'seed' = 99999999999999999999 .*in \[0, 4294967295\]"),
        ("data.holdout_seed=4294967296", r"'data.holdout_seed' = 4294967296 .*in \[0, 4294967295\]"),
        ("data.sampling_frame_range=-1", "'data.sampling_frame_range' = -1 .*an integer >= 0"),
        ("data.train_short_sides=[96, 0]", r"'data.train_short_sides\[1\]' = 0 .*an integer >= 1"),
        ("solver.batch_size=0", "'solver.batch_size' = 0 .*an integer >= 1"),
        ("solver.max_iters=-3", "'solver.max_iters' = -3 .*an integer >= 1"),
        ("solver.steps=[0]", r"'solver.steps\[0\]' = 0 .*an integer >= 1"),
        ("solver.weight_decay=-0.1", "'solver.weight_decay' = -0.1 .*a finite number >= 0"),
        ("solver.warmup_factor=2", r"'solver.warmup_factor' = 2\.0 .*in \[0, 1\]"),
        ("solver.batch_per_gpu=-1", "'solver.batch_per_gpu' = -1 .*an integer >= 0"),
        ("loss.lambda_e=-0.3", "'loss.lambda_e' = -0.3 .*a finite number >= 0"),
        ("loss.lambda_e=.inf", "'loss.lambda_e' = inf .*a finite number >= 0"),
        ("loss.focal_alpha=1.5", r"'loss.focal_alpha' = 1\.5 .*in \[0, 1\]"),
        ("loss.oversample_ratio=0.5", "'loss.oversample_ratio' = 0.5 .*>= 1"),
        ("model.dropout=1", r"'model.dropout' = 1\.0 .*in \[0, 1\)"),
        ("model.num_classes=0", "'model.num_classes' = 0 .*an integer >= 1"),
        ("model.pixel_std=[58.4, 0, 57.4]", r"'model.pixel_std\[1\]' = 0\.0 .*> 0"),
        ("model.pixel_mean=[.nan, 116.28, 103.53]", r"'model.pixel_mean\[0\]' = nan .*a finite number"),
        ("inference.mask_threshold=1.5", r"'inference.mask_threshold' = 1\.5 .*in \[0, 1\]"),
        ("inference.top_k=0", "'inference.top_k' = 0 .*an integer >= 1"),
        ("inference.tta_short_sides=[288, -1]", r"'inference.tta_short_sides\[1\]' = -1 .*>= 1"),
        ("logging.collective_timeout_min=inf", "'logging.collective_timeout_min' = inf .*> 0"),
        ("logging.eval_every=-1", "'logging.eval_every' = -1 .*an integer >= 0"),
    ],
)
def test_out_of_range_values_are_refused_at_load(override, shown):
    """Each refusal is one line naming the override, the key, the value and the allowed range: before
    any run exists (a nan lr, checkpoint_every 0 or a negative max_iters once failed or passed inside one)."""
    with pytest.raises(ConfigError, match=f"^override '{re.escape(override)}': {shown}") as caught:
        load_config(TINY, [override])
    assert "\n" not in str(caught.value)


def test_an_out_of_range_value_in_a_file_names_the_file(tmp_path):
    base = write(tmp_path / "base.yaml", "solver:\n  lr: .nan\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: 'solver\.lr' = nan is out of range"):
        load_config(child)
    write(base, "model:\n  pixel_mean: [1.0, 2.0]\n")
    with pytest.raises(ConfigError, match="model.pixel_mean.*3 values"):
        load_config(child)
    write(base, "model:\n  hidden_dim: 64\n  dec_heads: 3\n")
    with pytest.raises(ConfigError, match="model.hidden_dim = 64 .*model.dec_heads = 3"):
        load_config(child)


def test_every_numeric_key_has_a_range_that_its_default_meets():
    """A new int or float setting gets a rule in RANGES (the table beside the dataclasses)."""
    from ifrvis.config import RANGES, UNRANGED, flatten, to_dict

    def numeric_keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(hint):
                yield from numeric_keys(hint, f"{prefix}{f.name}.")
            elif hint in (int, float, list[int], list[float]):
                yield f"{prefix}{f.name}"

    assert set(numeric_keys(Config)) - set(UNRANGED) == set(RANGES)
    defaults = flatten(to_dict(Config()))
    for key, rule in RANGES.items():
        for value in defaults[key] if isinstance(defaults[key], list) else [defaults[key]]:
            assert value in rule, (key, value, rule)


@pytest.mark.parametrize(
    ("config", "overrides", "shown"),
    [
        (None, ["seed=[1"], r"^override 'seed=\[1': invalid YAML at line 1, column 3: expected ',' or '\]'"),
        (None, ["name=a: b: c"], "^override 'name=a: b: c': invalid YAML at line 1, column 5: mapping"),
        ("<folder>", [], "^{folder}: a folder, not a config file$"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", [], r"^{file}: not a text \(UTF-8\) file"),
        ("x: \x00\n", [], "^{file}: invalid YAML at position 3: unacceptable character #x0000"),
        ("_base_: 3\n", [], "^{file}: _base_ should be a file name or a list of file names .*got 3$"),
        ("_base_: [[a]]\n", [], r"^{file}: _base_ should be .*got \[\['a'\]\]$"),
        ("_base_: [x.yaml, 4]\n", [], r"^{file}: _base_ should be .*got \['x.yaml', 4\]$"),
        ("_base_: ''\n", [], "^{folder}: a folder, not a config file$"),
        ("1: 2\n", [], "^{file}: unknown config key '1'$"),
    ],
    ids=["bad-yaml-override", "yaml-mapping-override", "folder", "binary", "nul", "base-int", "base-nested",
         "base-mixed", "base-empty", "int-key"],
)  # fmt: skip
def test_malformed_inputs_are_one_line_config_errors(tmp_path, config, overrides, shown):
    """A bad override value, a folder, a binary file or a bad `_base_` is a ConfigError of one line,
    not a traceback (YAMLError, IsADirectoryError, UnicodeDecodeError, TypeError, AttributeError)."""
    path = source = tmp_path / "config.yaml"
    if config in (None, "<folder>"):
        source = None if config is None else tmp_path
    else:
        path.write_bytes(config if isinstance(config, bytes) else config.encode())
    shown = shown.format(folder=re.escape(str(tmp_path)), file=re.escape(str(path)))
    with pytest.raises(ConfigError, match=shown) as caught:
        load_config(source, overrides)
    assert "\n" not in str(caught.value), str(caught.value)


def test_a_yaml_syntax_error_is_one_line_with_file_line_column_and_problem(tmp_path):
    path = write(tmp_path / "broken.yaml", "model:\n  hidden_dim: 64\n bad: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: invalid YAML at line 3, column 2: expected <block end>, but found '<block mapping start>'"
        " (while parsing a block mapping at line 1, column 1)"
    )


def test_train_refuses_an_out_of_range_value_in_one_line_before_creating_anything(tmp_path):
    """`ifrvis train CONFIG solver.lr=nan`: exit status 2, one line on stderr, no run folder or store."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "ifrvis.cli", "train", str(TINY), "solver.lr=nan"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("ifrvis train: error: override 'solver.lr=nan': 'solver.lr' = nan")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_check_config_refuses_an_out_of_range_value_of_a_config_built_in_code():
    from ifrvis.config import check_config

    cfg = Config()
    cfg.model.enc_heads = 0  # set in code, not by a file: `hidden_dim % enc_heads` would divide by 0
    shown = "^built: 'model.enc_heads' = 0 is out of range: should be an integer >= 1$"
    with pytest.raises(ConfigError, match=shown):
        check_config(cfg, "built")


def test_a_short_run_keeps_its_configs_later_lr_steps():
    """A step past max_iters never comes, and is no error: a smoke run of a paper config shortens
    max_iters alone (tests/test_paper_path.py: max_iters 2, steps [4000])."""
    cfg = load_config(CONFIGS / "ytvis19_r50.yaml", ["solver.max_iters=2"])
    assert (cfg.solver.max_iters, cfg.solver.steps) == (2, [4000])
