"""One training run end to end on a tiny synthetic set: MLflow record, resume, failures, DDP."""

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_CONFIG, write_run_config
from mlflow.entities import Metric
from poisoned_train import nan_criterion

from ifrvis import metric_spool, run_folder, runstore
from ifrvis.config import ConfigError, flatten, load_config, run_identity, to_dict
from ifrvis.data.ytvis import DataError
from ifrvis.engine import train as train_module
from ifrvis.engine.checkpoint import RunCheckpointError, load_checkpoint
from ifrvis.engine.train import NonFiniteLossError, RunExistsError, train
from ifrvis.errors import UserError

FINAL_KEYS = ("AP", "AP50", "AP75", "AR1", "AR10", "IDF1", "MOTA", "IDP", "IDR", "IDs")


def only_run(cfg):
    found = runstore.find_runs(runstore.client(cfg.logging.mlflow_uri), cfg.logging.experiment)
    assert len(found) == 1, f"expected one MLflow run, found {len(found)}"
    return found[0]


def run_cli(config, *extra, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "ifrvis.commands.train", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def test_a_run_computes_with_its_threads_setting(tmp_path, tiny_data):
    """`threads` is applied by the trainer, whatever the process had (two runs started by hand must not
    each take every core); a negative count is refused before any run exists."""
    bad = load_config(write_run_config(tmp_path, tiny_data, max_iters=1), ["threads=-1"])
    with pytest.raises(ConfigError, match="threads = -1"):
        train(bad)
    assert not (tmp_path / "outputs").exists()
    cfg = load_config(write_run_config(tmp_path, tiny_data, max_iters=1), ["threads=1"])
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(cfg)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
    assert only_run(cfg).data.tags["env.threads"] == "1"


def test_a_run_is_logged_to_mlflow_with_tags_params_metrics_artifacts(tmp_path, tiny_data):
    overrides = ["seed=1", "logging.sweep=unit", "logging.eval_every=3", "solver.steps=[3]"]
    cfg = load_config(write_run_config(tmp_path, tiny_data), overrides)
    metrics = train(cfg)
    run = only_run(cfg)
    assert run.info.status == "FINISHED"
    stored = json.loads((run_folder.run_dir(cfg) / run_folder.CATEGORIES).read_text())
    assert stored == json.loads((tiny_data / "train.json").read_text())["categories"]  # for predict
    tags = run.data.tags
    assert tags["method"] == "ifr" and tags["backbone"] == "tiny" and tags["dataset"] == "synthetic"
    assert tags["seed"] == "1" and tags["config"] == cfg.name and tags["sweep"] == "unit"
    assert tags["run_identity"] == run_identity(cfg) and tags["git_commit"]
    expected_params = {k: str(v) for k, v in flatten(to_dict(cfg)).items()}
    expected_params |= {"train.batch_per_gpu": "2", "train.accumulation_steps": "1"}  # the batch's split
    assert run.data.params == expected_params
    for key in (*FINAL_KEYS, "APs", "AR100", "AP_cat/disc"):
        assert key in run.data.metrics, key
        if key in metrics:
            assert run.data.metrics[key] == pytest.approx(metrics[key], nan_ok=True)
    history = runstore.client(cfg.logging.mlflow_uri).get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, 7))
    validation = runstore.client(cfg.logging.mlflow_uri).get_metric_history(run.info.run_id, "val/AP")
    assert [m.step for m in validation] == [3]
    lr = runstore.client(cfg.logging.mlflow_uri).get_metric_history(run.info.run_id, "train/lr")
    # The lr an iteration used, logged at its step: x0.1 from iteration 3 on, i.e. from step 4.
    assert [m.value for m in sorted(lr, key=lambda m: m.step)] == pytest.approx([1e-3] * 3 + [1e-4] * 3)
    for term in ("loss_cls", "loss_mask", "loss_dice", "loss_mask_cross", "loss_dice_cross"):
        assert f"train/{term}" in run.data.metrics
    # gradient reaches every part, IFR's recurrent (Eqs. 2-3) and clip-update blocks included
    for part in (
        "backbone",
        "pixel_decoder",
        "decoder",
        "frame_cross_attn",
        "frame_self_attn",
        "temporal_cross_attn",
    ):
        assert run.data.metrics[f"grad_norm/{part}"] > 0, part
    artifacts = {a.path for a in runstore.client(cfg.logging.mlflow_uri).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "results.json", "metrics.json", "vis", "weights_report.txt"} <= artifacts
    assert json.loads((run_folder.run_dir(cfg) / "metrics.json").read_text())["AP"] == metrics["AP"]
    report = (run_folder.run_dir(cfg) / "weights_report.txt").read_text()
    assert "random by design" in report and "frame_cross_attn" in report  # Sec. 4.1: IFR blocks random


