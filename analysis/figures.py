"""Figures from a sweep's MLflow runs: metrics against a swept key (Figure 4: λ_e), training curves,
tracking bars.

    python analysis/figures.py --sweep ablation_lambda_e --figure 4 [--experiment ifrvis] [--out results/]
    python analysis/figures.py --sweep ablation_clip_frames --figure ablation [--key inference.clip_frames]
    python analysis/figures.py --sweep table1 --figure curves
    python analysis/figures.py --sweep table1 --figure tracking

Each figure is written as PNG and PDF under `<out>/<sweep>/` and logged to the sweep's parent run
under `figures/` when that run exists. Only FINISHED runs, one per run_identity, are drawn
(`analysis.audit.audit_runs`); what was left out is printed. The figures of metrics against a key
and the tracking bars also write `<name>_runs.csv` (one row per run drawn, analysis.audit.run_rows);
the former `<name>_comparisons.csv` and `.md` (its caption, in words): each value of the key against
the reference value (the paper's λ_e = 0.3, else the first value), per metric (analysis.comparisons,
unpaired).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

if __package__ in (None, ""):  # run as a script: make `analysis` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.audit import RunAudit, audit_runs, run_rows, with_param_columns  # noqa: E402
from analysis.comparisons import PAIRING, REFERENCE, compare_groups, comparison_block  # noqa: E402
from analysis.tables import (  # noqa: E402
    KEY_TITLES,
    METHOD_NAMES,
    RESULTS,
    TABLE1_METRICS,
    TABLE3_METRICS,
    log_to_parent,
    seed_stats,
)
from ifrvis import runstore  # noqa: E402
from ifrvis.cli import ArgumentParser, positive_int  # noqa: E402
from ifrvis.metric_names import LOWER_IS_BETTER, UNITS, scale  # noqa: E402

DEFAULT_KEY = "loss.lambda_e"  # Figure 4 of the paper
FIGURES = ("4", "ablation", "curves", "tracking")


def _save(figure: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return paths


def key_stats(runs: pd.DataFrame, key: str, metric: str) -> pd.DataFrame:
    """Per value of config key `key`: mean and sample std (ddof=1) of `metric` in display units, and n."""
    rows = []
    for value, group in runs.groupby(key):
        mean, std = seed_stats(group[f"metrics.{metric}"] * scale(metric))
        rows.append({key: value, "mean": mean, "std": std, "n": len(group)})
    return pd.DataFrame(rows, columns=[key, "mean", "std", "n"])


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _sort_key(value) -> tuple:
    return (0, value, "") if _is_number(value) else (1, 0, str(value))


def _x(value, index: int) -> float:
    return float(value) if _is_number(value) else float(index)


def _text(value) -> str:
    return f"{value:g}" if _is_number(value) else str(value)


def reference_value(key: str, values: list):
    """The value of `key` the others are compared with: REFERENCE's when the runs have it, else the
    first of `values`."""
    return REFERENCE[key] if key in REFERENCE and REFERENCE[key] in values else values[0]


def against_reference(runs: pd.DataFrame, key: str, values: list, metrics: list[str]) -> pd.DataFrame:
    """Each value of `key` minus the reference value, per metric in display units, over seeds
    (analysis.comparisons.COLUMNS; unpaired, Holm across the metrics of each value)."""
    title = KEY_TITLES.get(key, key)
    groups = [
        (
            f"{title}={_text(value)}",
            pd.DataFrame({"seed": group["seed"], **{m: group[f"metrics.{m}"] * scale(m) for m in metrics}}),
        )
        for value in values
        for group in [runs[runs[key] == value]]
    ]
    reference = values.index(reference_value(key, values))
    return compare_groups(groups, metrics, [(j, reference) for j in range(len(values)) if j != reference])


def figure_name(key: str) -> str:
    """`figure4` for λ_e (the paper's), `metrics_vs_<key>` for any other key."""
    return "figure4" if key == DEFAULT_KEY else f"metrics_vs_{key}"


def metrics_against_key(
    audit: RunAudit, out_dir: Path, key: str = DEFAULT_KEY, metrics: list[str] = TABLE1_METRICS
) -> list[Path]:
    """`against_key_figure` saved as `figure_name(key)`, with its per-run file and its comparisons
    with the reference value beside it. Figure 4 is this with λ_e."""
    runs = with_param_columns(audit.runs, [key])
    if key not in runs:
        raise LookupError(f"the runs have no config key {key!r}")
    title = KEY_TITLES.get(key, key)
    values = sorted(runs[key].unique(), key=_sort_key)
    name = figure_name(key)
    runs_csv, comparisons_csv, comparisons_md = (
        out_dir / f"{name}_{part}" for part in ("runs.csv", "comparisons.csv", "comparisons.md")
    )
    figure = against_key_figure(runs, key, values, metrics, comparisons_md.name)
    paths = [*_save(figure, out_dir, name), runs_csv, comparisons_csv, comparisons_md]
    run_rows(runs, list(dict.fromkeys([*audit.group_keys, key])), metrics).to_csv(runs_csv, index=False)
    comparisons = against_reference(runs, key, values, metrics)
    comparisons.to_csv(comparisons_csv, index=False)
    reference = f"{title}={_text(reference_value(key, values))}"
    comparisons_md.write_text(
        f"**{name}.** Each value of {title} against {reference}, per metric, over seeds. {PAIRING[False]}\n\n"
        + comparison_block(comparisons)
        + "\n"
    )
    return paths


def against_key_figure(
    runs: pd.DataFrame, key: str, values: list, metrics: list[str], comparisons_name: str
) -> plt.Figure:
    """One panel per metric against the swept `key`: mean with ±1 sample-std error bars, each seed as
    a point; the seeds per value are in the title."""
    title = KEY_TITLES.get(key, key)
    where = {value: _x(value, i) for i, value in enumerate(values)}  # numbers at their value, else in order
    columns = min(3, len(metrics))
    rows = int(np.ceil(len(metrics) / columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.4 * rows + 0.6), squeeze=False, layout="constrained"
    )
    for axis, metric in zip(axes.flat, metrics):
        stats = key_stats(runs, key, metric)
        x = stats[key].map(where)
        axis.errorbar(x, stats["mean"], yerr=stats["std"].fillna(0), fmt="o-", capsize=4, label="mean ± std")
        axis.scatter(
            runs[key].map(where), runs[f"metrics.{metric}"] * scale(metric), s=12, alpha=0.5, label="seeds"
        )
        axis.set_title(metric)
        axis.set_xlabel(title)
        axis.set_ylabel(axis_label(metric))
        axis.set_xticks([where[v] for v in values], [_text(v) for v in values])
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.set_visible(False)
    axes[0][0].legend(fontsize=8)
    counts = ", ".join(
        f"{title}={_text(row[key])}: n={int(row['n'])}"
        for _, row in key_stats(runs, key, metrics[0]).iterrows()
    )
    figure.suptitle(
        f"Metrics against {title}: mean ± sample std over seeds ({counts}); each value against "
        f"{title}={_text(reference_value(key, values))} in {comparisons_name}",
        fontsize=10,
    )
    return figure


def axis_label(metric: str) -> str:
    """`metric (unit)` for a y axis, e.g. `AP (%)`, `IDs (count)`."""
    unit = UNITS.get(metric, "")
    return f"{metric} ({unit})" if unit else metric


def metric_histories(client, runs: pd.DataFrame, prefix: str = "train/") -> pd.DataFrame:
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
    """`curves_figure` of the runs' logged `train/*` histories, saved as `training_curves`."""
    history = metric_histories(runstore.client(uri), audit.runs)
    keys = [k for k in history["key"].unique() if k not in skip and not k.rsplit("_", 1)[-1].isdigit()]
    if not keys:
        raise LookupError("no train/* metric histories in these runs")
    return _save(curves_figure(history, sorted(keys)), out_dir, "training_curves")


def curves_figure(history: pd.DataFrame, keys: list[str]) -> plt.Figure:
    """One panel per loss term of `keys` (`train/loss`, `train/loss_cls`, ...; auxiliary-layer terms
    are left out by the caller): each seed a thin line, the mean over seeds per method a thick one."""
    columns = min(3, len(keys))
    rows = int(np.ceil(len(keys) / columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.2 * rows + 0.4), squeeze=False, layout="constrained"
    )
    for axis, key in zip(axes.flat, keys):
        for index, (method, group) in enumerate(history[history["key"] == key].groupby("method")):
            colour = f"C{index}"
            for _, seed_run in group.groupby("run_id"):
                axis.plot(seed_run["step"], seed_run["value"], color=colour, alpha=0.25, linewidth=0.8)
            mean = group.groupby("step")["value"].mean()
            seeds = group["run_id"].nunique()
            label = f"{METHOD_NAMES.get(method, method)} (mean of {seeds})"
            axis.plot(mean.index, mean.to_numpy(), color=colour, linewidth=2, label=label)
        axis.set_title(key.removeprefix("train/"))
        axis.set_xlabel("iteration")
        axis.set_ylabel("loss")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(keys) :]:
        axis.set_visible(False)
    axes[0][0].legend(fontsize=8)
    figure.suptitle("Training losses: thin lines single seeds, thick lines their mean", fontsize=10)
    return figure


