"""The paper's tables from a sweep's MLflow runs: Markdown, LaTeX (booktabs) and CSV.

    python analysis/tables.py --sweep table1 --table 1 [--experiment ifrvis] [--seeds 5] [--out results/]

Table 1/2 style: one row per method x backbone x dataset x the sweep's swept keys (x the settings that
tell apart configs of one group, e.g. Swin-L's 100 or 200 queries), AP as mean ± sample std (ddof=1)
over seeds, AP50 / AP75 / AR1 / AR10 as means, and n (seeds).
Table 3 style: IDF1, MOTA, IDP, IDR, IDs, each seed's overall row, then mean ± std across seeds.
The best value of each column is bold. Missing seeds, duplicates, FAILED or incomplete runs are
printed as warnings, written under the table and summarised in the caption.
Under each table, its rows compared over seeds (analysis.comparisons: difference of means, 95 %
interval, exact permutation p, Holm across the metrics); beside it, one row per run.

Files under `<out>/<sweep>/`: `<name>.md`, `.tex`, `.csv` (the summary), `<name>_runs.csv` (one row
per run: keys, seed, identity, MLflow run id, each metric as logged and in display units, the
machine it logged) and `<name>_comparisons.csv`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: make `analysis` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.audit import RunAudit, audit_runs, run_rows  # noqa: E402
from analysis.comparisons import (  # noqa: E402
    PAIRING,
    compare_groups,
    comparison_block,
    pair_rule,
    pairs_for,
    reference_row,
)
from ifrvis import runstore  # noqa: E402
from ifrvis.cli import ArgumentParser, positive_int  # noqa: E402
from ifrvis.metric_names import LOWER_IS_BETTER, TABLE1, TABLE3, UNITS, scale  # noqa: E402

RESULTS = runstore.PROJECT_ROOT / "results"  # where tables and figures land, wherever the command runs

TABLE1_METRICS = list(TABLE1)
TABLE3_METRICS = list(TABLE3)  # the paper's Table 3, then HOTA, DetA, AssA (beyond the paper, on masks)
# Table 3 marks percentages with a sign (MOTA x100 and counts have none); Table 1's caption says "in %".
PERCENT_SIGN = {m for m in TABLE3 if UNITS[m] == "%"}
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
    runs: pd.DataFrame  # one row per run that enters the table (analysis.audit.run_rows)
    comparisons: pd.DataFrame  # one row per pair of rows and metric (analysis.comparisons.COLUMNS)
    paired: bool = False


def seed_stats(values: pd.Series) -> tuple[float, float]:
    """(mean, sample std with ddof=1); the std is NaN for a single seed."""
    array = values.to_numpy(dtype=float)
    if array.size == 0:
        return math.nan, math.nan
    std = float(np.std(array, ddof=1)) if array.size > 1 else math.nan
    return float(np.mean(array)), std


def group_runs(runs: pd.DataFrame, values: dict) -> pd.DataFrame:
    """The runs whose columns hold `values` (column -> value; a missing value matches missing ones)."""
    mask = np.ones(len(runs), dtype=bool)
    for column, value in values.items():
        mask &= (runs[column] == value).to_numpy() | (pd.isna(value) & runs[column].isna().to_numpy())
    return runs[mask]


def summarize(audit: RunAudit, metrics: list[str]) -> pd.DataFrame:
    """One row per group (every group seen, even with no usable run): keys, `seeds`, `n`, and
    `<metric>_mean` / `<metric>_std` in display units."""
    rows = []
    for key, seeds in audit.seeds_per_group.items():
        row = dict(zip(audit.group_keys, key))
        group = group_runs(audit.runs, row)
        row.update(seeds=" ".join(map(str, seeds)), n=len(group))
        for metric in metrics:
            mean, std = seed_stats(group[f"metrics.{metric}"] * scale(metric))
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


def row_labels(numbers: pd.DataFrame, keys: list[str]) -> list[str]:
    """A short name per table row from the keys whose values differ between rows (e.g. the method)."""
    varying = [k for k in keys if numbers[k].astype(str).nunique() > 1] or keys[:1]
    return [
        ", ".join(
            METHOD_NAMES.get(row[k], row[k]) if k == "method" else f"{KEY_TITLES.get(k, k)}={row[k]}"
            for k in varying
        )
        for _, row in numbers.iterrows()
    ]


def compare_rows(
    audit: RunAudit, numbers: pd.DataFrame, metrics: list[str], paired: bool = False
) -> tuple[pd.DataFrame, str]:
    """The table's rows compared over seeds in display units (`pairs_for`: every pair of a few rows,
    else each row against the reference row, `reference_row`: λ_e = 0.3 as in Figure 4, else the
    first): the comparison frame and a caption sentence."""
    labels = row_labels(numbers, audit.group_keys) if len(numbers) else []
    groups = []
    for label, (_, row) in zip(labels, numbers.iterrows()):
        runs = group_runs(audit.runs, {k: row[k] for k in audit.group_keys})
        values = {m: runs[f"metrics.{m}"] * scale(m) for m in metrics}
        groups.append((label, pd.DataFrame({"seed": runs["seed"], **values})))
    reference = reference_row(
        {k: list(numbers[k]) for k in audit.group_keys if k in numbers}, audit.group_keys
    )
    frame = compare_groups(groups, metrics, pairs_for(len(groups), reference), paired)
    rule = pair_rule(len(groups), labels[reference] if labels else "")
    return frame, f"Comparisons under the table: {rule}, per metric. {PAIRING[paired]}"


def _caption(title: str, aggregation: str, audit: RunAudit, comparison: str = "") -> str:
    caption = f"{title} {aggregation}"
    notes = audit.caption_notes()
    if notes:
        caption += f" Rows over fewer seeds than asked ({audit.seeds_asked}): " + "; ".join(notes) + "."
    if audit.excluded:
        caption += (
            f" {len(audit.excluded)} run(s) excluded (FAILED or unfinished, duplicate, or lacking metrics; "
            "see warnings)."
        )
    source = audit.runs.get(f"tags.{runstore.SOURCE_TAG}", pd.Series(dtype=object))
    scored = source.eq(runstore.SERVER_SOURCE).sum()
    if scored:
        caption += f" AP and AR of {scored} of the {len(audit.runs)} runs from the evaluation server."
    return f"{caption} {comparison}" if comparison else caption


def table1(audit: RunAudit, sweep: str, metrics: list[str] = TABLE1_METRICS, paired: bool = False) -> Table:
    """Table 1/2 style: AP mean ± std, the other metrics as means, and n; rows compared per metric."""
    numbers = summarize(audit, metrics)
    comparisons, sentence = compare_rows(audit, numbers, metrics, paired)
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
        sentence,
    )
    runs = run_rows(audit.runs, keys, metrics)
    return Table("table1", columns, cells, numbers, caption, audit.warnings, runs, comparisons, paired)


def table3(audit: RunAudit, sweep: str, metrics: list[str] = TABLE3_METRICS, paired: bool = False) -> Table:
    """Table 3 style: each seed's overall tracking metrics, then the mean ± std row of the group; rows
    compared per metric."""
    numbers = summarize(audit, metrics)
    comparisons, sentence = compare_rows(audit, numbers, metrics, paired)
    keys = audit.group_keys
    columns = [KEY_TITLES.get(k, k) for k in keys] + ["Seed"] + metrics
    bold = {m: best_rows(numbers[f"{m}_mean"], m) if len(numbers) else set() for m in metrics}
    cells = []
    csv_rows = []
    for i, row in numbers.iterrows():
        group = group_runs(audit.runs, {k: row[k] for k in keys})
        for _, run in group.sort_values("seed").iterrows():
            line = _key_cells(row, keys) + [str(run["seed"])]
            csv_row = {k: row[k] for k in keys} | {"seed": run["seed"], "run_id": run["run_id"]}
            for metric in metrics:
                value = run[f"metrics.{metric}"] * scale(metric)
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
        sentence,
    )
    runs = run_rows(audit.runs, keys, metrics)
    return Table(
        "table3", columns, cells, pd.DataFrame(csv_rows), caption, audit.warnings, runs, comparisons, paired
    )


def to_markdown(table: Table) -> str:
    lines = [f"**{table.name}.** {table.caption}", ""]
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in table.cells]
    lines += ["", comparison_block(table.comparisons, table.paired)]
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
    """`<out_dir>/<name>.md`, `.tex`, `.csv`, `<name>_runs.csv` and `<name>_comparisons.csv`; returns
    the paths by suffix (`md`, `tex`, `csv`, `runs`, `comparisons`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out_dir / f"{table.name}.{suffix}" for suffix in ("md", "tex", "csv")}
    paths |= {part: out_dir / f"{table.name}_{part}.csv" for part in ("runs", "comparisons")}
    paths["md"].write_text(to_markdown(table))
    paths["tex"].write_text(to_latex(table))
    table.numbers.to_csv(paths["csv"], index=False)
    table.runs.to_csv(paths["runs"], index=False)
    table.comparisons.to_csv(paths["comparisons"], index=False)
    return paths


