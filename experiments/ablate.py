"""One grid line: a config key over a few values x seeds, then its figure (metrics against the key).

    python experiments/ablate.py --key inference.clip_frames --values 1 2 5 \
        --set inference.mode=clip inference.clip_overlap=0          # per-clip inference (Table 4's T)
    python experiments/ablate.py --key model.num_queries --values 50 100 200 --profile paper --executor slurm

The λ_e ablation of the paper (Figure 4) is experiments/ablate_lambda_e.py, this with its key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project root, for `analysis`

from analysis.figures import make_figure  # noqa: E402
from ifrvis.cli import ArgumentParser, script_main  # noqa: E402
from ifrvis.launch.arguments import add_sweep_arguments, run_from_arguments, seed_range  # noqa: E402
from ifrvis.launch.sweep import expand  # noqa: E402

CONFIGS = ROOT / "experiments" / "configs"
# tiny: the synthetic benchmark; paper: R50 with 400 videos of train held out (Sec. 4.3, with ground truth).
PROFILES = {"tiny": CONFIGS / "synthetic_tiny.yaml", "paper": CONFIGS / "ytvis19_r50_ablation.yaml"}


def add_ablation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=sorted(PROFILES), default="tiny")
    parser.add_argument("--config", help="a config to ablate instead of the profile's")
    parser.add_argument("--no-figure", action="store_true", help="skip the figure at the end")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "results", help="the figure lands in <out>/<sweep>/"
    )
    add_sweep_arguments(parser)


def run_ablation(args: argparse.Namespace, key: str, values: list[str], default_sweep: str) -> int:
    """Sweep `key` over `values` x seeds on the chosen config, then draw the metrics against it."""
    name = args.sweep or (default_sweep if args.profile == "tiny" else f"{default_sweep}_paper")
    sweep = expand(
        [args.config or PROFILES[args.profile]], seed_range(args), name, args.overrides, {key: values}
    )
    status = run_from_arguments(sweep, args)
    if not args.dry_run and not args.no_figure:
        first = sweep.cfgs[0].logging
        paths, warnings, _ = make_figure(
            name, "ablation", first.experiment, first.mlflow_uri, args.out, args.seeds, key=key
        )
        print("\n".join(warnings), file=sys.stderr)
        print(f"figure ({key}):", ", ".join(str(p) for p in paths))
    return status


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--key", required=True, help="the dotted config key to vary, e.g. inference.clip_frames"
    )
    parser.add_argument("--values", nargs="+", required=True, help="its values (YAML, as in key=value)")
    add_ablation_arguments(parser)
    args = parser.parse_args(argv)
    return run_ablation(args, args.key, args.values, f"ablation_{args.key.rsplit('.', 1)[-1]}")


if __name__ == "__main__":
    sys.exit(script_main(main, "ablate.py"))
