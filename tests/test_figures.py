"""Metrics against a swept key (Figure 4: λ_e), training curves and tracking bars from runs logged to
a SQLite MLflow store."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from test_tables import detection_metrics, log_parent, log_run, tracking_metrics

from analysis.audit import audit_runs
from analysis.audit import audit_runs as audit_of
from analysis.figures import (
    against_key_figure,
    curves_figure,
    key_stats,
    main,
    make_figure,
    tracking_figure,
)
from ifrvis.runstore import load_sweep

LAMBDAS = (0.0, 0.3, 1.0)


@pytest.fixture()
def ablation(tmp_path):
    """λ_e in LAMBDAS x 3 seeds, plus a FAILED run, under a sweep parent run."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = log_parent(uri, "abl", swept_keys=("loss.lambda_e",))
    logged = {}
    for lambda_e in LAMBDAS:
        for seed in range(3):
            metrics = detection_metrics(seed, 0.1 * lambda_e)
            logged[(lambda_e, seed)] = metrics
            log_run(uri, "abl", "ifr", seed, metrics, lambda_e=lambda_e, parent_run_id=parent)
    log_run(uri, "abl", "ifr", 3, {}, status="FAILED", lambda_e=1.0, parent_run_id=parent)
    return {"uri": uri, "parent": parent, "logged": logged}


def test_key_stats_match_logged_values(ablation):
    sweep = load_sweep("abl", uri=ablation["uri"])
    audit = audit_runs(sweep.runs, seeds=3, metrics=["AP"], swept_keys=sweep.swept_keys)
    stats = key_stats(audit.runs, "loss.lambda_e", "AP").set_index("loss.lambda_e")
    for lambda_e in LAMBDAS:
        values = [100 * ablation["logged"][(lambda_e, s)]["AP"] for s in range(3)]
        assert stats.loc[lambda_e, "mean"] == pytest.approx(statistics.mean(values))
        assert stats.loc[lambda_e, "std"] == pytest.approx(statistics.stdev(values))
        assert stats.loc[lambda_e, "n"] == 3


def test_figure4_written_and_logged_to_parent(ablation, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ablation["uri"])
    assert main(["--sweep", "abl", "--figure", "4", "--seeds", "3", "--out", str(tmp_path / "results")]) == 0
    paths = [tmp_path / "results" / "abl" / name for name in ("figure4.png", "figure4.pdf")]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
    logged = {a.path for a in MlflowClient(ablation["uri"]).list_artifacts(ablation["parent"], "figures")}
    names = (
        "figure4.png",
        "figure4.pdf",
        "figure4_runs.csv",
        "figure4_comparisons.csv",
        "figure4_comparisons.md",
    )
    assert logged == {f"figures/{name}" for name in names}
    captured = capsys.readouterr()
    assert f"logged to parent run {ablation['parent']}" in captured.out
    assert "WARNING: FAILED run" in captured.err


def test_figure4_compares_each_lambda_with_the_papers(ablation, tmp_path):
    """AP in % is 40 + 10 λ_e + 1.3 seed: λ_e = 0 gives {40, 41.3, 42.6}, the paper's 0.3 {43, 44.3,
    45.6}, 1 {50, 51.3, 52.6}. λ_e = 0 minus 0.3: -3, separated seeds, exact p 2/20; Welch: both
    variances 1.3^2, se = 1.3 sqrt(2/3) = 1.0614, df 4, t(0.975, 4) = 2.7764: -3 +- 2.9471. λ_e = 1
    minus 0.3: 51.3 - 44.3 = +7."""
    paths, _, _ = make_figure("abl", "4", uri=ablation["uri"], out=tmp_path, seeds=3)
    comparisons = pd.read_csv(tmp_path / "abl" / "figure4_comparisons.csv")
    ap = comparisons[comparisons["metric"] == "AP"].set_index("a")
    assert list(ap.index) == ["λ_e=0", "λ_e=1"] and set(ap["b"]) == {"λ_e=0.3"}
    assert ap.loc["λ_e=0", "difference"] == pytest.approx(-3)
    assert ap.loc["λ_e=1", "difference"] == pytest.approx(7)
    assert ap.loc["λ_e=0", "p"] == pytest.approx(2 / 20) and ap.loc["λ_e=0", "n_a"] == 3
    assert (ap.loc["λ_e=0", "ci_low"], ap.loc["λ_e=0", "ci_high"]) == pytest.approx(
        (-5.947, -0.053), abs=1e-3
    )
    caption = (tmp_path / "abl" / "figure4_comparisons.md").read_text()
    assert "against λ_e=0.3" in caption and "smallest attainable exact p is 2/20" in caption
    runs = pd.read_csv(tmp_path / "abl" / "figure4_runs.csv")
    assert len(runs) == 9 and sorted(runs["loss.lambda_e"].unique()) == [0.0, 0.3, 1.0]  # FAILED run left out
    logged = ablation["logged"][(1.0, 2)]["AP"]
    assert runs[(runs["loss.lambda_e"] == 1.0) & (runs["seed"] == 2)]["AP_logged"].item() == pytest.approx(
        logged
    )
    assert set(paths[2:]) == {
        tmp_path / "abl" / f"figure4_{n}" for n in ("runs.csv", "comparisons.csv", "comparisons.md")
    }


def test_figure4_without_parent_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for lambda_e in (0.0, 0.5):
        log_run(
            uri,
            "solo",
            "ifr",
            0,
            detection_metrics(0, lambda_e),
            lambda_e=lambda_e,
            swept_keys=("loss.lambda_e",),
        )
    paths, warnings, parent = make_figure("solo", "4", uri=uri, out=tmp_path, seeds=1)
    assert parent is None and not warnings and paths[0].exists()


