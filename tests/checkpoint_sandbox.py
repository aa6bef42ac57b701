"""Reads checkpoint files as `ifrvis weights` does, each in its own forked child, and says how each read
ended, so that a file that crashes the reader (a segmentation fault, a hang) is one failed result, not a
crashed test run. Used by test_checkpoint_fuzz.py:

    python tests/checkpoint_sandbox.py [--cli] CONFIG WORKDIR FILE...

prints one JSON line per FILE: {"file", "exit" (None after a signal), "signal", "stderr", "grown_mb"
(how much the child's peak resident memory exceeded the parent's at the fork), "seconds" (wall
clock)}. Every child runs in WORKDIR (a checkpoint must not write a file there). With --cli each
child runs the whole `ifrvis weights CONFIG FILE`; without it the config's model is built once (meta
device) and each child loads FILE into it (`report_checkpoint`, ~10x faster), both through
`ifrvis.cli.guarded`, which turns a user error into one line and exit status 2.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import traceback
from dataclasses import replace

UNCAUGHT = 70  # a child's exit status after an exception that escaped the command
# A read that takes longer is killed (SIGALRM) and reported as a signal: above the isolated reader's own
# limits for these small files (10 s of CPU time, 30 s of wall clock), which must end it first.
TIME_LIMIT_S = 60


def run_child(command, path: str) -> None:
    """In the forked child: run `command(path)`, stdout discarded, and exit with its status."""
    signal.alarm(TIME_LIMIT_S)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        status = command(path)
    except BaseException:
        traceback.print_exc()
        status = UNCAUGHT
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def read_in_child(command, path: str) -> dict:
    """Fork, run `command(path)` in the child with its stderr on a pipe, and return how it ended."""
    read_end, write_end = os.pipe()
    resident = resident_kb()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.dup2(write_end, 2)
        run_child(command, path)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        stderr = pipe.read().decode(errors="replace")
    _, status, usage = os.wait4(pid, 0)
    grown_mb = max(0, usage.ru_maxrss - resident) // 1024  # the child starts with the parent's pages
    ended = {"file": path, "stderr": stderr, "grown_mb": grown_mb, "seconds": time.monotonic() - start}
    if os.WIFSIGNALED(status):
        return {**ended, "exit": None, "signal": os.WTERMSIG(status)}
    return {**ended, "exit": os.WEXITSTATUS(status), "signal": None}


def resident_kb() -> int:
    """This process's resident memory (VmRSS, kB)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def main(argv: list[str]) -> int:
    import torch
    import torch._dynamo  # noqa: F401  (a model built on the meta device imports it: once, before the forks)

    from ifrvis.cli import guarded
    from ifrvis.cli import main as cli_main
    from ifrvis.config import load_config
    from ifrvis.modeling.meta_arch import build_model

    use_cli = argv[:1] == ["--cli"]
    config, workdir, *files = argv[1:] if use_cli else argv
    config, files = os.path.abspath(config), [os.path.abspath(f) for f in files]  # before chdir
    if use_cli:

        def command(path: str) -> int:
            return cli_main(["weights", config, path])
    else:
        from ifrvis.commands.weights import report_checkpoint

        cfg = load_config(config, [])
        with torch.device("meta"):
            model = build_model(replace(cfg.model, weights=""), cfg.loss.class_loss)

        def command(path: str) -> int:
            return guarded(lambda argv: report_checkpoint(model, argv[0]), [path], "ifrvis weights")

    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the summary: one stderr line
    os.chdir(workdir)
    for path in files:
        print(json.dumps(read_in_child(command, path)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
