"""An experiment run in parts: machines that keep no run store between parts commit each part's per-run
CSV, and the next part joins its own store's rows to them.

    rows = with_prior(rows_of_this_store, [Path("benchmarks/results/.../runs.csv"), ...])
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd


def with_prior(rows: pd.DataFrame, prior: list[Path]) -> pd.DataFrame:
    """`rows` (this store's finished runs) and the per-run CSVs of earlier parts, each `run_identity` once,
    this store's row first; read back through one CSV so that every column has one type."""
    frames = [rows.drop(columns="run_dir", errors="ignore"), *(pd.read_csv(path) for path in prior)]
    merged = pd.concat([f for f in frames if not f.empty], ignore_index=True).drop_duplicates("run_identity")
    return pd.read_csv(io.StringIO(merged.to_csv(index=False)))
