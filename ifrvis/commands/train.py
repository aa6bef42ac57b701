"""`ifrvis train CONFIG [key=value ...] [--resume]`: one run (ifrvis.engine.train.train), its final
metrics printed as one JSON line.

    ifrvis train experiments/configs/synthetic_tiny.yaml seed=1 loss.lambda_e=0.5 [--resume]
    torchrun --nproc_per_node 2 -m ifrvis.commands.train CONFIG.yaml      # DDP
"""

from __future__ import annotations

import json
import math
import sys

from ifrvis import runstore
from ifrvis.cli import ArgumentParser, script_main
from ifrvis.config import load_config
from ifrvis.engine.preemption import Interrupted
from ifrvis.engine.train import train


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="ifrvis train", description="train (and evaluate) one run, logged to MLflow")
    parser.add_argument("config", help="YAML config (experiments/configs/...)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    parser.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    args = parser.parse_intermixed_args(argv)  # `CONFIG --resume key=value` or `CONFIG key=value --resume`
    cfg = load_config(args.config, args.overrides)
    runstore.check_store(cfg.logging.mlflow_uri)  # a tracking server that is down: one line, nothing made
    try:
        metrics = train(cfg, resume=args.resume)
    except Interrupted:  # said by `train`
        return 143
    summary = {k: v for k, v in metrics.items() if k in ("AP", "AP50", "AP75", "AR1", "AR10", "IDF1", "IDs")}
    print(
        json.dumps(
            {k: round(v, 4) if isinstance(v, float) and math.isfinite(v) else v for k, v in summary.items()}
        )
    )
    return 0


if __name__ == "__main__":  # python -m ifrvis.commands.train, torchrun -m ifrvis.commands.train
    sys.exit(script_main(main, "ifrvis train"))