def test_the_baseline_trains_with_the_published_softmax_head(tmp_path, tiny_data):
    cfg = load_config(
        write_run_config(tmp_path, tiny_data, max_iters=2),
        ["model.decoder=mask2former", "loss.class_loss=softmax", "logging.visualize=false"],
    )
    train(cfg)
    model = load_checkpoint(run_folder.checkpoint_path(cfg))["model"]
    assert model["decoder.heads_out.class_embed.weight"].shape[0] == cfg.model.num_classes + 1


def test_the_same_seed_gives_the_same_metrics_and_a_rerun_needs_resume(tmp_path, tiny_data):
    cfg_a = load_config(write_run_config(tmp_path / "a", tiny_data))
    cfg_b = load_config(write_run_config(tmp_path / "b", tiny_data))
    first, second = train(cfg_a), train(cfg_b)
    first.pop("train_time_s"), second.pop("train_time_s")
    assert second == pytest.approx(first, nan_ok=True)
    weights_a = load_checkpoint(run_folder.checkpoint_path(cfg_a))["model"]
    weights_b = load_checkpoint(run_folder.checkpoint_path(cfg_b))["model"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    with pytest.raises(RunExistsError, match="--resume"):
        train(cfg_b)


@pytest.fixture(scope="session")
def straight_run(built_once, tiny_data):
    """(config, final metrics) of a 10-iteration run never interrupted, once for all workers. Sampled
    loss points (as the tiny configs use) draw from torch's generator every iteration."""

    def build(folder: Path) -> list:
        config = write_run_config(folder, tiny_data, max_iters=10, num_points=64)
        return [str(config), train(load_config(config))]

    config, metrics = built_once("straight-run", build)
    return load_config(config), metrics


def resume_to_the_end(config: Path, cfg):
    """`ifrvis train CONFIG --resume` in a process of its own; the run, FINISHED."""
    resumed = subprocess.run(
        [sys.executable, "-m", "ifrvis.commands.train", str(config), "--resume"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = only_run(cfg)
    assert run.info.status == "FINISHED"
    return run


def assert_final_metrics(run, reference: dict) -> None:
    for key in FINAL_KEYS:
        assert run.data.metrics[key] == pytest.approx(reference[key], nan_ok=True), key


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_run_resumes_to_the_same_final_metrics(tmp_path, tiny_data, kill, straight_run):
    reference_cfg, reference = straight_run

    config = write_run_config(tmp_path / "killed", tiny_data, max_iters=10, num_points=64)
    cfg = load_config(config)
    checkpoint = run_folder.checkpoint_path(cfg)
    process = run_cli(config)
    deadline = time.time() + 120  # kill after the first checkpoint: 8 iterations left on a busy machine
    while not (checkpoint.exists() and load_checkpoint(checkpoint)["iteration"] >= 2):
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(kill)
    output = process.communicate(timeout=60)[0]
    interrupted_at = load_checkpoint(checkpoint)["iteration"]
    assert interrupted_at < 10, "the run finished before it could be interrupted"
    if kill == signal.SIGTERM:
        assert process.returncode == 143 and "checkpoint saved" in output
        assert only_run(cfg).info.status == "KILLED"

    run = resume_to_the_end(config, cfg)
    assert_final_metrics(run, reference)
    final = load_checkpoint(checkpoint)["model"]
    expected = load_checkpoint(run_folder.checkpoint_path(reference_cfg))["model"]
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    history = runstore.client(cfg.logging.mlflow_uri).get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, 11))  # no step logged twice


@pytest.mark.parametrize("killed_after", ["checkpoint:4", "metrics:4"])
def test_a_job_killed_between_its_checkpoint_and_its_metrics_resumes_with_every_step_once(
    tmp_path, tiny_data, killed_after, straight_run
):
    """SIGKILL right after the checkpoint of iteration 4 is written (its steps' metrics not sent yet), or
    right after they were sent: the resumed run has each step's metrics exactly once."""
    _, reference = straight_run
    config = write_run_config(tmp_path, tiny_data, max_iters=10, num_points=64)
    cfg = load_config(config)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IFRVIS_TEST_KILLED_AFTER": killed_after}
    killed = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "poisoned_train.py"), str(config)], capture_output=True, env=env
    )
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(run_folder.checkpoint_path(cfg))["iteration"] == 4
    mlflow = runstore.client(cfg.logging.mlflow_uri)
    run_id = only_run(cfg).info.run_id
    sent = sorted(m.step for m in mlflow.get_metric_history(run_id, "train/loss"))
    assert sent == ([1, 2] if killed_after.startswith("checkpoint") else [1, 2, 3, 4])

    run = resume_to_the_end(config, cfg)
    per_step = [key for key in run.data.metrics if key.startswith(("train/", "grad_norm/"))]
    assert "train/loss" in per_step and "grad_norm/backbone" in per_step
    for key in per_step:
        assert sorted(m.step for m in mlflow.get_metric_history(run_id, key)) == list(range(1, 11)), key
    assert_final_metrics(run, reference)


