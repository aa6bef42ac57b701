"""The same 2-seed tiny sweep through the local, Slurm and Ray executors: identical MLflow records
up to run ids and timings, every run's log in its folder; a re-run skips finished runs; a preempted
Slurm job resumes; a sweep Slurm refuses or cannot be reached leaves one line and no run behind."""

import contextlib
import gzip
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import ROOT, load_benchmark, write_run_config
from test_sweep_plan import _closed_port
from test_tracking_metrics import BOX_A, BOX_B, T, make_gt, result

from analysis.tables import build_table
from ifrvis import run_folder, runstore
from ifrvis.config import load_config
from ifrvis.engine.checkpoint import load_checkpoint
from ifrvis.errors import UserError
from ifrvis.launch.executors import slurm_job_class
from ifrvis.launch.slurm_profile import slurm_executor
from ifrvis.launch.sweep import RESUME, classify, expand, run_sweep

SEEDS = 2
TIMING_KEYS = ("train_time_s", "run_time_s", "queue_time_s")
VOLATILE_TAGS = ("run_dir", "submitted_at")  # paths and times
# Where a run computed (ifrvis.engine.train.environment_tags): checked present, not compared, since
# executors may give a run other thread counts.
ENV_TAGS = {"env.torch", "env.threads", "env.cpu", "env.cpu_capability", "env.device", "env.python"}


def slurm_available() -> bool:
    if shutil.which("sbatch") is None:
        return False
    return subprocess.run(["sinfo"], capture_output=True).returncode == 0


def launch(config, executor, *extra, env=None):
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "run_seeds.py"),
            str(config),
            "--seeds",
            str(SEEDS),
            "--executor",
            executor,
            "--sweep",
            "t",
            "--max-parallel",
            "2",
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "IFRVIS_SLURM_LOGS": str(config.parent / "slurm-logs"), **(env or {})},
        timeout=900,
    )


def records(config):
    """Per seed: (status, params but logging.*, tags but ids/paths/times, metrics but timings); every
    run has its log, and its run and queue times."""
    cfg = load_config(config)
    mlflow = runstore.client(cfg.logging.mlflow_uri)
    children = [
        r
        for r in runstore.find_runs(mlflow, cfg.logging.experiment, sweep="t")
        if "sweep_parent" not in r.data.tags
    ]
    out = {}
    for run in children:
        params = {k: v for k, v in run.data.params.items() if not k.startswith("logging.")}
        assert ENV_TAGS <= run.data.tags.keys(), "the run's machine is not logged"
        assert {"launch.host", "launch.world_size", "launch.log"} <= run.data.tags.keys()
        tags = {
            k: v
            for k, v in run.data.tags.items()
            if not k.startswith(("mlflow.", "env.", "launch.")) and k not in VOLATILE_TAGS
        }
        log = runstore.run_folder_of(run.data.tags, cfg.logging.mlflow_uri) / "train.log"
        assert log.read_text().strip(), "no train.log"
        assert {"run_time_s", "queue_time_s"} <= set(run.data.metrics)
        metrics = {
            k: "nan" if math.isnan(v) else v for k, v in run.data.metrics.items() if k not in TIMING_KEYS
        }
        assert run.data.tags["seed"] not in out, "two MLflow runs for one identity"
        out[run.data.tags["seed"]] = (run.info.status, params, tags, metrics)
    return out


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, tiny_data):
    config = write_run_config(tmp_path_factory.mktemp("local"), tiny_data, max_iters=4)
    result = launch(config, "local")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return config, result.stdout


def test_local_sweep_logs_every_seed_under_a_parent_run(local_sweep):
    config, stdout = local_sweep
    found = records(config)
    assert sorted(found) == ["0", "1"] and all(r[0] == "FINISHED" for r in found.values())
    assert "| done |" in stdout and "2 pending" in stdout
    cfg = load_config(config)
    parent = runstore.find_runs(
        runstore.client(cfg.logging.mlflow_uri), cfg.logging.experiment, sweep_parent="1"
    )
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    for seed in range(SEEDS):
        log = run_folder.run_dir(load_config(config, [f"seed={seed}", "logging.sweep=t"])) / "train.log"
        assert log.exists()