def test_metrics_against_any_swept_key(tmp_path, monkeypatch):
    """A second ablation (the number of queries) gets its own figure; the key is the sweep's."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    parent = log_parent(uri, "queries", swept_keys=("model.num_queries",))
    for queries in (50, 100, 200):
        for seed in range(2):
            metrics = detection_metrics(seed, queries / 2000)
            log_run(uri, "queries", "ifr", seed, metrics, num_queries=queries, parent_run_id=parent)
    out = tmp_path / "results"
    assert main(["--sweep", "queries", "--figure", "ablation", "--seeds", "2", "--out", str(out)]) == 0
    assert (out / "queries" / "metrics_vs_model.num_queries.png").stat().st_size > 1000
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "figures")}
    suffixes = (".png", ".pdf", "_runs.csv", "_comparisons.csv", "_comparisons.md")
    assert logged == {f"figures/metrics_vs_model.num_queries{suffix}" for suffix in suffixes}
    comparisons = pd.read_csv(out / "queries" / "metrics_vs_model.num_queries_comparisons.csv")
    assert set(comparisons["b"]) == {"Queries=50"}  # no paper value: the first one is the reference
    with pytest.raises(LookupError, match="no config key 'model.no_such_key'"):
        make_figure("queries", "ablation", uri=uri, out=out, seeds=2, key="model.no_such_key")


def test_a_sweep_of_two_keys_needs_key_named(tmp_path, capsys, monkeypatch):
    """Without --key the figure once fell back to λ_e for any sweep but one of one key."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = log_parent(uri, "grid", swept_keys=("loss.lambda_e", "model.num_queries"))
    for seed in range(2):
        log_run(uri, "grid", "ifr", seed, detection_metrics(seed, 0.1), parent_run_id=parent)
    argv = ["--sweep", "grid", "--figure", "ablation", "--seeds", "2", "--out", str(tmp_path / "out")]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(argv) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: sweep 'grid' varies loss.lambda_e, model.num_queries: name the key to draw with --key"
    )
    assert not (tmp_path / "out").exists()


def test_training_curves_and_tracking_bars(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for method, scale in (("ifr", 1.0), ("mask2former", 1.5)):
        for seed in range(2):
            history = {
                "train/loss": [scale * (3 - 0.2 * i + 0.01 * seed) for i in range(6)],
                "train/loss_cls": [scale * (1 - 0.1 * i) for i in range(6)],
                "train/loss_cls_0": [1.0] * 6,
                "train/lr": [1e-4] * 6,
            }
            log_run(
                uri, "main", method, seed, tracking_metrics(seed, 0.1 * (method == "ifr")), history=history
            )
    out = tmp_path / "results"
    assert main(["--sweep", "main", "--figure", "curves", "--seeds", "2", "--out", str(out)]) == 0
    assert main(["--sweep", "main", "--figure", "tracking", "--seeds", "2", "--out", str(out)]) == 0
    for name in ("training_curves", "tracking_bars"):
        assert (out / "main" / f"{name}.png").stat().st_size > 1000 and (
            out / "main" / f"{name}.pdf"
        ).exists()
    runs = pd.read_csv(out / "main" / "tracking_bars_runs.csv")
    assert len(runs) == 4 and {"IDF1_logged", "IDF1_pct", "IDs_logged", "env.cpu"} <= set(runs.columns)
    assert main(["--sweep", "missing", "--figure", "4", "--out", str(out)]) == 1


def labelled(figure) -> list[str]:
    """What is missing on the visible panels of `figure`: an x or y label, or x tick labels."""
    missing = []
    for axis in figure.axes:
        if not axis.get_visible():
            continue
        title = axis.get_title()
        if not axis.get_xlabel() or not axis.get_ylabel():
            missing.append(f"{title}: axis label")
        if not any(label.get_text() for label in axis.get_xticklabels()):
            missing.append(f"{title}: x tick labels")
        if not title:
            missing.append("a panel without a title")
    return missing


def test_every_figure_labels_its_axes(ablation, tmp_path):
    """The three figures, drawn from a small store: every panel has a title, labelled axes (units in
    the y label) and x tick labels, and the title says how many seeds each mean has."""
    import matplotlib.pyplot as plt

    uri = ablation["uri"]
    found = load_sweep("abl", uri=uri)
    audit = audit_of(found.runs, 3, ["AP", "AP50", "AP75", "AR1", "AR10"], found.swept_keys)
    runs = audit.runs.assign(**{"loss.lambda_e": audit.runs["params.loss.lambda_e"].astype(float)})
    figures = {
        "against λ_e": against_key_figure(runs, "loss.lambda_e", list(LAMBDAS), ["AP", "AP50"], "x.md"),
        "tracking": tracking_figure(runs, audit.group_keys, ["AP", "AR10"]),
    }
    history = pd.DataFrame(
        [
            {"run_id": f"r{seed}", "method": "ifr", "seed": seed, "key": key, "step": step, "value": 1.0}
            for seed in range(2)
            for key in ("train/loss", "train/loss_cls")
            for step in range(3)
        ]
    )
    figures["curves"] = curves_figure(history, ["train/loss", "train/loss_cls"])
    for name, figure in figures.items():
        assert labelled(figure) == [], name
    assert "λ_e=0: n=3" in figures["against λ_e"].get_suptitle()
    assert "IFR (ours) / resnet50 / synthetic / 0.3: n=3" in figures["tracking"].get_suptitle()
    assert figures["curves"].axes[0].get_legend_handles_labels()[1] == ["IFR (ours) (mean of 2)"]
    assert figures["against λ_e"].axes[0].get_ylabel() == "AP (%)"
    for figure in figures.values():
        plt.close(figure)
