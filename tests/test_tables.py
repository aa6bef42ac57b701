"""Tables 1 and 3 from runs logged to a real MLflow store (SQLite in tmp_path) with the training schema."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from analysis.audit import audit_runs
from analysis.comparisons import compare_groups, pairs_for, reference_row, verdict
from analysis.tables import build_table
from ifrvis.metric_names import TABLE3
from ifrvis.runstore import cast_value, load_sweep, member_tag

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "ifrvis"
# The environment tags a training run logs (ifrvis.engine.train.environment_tags).
ENV_TAGS = {"env.torch": "2.9.0+cpu", "env.threads": "2", "env.cpu": "Test CPU", "env.device": "cpu"}


def experiment_id(uri: str) -> str:
    """The test experiment, its artifacts beside the SQLite file (never in the working folder)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
    return client.create_experiment(EXPERIMENT, artifact_location=str(artifacts))


def log_run(
    uri: str,
    sweep: str,
    method: str,
    seed: int,
    metrics: dict[str, float],
    status: str = "FINISHED",
    backbone: str = "resnet50",
    dataset: str = "synthetic",
    lambda_e: float = 0.3,
    start_time: int | None = None,
    history: dict[str, list[float]] | None = None,
    parent_run_id: str = "",
    swept_keys: tuple[str, ...] = (),
    num_queries: int = 100,
) -> str:
    """One run with the tags/params/metrics a training run logs (docs/architecture.md, "Run schema")."""
    client = MlflowClient(uri)
    config_hash = f"{method}-{backbone}-{dataset}-{lambda_e}-{num_queries}"
    tags = {
        "sweep": sweep,
        member_tag(sweep): "1",
        "method": method,
        "backbone": backbone,
        "dataset": dataset,
        "seed": str(seed),
        "config_hash": config_hash,
        "run_identity": f"{config_hash}-s{seed}",
        "git_commit": "abc",
        "swept_keys": ",".join(swept_keys),
        **ENV_TAGS,
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id(uri), start_time=start_time, tags=tags)
    run_id = run.info.run_id
    client.log_param(run_id, "model.decoder", method)
    client.log_param(run_id, "loss.lambda_e", str(lambda_e))
    client.log_param(run_id, "solver.max_iters", "10")
    client.log_param(run_id, "model.num_queries", str(num_queries))
    client.log_param(run_id, "name", f"{method}_{backbone}_{num_queries}")  # a label: never a row key
    entries = [Metric(k, float(v), 0, 0) for k, v in metrics.items()]
    for key, values in (history or {}).items():
        entries += [Metric(key, float(v), 0, step) for step, v in enumerate(values)]
    if entries:
        client.log_batch(run_id, metrics=entries)
    if status == "FAILED":
        client.log_batch(run_id, tags=[RunTag("error", "RuntimeError: out of memory")])
    if status in ("FINISHED", "FAILED", "KILLED"):
        client.set_terminated(run_id, status)
    return run_id


