"""analysis/figures.ipynb executes headless (nbclient, python3 kernel) against runs this test logs."""

from __future__ import annotations

from pathlib import Path

import nbformat
from mlflow.tracking import MlflowClient
from test_tables import detection_metrics, log_parent, log_run, tracking_metrics

from analysis.run_notebook import main

NOTEBOOK = Path(__file__).resolve().parents[1] / "analysis" / "figures.ipynb"


def test_notebook_regenerates_tables_and_figures(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for method, offset in (("ifr", 0.05), ("mask2former", 0.0)):
        for seed in range(2):
            metrics = detection_metrics(seed, offset) | tracking_metrics(seed, offset)
            log_run(uri, "nb-main", method, seed, metrics, history={"train/loss": [3.0, 2.0, 1.5 + offset]})
    parent = log_parent(uri, "nb-abl", swept_keys=("loss.lambda_e",))
    for lambda_e in (0.0, 0.3):
        for seed in range(2):
            log_run(uri, "nb-abl", "ifr", seed, detection_metrics(seed, lambda_e / 10), lambda_e=lambda_e)
    results = tmp_path / "results"
    for name, value in {
        "MLFLOW_TRACKING_URI": uri,
        "IFRVIS_SWEEP": "nb-main",
        "IFRVIS_TABLE2_SWEEP": "nb-none",
        "IFRVIS_ABLATION_SWEEP": "nb-abl",
        "IFRVIS_CLIP_SWEEP": "nb-clip-none",
        "IFRVIS_SEEDS": "2",
        "IFRVIS_RESULTS": str(results),
    }.items():
        monkeypatch.setenv(name, value)
    executed = tmp_path / "executed.ipynb"

    assert main([str(NOTEBOOK), "--out", str(executed), "--timeout", "300"]) == 0

    produced = {p.relative_to(results).as_posix() for p in results.rglob("*.*")}
    tables = (".md", ".tex", ".csv", "_runs.csv", "_comparisons.csv")
    expected = {f"nb-main/table{n}{suffix}" for n in (1, 3) for suffix in tables}
    expected |= {f"nb-main/{f}.{s}" for f in ("training_curves", "tracking_bars") for s in ("png", "pdf")}
    figure4 = {f"figure4{s}" for s in (".png", ".pdf", "_runs.csv", "_comparisons.csv", "_comparisons.md")}
    expected |= {"nb-main/tracking_bars_runs.csv"} | {f"nb-abl/{name}" for name in figure4}
    assert produced == expected
    assert {a.path for a in MlflowClient(uri).list_artifacts(parent, "figures")} == {
        f"figures/{name}" for name in figure4
    }
    outputs = "\n".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/markdown", ""))
        for cell in nbformat.read(executed, as_version=4).cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "| IFR (ours) |" in outputs and "mean ± std (n=2)" in outputs
    assert "| IFR (ours) − Mask2Former | AP |" in outputs  # the comparison block under Table 1
    assert "WARNING: Table 2 not regenerated: no runs of sweep 'nb-none'" in outputs  # loud in the notebook
    report = capsys.readouterr().out  # and in what `make figures` prints
    assert "regenerated: Table 1 -> " in report and "regenerated: Figure 4 -> " in report
    assert "NOT regenerated: Table 2: no runs of sweep 'nb-none'" in report
    assert "NOT regenerated: clip-length figure: no runs of sweep 'nb-clip-none'" in report
    assert "5 regenerated, 2 not regenerated" in report
    assert nbformat.read(NOTEBOOK, as_version=4).cells[1].outputs == []  # the committed notebook untouched
