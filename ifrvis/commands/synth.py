"""`ifrvis synth --out data/synthetic --seed 0 [--split-style crossing]`: write the synthetic
YouTube-VIS data set (ifrvis.data.synthetic)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ifrvis.cli import ArgumentParser
from ifrvis.data.synthetic import argument_problem, generate
from ifrvis.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ifrvis synth", description="Write a synthetic YouTube-VIS data set.")
    parser.add_argument("--out", required=True, help="output folder (train.json, valid.json, JPEGImages/)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--train-videos", type=int, default=300)
    parser.add_argument("--valid-videos", type=int, default=50)
    parser.add_argument("--size", type=int, default=96, help="frame height in pixels (width = 4/3 of it)")
    parser.add_argument(
        "--frames", type=int, default=None, help="frames per video (default: 8 to 24 at random)"
    )
    parser.add_argument("--split-style", choices=("default", "crossing"), default="default")
    parser.add_argument("--force", action="store_true", help="replace an existing data set in --out")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Mistakes (arguments out of bounds, an --out that is a file or holds a data set, a folder that
    cannot be written) are a UserError: one line on stderr, exit status 2, before anything is written
    where the arguments are at fault."""
    args = build_parser().parse_args(argv)
    problem = argument_problem(
        args.seed, args.train_videos, args.valid_videos, args.size, args.frames, args.split_style
    )
    if problem:
        raise UserError(problem)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    existing = [out / name for name in ("train.json", "valid.json", "JPEGImages") if (out / name).exists()]
    if existing and not args.force:
        raise UserError(f"{out} already holds a data set ({existing[0].name}); pass --force to replace it")
    try:
        for path in existing:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        drawn = generate(
            out,
            args.seed,
            args.train_videos,
            args.valid_videos,
            args.size,
            args.frames,
            args.split_style,
            progress=not args.no_progress,
            keep_masks=False,  # only counted here: all of them may not fit in memory
        )
    except OSError as error:  # a parent that is a file, no permission, a full disk
        where = error.filename or out
        raise UserError(f"--out {out}: cannot write {where}: {error.strerror or error}") from None
    counts = ", ".join(f"{split}: {len(anns)} instances" for split, anns in drawn.items())
    print(f"wrote {out} ({args.train_videos} train / {args.valid_videos} valid videos; {counts})")
    return 0
