"""`ifrvis <command> ...`: one console script; each command lives beside the code it drives."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path

from ifrvis.errors import UserError

# command -> (module, function taking argv, one-line help)
COMMANDS = {
    "synth": ("ifrvis.commands.synth", "main", "write a synthetic YouTube-VIS data set"),
    "check-data": ("ifrvis.commands.check_data", "main", "validate a YouTube-VIS folder without training"),
    "eval": ("ifrvis.commands.eval", "main", "evaluate a results.json against ground truth"),
    "pretrain": ("ifrvis.commands.pretrain", "main", "pretrain the tiny model once (the COCO stand-in)"),
    "train": ("ifrvis.commands.train", "main", "train (and evaluate) one run, logged to MLflow"),
    "predict": ("ifrvis.commands.predict", "main", "a trained model on your own videos: masks, overlay"),
    "visualize": ("ifrvis.commands.visualize", "main", "draw ground truth above predictions for one video"),
    "weights": ("ifrvis.commands.weights", "main", "report what a checkpoint gives a config's model"),
    "server-scores": (
        "ifrvis.commands.server_scores",
        "main",
        "log an evaluation server's AP/AR of a run's results.zip into its run",
    ),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `prog: error: message (prog --help: usage)`, exit status 2,
    not the usage text first: every command and script of the project parses its flags with it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help: usage)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 seeds or 0 parallel runs is a mistake, said in one line)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a learning rate, a frame rate)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def existing_file(text: str) -> Path:
    """argparse type: the path of a file that is there."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file {text}")
    return path


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user's mistake (a config, data or checkpoint error) is one line on stderr and
    exit status 2; `--debug` anywhere on the line shows the traceback instead."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: ifrvis <command> [args] [--debug]\n\ncommands:")
        for name, (_, _, text) in COMMANDS.items():
            print(f"  {name:<13} {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module, function, _ = COMMANDS[argv[0]]
    return guarded(getattr(importlib.import_module(module), function), argv[1:], f"ifrvis {argv[0]}", debug)


def guarded(main_function, argv: list[str], prog: str, debug: bool = False) -> int:
    """`main_function(argv)`, with a `UserError` printed as one line (exit status 2) unless `debug`."""
    try:
        return main_function(argv) or 0
    except UserError as error:
        if debug:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2


def script_main(main_function, prog: str) -> int:
    """The entry point of a launcher script (experiments/*.py): `--debug` shows tracebacks."""
    argv = sys.argv[1:]
    return guarded(main_function, [a for a in argv if a != "--debug"], prog, "--debug" in argv)


if __name__ == "__main__":
    sys.exit(main())