def test_a_nan_loss_names_the_term_and_iteration_and_marks_the_run_failed(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setattr(train_module, "build_criterion", nan_criterion(train_module.build_criterion))
    cfg = load_config(write_run_config(tmp_path, tiny_data))
    with pytest.raises(NonFiniteLossError, match="'loss_dice' is nan at iteration 3"):
        train(cfg)
    run = only_run(cfg)
    assert run.info.status == "FAILED" and "loss_dice" in run.data.tags["error"]
    assert (
        load_checkpoint(run_folder.checkpoint_path(cfg))["iteration"] == 2
    )  # the last good checkpoint survives


def test_weights_that_diverge_fail_the_run_in_one_line_and_never_replace_the_last_good_checkpoint(
    tmp_path, tiny_data
):
    """At lr 1e5 the weights overflow within a few steps: the next forward's outputs are NaN and the
    matcher cannot match them (this once ended in the matcher's ValueError, a traceback), and a checkpoint
    at that iteration once saved the NaN weights a resume would continue from."""
    config = write_run_config(tmp_path, tiny_data, max_iters=12)
    cfg = load_config(config, ["solver.lr=1e5"])
    with pytest.raises(NonFiniteLossError, match="diverged: a learning rate too high") as stopped:
        train(cfg)
    assert isinstance(stopped.value, UserError)  # the command line says it in one line
    assert only_run(cfg).info.status == "FAILED"
    checkpoint = run_folder.checkpoint_path(cfg)
    if checkpoint.exists():  # whatever it holds is finite
        assert all(torch.isfinite(v).all() for v in load_checkpoint(checkpoint)["model"].values())


def test_a_checkpoint_is_refused_weights_that_are_not_finite():
    """A step can leave NaN weights before any output shows them: the checkpoint after it checks them."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert train_module.nonfinite_weights(model) is None
    model[1].bias.data[0] = float("inf")
    assert train_module.nonfinite_weights(model).startswith("weight 1.bias is NaN or infinite")


@pytest.mark.parametrize("damage", ["truncated", "foreign", "no model"])
def test_a_damaged_checkpoint_is_one_line_before_the_run_is_touched(tmp_path, tiny_data, damage):
    """--resume of a finished run whose checkpoint was cut short, replaced by another pickle, or lacks
    the model: once a traceback, and a checkpoint without its model turned the FINISHED run FAILED."""
    config = write_run_config(tmp_path, tiny_data, max_iters=2)
    cfg = load_config(config)
    train(cfg)
    checkpoint = run_folder.checkpoint_path(cfg)
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    elif damage == "foreign":
        torch.save(collections.OrderedDict(a=1), checkpoint, _use_new_zipfile_serialization=False)
    else:
        state = load_checkpoint(checkpoint)
        del state["model"]
        torch.save(state, checkpoint)
    with pytest.raises(RunCheckpointError, match=f"{checkpoint}: not a run checkpoint this run can resume"):
        train(cfg, resume=True)
    assert only_run(cfg).info.status == "FINISHED"


def test_a_corrupt_annotation_file_fails_before_anything_is_created(tmp_path, tiny_data):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.json").write_text("{not json")
    (broken / "JPEGImages").symlink_to(tiny_data / "JPEGImages")
    cfg = load_config(write_run_config(tmp_path, broken))
    with pytest.raises(DataError, match="train.json"):
        train(cfg)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.root=/nonexistent/ytvis", "/nonexistent/ytvis/train.json"),
        ("model.num_classes=7", "model.num_classes = 7"),
        ("model.weights=/nonexistent/model.pkl", "no such file /nonexistent/model.pkl"),
        ("inference.mode=vidoe", "did you mean 'video'"),
        ("solver.shedule=poly", "did you mean 'schedule'"),
        pytest.param(
            "device=cuda",
            "device=cuda: PyTorch sees no CUDA GPU on this machine",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there"),
        ),
    ],
)
def test_a_users_mistake_is_one_line_and_creates_nothing(tmp_path, tiny_data, override, message):
    """Also with the flag before the override (`CONFIG --resume key=value`)."""
    config = write_run_config(tmp_path, tiny_data)
    result = subprocess.run(
        [sys.executable, "-m", "ifrvis.cli", "train", str(config), "--resume", override],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "outputs").exists()


def test_a_shipped_pretrained_model_that_no_longer_fits_the_config_stops_the_run_before_it_starts(tmp_path):
    overrides = [f"logging.mlflow_uri=sqlite:///{tmp_path / 'mlflow.db'}", f"logging.output_dir={tmp_path}/o"]
    result = subprocess.run(
        [sys.executable, "-m", "ifrvis.cli", "train", str(TINY_CONFIG), "model.hidden_dim=32", *overrides],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "model.hidden_dim is 32 here, 64 in the file" in result.stderr
    assert "ifrvis pretrain" in result.stderr and not list(tmp_path.iterdir())


@pytest.mark.parametrize("entry", [["-m", "ifrvis.cli", "train"], ["-m", "ifrvis.commands.train"]])
def test_every_entry_point_gives_one_line_and_debug_the_traceback(tmp_path, tiny_data, entry):
    """`ifrvis train` and `python -m ifrvis.commands.train` (what torchrun runs) alike."""
    config = write_run_config(tmp_path, tiny_data)
    command = [sys.executable, *entry, str(config), "inference.mode=vidoe"]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert (
        plain.returncode == 2
        and plain.stderr.startswith("ifrvis train: error: ")
        and "Traceback" not in plain.stderr
    )
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_a_renamed_config_finds_the_runs_folder_by_identity(tmp_path, tiny_data):
    cfg = load_config(write_run_config(tmp_path, tiny_data))
    run_folder.run_dir(cfg).mkdir(parents=True)
    renamed = load_config(write_run_config(tmp_path, tiny_data), ["name=renamed"])
    assert run_folder.run_dir(renamed) == run_folder.run_dir(cfg) and run_folder.run_dir(cfg).name.startswith(
        "synthetic_tiny-"
    )


def test_two_process_ddp_with_gloo_logs_one_run(tmp_path, tiny_data):
    config = write_run_config(tmp_path, tiny_data, max_iters=4)
    result = subprocess.run(
        torchrun("-m", "ifrvis.commands.train", str(config)),
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cfg = load_config(config)
    run = only_run(cfg)
    assert run.info.status == "FINISHED" and "AP" in run.data.metrics
    state = load_checkpoint(run_folder.checkpoint_path(cfg))
    assert [s["rank"] for s in state["sampler"]] == [0, 1] and state["sampler"][1]["batches"] == 4


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def test_a_nan_loss_on_one_ddp_rank_stops_every_rank_with_its_name(tmp_path, tiny_data):
    config = write_run_config(tmp_path, tiny_data, max_iters=6)
    result = subprocess.run(
        torchrun(str(ROOT / "tests" / "poisoned_train.py"), str(config)),
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode != 0
    run = only_run(load_config(config))
    assert run.info.status == "FAILED"
    assert "'loss_dice' is nan at iteration 3 on rank 1" in run.data.tags["error"], run.data.tags["error"]


def test_a_validation_longer_than_the_collective_timeout_is_what_the_timeout_setting_covers(
    tmp_path, tiny_data
):
    """Rank 0 validates (`logging.eval_every`) while rank 1 waits in the next all-reduce: a validation
    of 8 s kills a job whose collectives wait 3 s (torch's own default is 10 min for NCCL, shorter
    than a YouTube-VIS validation), and passes under `logging.collective_timeout_min` above it."""
    outcomes = []
    for name, timeout_min in (("short", 0.05), ("long", 1.0)):
        config = write_run_config(tmp_path / name, tiny_data, max_iters=4)
        overrides = ["logging.eval_every=2", f"logging.collective_timeout_min={timeout_min}"]
        result = subprocess.run(
            torchrun(str(ROOT / "tests" / "poisoned_train.py"), str(config), *overrides),
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "IFRVIS_TEST_SLOW_VALIDATION_S": "8"},
            timeout=300,
        )
        outcomes.append(result.returncode)
        if name == "long":
            assert result.returncode == 0, result.stderr[-3000:]
            run = only_run(load_config(config, overrides))
            assert run.info.status == "FINISHED" and "val/AP" in run.data.metrics
    assert outcomes[0] != 0


def worker_pid(parent: int, rank: int) -> int:
    """The pid of torchrun's worker process of `rank` (a child of `parent` with RANK=rank)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise LookupError(f"no rank-{rank} worker under pid {parent}")


def test_a_signal_to_one_ddp_rank_stops_every_rank_at_the_same_checkpoint(tmp_path, tiny_data):
    config = write_run_config(tmp_path, tiny_data, max_iters=60)
    cfg = load_config(config)
    checkpoint = run_folder.checkpoint_path(cfg)
    process = subprocess.Popen(
        torchrun("-m", "ifrvis.commands.train", str(config)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,  # one process group: nothing outlives a failure
    )
    try:
        deadline = time.time() + 180
        while not (checkpoint.exists() and load_checkpoint(checkpoint)["iteration"] >= 2):
            assert process.poll() is None, process.stdout.read()
            assert time.time() < deadline
            time.sleep(0.05)
        os.kill(worker_pid(process.pid, rank=0), signal.SIGUSR2)  # rank 1 never sees it
        output = process.communicate(timeout=120)[0]  # a rank left alone in a collective would hang here
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    state = load_checkpoint(checkpoint)
    assert state["iteration"] < 60, "the run finished before it could be interrupted"
    assert "checkpoint saved" in output
    assert [s["batches"] for s in state["sampler"]] == [state["iteration"]] * 2  # 1 batch per rank per step
    assert only_run(cfg).info.status == "KILLED"


def test_a_signal_during_a_save_loses_no_logged_step(tmp_path, tiny_data, monkeypatch):
    """A launcher's handler that exits (submitit's requeue) must not run between a checkpoint and the
    flush of its steps' metrics: the resumed run would never log them."""
    real_save = train_module.save_checkpoint

    def save_while_signalled(path, state):
        saved = real_save(path, state)
        if state["iteration"] == 4:  # the signal arrives as the file lands
            os.kill(os.getpid(), signal.SIGUSR2)
        return saved

    def exit_like_submitit(signum, frame):
        raise SystemExit(-1)

    monkeypatch.setattr(train_module, "save_checkpoint", save_while_signalled)
    previous = signal.signal(signal.SIGUSR2, exit_like_submitit)
    cfg = load_config(write_run_config(tmp_path, tiny_data, max_iters=6))
    try:
        with pytest.raises(SystemExit):
            train(cfg, stop_signals=())
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert (
        only_run(cfg).info.status == "KILLED"
        and load_checkpoint(run_folder.checkpoint_path(cfg))["iteration"] == 4
    )
    train(cfg, resume=True)
    run = only_run(cfg)
    history = runstore.client(cfg.logging.mlflow_uri).get_metric_history(run.info.run_id, "train/loss")
    assert run.info.status == "FINISHED" and sorted(m.step for m in history) == list(range(1, 7))


def test_a_signal_during_the_final_evaluation_stops_and_the_resume_only_evaluates(
    tmp_path, tiny_data, monkeypatch
):
    real_evaluate = train_module.evaluate_model
    calls = []

    def signalled_evaluation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # Slurm's warning arrives while the model is evaluated
            time.sleep(1)  # the handler stops the run here
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_model", signalled_evaluation)
    cfg = load_config(write_run_config(tmp_path, tiny_data, max_iters=4))
    with pytest.raises(train_module.Interrupted, match="after training"):
        train(cfg)
    assert (
        only_run(cfg).info.status == "KILLED"
        and load_checkpoint(run_folder.checkpoint_path(cfg))["iteration"] == 4
    )
    metrics = train(cfg, resume=True)
    assert len(calls) == 2 and "AP" in metrics and only_run(cfg).info.status == "FINISHED"


def test_bf16_on_the_cpu_runs_attention_on_the_math_backend(tmp_path, tiny_data):
    """Under solver.amp=bf16 on the CPU attention avoids PyTorch's CPU flash kernel (its bf16 backward is
    3-7x slower than fp32's); fp32 keeps the default choice. A bf16 run trains and finishes."""
    q = torch.randn(1, 2, 8, 16)

    def kernels(dtype):
        with torch.profiler.profile() as profile, train_module.autocast(dtype, torch.device("cpu")):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
        return {event.key for event in profile.key_averages()}

    assert "aten::_scaled_dot_product_attention_math" in kernels(torch.bfloat16)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" not in kernels(torch.bfloat16)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels(None)
    cfg = load_config(write_run_config(tmp_path, tiny_data, max_iters=2), ["solver.amp=bf16"])
    train(cfg)
    assert only_run(cfg).info.status == "FINISHED"


def test_a_store_outage_at_the_final_status_leaves_the_run_running_and_its_resume_logs_once(
    tmp_path, tiny_data, monkeypatch, capfd
):
    """The store fails for good when the finished run sets FINISHED: the run is left RUNNING, not
    FAILED, saying so; its resume evaluates again and finishes it, each final metric logged once."""
    real_set_status = runstore.RunLogger.set_status

    def outage_at_finish(self, status):
        if status == runstore.FINISHED:
            raise runstore.StoreOutage("the tracking server's database is unavailable (test)")
        return real_set_status(self, status)

    monkeypatch.setattr(runstore.RunLogger, "set_status", outage_at_finish)
    cfg = load_config(write_run_config(tmp_path, tiny_data, max_iters=4))
    with pytest.raises(runstore.StoreOutage):
        train(cfg)
    run = only_run(cfg)
    assert run.info.status == "RUNNING" and "error" not in run.data.tags
    assert f"run {run.info.run_id} left RUNNING, not FAILED" in capfd.readouterr().err
    monkeypatch.setattr(runstore.RunLogger, "set_status", real_set_status)
    train(cfg, resume=True)
    assert only_run(cfg).info.status == "FINISHED"
    mlflow = runstore.client(cfg.logging.mlflow_uri)
    for key in FINAL_KEYS:
        assert len(mlflow.get_metric_history(run.info.run_id, key)) == 1, key


def test_a_failed_run_sends_the_points_its_spool_kept(tmp_path, tiny_data, monkeypatch):
    """Metric batches spooled while the store did not take them (here: every batch) reach the run when
    it fails, before it is marked FAILED."""

    def store_not_taking_metrics(self, history, timestamp_ms=None):
        entries = [Metric(k, float(v), 0, step) for step, values in history for k, v in values.items()]
        metric_spool.append(self.spool, entries)

    monkeypatch.setattr(runstore.RunLogger, "log_metric_history", store_not_taking_metrics)
    monkeypatch.setattr(train_module, "build_criterion", nan_criterion(train_module.build_criterion))
    cfg = load_config(write_run_config(tmp_path, tiny_data))
    with pytest.raises(NonFiniteLossError):
        train(cfg)
    run = only_run(cfg)
    assert run.info.status == "FAILED"
    history = runstore.client(cfg.logging.mlflow_uri).get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2]
    assert not list(run_folder.run_dir(cfg).glob("metric_spool-*"))
