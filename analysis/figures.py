"""Figures from a sweep's MLflow runs: Figure 4 (metrics against λ_e), training curves, tracking bars.

    python analysis/figures.py --sweep ablation_lambda_e --figure 4 [--experiment ifrvis] [--out results/]
    python analysis/figures.py --sweep table1 --figure curves
    python analysis/figures.py --sweep table1 --figure tracking

Each figure is written as PNG and PDF under `<out>/<sweep>/` and logged to the sweep's parent run
(tags sweep=<name>, sweep_parent=1) under `figures/` when that run exists. Only FINISHED runs, one
per run_identity, are drawn (`analysis.runs.audit_runs`); what was left out is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

if __package__ in (None, ""):  # run as a script: make `analysis` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.runs import RunAudit, audit_runs, load_runs, tracking_uri  # noqa: E402
from analysis.tables import SCALE, TABLE1_METRICS, TABLE3_METRICS, seed_stats  # noqa: E402

METHOD_LABELS = {"ifr": "IFR (ours)", "mask2former": "Mask2Former"}


def _save(figure: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return paths


def lambda_e_stats(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per λ_e: mean and sample std (ddof=1) of `metric` in display units, and n."""
    rows = []
    for lambda_e, group in runs.groupby("lambda_e"):
        mean, std = seed_stats(group[f"metrics.{metric}"] * SCALE.get(metric, 1.0))
        rows.append({"lambda_e": lambda_e, "mean": mean, "std": std, "n": len(group)})
    return pd.DataFrame(rows)


def figure4(audit: RunAudit, out_dir: Path, metrics: list[str] = TABLE1_METRICS) -> list[Path]:
    """One panel per metric against λ_e: mean with ±1 sample-std error bars, each seed as a point."""
    runs = audit.runs
    figure, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.0), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        stats = lambda_e_stats(runs, metric)
        axis.errorbar(
            stats["lambda_e"],
            stats["mean"],
            yerr=stats["std"].fillna(0),
            fmt="o-",
            capsize=4,
            label="mean ± std",
        )
        axis.scatter(
            runs["lambda_e"],
            runs[f"metrics.{metric}"] * SCALE.get(metric, 1.0),
            s=10,
            alpha=0.5,
            label="seeds",
        )
        axis.set_title(metric)
        axis.set_xlabel("λ_e")
        axis.set_xticks(sorted(runs["lambda_e"].unique()))
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("%")
    axes[0][0].legend(fontsize=7)
    counts = ", ".join(f"λ_e={r.lambda_e:g}: n={r.n}" for r in lambda_e_stats(runs, metrics[0]).itertuples())
    figure.suptitle(f"Metrics against λ_e (mean ± sample std over seeds; {counts})", fontsize=9, y=1.04)
    return _save(figure, out_dir, "figure4")


def metric_histories(client: MlflowClient, runs: pd.DataFrame, prefix: str = "train/") -> pd.DataFrame:
    """Long frame (run_id, method, seed, key, step, value) of every `prefix*` metric's history."""
    keys = sorted(c[len("metrics.") :] for c in runs.columns if c.startswith(f"metrics.{prefix}"))
    rows = []
    for _, run in runs.iterrows():
        for key in keys:
            for point in client.get_metric_history(run["run_id"], key):
                rows.append(
                    {
                        "run_id": run["run_id"],
                        "method": run["method"],
                        "seed": run["seed"],
                        "key": key,
                        "step": point.step,
                        "value": point.value,
                    }
                )
    return pd.DataFrame(rows, columns=["run_id", "method", "seed", "key", "step", "value"])


