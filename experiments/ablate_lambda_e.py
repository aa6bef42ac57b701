"""The λ_e ablation of Sec. 4.3 / Figure 4: λ_e in {0, 0.1, 0.3, 0.5, 1.0} x 5 seeds, then Figure 4.

    python experiments/ablate_lambda_e.py                                    # tiny config on synthetic data
    python experiments/ablate_lambda_e.py --profile paper --executor slurm   # R50, 400 held-out videos

The same as `experiments/ablate.py --key loss.lambda_e --values ...`, under the paper's sweep name.
"""

import sys

from ablate import add_ablation_arguments, run_ablation

from ifrvis.cli import ArgumentParser, script_main


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--lambdas", nargs="+", default=["0.0", "0.1", "0.3", "0.5", "1.0"], help="λ_e values"
    )
    add_ablation_arguments(parser)
    args = parser.parse_args(argv)
    return run_ablation(args, "loss.lambda_e", args.lambdas, "ablation_lambda_e")


if __name__ == "__main__":
    sys.exit(script_main(main, "ablate_lambda_e.py"))