def tracking_bars(audit: RunAudit, out_dir: Path, metrics: list[str] = TABLE3_METRICS) -> list[Path]:
    """`tracking_figure` saved as `tracking_bars`, with its per-run file beside it."""
    runs_csv = out_dir / "tracking_bars_runs.csv"
    paths = [
        *_save(tracking_figure(audit.runs, audit.group_keys, metrics), out_dir, "tracking_bars"),
        runs_csv,
    ]
    run_rows(audit.runs, audit.group_keys, metrics).to_csv(runs_csv, index=False)
    return paths


def tracking_figure(runs: pd.DataFrame, group_keys: list[str], metrics: list[str]) -> plt.Figure:
    """IFR vs baseline per tracking metric: one bar per method x backbone x dataset (named under it),
    mean ± sample std over its n seeds (in the title)."""
    groups = list(runs.groupby(group_keys, dropna=False))
    names = [" / ".join([METHOD_NAMES.get(key[0], key[0]), *map(str, key[1:])]) for key, _ in groups]
    columns = min(4, len(metrics))
    rows = int(np.ceil(len(metrics) / columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(3.6 * columns, 3.4 * rows + 0.6), squeeze=False, layout="constrained"
    )
    for axis, metric in zip(axes.flat, metrics):
        for index, (_, group) in enumerate(groups):
            mean, std = seed_stats(group[f"metrics.{metric}"] * scale(metric))
            axis.bar(index, mean, yerr=0 if np.isnan(std) else std, capsize=3, color=f"C{index}")
        axis.set_title(metric + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
        axis.set_ylabel(axis_label(metric))
        axis.set_xlabel("method")
        axis.set_xticks(range(len(groups)), names, rotation=20, ha="right", fontsize=8)
        axis.grid(alpha=0.3, axis="y")
    for axis in list(axes.flat)[len(metrics) :]:
        axis.set_visible(False)
    counts = ", ".join(f"{name}: n={len(group)}" for name, (_, group) in zip(names, groups))
    figure.suptitle(f"Tracking metrics: mean ± sample std over seeds ({counts})", fontsize=10)
    return figure


def make_figure(
    sweep: str,
    which: str,
    experiment: str = "ifrvis",
    uri: str = "",
    out: str | Path = RESULTS,
    seeds: int = 5,
    key: str | None = None,
) -> tuple[list[Path], list[str], str | None]:
    """Draw figure `which` for the sweep: (paths, warnings, parent run id). `ablation`: the metrics
    against `key` (default: `ablation_key`); `4`: against λ_e; `curves`: the loss
    terms; `tracking`: the tracking metrics per method."""
    if which not in FIGURES:
        raise ValueError(f"--figure must be one of {', '.join(FIGURES)}, got {which!r}")
    metrics = {"4": TABLE1_METRICS, "ablation": TABLE1_METRICS, "curves": [], "tracking": TABLE3_METRICS}[
        which
    ]
    found = runstore.load_sweep(sweep, experiment, uri)
    if found.runs.empty:
        raise LookupError(f"no runs of sweep '{sweep}' in MLflow experiment '{experiment}'")
    audit = audit_runs(found.runs, seeds, metrics, found.swept_keys)
    if audit.runs.empty:
        raise LookupError(f"sweep '{sweep}': no FINISHED run with {', '.join(metrics) or 'any metric'}")
    out_dir = Path(out) / sweep
    if which in ("4", "ablation"):
        if which == "4":
            key = DEFAULT_KEY
        elif key is None:
            key = ablation_key(sweep, found.swept_keys)
        paths = metrics_against_key(audit, out_dir, key, metrics)
    elif which == "curves":
        paths = training_curves(audit, out_dir, uri)
    else:
        paths = tracking_bars(audit, out_dir, metrics)
    return paths, audit.warnings, log_to_parent(found.parent_run_id, paths, "figures", uri)


def ablation_key(sweep: str, swept_keys: list[str]) -> str:
    """What the ablation figure is drawn against without --key: the sweep's one swept key, λ_e for a
    sweep that records none; a sweep of several keys has to be told which."""
    if len(swept_keys) > 1:
        raise LookupError(f"sweep '{sweep}' varies {', '.join(swept_keys)}: name the key to draw with --key")
    return swept_keys[0] if swept_keys else DEFAULT_KEY


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, help="the runs' `sweep` tag")
    parser.add_argument(
        "--figure", required=True, choices=FIGURES, help="4: metrics against λ_e; ablation: against --key"
    )
    parser.add_argument("--key", help="--figure ablation: the swept config key (default: the sweep's)")
    parser.add_argument("--experiment", default="ifrvis")
    parser.add_argument("--seeds", type=positive_int, default=5, help="seeds each point should average")
    parser.add_argument("--out", default=RESULTS, help="figures land in <out>/<sweep>/")
    args = parser.parse_args(argv)
    try:
        runstore.check_store()  # a tracking server that is down or refuses the login: one line
    except runstore.StoreUnavailable as error:
        print(f"figures.py: error: {error}", file=sys.stderr)
        return 2
    try:
        paths, warnings, parent = make_figure(
            args.sweep, args.figure, args.experiment, out=args.out, seeds=args.seeds, key=args.key
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