def training_curves(
    audit: RunAudit, out_dir: Path, uri: str = "", skip: tuple[str, ...] = ("train/lr",)
) -> list[Path]:
    """One panel per loss term (`train/loss`, `train/loss_cls`, ...): each seed a thin line, the mean
    over seeds per method a thick one. Auxiliary-layer terms (`_0`, `_1`, ...) are left out."""
    history = metric_histories(MlflowClient(tracking_uri(uri)), audit.runs)
    keys = [k for k in history["key"].unique() if k not in skip and not k.rsplit("_", 1)[-1].isdigit()]
    if not keys:
        raise LookupError("no train/* metric histories in these runs")
    columns = min(3, len(keys))
    rows = int(np.ceil(len(keys) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for axis, key in zip(axes.flat, sorted(keys)):
        for index, (method, group) in enumerate(history[history["key"] == key].groupby("method")):
            colour = f"C{index}"
            for _, seed_run in group.groupby("run_id"):
                axis.plot(seed_run["step"], seed_run["value"], color=colour, alpha=0.25, linewidth=0.8)
            mean = group.groupby("step")["value"].mean()
            axis.plot(
                mean.index,
                mean.to_numpy(),
                color=colour,
                linewidth=2,
                label=METHOD_LABELS.get(method, method),
            )
        axis.set_title(key)
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(keys) :]:
        axis.set_visible(False)
    axes[0][0].legend(fontsize=7)
    return _save(figure, out_dir, "training_curves")


def tracking_bars(audit: RunAudit, out_dir: Path, metrics: list[str] = TABLE3_METRICS) -> list[Path]:
    """IFR vs baseline per tracking metric: one bar per method x backbone x dataset, mean ± sample std."""
    runs = audit.runs
    groups = list(runs.groupby(audit.group_keys, dropna=False))
    figure, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for index, (key, group) in enumerate(groups):
            mean, std = seed_stats(group[f"metrics.{metric}"] * SCALE.get(metric, 1.0))
            label = " / ".join([METHOD_LABELS.get(key[0], key[0]), *map(str, key[1:])])
            axis.bar(index, mean, yerr=0 if np.isnan(std) else std, capsize=3, color=f"C{index}", label=label)
        axis.set_title(metric + (" (lower is better)" if metric == "IDs" else ""))
        axis.set_xticks([])
        axis.grid(alpha=0.3, axis="y")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(
        handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(groups))
    )
    return _save(figure, out_dir, "tracking_bars")


def log_to_parent(sweep: str, paths: list[Path], experiment: str = "ifrvis", uri: str = "") -> str | None:
    """Log `paths` under `figures/` to the sweep's parent run; its id, or None when there is none."""
    client = MlflowClient(tracking_uri(uri))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    parents = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.sweep = '{sweep}' and tags.sweep_parent = '1'",
        order_by=["attributes.start_time DESC"],
    )
    if not parents:
        return None
    for path in paths:
        client.log_artifact(parents[0].info.run_id, str(path), "figures")
    return parents[0].info.run_id


def make_figure(
    sweep: str,
    which: str,
    experiment: str = "ifrvis",
    uri: str = "",
    out: str | Path = "results",
    seeds: int = 5,
) -> tuple[list[Path], list[str], str | None]:
    """Draw figure `which` (4 | curves | tracking) for the sweep: (paths, warnings, parent run id)."""
    metrics = {"4": TABLE1_METRICS, "curves": [], "tracking": TABLE3_METRICS}.get(which)
    if metrics is None:
        raise ValueError(f"--figure must be 4, curves or tracking, got {which!r}")
    runs = load_runs(sweep, experiment, uri)
    if runs.empty:
        raise LookupError(f"no runs with tag sweep='{sweep}' in MLflow experiment '{experiment}'")
    audit = audit_runs(runs, seeds, metrics)
    if audit.runs.empty:
        raise LookupError(f"sweep '{sweep}': no FINISHED run with {', '.join(metrics) or 'any metric'}")
    out_dir = Path(out) / sweep
    if which == "4":
        paths = figure4(audit, out_dir, metrics)
    elif which == "curves":
        paths = training_curves(audit, out_dir, uri)
    else:
        paths = tracking_bars(audit, out_dir, metrics)
    return paths, audit.warnings, log_to_parent(sweep, paths, experiment, uri)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, help="the runs' `sweep` tag")
    parser.add_argument("--figure", required=True, choices=["4", "curves", "tracking"])
    parser.add_argument("--experiment", default="ifrvis")
    parser.add_argument("--seeds", type=int, default=5, help="seeds each point should average")
    parser.add_argument("--out", default="results", help="figures land in <out>/<sweep>/")
    parser.add_argument("--tracking-uri", default="", help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    args = parser.parse_args(argv)
    try:
        paths, warnings, parent = make_figure(
            args.sweep, args.figure, args.experiment, args.tracking_uri, args.out, args.seeds
        )
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(warning, file=sys.stderr)
    print(f"wrote {', '.join(map(str, paths))}" + (f"; logged to parent run {parent}" if parent else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