def build_table(
    sweep: str,
    which: int,
    experiment: str = "ifrvis",
    seeds: int = 5,
    uri: str = "",
    out: str | Path = RESULTS,
    paired: bool = False,
) -> tuple[Table, dict[str, Path]]:
    """Load the sweep's runs, audit them, build Table `which` (1: detection, 3: tracking) and write it
    under `<out>/<sweep>/`. `paired`: compare rows by seed (analysis.comparisons.PAIRING)."""
    if which not in (1, 3):
        raise ValueError(
            f"--table must be 1 or 3 (Table 2 is Table 1's layout on another sweep), got {which}"
        )
    metrics = TABLE1_METRICS if which == 1 else TABLE3_METRICS
    found = runstore.load_sweep(sweep, experiment, uri)
    if found.runs.empty:
        raise LookupError(f"no runs of sweep '{sweep}' in MLflow experiment '{experiment}'")
    audit = audit_runs(found.runs, seeds, metrics, found.swept_keys)
    build = table1 if which == 1 else table3
    table = build(audit, sweep, metrics, paired)
    paths = write_table(table, Path(out) / sweep)
    log_to_parent(found.parent_run_id, list(paths.values()), "tables", uri)
    return table, paths


def log_to_parent(parent_run_id: str | None, paths: list[Path], folder: str, uri: str = "") -> str | None:
    """Log `paths` under `folder/` to the sweep's parent run (the MLflow UI shows a sweep's tables and
    figures there); its id, or None when there is none."""
    if parent_run_id is None:
        return None
    logger = runstore.RunLogger(runstore.resolve_uri(uri), parent_run_id)
    for path in paths:
        logger.log_artifact(path, folder)
    return parent_run_id


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, help="the runs' `sweep` tag")
    parser.add_argument("--table", type=int, required=True, choices=[1, 3])
    parser.add_argument("--experiment", default="ifrvis")
    parser.add_argument("--seeds", type=positive_int, default=5, help="seeds each row should average")
    parser.add_argument("--out", default=RESULTS, help="tables land in <out>/<sweep>/")
    parser.add_argument(
        "--paired", action="store_true", help="compare rows by seed (sign flips) instead of relabelling seeds"
    )
    args = parser.parse_args(argv)
    try:
        runstore.check_store()  # a tracking server that is down or refuses the login: one line
    except runstore.StoreUnavailable as error:
        print(f"tables.py: error: {error}", file=sys.stderr)
        return 2
    try:
        table, paths = build_table(
            args.sweep, args.table, args.experiment, args.seeds, out=args.out, paired=args.paired
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
