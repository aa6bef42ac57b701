"""`ifrvis pretrain`: pretrain the tiny model once (ifrvis.engine.pretrain) and write its provenance
beside it (ifrvis.engine.provenance); `--check` compares a config with a file's provenance instead.

    ifrvis pretrain experiments/configs/synthetic_tiny.yaml [key=value ...] [--backbone-iters 2000]
        [--iters 16000] [--out PATH]
    ifrvis pretrain --check experiments/configs/synthetic_tiny.yaml [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ifrvis.cli import ArgumentParser, non_negative_int, positive_float, positive_int
from ifrvis.config import Config, load_config
from ifrvis.engine.pretrain import PRETRAIN_CLASS_LOSS, pretrain
from ifrvis.engine.provenance import (
    REBUILD,
    check_pretrained,
    git_state,
    provenance_path,
    read_provenance,
    write_provenance,
)
from ifrvis.modeling.weights import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ifrvis pretrain", description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("config", help="run config: its data, model and loss settings are used")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    parser.add_argument("--out", help="where to write the weights (default: the config's model.weights)")
    parser.add_argument(
        "--backbone-iters", type=non_negative_int, default=2000, help="stage 1: semantic segmentation"
    )
    parser.add_argument("--iters", type=positive_int, default=16000, help="stage 2: image-level Mask2Former")
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--batch-size", type=positive_int, default=8, help="frames per iteration")
    parser.add_argument(
        "--num-points", type=non_negative_int, default=1024, help="stage 2: sampled points (0: dense)"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--check", action="store_true", help="build nothing: check model.weights against its provenance"
    )
    return parser


def pretrain_options(args: argparse.Namespace) -> dict:
    """Pretraining's own settings on the command line: `pretrain`'s keyword arguments."""
    return {
        "backbone_iters": args.backbone_iters,
        "image_iters": args.iters,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "num_points": args.num_points,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.check:
        return check_main(cfg, args.config)
    out = args.out or cfg.model.weights
    if not out:
        parser.error("the config sets no model.weights: pass --out")
    options = pretrain_options(args)
    code = git_state()  # before the build: commits made while it runs did not make the file
    summary = pretrain(cfg, out, **options, progress=not args.no_progress)
    command = shlex.join([*REBUILD.split(), *argv])
    options |= {"class_loss": PRETRAIN_CLASS_LOSS, "seed": cfg.seed}
    record = write_provenance(Path(out), cfg, args.config, command, options, summary, code)
    print(json.dumps({"out": str(out), "provenance": str(record), **summary}))
    return 0


def check_main(cfg: Config, config: str) -> int:
    """`ifrvis pretrain --check CONFIG`: `check_pretrained`, and what was checked, in one line."""
    weights = cfg.model.weights
    if not weights or not Path(weights).is_file():
        raise CheckpointError(f"model.weights {weights!r} is missing: make it with `{REBUILD} {config}`")
    record = provenance_path(weights)
    check_pretrained(cfg)
    if record.is_file():
        print(f"{weights} matches {config} (pretrain signature {read_provenance(record)['signature']})")
    else:
        print(f"{weights}: no provenance ({record}), nothing to check")
    return 0
