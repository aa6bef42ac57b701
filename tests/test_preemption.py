"""Preemption signals in the training loop (ifrvis/engine/preemption.py)."""

import signal

import pytest

from ifrvis.engine.preemption import StopSignals, deferred_signals

BOTH_ORDERS = [(signal.SIGTERM, signal.SIGUSR2), (signal.SIGUSR2, signal.SIGTERM)]


@pytest.mark.parametrize("first, second", BOTH_ORDERS)
def test_a_requeue_request_is_not_hidden_by_a_sigterm_beside_it(first, second):
    """Preemption (Slurm's, and submitit's `_interrupt`) sends SIGTERM then SIGUSR2. The second once
    arrived while the checkpoint was saved (held back, then delivered) and the loop raised with the
    SIGTERM it had read before: the task waited for a SIGKILL that never came instead of letting
    submitit requeue it. The loop now reads the flag after the save, and the flag keeps SIGUSR2."""
    with StopSignals((signal.SIGTERM, signal.SIGUSR2)) as flag:
        signal.raise_signal(first)
        with deferred_signals():
            signal.raise_signal(second)
            assert flag.received == first  # held back while the block runs
        assert flag.received == signal.SIGUSR2
