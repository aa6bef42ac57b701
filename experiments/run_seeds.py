"""N independent seeds of one or more configurations (the paper reports mean ± std over 5 runs).

    python experiments/run_seeds.py experiments/configs/synthetic_tiny.yaml \
        experiments/configs/synthetic_tiny_mask2former.yaml --seeds 5 --executor local --sweep table1
"""

import sys

from ifrvis.cli import ArgumentParser, script_main
from ifrvis.launch.arguments import add_sweep_arguments, run_from_arguments, seed_range
from ifrvis.launch.sweep import expand


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="+", help="YAML configs, one row of the table each")
    add_sweep_arguments(parser)
    args = parser.parse_args(argv)
    sweep = expand(args.configs, seed_range(args), args.sweep or "seeds", args.overrides)
    return run_from_arguments(sweep, args)


if __name__ == "__main__":
    sys.exit(script_main(main, "run_seeds.py"))
