"""`ifrvis <command> ...`: one console script; each command lives beside the code it drives."""

from __future__ import annotations

import importlib
import sys

# command -> (module, function taking argv, one-line help)
COMMANDS = {
    "synth": ("ifrvis.data.synthetic", "main", "write a synthetic YouTube-VIS data set"),
    "eval": ("ifrvis.evaluation.cli", "main", "evaluate a results.json against ground truth"),
    "pretrain": ("ifrvis.engine.pretrain", "main", "pretrain the tiny model once (the COCO stand-in)"),
    "train": ("ifrvis.engine.train", "main", "train (and evaluate) one run, logged to MLflow"),
    "visualize": ("ifrvis.visualize", "main", "draw ground truth above predictions for one video"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: ifrvis <command> [args]\n\ncommands:")
        for name, (_, _, text) in COMMANDS.items():
            print(f"  {name:<10} {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module, function, _ = COMMANDS[argv[0]]
    return getattr(importlib.import_module(module), function)(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