def test_the_consistency_benchmark_reads_a_sweeps_runs(local_sweep, tmp_path):
    """benchmarks/consistency.py on the sweep's two IFR runs: its table, per-run CSV (with the machine
    the runs logged) and gradient figure; no Mask2Former-VIS run, so nothing to compare."""
    config, _ = local_sweep
    uri = load_config(config).logging.mlflow_uri
    script = ROOT / "benchmarks" / "consistency.py"
    done = subprocess.run(
        [sys.executable, str(script), "t", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "consistency_runs.csv")
    assert sorted(rows["seed"]) == [0, 1] and set(rows["method"]) == {"ifr"}
    assert rows["run_identity"].is_unique and (rows["env.threads"] >= 1).all() and rows["env.torch"].all()
    assert (
        "No comparison: no two arms of the protocol's contrasts trained alike."
        in (tmp_path / "consistency.md").read_text()
    )
    assert (rows["grad_first/frame_cross_attn"] > 0).all() and rows["stitched"].between(0, 1).all()
    assert rows["HOTA@N"].between(0, 1).all() and (rows["IDs@N"] >= 0).all()
    assert (tmp_path / "consistency.md").read_text().count(
        "| ifr | synthetic | focal | random | 2 | 4 | 0.3 | 2 |"
    ) == 3
    switch_rate = rows["switch rate@5"]  # NaN where no box is matched (these runs train 4 iterations)
    assert rows["HOTA@5"].between(0, 1).all() and (switch_rate.isna() | (switch_rate >= 0)).all()
    assert (
        len(json.loads(rows["curves"][0])["IDF1"]) == 19 and (tmp_path / "thresholds.png").stat().st_size > 0
    )
    cached = [Path(d) / "consistency.json" for d in runstore.load_sweep("t", uri=uri).runs["run_dir"]]
    assert all(path.is_file() for path in cached)
    assert (tmp_path / "grad_norms.png").stat().st_size > 0
    kept = sorted((tmp_path / "results").glob("*.json.gz"))
    assert len(kept) == 2 and "run_dir" not in rows  # results committed, no machine's paths
    assert json.loads(gzip.decompress(kept[0].read_bytes()))[0]["video_id"] >= 0

    # A later part of an experiment on another machine: the earlier part's committed rows join this
    # store's runs, each identity once ("t" holds the same two runs here), or stand alone, untouched.
    prior = tmp_path / "consistency_runs.csv"
    for sweeps, out in ((["t"], tmp_path / "merged"), (["none"], tmp_path / "prior-only")):
        command = [sys.executable, str(script), *sweeps, "--prior", str(prior), "--interim", f"--out={out}"]
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=ROOT, timeout=600,
            env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        again = pd.read_csv(out / "consistency_runs.csv")
        assert sorted(again["run_identity"]) == sorted(rows["run_identity"])
        assert "Interim: 2 finished runs" in (out / "consistency.md").read_text()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "prior-only" / "consistency_runs.csv"), rows)


@pytest.fixture(scope="module")
def consistency():
    """benchmarks/consistency.py as a module."""
    return load_benchmark("consistency")


def test_cached_figures_are_computed_again_only_where_their_code_changed(consistency, tmp_path, monkeypatch):
    """A run's consistency.json keeps the digest of the code behind each group of figures: all current,
    nothing is computed (not even the data read); the tracks' digest from other code, only they are."""
    code = consistency.figure_code()
    tracks = {f"{key}@{n}": 1.0 for key in consistency.MATCHED for n in ("N", consistency.TOP_K)}
    figures = {"single_query": 0.5, "stitched": 0.6, **tracks, "curves": {"IDF1": [0.1]}}
    cache = tmp_path / "consistency.json"
    cache.write_text(json.dumps({**figures, "code": code}))
    assert consistency.run_figures(None, tmp_path) == figures
    cache.write_text(json.dumps({**figures, "code": {**code, "tracks": "0" * 16}}))
    (tmp_path / run_folder.RESULTS).write_text("[]")
    calls = []
    monkeypatch.setattr(consistency, "figure_code", lambda: code)  # the functions below are stand-ins
    monkeypatch.setattr(consistency, "load_splits", lambda data: (None, SimpleNamespace(raw={})))
    monkeypatch.setattr(
        consistency, "matched_count_figures", lambda gt, res: calls.append("N") or {"IDF1@N": 2.0}
    )
    monkeypatch.setattr(consistency, "top_k_figures", lambda gt, res: calls.append("top") or {})
    again = consistency.run_figures(SimpleNamespace(data=None), tmp_path)
    assert calls == ["N", "top"] and again == {**figures, "IDF1@N": 2.0}
    assert json.loads(cache.read_text())["code"] == code


def test_matched_count_keeps_each_videos_best_predictions(consistency):
    """As many predictions per video as it has instances, the highest scores first, ties in order."""
    gt = {"annotations": [{"video_id": 1}, {"video_id": 1}, {"video_id": 2}]}
    counts = consistency.instance_counts(gt)
    assert counts == {1: 2, 2: 1}
    results = [
        {"video_id": 1, "score": 0.2, "n": 0},
        {"video_id": 1, "score": 0.9, "n": 1},
        {"video_id": 2, "score": 0.1, "n": 2},
        {"video_id": 1, "score": 0.2, "n": 3},
        {"video_id": 2, "score": 0.05, "n": 4},
        {"video_id": 3, "score": 0.99, "n": 5},
    ]
    kept = consistency.top_per_video(results, counts)
    assert [res["n"] for res in kept] == [1, 0, 2]


def swap_case():
    """Video 1: A and B for T frames; p (0.9) follows A then B from frame 6, q (0.8) the other way round,
    r (0.1) is A throughout. Video 2: A alone; s (0.05) is A, t (0.01) is B."""
    gt = make_gt({1: [[BOX_A] * T, [BOX_B] * T], 2: [[BOX_A] * T]})
    swap = 6
    results = [
        result(1, [BOX_A] * swap + [BOX_B] * (T - swap), 0.9),
        result(1, [BOX_B] * swap + [BOX_A] * (T - swap), 0.8),
        result(1, [BOX_A] * T, 0.1),
        result(2, [BOX_A] * T, 0.05),
        result(2, [BOX_B] * T, 0.01),
    ]
    return gt, results


