"""Accuracy parity of the speed levers (bf16 autocast, torch.compile, fused AdamW): AP against fp32 eager,
per decoder, at Table 1's configs and budget (benchmarks/README.md, "Accuracy parity of bf16 and fused
AdamW", "Accuracy parity of torch.compile and fused AdamW").

    .venv/bin/python benchmarks/precision_parity.py [--sweep precision-parity] [--levers KEY=VALUE ...]
        [--control SWEEP] [--fp32 FP32_ROWS] [--out OUT] [--prior PARITY_RUNS ...] [--interim]

fp32 (FP32_ROWS): the committed rows of the consistency experiment's runs of the same configs on the
same split and budget (`synthetic_tiny`, `synthetic_tiny_mask2former`, default split, 800 clip
iterations, seeds 0-4). Levers: the finished runs of `--sweep`, the same configs with the `--levers`
settings, checked on every run (`make precision-parity`: `solver.amp=bf16 solver.fused_optimizer=true`,
the default; `make fp32-parity`: `solver.compile=true solver.fused_optimizer=true`). Per decoder: levers −
fp32 difference of mean AP with its Welch 95 % interval and exact permutation p (unpaired, as in the
consistency experiment: a seed fixes the clip order and frame draws, not the path through training), and
the protocols' accuracy condition: both intervals lie within ±1 AP point. Writes
`parity_runs.csv` (the lever runs, one row each), `parity.md` and `parity_comparisons.csv` under `--out`;
with `--control SWEEP`, fp32 eager runs made again beside the levers set against the committed runs of
their identity (`control_runs.csv`), which tells whether the fp32 arm is what this machine computes.
An experiment run in parts (bf16 on a CPU without native bf16): `--prior` joins the committed
`parity_runs.csv` of earlier parts to this store's runs, and `--interim` writes the runs so far without
the comparison, which is computed once every seed of both decoders exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # analysis/
from analysis.parts import with_prior  # noqa: E402
from analysis.stats import compare  # noqa: E402
from ifrvis import runstore  # noqa: E402
from ifrvis.cli import ArgumentParser, existing_file  # noqa: E402
from ifrvis.config import parse_override  # noqa: E402

FP32_ROWS = Path("benchmarks/results/consistency2/consistency_runs.csv")
CONFIGS = {"synthetic_tiny": "IFR", "synthetic_tiny_mask2former": "Mask2Former-VIS"}
SEEDS = range(5)
ITERS = 800
MARGIN = 1.0  # AP points: the accuracy condition, each interval within ±MARGIN
LEVERS = ["solver.amp=bf16", "solver.fused_optimizer=true"]
EAGER_FP32 = ["solver.amp=none", "solver.compile=false", "solver.fused_optimizer=false"]
RUN_COLUMNS = [
    "config",
    "seed",
    "run_identity",
    "run_id",
    "git_commit",
    "AP",
    "train_time_s",
    "env.cpu",
    "env.threads",
]


def fp32_rows(path: Path) -> pd.DataFrame:
    """The committed fp32 runs of CONFIGS on the default split at ITERS, seeds SEEDS."""
    rows = pd.read_csv(path)
    keep = rows["config"].isin(CONFIGS) & (rows["dataset"] == "synthetic") & (rows["iters"] == ITERS)
    return rows[keep & rows["seed"].isin(SEEDS)][["config", "seed", "run_identity", "git_commit", "AP"]]


def lever_rows(sweep: str, levers: list[str]) -> pd.DataFrame:
    """The finished runs of `sweep`, checked to carry the `levers` (KEY=VALUE, as `--set` takes them) and
    the budget, one row each (none: an empty frame of RUN_COLUMNS)."""
    runs = runstore.load_sweep(sweep).runs
    if runs.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    runs = runs[runs["status"] == "FINISHED"]
    settings = dict(map(parse_override, [*levers, f"solver.max_iters={ITERS}"]))
    for key, value in settings.items():
        column = f"params.{key}"
        wrong = runs[runs[column] != value] if column in runs else runs
        if not wrong.empty:
            raise SystemExit(f"precision_parity.py: {list(wrong['run_name'])} ran with {key} != {value}")
    frame = pd.DataFrame(
        {
            "config": runs["config"],
            "seed": runs["seed"].astype(int),
            "run_identity": runs["run_identity"],
            "run_id": runs["run_id"],
            "git_commit": runs["git_commit"],
            "AP": runs["metrics.AP"],
            "train_time_s": runs["metrics.train_time_s"],
            "env.cpu": runs.get("tags.env.cpu"),
            "env.threads": runs.get("tags.env.threads"),
        }
    )
    return frame[frame["config"].isin(CONFIGS) & frame["seed"].isin(SEEDS)].sort_values(["config", "seed"])


def comparisons(fp32: pd.DataFrame, levers: pd.DataFrame) -> pd.DataFrame:
    """Per decoder: AP (points) of both arms, levers − fp32 with interval and p, and the verdict."""
    rows = []
    for config, decoder in CONFIGS.items():
        a = 100 * levers.loc[levers["config"] == config, "AP"].to_numpy()
        b = 100 * fp32.loc[fp32["config"] == config, "AP"].to_numpy()
        result = compare(a, b)
        rows.append(
            {
                "decoder": decoder,
                "n levers": len(a),
                "n fp32": len(b),
                "AP levers": f"{a.mean():.1f} ± {a.std(ddof=1):.1f}",
                "AP fp32": f"{b.mean():.1f} ± {b.std(ddof=1):.1f}",
                "difference": round(result.difference, 2),
                "low": round(result.low, 2),
                "high": round(result.high, 2),
                "p": round(result.p, 3),
                "test": result.test(),
                "within ±1": -MARGIN <= result.low and result.high <= MARGIN,
            }
        )
    return pd.DataFrame(rows)


def control_table(fp32: pd.DataFrame, control: pd.DataFrame) -> pd.DataFrame:
    """fp32 eager runs made again beside the lever runs against the committed runs of the same identity:
    AP (points) of both and their difference; 0 says that the committed fp32 arm is what this machine and
    code compute, so that a lever's difference is the lever's."""
    both = control.merge(fp32, on=["config", "seed", "run_identity"], suffixes=(" rerun", " committed"))
    return pd.DataFrame(
        {
            "config": both["config"],
            "seed": both["seed"],
            "run_identity": both["run_identity"],
            "AP committed": (100 * both["AP committed"]).round(4),
            "AP rerun": (100 * both["AP rerun"]).round(4),
            "difference": (100 * (both["AP rerun"] - both["AP committed"])).round(4),
        }
    )


def markdown(table: pd.DataFrame) -> str:
    lines = [" | ".join(table.columns), " | ".join("---" for _ in table.columns)]
    lines += [" | ".join(str(value) for value in row) for row in table.itertuples(index=False)]
    return "".join(f"| {line} |\n" for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="precision-parity")
    parser.add_argument("--levers", nargs="+", default=LEVERS, metavar="KEY=VALUE")
    parser.add_argument("--fp32", type=existing_file, default=FP32_ROWS)
    parser.add_argument("--control", default="", help="sweep of fp32 eager runs made again beside the levers")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/precision_parity"))
    parser.add_argument(
        "--prior", type=existing_file, nargs="*", default=[], help="parity_runs.csv of earlier parts"
    )
    parser.add_argument("--interim", action="store_true", help="the runs so far, no comparison")
    args = parser.parse_args(argv)
    fp32, levers = fp32_rows(args.fp32), lever_rows(args.sweep, args.levers)
    if args.prior:
        levers = with_prior(levers, args.prior).sort_values(["config", "seed"])
    if levers.empty:
        raise SystemExit(f"precision_parity.py: no finished run of sweep '{args.sweep}' (nor in --prior)")
    args.out.mkdir(parents=True, exist_ok=True)
    levers.to_csv(args.out / "parity_runs.csv", index=False)
    if args.interim:
        text = (
            f"Interim: {len(levers)} of {len(CONFIGS) * len(SEEDS)} lever runs; the comparison is computed "
            f"when every seed of both decoders exists.\n\n{markdown(levers)}"
        )
        (args.out / "parity.md").write_text(text)
        print(text)
        return 0
    table = comparisons(fp32, levers)
    table.to_csv(args.out / "parity_comparisons.csv", index=False)
    parity = bool(table["within ±1"].all()) and (table[["n levers", "n fp32"]] == len(SEEDS)).all().all()
    verdict = (
        "both intervals lie within ±1 AP point: the levers meet the accuracy condition"
        if parity
        else "not every interval lies within ±1 AP point (or a seed is missing): the levers do not meet"
        " the accuracy condition, and fp32 eager stays the default"
    )
    text = f"{markdown(table)}\nlevers − fp32, AP points, Welch 95 % interval. {verdict}.\n"
    if args.control:
        reruns = lever_rows(args.control, EAGER_FP32)
        if reruns.empty:
            raise SystemExit(f"precision_parity.py: no finished run of the control sweep '{args.control}'")
        control = control_table(fp32, reruns)
        control.to_csv(args.out / "control_runs.csv", index=False)
        text += f"\nControl, fp32 eager made again (AP points):\n\n{markdown(control)}"
    (args.out / "parity.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