def log_parent(uri: str, sweep: str, swept_keys: tuple[str, ...] = ()) -> str:
    client = MlflowClient(uri)
    tags = {"sweep": sweep, member_tag(sweep): "1", "sweep_parent": "1", "swept_keys": ",".join(swept_keys)}
    run = client.create_run(experiment_id(uri), tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def detection_metrics(seed: int, offset: float) -> dict[str, float]:
    base = {"AP": 0.40, "AP50": 0.60, "AP75": 0.45, "AR1": 0.35, "AR10": 0.50}
    return {k: v + offset + 0.013 * seed * (1 + i) for i, (k, v) in enumerate(base.items())}


def tracking_metrics(seed: int, offset: float) -> dict[str, float]:
    return {
        "IDF1": 0.6 + offset + 0.01 * seed,
        "MOTA": 0.2 + offset - 0.02 * seed,
        "IDP": 0.55 + offset,
        "IDR": 0.7 + 0.005 * seed,
        "IDs": 40 - 10 * offset * 10 + seed,
        "FP": 10 + seed,
        "FN": 20 + seed,
        "HOTA": 0.5 + offset + 0.01 * seed,
        "DetA": 0.6 + offset,
        "AssA": 0.45 + offset + 0.02 * seed,
    }


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    """Sweep 's': IFR with seeds 0-4 (seed 2 logged twice), Mask2Former with seeds 0-3 FINISHED and seed 4
    FAILED, one RUNNING IFR run of another seed, and the sweep's parent run."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"  # read-only for the tests below
    parent = log_parent(uri, "s")
    logged = {"ifr": {}, "mask2former": {}}
    for seed in range(5):
        metrics = detection_metrics(seed, 0.05) | tracking_metrics(seed, 0.1)
        start = 1_000_000 + seed * 10
        if seed == 2:  # an older duplicate with other numbers: must be ignored
            old = {k: v - 0.2 for k, v in metrics.items()}
            stale = log_run(uri, "s", "ifr", seed, old, start_time=start, parent_run_id=parent)
        logged["ifr"][seed] = metrics
        run_id = log_run(uri, "s", "ifr", seed, metrics, start_time=start + 5, parent_run_id=parent)
        if seed == 2:
            kept = run_id
    for seed in range(4):
        metrics = detection_metrics(seed, 0.0) | tracking_metrics(seed, 0.0)
        logged["mask2former"][seed] = metrics
        log_run(uri, "s", "mask2former", seed, metrics, parent_run_id=parent)
    failed = log_run(uri, "s", "mask2former", 4, {}, status="FAILED", parent_run_id=parent)
    running = log_run(uri, "s", "ifr", 7, {"AP": 0.9}, status="RUNNING", parent_run_id=parent)
    log_run(uri, "other", "ifr", 0, detection_metrics(0, 0.5))  # another sweep: never read
    return {"uri": uri, "logged": logged, "failed": failed, "running": running, "stale": stale, "kept": kept}


def test_cast_value():
    assert cast_value("3") == 3 and cast_value("0.3") == 0.3 and cast_value("True") is True
    assert cast_value("None") is None and cast_value("swin_l") == "swin_l"


def test_load_sweep_casts_and_drops_parent(sweep_store):
    runs = load_sweep("s", uri=sweep_store["uri"]).runs
    assert len(runs) == 5 + 1 + 4 + 1 + 1  # parent left out, other sweep not read
    assert runs["seed"].dtype == "Int64"
    assert set(runs["params.solver.max_iters"]) == {10}
    assert set(runs["params.loss.lambda_e"]) == {0.3}


def test_audit_reports_failed_duplicate_missing(sweep_store):
    audit = audit_runs(load_sweep("s", uri=sweep_store["uri"]).runs, seeds=5, metrics=["AP"])
    text = "\n".join(audit.warnings)
    assert sweep_store["failed"] in text and "FAILED" in text and "out of memory" in text
    assert sweep_store["running"] in text and "RUNNING" in text
    assert f"kept the latest {sweep_store['kept']}, ignored {sweep_store['stale']}" in text
    assert "dataset=synthetic has n=4 of 5 seeds (missing seeds [4])" in text
    assert set(audit.excluded) == {sweep_store["failed"], sweep_store["running"], sweep_store["stale"]}
    assert sweep_store["stale"] not in set(audit.runs["run_id"])
    assert len(audit.runs) == 9


def test_table1_numbers_caption_bold_and_files(sweep_store, tmp_path, capsys):
    table, paths = build_table("s", 1, seeds=5, uri=sweep_store["uri"], out=tmp_path / "results")
    numbers = table.numbers.set_index("method")
    for method, n in (("ifr", 5), ("mask2former", 4)):
        aps = [100 * m["AP"] for m in sweep_store["logged"][method].values()]
        assert numbers.loc[method, "n"] == n
        assert numbers.loc[method, "AP_mean"] == pytest.approx(statistics.mean(aps))
        assert numbers.loc[method, "AP_std"] == pytest.approx(statistics.stdev(aps))  # ddof=1
        ar10 = [100 * m["AR10"] for m in sweep_store["logged"][method].values()]
        assert numbers.loc[method, "AR10_mean"] == pytest.approx(statistics.mean(ar10))
    assert "n=4" in table.caption and "ddof=1" in table.caption and "3 run(s) excluded" in table.caption
    ifr_row = next(row for row in table.cells if row[0].startswith("IFR"))
    m2f_row = next(row for row in table.cells if row[0] == "Mask2Former")
    ifr_ap = numbers.loc["ifr"]
    assert ifr_row[3] == f"**{ifr_ap['AP_mean']:.1f} ± {ifr_ap['AP_std']:.1f}**"
    assert not m2f_row[3].startswith("**") and m2f_row[-1] == "4"

    assert sorted(p.name for p in paths.values()) == [
        "table1.csv", "table1.md", "table1.tex", "table1_comparisons.csv", "table1_runs.csv"
    ]  # fmt: skip
    assert paths["md"].parent == tmp_path / "results" / "s"
    markdown = paths["md"].read_text()
    assert "WARNING" in markdown and sweep_store["failed"] in markdown and "n=4" in markdown
    latex = paths["tex"].read_text()
    assert r"\toprule" in latex and r"\textbf{" in latex and r"$\pm$" in latex and "% WARNING" in latex
    csv = pd.read_csv(paths["csv"])
    assert set(csv["n"]) == {4, 5}


def test_per_run_csv_holds_every_run_that_enters_the_table(sweep_store, tmp_path):
    """table1_runs.csv: the 9 runs kept by the audit (IFR 0-4 with seed 2's latest run, Mask2Former
    0-3), never the FAILED, RUNNING or stale duplicate one; each metric as logged and x100; the
    machine the run logged."""
    _, paths = build_table("s", 1, seeds=5, uri=sweep_store["uri"], out=tmp_path)
    runs = pd.read_csv(paths["runs"])
    assert len(runs) == 9 and runs["run_id"].is_unique
    assert sweep_store["kept"] in set(runs["run_id"])
    assert not {sweep_store["stale"], sweep_store["failed"], sweep_store["running"]} & set(runs["run_id"])
    ifr = runs[runs["method"] == "ifr"].set_index("seed")
    for seed, logged in sweep_store["logged"]["ifr"].items():
        assert ifr.loc[seed, "AR10_logged"] == pytest.approx(logged["AR10"])
        assert ifr.loc[seed, "AR10_pct"] == pytest.approx(100 * logged["AR10"])
    assert ifr.loc[2, "run_identity"].endswith("-s2") and set(runs["git_commit"]) == {"abc"}
    assert set(runs["env.cpu"]) == {"Test CPU"} and set(runs["env.threads"]) == {2}
    assert set(runs["env.torch"]) == {"2.9.0+cpu"}


def log_two_arms(uri: str, ifr_ap: list[float], m2f_ap: list[float]) -> None:
    """Sweep 'cmp': IFR and Mask2Former, seed i with AP ifr_ap[i] / m2f_ap[i] (in %); the other Table 1
    metrics equal in both arms on every seed."""
    for method, aps in (("ifr", ifr_ap), ("mask2former", m2f_ap)):
        for seed, ap in enumerate(aps):
            metrics = {"AP": ap / 100, "AP50": 0.5 + 0.01 * seed, "AP75": 0.4, "AR1": 0.3, "AR10": 0.6}
            log_run(uri, "cmp", method, seed, metrics)


def test_table1_comparison_by_hand(tmp_path):
    """AP {1, 2, 3} vs {4, 5, 6} %: difference -3, exact p 2/20 (the observed labelling and its
    mirror of C(6, 3) = 20); Welch: both variances 1, se = sqrt(1/3 + 1/3) = 0.8165, df = 4,
    t(0.975, 4) = 2.7764: -3 +- 2.2670 = [-5.267, -0.733]. The other metrics are equal in both arms:
    p = 1. Holm over the 5 metrics: 0.1 x 5 = 0.5, the rest 1. Nothing can pass Holm at 3 vs 3."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log_two_arms(uri, [1, 2, 3], [4, 5, 6])
    table, paths = build_table("cmp", 1, seeds=3, uri=uri, out=tmp_path)
    rows = pd.read_csv(paths["comparisons"]).set_index("metric")
    assert list(rows.index) == ["AP", "AP50", "AP75", "AR1", "AR10"]
    ap = rows.loc["AP"]
    assert (ap["a"], ap["b"], ap["n_a"], ap["n_b"]) == ("IFR (ours)", "Mask2Former", 3, 3)
    assert ap["difference"] == pytest.approx(-3) and ap["p"] == pytest.approx(2 / 20)
    assert (ap["ci_low"], ap["ci_high"]) == pytest.approx((-5.267, -0.733), abs=1e-3)
    assert list(rows["p_holm"]) == pytest.approx([0.5, 1, 1, 1, 1]) and rows.loc["AP50", "p"] == 1
    assert ap["test"] == "exact, all 20 relabellings" and ap["interval"] == "Welch t 95%"
    markdown = paths["md"].read_text()
    assert "| IFR (ours) − Mask2Former | AP | -3.0 | [-5.3, -0.7] | 0.1 | 0.5 |" in markdown
    assert "unadjusted, none; after Holm across the 5 metrics of each pair, none." in markdown
    assert "smallest attainable exact p is 2/20 = 0.1 (5 x that = 0.5 after Holm" in markdown
    assert "every pair of rows" in table.caption and "Unpaired" in table.caption


def test_table1_names_what_passes_holm(tmp_path):
    """AP {1..5} vs {6..10} %: exact p 2/252 = 0.0079; Holm over 5 metrics: 5 x 2/252 = 0.040 < 0.05."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log_two_arms(uri, [1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    table, paths = build_table("cmp", 1, seeds=5, uri=uri, out=tmp_path)
    ap = table.comparisons.set_index("metric").loc["AP"]
    assert ap["p"] == pytest.approx(2 / 252) and ap["p_holm"] == pytest.approx(10 / 252)
    assert "after Holm across the 5 metrics of each pair, IFR (ours) − Mask2Former: AP." in (
        paths["md"].read_text()
    )


def test_paired_comparison_flips_signs_of_per_seed_differences(tmp_path):
    """Paired, the AP differences are -3 on each of the 3 seeds: of the 2^3 = 8 sign flips only
    all-minus and all-plus reach |mean| 3: p = 2/8; the interval has no width (all differences equal)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log_two_arms(uri, [1, 2, 3], [4, 5, 6])
    table, _ = build_table("cmp", 1, seeds=3, uri=uri, out=tmp_path, paired=True)
    ap = table.comparisons.set_index("metric").loc["AP"]
    assert ap["p"] == pytest.approx(2 / 8) and ap["test"] == "exact, all 8 sign flips"
    assert (ap["ci_low"], ap["ci_high"]) == pytest.approx((-3, -3))
    assert "Paired by seed" in table.caption


def test_the_verdict_of_random_relabellings_states_their_floor():
    """10 vs 10 seeds have C(20, 10) = 184756 relabellings, more than analysis.stats.LIMIT: the test
    draws 100000 random ones, so the smallest p it gives is 1/100001, not the exact 2/184756."""
    groups = [
        (name, pd.DataFrame({"seed": range(10), "AP": [offset + seed for seed in range(10)]}))
        for name, offset in (("A", 0.0), ("B", 100.0))
    ]
    frame = compare_groups(groups, ["AP"], [(0, 1)])
    assert not frame.loc[0, "exact"] and frame.loc[0, "relabellings"] == 100_001
    # p = (1 + k) / 100001 for the k draws as extreme as the observed labelling, each with chance
    # 2/184756 (about one of the 100000 expected): the floor is 1/100001, whatever the seed draws
    extreme = frame.loc[0, "p"] * 100_001 - 1
    assert extreme == pytest.approx(round(extreme)) and 0 <= round(extreme) <= 6
    words = verdict(frame)
    assert "n = 10 vs 10 seeds the random relabellings give p >= 1/100001" in words
    assert "exact" not in words


def test_which_rows_are_compared():
    """Up to 4 rows every pair; more, each row against the reference row."""
    assert pairs_for(3) == [(0, 1), (0, 2), (1, 2)]
    assert len(pairs_for(4)) == 6
    assert pairs_for(6, reference=2) == [(2, 0), (2, 1), (2, 3), (2, 4), (2, 5)]


def test_a_lambda_e_table_compares_against_the_value_figure_4_marks(tmp_path):
    """Five λ_e rows: each against λ_e = 0.3 (the paper's value, Figure 4's reference), not the first."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = log_parent(uri, "abl5", swept_keys=("loss.lambda_e",))
    values = (0.0, 0.1, 0.3, 0.5, 1.0)
    for lambda_e in values:
        for seed in range(2):
            log_run(uri, "abl5", "ifr", seed, detection_metrics(seed, lambda_e / 10), lambda_e=lambda_e)
    table, _ = build_table("abl5", 1, seeds=2, uri=uri, out=tmp_path)
    assert reference_row({"loss.lambda_e": list(values)}, ["loss.lambda_e"]) == 2
    assert set(table.comparisons["a"]) == {"λ_e=0.3"}, table.comparisons[["a", "b"]]
    assert "each row against the reference row λ_e=0.3" in table.caption
    logged = {Path(a.path).name for a in MlflowClient(uri).list_artifacts(parent, "tables")}
    assert {"table1.md", "table1.csv", "table1_runs.csv", "table1_comparisons.csv"} <= logged, logged


def test_table3_seed_rows_then_mean(sweep_store, tmp_path):
    table, paths = build_table("s", 3, seeds=5, uri=sweep_store["uri"], out=tmp_path)
    rows = [r for r in table.cells if r[0] == "Mask2Former"]
    assert [r[3] for r in rows] == ["0", "1", "2", "3", "mean ± std (n=4)"]
    logged = sweep_store["logged"]["mask2former"]
    assert rows[1][5] == f"{100 * logged[1]['MOTA']:.1f}" and rows[1][4] == f"{100 * logged[1]['IDF1']:.1f}%"
    assert rows[0][8] == f"{logged[0]['IDs']:.0f}"
    ids = [m["IDs"] for m in logged.values()]
    assert rows[-1][8] == f"{statistics.mean(ids):.1f} ± {statistics.stdev(ids):.1f}"
    # lower IDs is better: IFR (offset lowers IDs) holds the bold mean
    ifr_mean = next(r for r in table.cells if r[0].startswith("IFR") and r[3].startswith("mean"))
    assert ifr_mean[8].startswith("**") and not rows[-1][8].startswith("**")
    assert "mean ± std" in table.caption and "n=4" in table.caption
    csv = pd.read_csv(paths["csv"])
    assert len(csv) == 4 + 1 + 5 + 1
    assert len(pd.read_csv(paths["runs"])) == 4 + 5
    comparisons = pd.read_csv(paths["comparisons"])
    assert list(comparisons["metric"]) == list(TABLE3)  # one pair, every metric
    # IDs: IFR 30 + seed over seeds 0-4 (mean 32), Mask2Former 40 + seed over seeds 0-3 (mean 41.5)
    ids = comparisons.set_index("metric").loc["IDs"]
    assert ids["difference"] == pytest.approx(32 - 41.5) and ids["n_a"] == 5 and ids["n_b"] == 4


def test_a_sweep_groups_by_its_swept_key(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log_parent(uri, "abl", swept_keys=("loss.lambda_e",))
    for lambda_e in (0.0, 0.3):
        for seed in range(2):
            log_run(uri, "abl", "ifr", seed, detection_metrics(seed, lambda_e / 10), lambda_e=lambda_e)
    table, _ = build_table("abl", 1, seeds=2, uri=uri, out=tmp_path)
    assert table.columns[:4] == ["Method", "Backbone", "Data", "λ_e"]
    assert list(table.numbers["loss.lambda_e"]) == [0.0, 0.3] and list(table.numbers["n"]) == [2, 2]
    assert not table.warnings


def test_configs_of_one_group_are_told_apart_by_the_setting_that_differs(tmp_path):
    """Table 3 of the paper profile: Swin-L with 100 and with 200 queries, same method, backbone, data."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for queries in (100, 200):
        for seed in range(2):
            metrics = tracking_metrics(seed, queries / 1000)
            log_run(
                uri,
                "t3",
                "ifr",
                seed,
                metrics,
                backbone="swin_l",
                dataset="ytvis2019-holdout",
                num_queries=queries,
            )
    table, _ = build_table("t3", 3, seeds=2, uri=uri, out=tmp_path)
    assert table.columns[:5] == ["Method", "Backbone", "Data", "Queries", "Seed"]
    assert [row[3] for row in table.cells if row[4].startswith("mean")] == ["100", "200"]
    assert not table.warnings  # no config_hash fallback


def test_cli_prints_warnings(sweep_store, tmp_path):
    result = subprocess.run(
        [sys.executable, "analysis/tables.py", "--sweep", "s", "--table", "1", "--out", str(tmp_path)],
        cwd=REPO,
        env={"MLFLOW_TRACKING_URI": sweep_store["uri"], "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING: FAILED run" in result.stderr and "| Mask2Former |" in result.stdout
    assert (tmp_path / "s" / "table1.tex").exists()
    missing = subprocess.run(
        [sys.executable, "analysis/tables.py", "--sweep", "nope", "--table", "1", "--out", str(tmp_path)],
        cwd=REPO,
        env={"MLFLOW_TRACKING_URI": sweep_store["uri"], "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1 and "no runs of sweep 'nope'" in missing.stderr