def test_matched_count_figures_by_hand(consistency):
    """Video 1 has A and B for T frames; p follows A then B from frame 6, q the other way round (2
    switches), r (A, score 0.1) is its third best and left out. Video 2 has A alone: s (A, score 0.05,
    below any usual threshold) is kept, t (B) left out. Matched boxes 3T = 30, none missed: switch rate
    100 x 2 / 30; IDTP 12 (video 1: max(2 x 6, 2 x 4)) + 10 (video 2), IDF1 = 2 x 22 / (30 + 30)."""
    gt, results = swap_case()
    figures = consistency.matched_count_figures(gt, results)
    assert figures["IDs@N"] == 2
    assert figures["switch rate@N"] == pytest.approx(100 * 2 / (3 * T))
    assert figures["IDF1@N"] == pytest.approx(2 * 22 / (3 * T + 3 * T))
    assert figures["MOTA@N"] == pytest.approx(1 - 2 / (3 * T))


def test_top_k_figures_and_threshold_curves_by_hand(consistency):
    """Top-k keeps every video's k best predictions whatever their scores and the ground truth: with
    k = 2, video 1 keeps p and q (2 switches over 2T matched boxes) and video 2 keeps s and t (t matches
    nothing: a false positive, no switch). Curves: at thresholds <= 0.05 every prediction counts (r, a
    duplicate of A, is matched nowhere); above 0.8 only p (A for 6 frames, then B); above 0.9 none."""
    gt, results = swap_case()
    figures = consistency.top_k_figures(gt, results, k=2)
    assert figures["IDs@2"] == 2 and figures["switch rate@2"] == pytest.approx(100 * 2 / (3 * T))
    assert figures["MOTA@2"] == pytest.approx(1 - (2 + T) / (3 * T))  # 2 switches, T false positives
    curves = consistency.threshold_curves(gt, results)
    thresholds = list(consistency.THRESHOLDS)
    assert thresholds[0] == 0.05 and thresholds[-1] == 0.95 and len(thresholds) == 19
    at = {t: i for i, t in enumerate(thresholds)}
    assert curves["recall"][at[0.05]] == 1.0 and curves["IDs"][at[0.05]] == 2
    # above 0.8: p alone, matched to A for 6 frames, then to B (a switch of p, not of a ground truth)
    assert curves["recall"][at[0.85]] == pytest.approx(T / (3 * T)) and curves["IDs"][at[0.85]] == 0
    assert curves["recall"][at[0.95]] == 0 and curves["IDF1"][at[0.95]] == 0


def row_of(arm, seed, iters=800, dataset="synthetic", **figures):
    method, head, start, lambda_e = arm
    return {"method": method, "head": head, "start": start, "λ_e": lambda_e, "dataset": dataset,
            "train T": 2, "iters": iters, "seed": seed, **figures}  # fmt: skip


def test_the_second_protocols_contrasts_and_families(consistency):
    """Primary endpoint switch rate@5: IFR {1, 2, 3}, IFR-warm {4, 5, 6}, M2F-focal {4, 5, 6} on two data
    sets. IFR - M2F-focal: -3, exact p 2/20; IFR-warm - M2F-focal: 0, p 1; IFR - IFR-warm: -3, p 0.1.
    Holm over the 3 contrasts x 2 data sets = 6 primary tests: the two p = 0.1 of each data set (4 tests)
    become min(1, 6 x 0.1) = 0.6. Secondary endpoints equal everywhere: p 1. M2F-VIS is absent: no
    'published baseline' rows; a budget with IFR alone: no comparison."""
    equal = {name: 0.5 for name in consistency.SECONDARY}
    arms = {consistency.IFR: 1, consistency.IFR_WARM: 4, consistency.M2F_FOCAL: 4}
    rows = pd.DataFrame(
        [
            row_of(arm, seed, dataset=data, **{consistency.PRIMARY: base + seed}, **equal)
            for data in ("synthetic", "synthetic-crossing")
            for arm, base in arms.items()
            for seed in range(3)
        ]
        + [
            row_of(consistency.IFR, seed, iters=2400, **{consistency.PRIMARY: 1}, **equal)
            for seed in range(2)
        ]
    )
    frame = consistency.comparisons(rows)
    primary = frame[frame["family"] == "primary"]
    assert (
        len(primary) == 6 and set(primary["metric"]) == {consistency.PRIMARY} and set(frame["iters"]) == {800}
    )
    assert "published baseline" not in set(frame["contrast"])
    by = primary.set_index(["dataset", "contrast"])
    main = by.loc[("synthetic", "recurrence, the paper's start")]
    assert main["a"] == "IFR" and main["b"] == "M2F-focal" and main["difference"] == pytest.approx(-3)
    assert main["p"] == pytest.approx(2 / 20) and main["p_holm"] == pytest.approx(0.6)
    warm = by.loc[("synthetic-crossing", "recurrence, warm start")]
    assert warm["difference"] == 0 and warm["p"] == 1 and warm["p_holm"] == 1
    start = by.loc[("synthetic", "IFR's start, random - warm")]
    assert start["b"] == "IFR-warm" and start["p_holm"] == pytest.approx(0.6)
    secondary = frame[frame["family"] == "secondary"]
    assert set(secondary["metric"]) == set(consistency.SECONDARY) and (secondary["p"] == 1).all()
    text = consistency.comparison_text(frame)
    assert "over its 6 tests" in text and "### recurrence, warm start: dataset synthetic" in text


