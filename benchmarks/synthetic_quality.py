"""Synthetic quality: AP against training minutes for both decoders on the synthetic benchmark.

    .venv/bin/python benchmarks/synthetic_quality.py [--seeds 3] [--iters 150 300 600 1200 2400]
        [--threads 2] [--out outputs/synthetic_quality] [--quick]

Generates the data when missing (`ifrvis synth` defaults into data/synthetic, seed 0; a crossing split
of 50 validation videos, all crossing, into data/synthetic_crossing, seed 1) and the configs' pretrained
tiny model (`ifrvis pretrain`, once for all runs, like a downloaded checkpoint), then for each decoder
(synthetic_tiny.yaml, synthetic_tiny_mask2former.yaml), seed and training budget trains one run with
`ifrvis.train` (`solver.max_iters` = the budget, learning-rate steps at the config's fractions of
training) in a private MLflow store (<out>/mlflow.db, sweep tag `quality`), which evaluates it on the
synthetic valid split; the final checkpoint is then evaluated on the crossing split. A run whose metrics
are already in <out> is reused, so an interrupted benchmark continues where it stopped. Prints a
Markdown table (mean ± std over seeds), checks the targets (valid AP >= 0.3 within 3 training minutes,
>= 0.5 within 10), and writes <out>/rows.json and <out>/ap_curve.png (valid and crossing AP against
training minutes, mean ± std per decoder). `--quick`: one seed, budgets of 20 and 40 iterations (a smoke
run, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import ifrvis
from ifrvis import run_folder
from ifrvis.cli import ArgumentParser
from ifrvis.config import Config, load_config
from ifrvis.data import synthetic
from ifrvis.data.ytvis import YTVIS, load_ytvis
from ifrvis.engine.checkpoint import load_checkpoint
from ifrvis.engine.evaluate import evaluate_model
from ifrvis.engine.pretrain import pretrain
from ifrvis.modeling import build_model

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "ifr": ROOT / "experiments/configs/synthetic_tiny.yaml",
    "mask2former": ROOT / "experiments/configs/synthetic_tiny_mask2former.yaml",
}
METRICS = ("AP", "AP50", "AP75", "AR1", "AR10", "IDF1", "IDs")
CROSSING_METRICS = ("AP", "IDF1", "IDs")
TARGETS = ((3.0, 0.3), (10.0, 0.5))  # (training minutes, valid AP to reach within them)


def ensure_data(data_root: Path, crossing_root: Path) -> None:
    """Write the synthetic data set and the crossing split with `ifrvis synth`, and the pretrained tiny
    model with `ifrvis pretrain`, unless they exist."""
    jobs = (
        (data_root, ["--seed", "0"]),
        (crossing_root, ["--seed", "1", "--train-videos", "0", "--split-style", "crossing"]),
    )
    for root, flags in jobs:
        if (root / "valid.json").exists():
            continue
        code = synthetic.main(["--out", str(root), *flags, "--no-progress"])
        if code != 0:
            raise RuntimeError(f"ifrvis synth --out {root} {' '.join(flags)} exited with {code}")
    cfg = load_config(CONFIGS["ifr"], [f"data.root={data_root}"])
    if not Path(cfg.model.weights).exists():
        summary = pretrain(cfg, cfg.model.weights, progress=False)
        print(f"pretrained the tiny model: {summary}", flush=True)


def run_config(decoder: str, seed: int, iters: int, data_root: Path, out: Path) -> Config:
    """The tiny config of `decoder` trained for `iters` iterations, logging into `out`; the learning-rate
    steps stay at the same fractions of training as in the config."""
    solver = load_config(CONFIGS[decoder]).solver
    steps = [max(1, round(step / solver.max_iters * iters)) for step in solver.steps]
    return load_config(
        CONFIGS[decoder],
        [
            f"seed={seed}",
            f"data.root={data_root}",
            f"solver.max_iters={iters}",
            f"solver.steps={steps}",
            f"logging.mlflow_uri=sqlite:///{out.resolve()}/mlflow.db",
            f"logging.output_dir={out / 'runs'}",
            "logging.sweep=quality",
            f"logging.checkpoint_every={iters}",
            "logging.visualize=false",
            "logging.progress=false",
        ],
    )


def evaluate_crossing(cfg: Config, crossing: YTVIS) -> dict:
    """Metrics of the run's final checkpoint on the crossing split (files in <run dir>/crossing)."""
    model = build_model(cfg.model, cfg.loss.class_loss)
    model.load_state_dict(load_checkpoint(run_folder.checkpoint_path(cfg))["model"])
    return evaluate_model(model, crossing, cfg, run_folder.run_dir(cfg) / "crossing", logger=None)


