"""The committed results follow from the committed per-run rows with today's analysis code, and the README
quotes them as committed: a change of the statistics, or an edited table, fails here, not in a reader's
hands. (The per-run rows themselves come from logged runs: `make table1` and `make consistency2` rebuild
them, and `python -m analysis.parts` compares a rebuild with them.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from conftest import load_benchmark

from analysis.comparisons import compare_groups
from analysis.parts import with_prior
from ifrvis.metric_names import TABLE1

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
LABELS = {"ifr": "IFR (ours)", "mask2former": "Mask2Former"}


def assert_same_frame(computed: pd.DataFrame, committed: pd.DataFrame) -> None:
    """Equal columns and rows; numbers to 1e-12 relative (the CSV's round trip), text exactly."""
    assert list(computed.columns) == list(committed.columns)
    assert len(computed) == len(committed)
    for column in committed:
        a, b = computed[column].reset_index(drop=True), committed[column]
        if b.dtype.kind in "fi" and a.dtype.kind in "fib":
            assert np.allclose(a.astype(float), b.astype(float), rtol=1e-12, atol=0, equal_nan=True), column
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), column


def test_table1_comparisons_follow_from_its_per_run_rows():
    runs = pd.read_csv(RESULTS / "table1/table1_runs.csv")
    groups = [
        (LABELS[method], pd.DataFrame({"seed": rows["seed"], **{m: rows[f"{m}_pct"] for m in TABLE1}}))
        for method, rows in runs.groupby("method", sort=False)
    ]
    computed = compare_groups(groups, list(TABLE1), [(0, 1)])
    assert_same_frame(computed, pd.read_csv(RESULTS / "table1/table1_comparisons.csv"))


def test_table1_rows_follow_from_its_per_run_rows():
    """AP mean ± sample std (ddof=1) and the other means, one decimal, as table1.md shows them."""
    runs = pd.read_csv(RESULTS / "table1/table1_runs.csv")
    markdown = (RESULTS / "table1/table1.md").read_text()
    for method, rows in runs.groupby("method"):
        ap = rows["AP_pct"]
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {LABELS[method]} |"))
        cells = [cell.strip().strip("*") for cell in line.strip("|").split("|")]
        assert cells[3] == f"{ap.mean():.1f} ± {ap.std(ddof=1):.1f}"
        assert cells[4:8] == [f"{rows[f'{m}_pct'].mean():.1f}" for m in TABLE1[1:]]
        assert cells[8] == str(len(rows))


def test_the_readme_quotes_table1_and_the_fresh_clone_summary_as_committed():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### What `make table1` printed", 1)[1].split("```", 2)[1]
    table = (RESULTS / "table1/table1.md").read_text().splitlines()
    summary = (RESULTS / "table1/fresh_clone_summary.md").read_text().splitlines()
    quoted = [line for line in block.splitlines() if line.startswith("| ") and "..." not in line]
    runs = [line for line in quoted if line.startswith("| synthetic_tiny")]
    assert len(runs) == 3 and all(line in summary for line in runs)
    rows = [line for line in quoted if line.startswith(("| IFR", "| Mask2Former"))]
    assert len(rows) == 4 and all(line in table for line in rows)


def test_consistency2_comparisons_follow_from_its_per_run_rows():
    consistency = load_benchmark("consistency")
    folder = RESULTS / "consistency2"
    rows = with_prior(
        pd.DataFrame({"run_identity": []}), [folder / "consistency_runs.csv"], text=tuple(consistency.ARM)
    )
    computed = consistency.comparisons(rows)
    assert_same_frame(computed, pd.read_csv(folder / "consistency_comparisons.csv"))