def test_budget_curves_by_hand(consistency, tmp_path):
    """Groups alike but for iterations, with two budgets or more, become curves: mean and std over
    seeds (switch rate as is, the rest in %); a setting with one budget is left out; labels name what
    tells the curves apart: the arm, then data or clip length where they differ."""

    def row(method, lambda_e, iters, switch, ap, clip_length=2):
        figures = {"switch rate@5": switch, "AssA@5": 0.4, "single_query": 0.5, "AP": ap}
        head, start = ("focal", "random") if method == "ifr" else ("softmax", "-")
        return {"method": method, "head": head, "start": start, "dataset": "synthetic",
                "train T": clip_length, "iters": iters, "λ_e": lambda_e, **figures}  # fmt: skip

    rows = pd.DataFrame([
        row("ifr", "0.3", 800, 10.0, 0.08), row("ifr", "0.3", 800, 12.0, 0.10),
        row("ifr", "0.3", 2400, 9.0, 0.11),
        row("mask2former", "-", 800, 14.0, 0.10), row("mask2former", "-", 2400, 11.0, 0.12),
        row("ifr", "0.3", 800, 13.0, 0.09, clip_length=4),
    ])  # fmt: skip
    curves = consistency.budget_curves(rows)
    assert sorted(curves) == ["IFR", "M2F-VIS"]
    ifr = curves["IFR"]
    assert list(ifr.index) == [800, 2400]
    assert ifr.loc[800, ("switch rate@5", "mean")] == pytest.approx(11.0)
    assert ifr.loc[800, ("switch rate@5", "std")] == pytest.approx(2**0.5)
    assert ifr.loc[800, ("AP", "mean")] == pytest.approx(9.0) and ifr.loc[2400, ("AssA@5", "mean")] == 40
    assert ifr.loc[2400, ("single_query", "mean")] == 50
    assert curves["M2F-VIS"].loc[2400, ("switch rate@5", "mean")] == 11.0
    consistency.budget_figure(curves, tmp_path / "budget.png")
    assert (tmp_path / "budget.png").stat().st_size > 0
    rows.loc[len(rows)] = row("ifr", "0.3", 2400, 12.0, 0.1, clip_length=4)  # T now tells curves apart
    assert sorted(consistency.budget_curves(rows)) == [
        "IFR, train T 2",
        "IFR, train T 4",
        "M2F-VIS, train T 2",
    ]


def test_a_copied_store_reads_its_own_run_folders_and_artifacts(local_sweep, tmp_path):
    """The store keeps no absolute path that breaks when it moves: a copy of the sweep's folder (store,
    mlruns/, outputs/) names its own run folders and serves its own artifacts; the original is untouched."""
    config, _ = local_sweep
    original = load_config(config).logging.mlflow_uri
    copy = tmp_path / "moved"
    shutil.copytree(config.parent, copy)
    uri = f"sqlite:///{copy / 'mlflow.db'}"
    runs = runstore.load_sweep("t", uri=uri).runs
    assert len(runs) == SEEDS
    for run_dir, run_id in zip(runs["run_dir"], runs["run_id"]):
        assert Path(run_dir).is_relative_to(copy) and (Path(run_dir) / run_folder.LOG).is_file()
        assert runstore.client(uri).get_run(run_id).info.artifact_uri.startswith((copy / "mlruns").as_uri())
        config_copy = runstore.client(uri).download_artifacts(run_id, run_folder.CONFIG, str(tmp_path))
        assert Path(config_copy).read_text()
        left_as_was = runstore.client(original).get_run(run_id).info.artifact_uri
        assert left_as_was.startswith((config.parent / "mlruns").as_uri())
    table, _ = build_table("t", 1, uri=uri, seeds=SEEDS, out=tmp_path / "tables")
    assert len(table.numbers) == 1 and len(table.runs) == SEEDS


def test_rerunning_a_sweep_skips_finished_runs(local_sweep):
    config, _ = local_sweep
    before = records(config)
    started = time.time()
    result = launch(config, "local")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 done, 0 resume, 0 failed, 0 pending" in result.stdout
    assert time.time() - started < 60
    assert records(config) == before


def test_a_failed_submission_into_a_finished_sweep_leaves_it_finished(local_sweep):
    """The finished sweep extended by a seed that cannot be submitted (Ray unreachable): the new run
    goes, the finished runs are as they were, the parent stays FINISHED and says why nothing started."""
    config, _ = local_sweep
    before = records(config)
    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(UserError, match="Ray: no cluster answers"):
        run_sweep(expand([config], range(SEEDS + 1), "t"), executor="ray", ray={"address": address})
    assert records(config) == before
    cfg = load_config(config)
    mlflow = runstore.client(cfg.logging.mlflow_uri)
    (parent,) = runstore.find_runs(mlflow, cfg.logging.experiment, sweep="t", sweep_parent="1")
    assert parent.info.status == "FINISHED" and "error" not in parent.data.tags
    assert "submission failed: Ray" in parent.data.tags[runstore.SUBMISSION_ERROR_TAG]


