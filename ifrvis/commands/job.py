"""`python -m ifrvis.commands.job CONFIG.yaml`: one run of a sweep (ifrvis.launch.job.run_job), as the
local executor starts it, one process per run; exit status 143 when a signal stopped it (resumable)."""

from __future__ import annotations

import sys

from ifrvis.config import load_config, to_dict
from ifrvis.engine.preemption import Interrupted
from ifrvis.launch.job import run_job


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m ifrvis.commands.job CONFIG.yaml", file=sys.stderr)
        return 2
    try:
        run_job(to_dict(load_config(argv[0])))
    except Interrupted:  # said by `train`, in the run's log
        return 143
    return 0


if __name__ == "__main__":
    sys.exit(main())
