"""The paper's tables from a sweep's MLflow runs: Markdown, LaTeX (booktabs) and CSV.

    python analysis/tables.py --sweep table1 --table 1 [--experiment ifrvis] [--seeds 5] [--out results/]

Table 1/2 style: one row per method x backbone x dataset x the sweep's swept keys (x the settings that
tell apart configs of one group, e.g. Swin-L's 100 or 200 queries), AP as mean ± sample std (ddof=1)
over seeds, AP50 / AP75 / AR1 / AR10 as means, and n (seeds).
Table 3 style: IDF1, MOTA, IDP, IDR, IDs, each seed's overall row, then mean ± std across seeds.
The best value of each column is bold. Missing seeds, duplicates, FAILED or incomplete runs are
printed as warnings, written under the table and summarised in the caption.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: make `analysis` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.audit import RunAudit, audit_runs  # noqa: E402
from ifrvis import runstore  # noqa: E402

TABLE1_METRICS = ["AP", "AP50", "AP75", "AR1", "AR10"]
# The paper's Table 3, then HOTA and its detection / association split (beyond the paper, on masks)
TABLE3_METRICS = ["IDF1", "MOTA", "IDP", "IDR", "IDs", "HOTA", "DetA", "AssA"]
LOWER_IS_BETTER = {"IDs", "FP", "FN"}
# Display: fractions x100 (AP, AR, IDF1, IDP, IDR as %, MOTA x100 like the paper), counts as they are.
SCALE = {
    m: 100.0 for m in ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "IDF1", "MOTA"]
}
SCALE.update({m: 100.0 for m in ["IDP", "IDR", "HOTA", "DetA", "AssA"]})
PERCENT_SIGN = {"IDF1", "IDP", "IDR", "HOTA", "DetA", "AssA"}
KEY_TITLES = {
    "method": "Method",
    "backbone": "Backbone",
    "dataset": "Data",
    "loss.lambda_e": "λ_e",
    "model.num_queries": "Queries",
    "inference.clip_frames": "Clip T",
    "config_hash": "Config",
    "seed": "Seed",
}
METHOD_NAMES = {"ifr": "IFR (ours)", "mask2former": "Mask2Former"}


@dataclass
class Table:
    """A rendered table: display cells, raw numbers (for CSV) and its caption and warnings."""

    name: str
    columns: list[str]
    cells: list[list[str]]  # display strings, bold marked with **...**
    numbers: pd.DataFrame  # one row per table row: keys, <metric>_mean, <metric>_std, n
    caption: str
    warnings: list[str]


def seed_stats(values: pd.Series) -> tuple[float, float]:
    """(mean, sample std with ddof=1); the std is NaN for a single seed."""
    array = values.to_numpy(dtype=float)
    if array.size == 0:
        return math.nan, math.nan
    std = float(np.std(array, ddof=1)) if array.size > 1 else math.nan
    return float(np.mean(array)), std


def summarize(audit: RunAudit, metrics: list[str]) -> pd.DataFrame:
    """One row per group (every group seen, even with no usable run): keys, `seeds`, `n`, and
    `<metric>_mean` / `<metric>_std` in display units."""
    rows = []
    for key, seeds in audit.seeds_per_group.items():
        row = dict(zip(audit.group_keys, key))
        mask = np.ones(len(audit.runs), dtype=bool)
        for column, value in row.items():
            mask &= (audit.runs[column] == value).to_numpy() | (
                pd.isna(value) & audit.runs[column].isna().to_numpy()
            )
        group = audit.runs[mask]
        row.update(seeds=" ".join(map(str, seeds)), n=len(group))
        for metric in metrics:
            mean, std = seed_stats(group[f"metrics.{metric}"] * SCALE.get(metric, 1.0))
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
        rows.append(row)
    return pd.DataFrame(rows)


def format_value(metric: str, value: float, std: float | None = None, decimals: int = 1) -> str:
    if pd.isna(value):
        return "–"
    text = f"{value:.{decimals}f}"
    if std is not None:
        text += " ± " + ("n/a" if pd.isna(std) else f"{std:.{decimals}f}")
    return text + ("%" if metric in PERCENT_SIGN else "")


def best_rows(values: pd.Series, metric: str, decimals: int = 1) -> set[int]:
    """Positions holding the best value as displayed (ties all bold); none when fewer than two rows."""
    rounded = values.round(decimals)
    if rounded.notna().sum() < 2:
        return set()
    best = rounded.min() if metric in LOWER_IS_BETTER else rounded.max()
    return {i for i, v in enumerate(rounded) if v == best}


def _bold(text: str) -> str:
    return f"**{text}**"


def _key_cells(row: pd.Series, keys: list[str]) -> list[str]:
    cells = []
    for key in keys:
        value = row[key]
        if key == "method":
            value = METHOD_NAMES.get(value, value)
        cells.append("–" if pd.isna(value) else str(value))
    return cells


def _caption(title: str, aggregation: str, audit: RunAudit) -> str:
    caption = f"{title} {aggregation}"
    notes = audit.caption_notes()
    if notes:
        caption += f" Rows over fewer seeds than asked ({audit.seeds_asked}): " + "; ".join(notes) + "."
    if audit.excluded:
        caption += (
            f" {len(audit.excluded)} run(s) excluded (FAILED or unfinished, duplicate, or lacking metrics; "
            "see warnings)."
        )
    return caption


def table1(audit: RunAudit, sweep: str, metrics: list[str] = TABLE1_METRICS) -> Table:
    """Table 1/2 style: AP mean ± std, the other metrics as means, and n."""
    numbers = summarize(audit, metrics)
    keys = audit.group_keys
    columns = [KEY_TITLES.get(k, k) for k in keys] + metrics + ["n"]
    cells = []
    bold = {m: best_rows(numbers[f"{m}_mean"], m) if len(numbers) else set() for m in metrics}
    for i, row in numbers.iterrows():
        line = _key_cells(row, keys)
        for metric in metrics:
            std = row[f"{metric}_std"] if metric == metrics[0] else None
            text = format_value(metric, row[f"{metric}_mean"], std)
            line.append(_bold(text) if i in bold[metric] else text)
        line.append(str(row["n"]))
        cells.append(line)
    caption = _caption(
        f"Sweep '{sweep}': {', '.join(metrics)} in %.",
        f"{metrics[0]} is the mean ± sample standard deviation (ddof=1) over the n seeds of each row, "
        "the other columns are means over the same seeds; best value per column in bold.",
        audit,
    )
    return Table("table1", columns, cells, numbers, caption, audit.warnings)


def table3(audit: RunAudit, sweep: str, metrics: list[str] = TABLE3_METRICS) -> Table:
    """Table 3 style: each seed's overall tracking metrics, then the mean ± std row of the group."""
    numbers = summarize(audit, metrics)
    keys = audit.group_keys
    columns = [KEY_TITLES.get(k, k) for k in keys] + ["Seed"] + metrics
    bold = {m: best_rows(numbers[f"{m}_mean"], m) if len(numbers) else set() for m in metrics}
    cells = []
    csv_rows = []
    for i, row in numbers.iterrows():
        group = audit.runs
        for key in keys:
            group = group[group[key] == row[key]] if not pd.isna(row[key]) else group[group[key].isna()]
        for _, run in group.sort_values("seed").iterrows():
            line = _key_cells(row, keys) + [str(run["seed"])]
            csv_row = {k: row[k] for k in keys} | {"seed": run["seed"], "run_id": run["run_id"]}
            for metric in metrics:
                value = run[f"metrics.{metric}"] * SCALE.get(metric, 1.0)
                line.append(format_value(metric, value, decimals=0 if metric == "IDs" else 1))
                csv_row[f"{metric}_mean"], csv_row[f"{metric}_std"] = value, math.nan
            cells.append(line)
            csv_rows.append(csv_row | {"n": 1})
        line = _key_cells(row, keys) + [f"mean ± std (n={row['n']})"]
        csv_row = {k: row[k] for k in keys} | {"seed": "mean", "run_id": "", "n": row["n"]}
        for metric in metrics:
            text = format_value(metric, row[f"{metric}_mean"], row[f"{metric}_std"])
            line.append(_bold(text) if i in bold[metric] else text)
            csv_row[f"{metric}_mean"], csv_row[f"{metric}_std"] = row[f"{metric}_mean"], row[f"{metric}_std"]
        cells.append(line)
        csv_rows.append(csv_row)
    caption = _caption(
        f"Sweep '{sweep}': tracking metrics (IDF1, IDP, IDR in %, MOTA x100, IDs a count; beyond the "
        "paper, HOTA with its detection and association accuracies DetA and AssA in %, on mask IoU).",
        "Each seed's row holds that run's overall values over all videos of the validation split; the "
        "'mean ± std' row averages them over the n seeds (sample standard deviation, ddof=1). Best mean per "
        "column in bold (IDs: lowest).",
        audit,
    )
    return Table("table3", columns, cells, pd.DataFrame(csv_rows), caption, audit.warnings)


