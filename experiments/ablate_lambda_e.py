"""The λ_e ablation of Sec. 4.3 / Figure 4: λ_e in {0, 0.1, 0.3, 0.5, 1.0} x 5 seeds, then Figure 4.

python experiments/ablate_lambda_e.py                      # tiny config on synthetic data
python experiments/ablate_lambda_e.py --profile paper --executor slurm   # R50, 400 held-out videos
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project root, for `analysis`

from analysis.figures import make_figure  # noqa: E402
from ifrvis.cli import script_main  # noqa: E402
from ifrvis.launch.cli import add_sweep_arguments, run_sweep  # noqa: E402
from ifrvis.launch.sweep import expand  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"
PROFILES = {"tiny": CONFIGS / "synthetic_tiny.yaml", "paper": CONFIGS / "ytvis19_r50_ablation.yaml"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="tiny")
    parser.add_argument("--config", help="a config to ablate instead of the profile's")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.1, 0.3, 0.5, 1.0])
    parser.add_argument("--no-figure", action="store_true", help="skip Figure 4 at the end")
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="Figure 4 lands in <out>/<sweep>/")
    add_sweep_arguments(parser)
    args = parser.parse_args(argv)
    args.sweep = args.sweep or ("ablation_lambda_e" if args.profile == "tiny" else "ablation_lambda_e_paper")
    grid = [[f"loss.lambda_e={value}"] for value in args.lambdas]
    cfgs = expand(
        [args.config or PROFILES[args.profile]], range(args.seeds), args.sweep, args.overrides, grid
    )
    status = run_sweep(cfgs, args)
    if not args.dry_run and not args.no_figure:
        paths, warnings, _ = make_figure(
            args.sweep,
            "4",
            cfgs[0].logging.experiment,
            cfgs[0].logging.mlflow_uri,
            args.out,
            args.seeds,
        )
        print("\n".join(warnings), file=sys.stderr)
        print("Figure 4:", ", ".join(str(p) for p in paths))
    return status


if __name__ == "__main__":
    sys.exit(script_main(main, "ablate_lambda_e.py"))
