"""An experiment run in parts: machines that keep no run store between parts commit each part's per-run
CSV, and the next part joins its own store's rows to them. And a rerun checked against those rows:

    rows = with_prior(rows_of_this_store, [Path("benchmarks/results/.../runs.csv"), ...])
    .venv/bin/python -m analysis.parts RERUN_RUNS.csv COMMITTED_RUNS.csv   # which figures a rerun changed
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from ifrvis.cli import ArgumentParser, existing_file, script_main
from ifrvis.errors import UserError

# Columns that name a run's record, not what it computed: another store or commit gives them other values.
RECORD_COLUMNS = ("run_id", "git_commit")


def with_prior(rows: pd.DataFrame, prior: list[Path], text: tuple[str, ...] = ()) -> pd.DataFrame:
    """`rows` (this store's finished runs) and the per-run CSVs of earlier parts, each `run_identity` once,
    this store's row first; read back through one CSV so that every column has one type. The `text`
    columns stay text as written (a λ_e of "0.3" is not read as the float 0.3, nor "0" as 0.0 beside it),
    whatever values this part and the earlier ones happen to hold."""
    as_text = {column: str for column in text}
    frames = [
        rows.drop(columns="run_dir", errors="ignore"),
        *(pd.read_csv(path, dtype=as_text) for path in prior),
    ]
    merged = pd.concat([f for f in frames if not f.empty], ignore_index=True).drop_duplicates("run_identity")
    return pd.read_csv(io.StringIO(merged.to_csv(index=False)), dtype=as_text)


def unequal_columns(rerun: pd.DataFrame, committed: pd.DataFrame) -> dict[str, int]:
    """For the runs (`run_identity`) in both per-run frames: every column of both, but `RECORD_COLUMNS`,
    whose values differ, with the number of runs where they do. Equality is exact (a figure computed
    again must be the same float); two missing values are equal."""
    both = rerun.merge(committed, on="run_identity", suffixes=(" rerun", " committed"))
    skipped = ("run_identity", *RECORD_COLUMNS)
    shared = [c for c in rerun.columns if c in committed.columns and c not in skipped]
    differing = {}
    for column in shared:
        a, b = both[f"{column} rerun"], both[f"{column} committed"]
        count = int((~((a == b) | (a.isna() & b.isna()))).sum())
        if count:
            differing[column] = count
    return differing


def per_run_rows(path: Path) -> pd.DataFrame:
    """A per-run CSV with its `run_identity` column; a UserError naming the file otherwise."""
    try:
        rows = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a per-run CSV ({str(error).splitlines()[0]})") from None
    if "run_identity" not in rows:
        raise UserError(f"{path}: not a per-run CSV (no run_identity column)")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m analysis.parts", description="Which figures of the runs in both per-run CSVs differ."
    )
    parser.add_argument("rerun", type=existing_file, help="per-run CSV of the runs made again")
    parser.add_argument("committed", type=existing_file, help="per-run CSV they should reproduce")
    args = parser.parse_args(argv)
    rerun, committed = per_run_rows(args.rerun), per_run_rows(args.committed)
    common = rerun["run_identity"].isin(committed["run_identity"]).sum()
    differing = unequal_columns(rerun, committed)
    print(f"{common} of {len(rerun)} runs of {args.rerun} have a row in {args.committed}")
    if not common:  # e.g. the configs changed since, and with them every run_identity
        print("no run in both: nothing was compared")
        return 1
    if not differing:
        print(f"every figure of the {common} equal (all columns but {', '.join(RECORD_COLUMNS)})")
    for column, count in differing.items():
        print(f"{column}: differs in {count} of {common} runs")
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(script_main(main, "python -m analysis.parts"))