def to_markdown(table: Table) -> str:
    lines = [f"**{table.name}.** {table.caption}", ""]
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in table.cells]
    if table.warnings:
        lines += ["", "**Warnings:**", ""] + [f"- {w}" for w in table.warnings]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    for char, replacement in [
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("$", r"\$"),
        ("{", r"\{"),
        ("}", r"\}"),
    ]:
        text = text.replace(char, replacement)
    return text.replace("±", r"$\pm$").replace("λ", r"$\lambda$").replace("–", "--")


def _latex_cell(text: str) -> str:
    if text.startswith("**") and text.endswith("**"):
        return r"\textbf{" + latex_escape(text[2:-2]) + "}"
    return latex_escape(text)


def column_spec(columns: list[str]) -> str:
    """Key columns left-aligned, numbers right-aligned."""
    return "".join("l" if c in KEY_TITLES.values() else "r" for c in columns)


def to_latex(table: Table) -> str:
    lines = [f"% WARNING: {w}" for w in table.warnings]
    lines += [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + latex_escape(table.caption) + "}",
        r"\label{tab:" + table.name + "}",
        r"\begin{tabular}{" + column_spec(table.columns) + "}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_latex_cell(c) for c in row) + r" \\" for row in table.cells]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(table: Table, out_dir: Path) -> dict[str, Path]:
    """`<out_dir>/<name>.md`, `.tex` and `.csv`; returns the paths by suffix."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out_dir / f"{table.name}.{suffix}" for suffix in ("md", "tex", "csv")}
    paths["md"].write_text(to_markdown(table))
    paths["tex"].write_text(to_latex(table))
    table.numbers.to_csv(paths["csv"], index=False)
    return paths


def build_table(
    sweep: str,
    which: int,
    experiment: str = "ifrvis",
    seeds: int = 5,
    uri: str = "",
    out: str | Path = "results",
) -> tuple[Table, dict[str, Path]]:
    """Load the sweep's runs, audit them, build Table `which` (1: detection, 3: tracking) and write it
    under `<out>/<sweep>/`."""
    if which not in (1, 3):
        raise ValueError(
            f"--table must be 1 or 3 (Table 2 is Table 1's layout on another sweep), got {which}"
        )
    metrics = TABLE1_METRICS if which == 1 else TABLE3_METRICS
    found = runstore.load_sweep(sweep, experiment, uri)
    if found.runs.empty:
        raise LookupError(f"no runs of sweep '{sweep}' in MLflow experiment '{experiment}'")
    audit = audit_runs(found.runs, seeds, metrics, found.swept_keys)
    table = table1(audit, sweep, metrics) if which == 1 else table3(audit, sweep, metrics)
    return table, write_table(table, Path(out) / sweep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, help="the runs' `sweep` tag")
    parser.add_argument("--table", type=int, required=True, choices=[1, 3])
    parser.add_argument("--experiment", default="ifrvis")
    parser.add_argument("--seeds", type=int, default=5, help="seeds each row should average")
    parser.add_argument("--out", default="results", help="tables land in <out>/<sweep>/")
    parser.add_argument("--tracking-uri", default="", help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    args = parser.parse_args(argv)
    try:
        table, paths = build_table(
            args.sweep, args.table, args.experiment, args.seeds, args.tracking_uri, args.out
        )
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(to_markdown(table))
    for warning in table.warnings:
        print(warning, file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
