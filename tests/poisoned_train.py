"""A trainer whose loss turns NaN at one iteration: `nan_criterion` for in-process tests, and, run as
`python -m torch.distributed.run ... tests/poisoned_train.py CONFIG`, `ifrvis train` with the NaN on
rank 1 only; with IFRVIS_TEST_SLOW_VALIDATION_S set, one whose periodic validation takes that long
instead; with IFRVIS_TEST_KILLED_AFTER=checkpoint:N (or metrics:N), `python tests/poisoned_train.py
CONFIG` is a job killed with SIGKILL right after writing iteration N's checkpoint (or after sending the
metrics of step N)."""

import os
import signal
import sys
import time

from ifrvis import runstore
from ifrvis.cli import script_main
from ifrvis.commands import train as train_command
from ifrvis.engine import train as train_module

NAN_ITERATION = 3


def nan_criterion(build_criterion):
    """`build_criterion` whose criterion makes `loss_dice` NaN at iteration NAN_ITERATION."""

    def build(cfg):
        criterion = build_criterion(cfg)
        calls = {"n": 0}
        original = criterion.forward

        def forward(outputs, targets, norm=None):
            losses = original(outputs, targets, norm)
            if calls["n"] == NAN_ITERATION:
                losses["loss_dice"] = losses["loss_dice"] * float("nan")
            calls["n"] += 1
            return losses

        criterion.forward = forward
        return criterion

    return build


def slow_validation(validation_metrics, seconds: float):
    """`_validation_metrics` that takes `seconds` longer: the periodic validation of a large set."""

    def validate(*args, **kwargs):
        time.sleep(seconds)
        return validation_metrics(*args, **kwargs)

    return validate


def killed_after(fn, reached):
    """`fn` whose process dies by SIGKILL once it returns from a call for which `reached(args)` holds."""

    def call(*args, **kwargs):
        result = fn(*args, **kwargs)
        if reached(args):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    return call


def kill_after(where: str, iteration: int) -> None:
    if where == "checkpoint":  # save_checkpoint(path, state)
        train_module.save_checkpoint = killed_after(
            train_module.save_checkpoint, lambda args: args[1]["iteration"] == iteration
        )
    else:  # RunLogger.log_metric_history(self, history, ...)
        runstore.RunLogger.log_metric_history = killed_after(
            runstore.RunLogger.log_metric_history, lambda args: iteration in [step for step, _ in args[1]]
        )


if __name__ == "__main__":
    slow = os.environ.get("IFRVIS_TEST_SLOW_VALIDATION_S")
    killed = os.environ.get("IFRVIS_TEST_KILLED_AFTER")
    if killed:
        where, iteration = killed.split(":")
        kill_after(where, int(iteration))
    elif slow:  # rank 0 validates (logging.eval_every) while rank 1 waits in the next all-reduce
        train_module._validation_metrics = slow_validation(train_module._validation_metrics, float(slow))
    elif os.environ.get("RANK") == "1":
        train_module.build_criterion = nan_criterion(train_module.build_criterion)
    sys.exit(script_main(train_command.main, "ifrvis train"))