def test_dry_run_lists_the_specs(local_sweep):
    config, _ = local_sweep
    result = launch(config, "local", "--dry-run")
    assert result.returncode == 0 and result.stdout.count("| done |") == SEEDS


def test_a_sweep_with_a_wrong_data_folder_fails_in_one_line_before_creating_anything(tmp_path, tiny_data):
    config = write_run_config(tmp_path, tiny_data)
    result = launch(config, "local", "--set", f"data.root={tmp_path / 'missing'}")
    assert result.returncode == 2
    missing = tmp_path / "missing" / "train.json"
    assert result.stderr.strip() == f"run_seeds.py: error: {missing}: file not found"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "outputs").exists()


def one_line_error(stderr: str) -> str:
    """The error line, which is the last; nothing else but MLflow's notes on creating a fresh store."""
    lines = stderr.strip().splitlines()
    assert all("mlflow.store.db.utils" in line for line in lines[:-1]), stderr
    return lines[-1]


def only_the_failed_parent_is_left(config) -> str:
    """The reason the sweep's parent run gives; no child run is left."""
    cfg = load_config(config)
    left = runstore.find_runs(runstore.client(cfg.logging.mlflow_uri), cfg.logging.experiment, sweep="t")
    assert [r.data.tags.get("sweep_parent") for r in left] == ["1"], "runs of an unsubmitted sweep were left"
    assert left[0].info.status == "FAILED"
    return left[0].data.tags["error"]


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_available(), reason="no Slurm cluster: start it with slurm/start_cluster.sh")
def test_an_sbatch_error_is_one_line_and_leaves_no_run(tmp_path, tiny_data):
    config = write_run_config(tmp_path, tiny_data, max_iters=4)
    result = launch(config, "slurm", "--partition", "no_such_partition")
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    line = one_line_error(result.stderr)
    assert line.startswith("run_seeds.py: error: Slurm refused the job array: sbatch: error:")
    assert "invalid partition" in line.lower()
    assert "submission failed: Slurm refused" in only_the_failed_parent_is_left(config)


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_available(), reason="no Slurm cluster: start it with slurm/start_cluster.sh")
def test_an_unreachable_slurm_controller_is_one_line_and_leaves_no_run(tmp_path, tiny_data):
    """sbatch reads a configuration whose controller port nothing listens on: as when slurmctld is down
    (MessageTimeout=1: sbatch gives up at once instead of retrying for 10 s)."""
    conf = tmp_path / "slurm.conf"
    lines = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text().splitlines()
    kept = [ln for ln in lines if not ln.startswith(("SlurmctldPort", "MessageTimeout"))]
    conf.write_text("\n".join([*kept, "SlurmctldPort=1", "MessageTimeout=1"]) + "\n")
    config = write_run_config(tmp_path, tiny_data, max_iters=4)
    result = launch(config, "slurm", env={"SLURM_CONF": str(conf)})
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    line = one_line_error(result.stderr)
    assert "Unable to contact slurm controller" in line and line.startswith("run_seeds.py: error: Slurm")
    assert "Unable to contact slurm controller" in only_the_failed_parent_is_left(config)


def test_the_local_executor_gives_each_run_its_own_gpu(tmp_path, tiny_data):
    """Three runs over two GPU ids (here, CPU-only, the ids only travel): at most two at once, each with
    CUDA_VISIBLE_DEVICES one of them, logged as the run's launch.cuda_visible_devices (a third run
    started beside two would have had no id, and no tag)."""
    from ifrvis.launch.executors import run_local
    from ifrvis.launch.sweep import plan

    sweep = expand([write_run_config(tmp_path, tiny_data, max_iters=2)], range(3), "gpus")
    specs = plan(sweep)
    assert run_local([spec.cfg for spec in specs], max_parallel=4, gpus=["7", "9"]) == [""] * 3
    devices = [runstore.find_run(spec.cfg).data.tags["launch.cuda_visible_devices"] for spec in specs]
    assert set(devices) == {"7", "9"}


def test_ray_executor_gives_the_same_records(local_sweep, tmp_path, tiny_data):
    """On a new local Ray, even where RAY_ADDRESS (left by `ray start`) names a cluster that is gone."""
    config = write_run_config(tmp_path, tiny_data, max_iters=4)
    result = launch(config, "ray", env={"RAY_ADDRESS": "127.0.0.1:9"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert records(config) == records(local_sweep[0])


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_available(), reason="no Slurm cluster: start it with slurm/start_cluster.sh")
def test_slurm_executor_gives_the_same_records(local_sweep, tmp_path, tiny_data):
    config = write_run_config(tmp_path, tiny_data, max_iters=4)
    result = launch(config, "slurm", "--time-min", "10")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert records(config) == records(local_sweep[0])
    assert list((tmp_path / "slurm-logs" / "t").iterdir()), "submitit logs land in the sweep's folder"


PREEMPTED_ITERS, PREEMPTED_CHECKPOINT_EVERY = 12, ["logging.checkpoint_every=5"]


@pytest.fixture(scope="session")
def preemption_reference(built_once, tiny_data) -> dict:
    """The metrics of an uninterrupted run of the preempted jobs' config (once for all workers)."""
    from ifrvis.engine.train import train

    def build(folder: Path) -> dict:
        config = write_run_config(folder, tiny_data, max_iters=PREEMPTED_ITERS)
        return train(load_config(config, PREEMPTED_CHECKPOINT_EVERY))

    return built_once("preemption-reference", build)


@pytest.fixture(scope="session")
def two_rank_reference(built_once, tiny_data) -> dict:
    """The final metrics of the preempted jobs' config run uninterrupted by two ranks (torchrun, gloo),
    once for all workers."""

    def build(folder: Path) -> dict:
        config = write_run_config(folder, tiny_data, max_iters=PREEMPTED_ITERS)
        straight = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             "-m", "ifrvis.commands.train", str(config), *PREEMPTED_CHECKPOINT_EVERY],
            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
        )  # fmt: skip
        assert straight.returncode == 0, straight.stderr[-3000:]
        cfg = load_config(config, PREEMPTED_CHECKPOINT_EVERY)
        (run,) = runstore.find_runs(runstore.client(cfg.logging.mlflow_uri), cfg.logging.experiment)
        return run.data.metrics

    return built_once("two-rank-reference", build)