def measure(cfg: Config, crossing: YTVIS) -> dict:
    """Train + evaluate one run (or read the record of a finished one) -> one row of the benchmark."""
    record = run_folder.run_dir(cfg) / "quality_row.json"
    if record.exists():
        return json.loads(record.read_text())
    tic = time.perf_counter()
    valid = ifrvis.train(cfg)
    wall_s = time.perf_counter() - tic
    cross = evaluate_crossing(cfg, crossing)
    row = {
        "decoder": cfg.model.decoder,
        "seed": cfg.seed,
        "iters": cfg.solver.max_iters,
        "train_min": valid["train_time_s"] / 60,
        "wall_min": wall_s / 60,  # training + evaluation on the valid split
        "valid": {key: valid[key] for key in METRICS},
        "crossing": {key: cross[key] for key in CROSSING_METRICS},
    }
    record.write_text(json.dumps(row, indent=1))
    return row


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def group_rows(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """Rows grouped by (decoder, iters), the seeds of one setting together."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["decoder"], row["iters"]), []).append(row)
    return dict(sorted(groups.items()))


def cell(values: list[float], digits: int) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    valid_heads = " | ".join(f"valid {key}" for key in METRICS)
    cross_heads = " | ".join(f"crossing {key}" for key in CROSSING_METRICS)
    lines = [
        f"| decoder | iters | seeds | train min | wall min | {valid_heads} | {cross_heads} |",
        "|" + "---|" * (5 + len(METRICS) + len(CROSSING_METRICS)),
    ]
    for (decoder, iters), group in group_rows(rows).items():
        cells = [cell([r["train_min"] for r in group], 2), cell([r["wall_min"] for r in group], 2)]
        for split, keys in (("valid", METRICS), ("crossing", CROSSING_METRICS)):
            cells += [cell([r[split][k] for r in group], 1 if k == "IDs" else 3) for k in keys]
        lines.append(f"| {decoder} | {iters} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_lines(rows: list[dict]) -> list[str]:
    """For each (minutes, AP) target and decoder: the best mean valid AP among the budgets whose mean
    training time fits in the minutes."""
    lines = []
    decoders = [name for name in CONFIGS if any(r["decoder"] == name for r in rows)]
    for minutes, target in TARGETS:
        for decoder in decoders:
            fitting = [
                mean_std([r["valid"]["AP"] for r in group])[0]
                for (name, _), group in group_rows(rows).items()
                if name == decoder and mean_std([r["train_min"] for r in group])[0] <= minutes
            ]
            if not fitting:
                lines.append(f"{decoder}: no budget trained within {minutes:g} min")
                continue
            verdict = "met" if max(fitting) >= target else "NOT met"
            lines.append(
                f"{decoder}: best valid AP within {minutes:g} min = {max(fitting):.3f} "
                f"(target {target}: {verdict})"
            )
    return lines


def plot_curve(rows: list[dict], path: Path) -> None:
    """Valid (solid) and crossing (dashed) AP against mean training minutes, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    groups = group_rows(rows)
    for decoder, colour in zip(CONFIGS, ("tab:blue", "tab:orange")):
        settings = [group for (name, _), group in groups.items() if name == decoder]
        if not settings:
            continue
        minutes = [mean_std([r["train_min"] for r in g])[0] for g in settings]
        for split, style in (("valid", "-o"), ("crossing", "--s")):
            stats = [mean_std([r[split]["AP"] for r in g]) for g in settings]
            ax.errorbar(
                minutes, [m for m, _ in stats], yerr=[s for _, s in stats], fmt=style, color=colour,
                capsize=3, label=f"{decoder}, {split}",
            )  # fmt: skip
    for minutes, target in TARGETS:
        ax.plot([minutes], [target], marker="*", color="black", markersize=10, linestyle="none")
    ax.set_xlabel("training minutes (mean over seeds)")
    ax.set_ylabel("AP")
    ax.set_ylim(0, 1)
    ax.set_title(f"synthetic tiny configs, {len({r['seed'] for r in rows})} seed(s); stars: targets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 per decoder and budget")
    parser.add_argument("--iters", type=int, nargs="+", default=[150, 300, 600, 1200, 2400])
    parser.add_argument("--decoders", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--data", type=Path, default=ROOT / "data/synthetic")
    parser.add_argument("--crossing-data", type=Path, default=ROOT / "data/synthetic_crossing")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs/synthetic_quality")
    parser.add_argument("--quick", action="store_true", help="one seed, budgets of 20 and 40 iterations")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.iters = 1, [20, 40]
    if args.seeds < 1 or args.threads < 1 or min(args.iters) < 1:
        parser.error("need --seeds >= 1, --threads >= 1 and every --iters >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ensure_data(args.data, args.crossing_data)
    crossing = load_ytvis(args.crossing_data / "valid.json", args.crossing_data / "JPEGImages")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for decoder in args.decoders:
        for iters in sorted(args.iters):
            for seed in range(args.seeds):
                row = measure(run_config(decoder, seed, iters, args.data, args.out), crossing)
                rows.append(row)
                print(
                    f"{decoder} iters={iters} seed={seed}: train {row['train_min']:.2f} min, "
                    f"valid AP {row['valid']['AP']:.3f}, crossing AP {row['crossing']['AP']:.3f}",
                    flush=True,
                )
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    plot_curve(rows, args.out / "ap_curve.png")
    print(f"\ntorch threads: {args.threads}; {args.seeds} seed(s); data {args.data}, {args.crossing_data}\n")
    print(markdown_table(rows))
    print("\n" + "\n".join(target_lines(rows)))
    print(f"\nwrote {args.out / 'rows.json'} and {args.out / 'ap_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
