"""`ifrvis check-data ROOT [--config CONFIG]`: validate a YouTube-VIS (or OVIS) folder without training
(ifrvis.data.check). Exit status: 0 when clean, 1 when problems were found, 2 on a usage error."""

from __future__ import annotations

from pathlib import Path

from ifrvis.cli import ArgumentParser
from ifrvis.config import load_config
from ifrvis.data.check import (
    Split,
    add_cross_split_problems,
    check_split,
    detect_layout,
    layout_splits,
    summary_lines,
)
from ifrvis.data.splits import split_files
from ifrvis.data.ytvis import DataError


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="ifrvis check-data",
        description="Validate a YouTube-VIS folder without training; exit status 0 when clean, 1 when "
        "problems were found, 2 on a usage error.",
    )
    parser.add_argument("root", help="the data folder (e.g. data/ytvis2019, data/ovis)")
    parser.add_argument(
        "--config",
        help="check the split files (data.*_json, data.*_images, under ROOT) and model.num_classes of "
        "this run config instead of the layout found under ROOT",
    )
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if args.config:
        cfg = load_config(args.config)
        cfg.data.root = str(root)
        splits = [Split(name, *files) for name, files in split_files(cfg.data).items()]
        num_classes, described = cfg.model.num_classes, args.config
    else:
        layout = detect_layout(root)
        splits, num_classes, described = layout_splits(root, layout), None, f"{layout} layout"
    print(f"{root} ({described})")
    reports = [check_split(split) for split in splits]
    add_cross_split_problems(reports, num_classes)
    for report in reports:
        print("\n".join(summary_lines(report, root)))
        for problem in report.problems:
            print(f"  problem: {problem}")
    total = sum(len(report.problems) for report in reports)
    if total:
        per_split = ", ".join(f"{r.split.name} {len(r.problems)}" for r in reports if r.problems)
        print(f"{total} problem{'s' if total > 1 else ''} found ({per_split})")
        return 1
    print("no problems found")
    return 0