def submit_and_wait_for_checkpoint(tmp_path, tiny_data, tasks: int = 1):
    """A run of PREEMPTED_ITERS iterations submitted to Slurm as `tasks` tasks (ranks), once its first
    checkpoint (iteration 5) exists: (its config, its job)."""
    cfg = load_config(
        write_run_config(tmp_path / "slurm", tiny_data, max_iters=PREEMPTED_ITERS), PREEMPTED_CHECKPOINT_EVERY
    )
    executor = slurm_executor(
        tmp_path / "slurm-logs" / "%j", "local", {"time_min": 10, "tasks_per_node": tasks}
    )
    job = executor.submit(slurm_job_class()(), __import__("ifrvis.config").config.to_dict(cfg))
    checkpoint = run_folder.checkpoint_path(cfg)
    deadline = time.time() + 300
    while not (checkpoint.exists() and load_checkpoint(checkpoint)["iteration"] >= 5):
        assert not job.done(), job.stderr()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    return cfg, job


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_available(), reason="no Slurm cluster: start it with slurm/start_cluster.sh")
def test_a_preempted_slurm_job_resumes_into_the_same_run_with_the_same_metrics(
    tmp_path, tiny_data, preemption_reference
):
    reference = preemption_reference
    cfg, job = submit_and_wait_for_checkpoint(tmp_path, tiny_data)
    job._interrupt()  # USR2, as Slurm sends before preemption: submitit requeues via checkpoint()
    metrics = job.result()
    run = runstore.find_runs(runstore.client(cfg.logging.mlflow_uri), cfg.logging.experiment)
    assert len(run) == 1 and run[0].info.status == "FINISHED"
    assert "error" not in run[0].data.tags  # the requeue was a preemption, not a failure
    assert (
        "REQUEUE"
        in subprocess.run(
            ["sacct", "-D", "-n", "-X", "-j", job.job_id, "-o", "State"], capture_output=True, text=True
        ).stdout
    )
    for key in ("AP", "AP50", "AR10", "IDF1", "IDs"):
        assert metrics[key] == pytest.approx(reference[key], nan_ok=True), key


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_available(), reason="no Slurm cluster: start it with slurm/start_cluster.sh")
def test_scontrol_requeue_checkpoints_at_its_sigterm_and_resumes_there(
    tmp_path, tiny_data, preemption_reference
):
    """`scontrol requeue` sends SIGTERM, which submitit ignores: the run once went on until Slurm's
    SIGKILL and restarted from its last periodic checkpoint, redoing the iterations between. Now it
    checkpoints at the next iteration (not a multiple of 5 here), its restart says so, the metrics are
    the uninterrupted run's and its time adds both jobs."""
    cfg, job = submit_and_wait_for_checkpoint(tmp_path, tiny_data)
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, capture_output=True)
    metrics = job.result()
    log = (run_folder.run_dir(cfg) / run_folder.LOG).read_text()
    resumed = [int(word) for word in re.findall(r"resumed from iteration (\d+)", log)]
    assert len(resumed) == 1 and 5 < resumed[0] < PREEMPTED_ITERS and resumed[0] % 5, log[-3000:]
    assert f"signal {signal.SIGTERM.value} at iteration {resumed[0]}: checkpoint saved" in log
    assert "waiting for Slurm to requeue or end the job" in log  # in the run's log, not only Slurm's
    (run,) = runstore.find_runs(runstore.client(cfg.logging.mlflow_uri), cfg.logging.experiment)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    # Where its last job ran: the job, requeued once, on this node, its logs.
    tags = run.data.tags
    assert tags["launch.slurm_job_id"] == job.job_id
    assert tags["launch.slurm_restart_count"] == "1" and tags["launch.world_size"] == "1"
    assert tags["launch.slurm_nodelist"] and tags["launch.host"]
    assert tags["launch.log"] == str(run_folder.run_dir(cfg) / run_folder.LOG)
    assert Path(tags["launch.slurm_log"]).is_file()
    history = runstore.client(cfg.logging.mlflow_uri).get_metric_history(run.info.run_id, "run_time_s")
    times = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert sorted(m.step for m in history) == [1, 2]  # after the first job, after the second
    assert times[1] > times[0] > 0  # each job adds its own time
    for key in ("AP", "AP50", "AR10", "IDF1", "IDs"):
        assert metrics[key] == pytest.approx(preemption_reference[key], nan_ok=True), key


