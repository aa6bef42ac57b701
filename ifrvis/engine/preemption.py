"""Stopping a run from outside without losing work: preemption signals (Slurm's SIGUSR2 and SIGTERM)
are remembered and acted on at the next iteration boundary, after a checkpoint, on every rank at once.

    with StopSignals(PREEMPTION_SIGNALS) as flag:   # the training loop checks flag.received
        ...
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ifrvis.engine.distributed import DistInfo

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)  # what Slurm sends before preemption or time-out


class Interrupted(Exception):
    """SIGTERM / SIGUSR2 arrived: a checkpoint was written and the run can be resumed. `signum` is the
    signal, for a launcher to pass on (submitit requeues on SIGUSR2)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def agree_to_stop(
    bad_term: str | None, signum: int | None, info: DistInfo, device: torch.device
) -> tuple[list, int | None]:
    """What every rank must act on at this iteration, the same on all ranks (a rank that stopped
    alone would leave the others waiting in a collective): `[(rank, bad term)]` of the ranks whose loss
    is not finite, and a preemption signal any rank received (None if none)."""
    if info.world_size == 1:
        return ([(0, bad_term)] if bad_term else []), signum
    flags = torch.tensor([float(bad_term is not None), float(signum or 0)], device=device)
    torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    bad = [(r, term) for r, term in gather((info.rank, bad_term), info) if term] if flags[0] else []
    return bad, int(flags[1]) or None


class StopSignals:
    """Remembers `signals` (SIGTERM, SIGUSR2) so the loop can checkpoint at the next iteration boundary.
    Once the final checkpoint is written (`training_done`), a signal stops the run at once: the
    evaluation that follows is redone by the resumed run."""

    def __init__(self, signals: tuple[int, ...]) -> None:
        self.signals = signals
        self.received: int | None = None
        self.training_done = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        # SIGUSR2 asks submitit to requeue: a SIGTERM just before it (Slurm's preemption, and submitit's
        # own, send SIGTERM then SIGUSR2) or just after must not hide it.
        if self.received != signal.SIGUSR2:
            self.received = signum
        if self.training_done:
            raise after_training(signum)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def after_training(signum: int) -> Interrupted:
    return Interrupted(
        f"signal {signum} after training: the final checkpoint is complete, evaluation is not", signum
    )


class NoSignals:
    """Stands in for `StopSignals` when no handler can be installed (`stop_signals=()`)."""

    received = None
    training_done = False

    def __enter__(self) -> NoSignals:
        return self

    def __exit__(self, *exc) -> None:
        return None


def gather(value, info: DistInfo) -> list:
    """Every rank's `value` on rank 0 (a list in rank order)."""
    if info.world_size == 1:
        return [value]
    values = [None] * info.world_size
    torch.distributed.all_gather_object(values, value)
    return values


@contextmanager
def deferred_signals(signums: tuple[signal.Signals, ...] = PREEMPTION_SIGNALS) -> Iterator[None]:
    """Hold `signums` back while the block runs, then deliver them to the handlers that were installed.

    A launcher's handler (submitit's requeue exits the process) would otherwise run in the middle of
    `torch.save`, whose zip writer then fails on the way out and turns the requeue into a job error.
    Python handlers live in the main thread only: elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda num, frame: received.append(num)) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received:
            signal.raise_signal(signum)