def test_a_sweep_stopped_while_its_jobs_run_fails_its_parent_run(tmp_path, tiny_data):
    config = write_run_config(tmp_path, tiny_data, max_iters=400)
    command = [sys.executable, str(ROOT / "experiments" / "run_seeds.py"), str(config), "--seeds", "1"]
    process = subprocess.Popen(
        [*command, "--sweep", "stopped"], cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    cfg = load_config(config)
    try:
        deadline = time.time() + 120
        while not list(run_folder.run_dir(cfg).glob("train.log")):  # the job has started
            assert time.time() < deadline and process.poll() is None
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)  # Ctrl-C in the launcher, not in the job
        process.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the job, if the launcher left it running
            os.killpg(process.pid, signal.SIGKILL)
    parent = runstore.load_sweep("stopped", uri=cfg.logging.mlflow_uri).parent_run_id
    run = runstore.client(cfg.logging.mlflow_uri).get_run(parent)
    assert run.info.status == "FAILED" and "sweep stopped: KeyboardInterrupt" in run.data.tags["error"]


def test_a_rerun_while_an_earlier_local_launchs_job_still_runs_does_not_start_it_again(tmp_path, tiny_data):
    """The local executor's jobs outlive a launcher that dies (SIGKILL): a re-run on the same machine
    finds the run's process alive (its launch.pid tag), leaves it, and says so."""
    config = write_run_config(tmp_path, tiny_data, max_iters=400)
    command = [sys.executable, str(ROOT / "experiments" / "run_seeds.py"), str(config), "--seeds", "1"]
    command += ["--sweep", "twice-here"]
    cfg = load_config(config)
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job = None
    try:
        deadline = time.time() + 180
        while job is None:  # the job has started and tagged its process
            assert time.time() < deadline and first.poll() is None
            run = runstore.find_run(cfg) if runstore.store_exists(cfg.logging.mlflow_uri) else None
            job = run.data.tags.get("launch.pid") if run else None
            time.sleep(0.5)
        first.kill()  # the launcher only: its job goes on
        first.wait()
        again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert again.returncode == 1, again.stdout[-2000:] + again.stderr[-2000:]
        assert "1 runs: 0 done, 0 resume, 0 failed, 0 pending, 0 in slurm, 1 running here" in again.stdout
        assert f"| running here: process {job} |" in again.stdout
        assert "still in processes here of an earlier launch" in again.stderr
        assert Path(f"/proc/{job}").exists()  # left alone
    finally:
        if job:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(job), signal.SIGKILL)


def test_a_ray_launcher_that_dies_takes_its_trial_with_it_and_a_rerun_resumes_the_run(tmp_path, tiny_data):
    """Unlike local processes and Slurm jobs, which outlive a launcher that dies, Ray ends a driver's
    trials with it (they are its actors): a re-run need not look for them. The run is left RUNNING with
    its checkpoint and its process gone, and the re-run resumes it."""
    config = write_run_config(tmp_path, tiny_data, max_iters=400)
    command = [sys.executable, str(ROOT / "experiments" / "run_seeds.py"), str(config), "--seeds", "1"]
    command += ["--executor", "ray", "--sweep", "ray-gone"]
    cfg = load_config(config)
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trial = None
    try:
        deadline = time.time() + 240
        while trial is None or not run_folder.checkpoint_path(cfg).exists():  # tagged and checkpointed
            assert time.time() < deadline and first.poll() is None
            run = runstore.find_run(cfg) if runstore.store_exists(cfg.logging.mlflow_uri) else None
            trial = run.data.tags.get("launch.pid") if run else None
            time.sleep(0.5)
        first.kill()
        first.wait()
        deadline = time.time() + 120
        while Path(f"/proc/{trial}").exists():
            assert time.time() < deadline, "the trial outlived its launcher"
            time.sleep(0.5)
    finally:
        if trial:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(trial), signal.SIGKILL)
    assert runstore.find_run(cfg).info.status == "RUNNING"
    assert classify(cfg).state == RESUME  # what a re-run of the sweep does with it


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_available(), reason="no Slurm cluster: start it with slurm/start_cluster.sh")
def test_a_rerun_while_an_earlier_launchs_job_still_runs_does_not_submit_it_again(tmp_path, tiny_data):
    """The launcher waits for its jobs; if it dies (a dropped login session), its jobs go on in Slurm.
    A re-run then once submitted a second job for the same run, both writing one checkpoint and one
    MLflow run: now it finds the run's job still running, leaves it, and says so."""
    config = write_run_config(tmp_path, tiny_data, max_iters=400)
    command = [sys.executable, str(ROOT / "experiments" / "run_seeds.py"), str(config), "--seeds", "1"]
    command += ["--executor", "slurm", "--sweep", "twice"]
    env = {**os.environ, "IFRVIS_SLURM_LOGS": str(tmp_path / "slurm-logs")}
    cfg = load_config(config)

    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while not list(run_folder.run_dir(cfg).glob("train.log")):  # the job has started
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.5)
        first.kill()  # the launcher only: its job runs on in Slurm
        first.wait()
        again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 1, again.stdout[-2000:] + again.stderr[-2000:]
        assert "1 runs: 0 done, 0 resume, 0 failed, 0 pending, 1 in slurm, 0 running here" in again.stdout
        assert (
            "| in slurm: job " in again.stdout and "still in Slurm jobs of an earlier launch" in again.stderr
        )
        assert len(jobs_named("ifrvis-twice")) == 1  # nothing submitted again
    finally:
        for job in jobs_named("ifrvis-twice"):
            subprocess.run(["scancel", job], capture_output=True)


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_available(), reason="no Slurm cluster: start it with slurm/start_cluster.sh")
def test_a_job_preempted_and_cancelled_ends_its_sweep_with_the_run_resumable(tmp_path, tiny_data):
    """On a partition with PreemptMode=CANCEL (the test cluster's `scavenger`), a preempted job ends
    PREEMPTED, a state submitit counts as unfinished (a requeued job passes through it): the launcher
    once waited for it forever. A job of the higher-tier `urgent` partition takes the node here; the
    sweep ends, says the run stopped, and the run, checkpointed at Slurm's SIGTERM, is left to resume."""
    config = write_run_config(tmp_path, tiny_data, max_iters=400)
    command = [sys.executable, str(ROOT / "experiments" / "run_seeds.py"), str(config), "--seeds", "1"]
    command += ["--executor", "slurm", "--sweep", "scavenged"]
    env = {**os.environ, "IFRVIS_SLURM_LOGS": str(tmp_path / "slurm-logs")}
    cfg = load_config(config)
    launcher = subprocess.Popen(
        [*command, "--partition", "scavenger"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    urgent = ""
    try:
        deadline = time.time() + 240
        while not run_folder.checkpoint_path(cfg).exists():
            assert time.time() < deadline and launcher.poll() is None, "the job made no checkpoint"
            time.sleep(0.5)
        whole_node = ["-p", "urgent", "-n1", "-c2", "--mem=100M"]  # the scavenger job must go
        urgent = subprocess.run(
            ["sbatch", "--parsable", *whole_node, "-o", "/dev/null", "--wrap", "sleep 1"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        out, err = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for job in (urgent, *jobs_named("ifrvis-scavenged")):
            subprocess.run(["scancel", job], capture_output=True)
    assert launcher.returncode == 1, out[-2000:] + err[-2000:]
    assert "| resume: stopped: Slurm job " in out and ": preempted and not requeued" in out, out[-2000:]
    assert "1 run(s) stopped before finishing" in err
    run = runstore.find_run(cfg)
    assert run.info.status == "KILLED" and "error" not in run.data.tags  # checkpointed at its SIGTERM
    assert classify(cfg).state == RESUME  # what a re-run of the sweep does with it


def jobs_named(name: str) -> list[str]:
    """The ids of this user's queued or running Slurm jobs called `name`."""
    listed = subprocess.run(["squeue", "-h", "--name", name, "-o", "%i"], capture_output=True, text=True)
    return listed.stdout.split()


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_available(), reason="no Slurm cluster: start it with slurm/start_cluster.sh")
@pytest.mark.parametrize("stop", ["scontrol requeue", "SIGUSR2"])
def test_a_two_task_slurm_job_trains_requeues_and_resumes_to_the_uninterrupted_result(
    tmp_path, tiny_data, two_rank_reference, stop, monkeypatch
):
    """Two tasks of one job on the test cluster (gloo on CPUs, submitit's env:// rendezvous), as a node
    of GPUs runs one task per GPU: both ranks train into one MLflow run and one checkpoint; `scontrol
    requeue` (SIGTERM) or SIGUSR2 (Slurm's warning before the time limit, submitit's requeue) stops
    every rank at one checkpoint, the requeued job resumes there, and the final metrics are those of
    the same two ranks uninterrupted (torchrun, gloo). Submitted from a torchrun shell, whose rendezvous
    variables sbatch hands down to the tasks: each task sets its own."""
    for key, value in {"RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "4", "MASTER_PORT": "9"}.items():
        monkeypatch.setenv(key, value)
    cfg, job = submit_and_wait_for_checkpoint(tmp_path, tiny_data, tasks=2)
    checkpoint = run_folder.checkpoint_path(cfg)
    if stop == "SIGUSR2":
        job._interrupt()  # scancel --signal USR2: every task
    else:
        subprocess.run(["scontrol", "requeue", job.job_id], check=True, capture_output=True)
    job.results()  # every task's
    log = (run_folder.run_dir(cfg) / run_folder.LOG).read_text()
    resumed = [int(word) for word in re.findall(r"resumed from iteration (\d+)", log)]
    assert len(resumed) == 1 and resumed[0] < PREEMPTED_ITERS, log[-3000:]
    state = load_checkpoint(checkpoint)
    assert state["iteration"] == PREEMPTED_ITERS and [s["rank"] for s in state["sampler"]] == [0, 1]
    (run,) = runstore.find_runs(runstore.client(cfg.logging.mlflow_uri), cfg.logging.experiment)
    assert run.info.status == "FINISHED" and run.data.tags["launch.world_size"] == "2"
    assert run.data.tags["launch.slurm_restart_count"] == "1"
    for key in ("AP", "AR10", "IDF1", "IDs"):
        assert run.data.metrics[key] == pytest.approx(two_rank_reference[key], nan_ok=True), key
