"""One training run, end to end: train, checkpoint, evaluate, log to MLflow.

`train(cfg)` is the plain callable every launcher (local, Slurm, Ray) calls; `ifrvis train` and
torchrun reach it through ifrvis.commands.train.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm import tqdm

from ifrvis import run_folder, runstore
from ifrvis.config import Config, ConfigError, dump_config, run_identity
from ifrvis.data.datasets import ClipBatches, ClipDataset, TrainSampler, collate_clips, landscape_items
from ifrvis.data.splits import load_splits
from ifrvis.data.ytvis import YTVIS
from ifrvis.engine.checkpoint import (
    load_run_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from ifrvis.engine.distributed import DistInfo, cleanup, init_distributed, resolve_device
from ifrvis.engine.evaluate import evaluate_model
from ifrvis.engine.preemption import (
    PREEMPTION_SIGNALS,
    Interrupted,
    NoSignals,
    StopSignals,
    after_training,
    agree_to_stop,
    deferred_signals,
    gather,
)
from ifrvis.engine.provenance import check_pretrained
from ifrvis.engine.solver import build_optimizer, build_scheduler, load_optimizer_state
from ifrvis.errors import UserError
from ifrvis.evaluation import evaluate_ytvis
from ifrvis.inference import run_inference
from ifrvis.modeling import build_model
from ifrvis.modeling.criterion import build_criterion
from ifrvis.modeling.meta_arch import check_weights_fit
from ifrvis.modeling.weights import CheckpointError, load_weights


class NonFiniteLossError(UserError, FloatingPointError):
    """A loss term, the model's outputs or its weights became NaN or infinite (a divergence: the run is
    FAILED, its last good checkpoint kept; the command line says it in one line)."""


DIVERGED = "the model's outputs are NaN or infinite (its weights diverged: a learning rate too high?)"


def nonfinite_term(losses: dict[str, torch.Tensor]) -> str | None:
    """The first loss term that is NaN or infinite, as `loss term 'name' is nan`; None when all are finite."""
    for name, value in losses.items():
        if not torch.isfinite(value):
            return f"loss term '{name}' is {value.item()}"
    return None


def nonfinite_weights(model: torch.nn.Module) -> str | None:
    """The first parameter that holds NaN or infinite values, named; None when all are finite."""
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            return f"weight {name} is NaN or infinite (the weights diverged: a learning rate too high?)"
    return None


def _batches(
    dataset: ClipDataset, batch_sampler: ClipBatches, workers: int, pad_value: list[float]
) -> Iterator:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=partial(collate_clips, pad_value=pad_value),
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    return iter(loader)


def train(cfg: Config, resume: bool = False, stop_signals: tuple[int, ...] = PREEMPTION_SIGNALS) -> dict:
    """Train `cfg` (resuming from its checkpoint when `resume`), evaluate, and return final metrics.

    Logs into the MLflow run of this identity (the checkpoint's, else the one a sweep created, else a
    new one). Exceptions mark the run FAILED (checkpoints survive); `stop_signals` (SIGTERM, SIGUSR2)
    mark it KILLED after a checkpoint at the next iteration boundary (on every rank at the same one),
    as do a KeyboardInterrupt or SystemExit. `stop_signals=()` where signal handlers cannot be
    installed (Ray's worker threads)."""
    splits = preflight(cfg)  # before any MLflow run, folder or process group exists
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    info = init_distributed(device, cfg.logging.collective_timeout_min)
    out_dir = run_folder.run_dir(cfg)
    ckpt_path = run_folder.checkpoint_path(cfg)
    state = _load_state(cfg, ckpt_path, resume, info)
    logger = _open_run(cfg, state, info)
    if logger:
        logger.set_tags(environment_tags(device) | launch_tags(info.world_size, out_dir / run_folder.LOG))
    try:
        with StopSignals(stop_signals) if stop_signals else NoSignals() as flag:
            metrics = _train_and_evaluate(cfg, splits, state, logger, info, device, out_dir, ckpt_path, flag)
    except (Interrupted, KeyboardInterrupt, SystemExit) as stop:  # from outside; the checkpoint resumes it
        if logger:
            logger.set_status("KILLED")
        if isinstance(stop, Interrupted) and info.is_main:
            print(stop, file=sys.stderr, flush=True)  # in the run's log, beside where the next start resumes
        raise
    except runstore.StoreOutage as outage:
        _left_running(logger, out_dir, outage)
        raise
    except BaseException as error:
        if logger:
            with contextlib.suppress(Exception):  # points the store took late; else they stay in the folder
                logger.flush_spool()
            logger.set_tags({"error": f"{type(error).__name__}: {error}"[:5000]})
            logger.set_status("FAILED")
            kept = f"; checkpoint kept in {out_dir}" if ckpt_path.exists() else ""
            print(f"run {logger.run_id} FAILED{kept}", file=sys.stderr)
        raise
    finally:
        cleanup(info)
    if logger:
        # As patient as every status call: FINISHED only with every spooled point in the store. Should
        # the store stay down, the job fails, the run stays RUNNING with its checkpoint, results and
        # spool in its folder, and its next start (--resume) evaluates again, sends them and finishes.
        try:
            logger.flush_spool()
            logger.set_status("FINISHED")
        except runstore.StoreOutage as outage:
            _left_running(logger, out_dir, outage)
            raise
    return metrics


def _left_running(logger: runstore.RunLogger | None, out_dir: Path, outage: runstore.StoreOutage) -> None:
    """Say why a run stays RUNNING: a logging outage never marks a run FAILED (a finished one least of
    all); its folder keeps what the store has not taken."""
    if logger:
        print(
            f"run {logger.run_id} left RUNNING, not FAILED: {outage}; its checkpoint, results and unsent"
            f" metrics are in {out_dir}, and its next start (--resume, or the sweep's re-run) sends them",
            file=sys.stderr,
            flush=True,
        )


class RunExistsError(UserError, FileExistsError):
    """The run's checkpoint exists and `--resume` was not asked for."""


def preflight(cfg: Config) -> tuple[YTVIS, YTVIS | None]:
    """The run's data splits, after checking what a run needs before anything is created: the data
    folder (annotation files, frame files), the class count, the checkpoint file (present, and
    giving the model what it should: `check_weights_fit`) and a writable run store. Raises a
    `UserError` (DataError, ConfigError, CheckpointError, ReadOnlyStore) naming the problem."""
    if cfg.threads < 0:
        raise ConfigError(f"threads = {cfg.threads}: give a number of CPU threads, or 0 for the default")
    if cfg.solver.compile and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "clang++")):
        raise ConfigError("solver.compile needs a C++ compiler (g++, clang++ or $CXX): none is on the PATH")
    if cfg.model.weights and not Path(cfg.model.weights).is_file():
        raise CheckpointError(
            f"model.weights: no such file {cfg.model.weights}"
            + (" (`ifrvis pretrain CONFIG` writes it)" if cfg.model.backbone == "tiny" else "")
        )
    runstore.check_writable(cfg.logging.mlflow_uri)
    check_pretrained(cfg)  # a shipped pretrained model that no longer fits the config
    check_weights_fit(cfg.model, cfg.loss.class_loss)  # a file for another model: not a silent scratch start
    train_set, valid_set = load_splits(cfg.data)
    if len(train_set.category_ids) != cfg.model.num_classes:
        raise ConfigError(
            f"model.num_classes = {cfg.model.num_classes} but {cfg.data.root}/{cfg.data.train_json} "
            f"has {len(train_set.category_ids)} categories"
        )
    return train_set, valid_set


def _load_state(cfg: Config, ckpt_path: Path, resume: bool, info: DistInfo) -> dict | None:
    if ckpt_path.exists() and not resume:
        raise RunExistsError(
            f"{ckpt_path} exists: this run (identity {run_identity(cfg)}) was started before; "
            "pass --resume to continue it, or delete its folder to start over"
        )
    return load_run_checkpoint(ckpt_path) if resume and ckpt_path.exists() else None


def _open_run(cfg: Config, state: dict | None, info: DistInfo) -> runstore.RunLogger | None:
    """Rank 0's logger into the run's MLflow run: from the checkpoint, else an existing unfinished run
    of this identity (a sweep pre-creates it), else a new one."""
    if not info.is_main:
        return None
    run_id = state["mlflow_run_id"] if state else None
    if run_id is None:
        existing = runstore.find_run(cfg)
        if existing is not None and existing.info.status != runstore.FINISHED and not _has_steps(existing):
            run_id = existing.info.run_id
    run_id = run_id or runstore.create_run(cfg)
    # Metric batches the store does not take wait in the run's folder: training goes on without it.
    spool = run_folder.metric_spool_path(run_folder.run_dir(cfg), run_id)
    logger = runstore.RunLogger(cfg.logging.mlflow_uri, run_id, spool)
    logger.set_status(runstore.RUNNING)
    logger.delete_tag(runstore.ERROR_TAG)  # a resumed run's earlier failure is no longer its state
    logger.flush_spool()  # what an earlier job of the run could not send
    if state and "metrics" in state:  # checkpoints written before they held their metrics have none
        logger.log_metric_history(state["metrics"]["history"], state["metrics"]["timestamp_ms"])
    return logger


def environment_tags(device: torch.device) -> dict[str, str]:
    """What a run computed on, as `env.*` tags (a resumed run: the last start's): per-seed values are
    bit-identical only for the same CPU model, thread count and torch version. `env.cpu_capability` is the
    vector instruction set torch dispatches to ('AVX2', 'AVX512'): a virtual machine's CPU model name can
    stay the same ('AMD EPYC') across hosts that differ there, and so do speed and float results."""
    cpu = ""
    if Path("/proc/cpuinfo").is_file():
        names = [
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0].split(":", 1)[1].strip() if names else ""
    return {
        "env.torch": torch.__version__,
        "env.threads": str(torch.get_num_threads()),
        "env.cpu": cpu or platform.processor() or platform.machine(),
        "env.cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env.device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "env.python": platform.python_version(),
    }


# Where a run's latest job ran, as `launch.*` tags: Slurm's variables for it when Slurm started it, and the
# GPUs it was given.
LAUNCH_ENV_TAGS = {
    "launch.slurm_job_id": "SLURM_JOB_ID",
    "launch.slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
    "launch.slurm_array_task_id": "SLURM_ARRAY_TASK_ID",
    "launch.slurm_restart_count": "SLURM_RESTART_COUNT",  # how many times Slurm requeued the job
    "launch.slurm_nodelist": "SLURM_JOB_NODELIST",
    "launch.slurm_log": "IFRVIS_SLURM_LOG",  # submitit's log of the task (executors.TrainJob sets it)
    "launch.cuda_visible_devices": "CUDA_VISIBLE_DEVICES",  # the GPUs the job saw (the local executor's)
}


def launch_tags(world_size: int, log: Path) -> dict[str, str]:
    """Where the run's latest job ran (a requeued or resumed run: the last start's): the host, the
    number of ranks, the run's log, the GPUs it was given and, under Slurm, the job, its array index, its
    requeue count, its nodes and Slurm's log of it. The log only where there is one: a sweep's job writes
    it, a plain `ifrvis train` prints to its terminal."""
    tags = {"launch.host": platform.node(), "launch.world_size": str(world_size)}
    if log.exists():
        tags["launch.log"] = str(log)
    tags["launch.pid"] = str(os.getpid())  # a re-run of its sweep on this host leaves it running
    tags |= {tag: os.environ[name] for tag, name in LAUNCH_ENV_TAGS.items() if os.environ.get(name)}
    if "launch.slurm_job_id" in tags:
        tags.setdefault("launch.slurm_restart_count", "0")  # Slurm sets it from the first requeue on
    return tags


def _has_steps(run) -> bool:
    """A run that logged training metrics but left no checkpoint must not be continued."""
    return any(key.startswith("train/") for key in run.data.metrics)


def _train_and_evaluate(cfg, splits, state, logger, info, device, out_dir, ckpt_path, flag) -> dict:
    seed_everything(cfg.seed + info.rank)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_set, valid_set = splits
    if logger and state is None:
        dump_config(cfg, out_dir / run_folder.CONFIG)
        logger.log_artifact(out_dir / run_folder.CONFIG)
        # The class names a prediction labels its tracks with, on a machine without the training data.
        (out_dir / run_folder.CATEGORIES).write_text(json.dumps(train_set.raw["categories"], indent=1) + "\n")
    model = build_model(dataclasses.replace(cfg.model, weights=""), cfg.loss.class_loss)
    if state is None and cfg.model.weights:
        _load_initial_weights(model, cfg, out_dir, logger)
    model = model.to(device)
    criterion = build_criterion(cfg).to(device)
    optimizer = build_optimizer(model, cfg.solver)
    scheduler = build_scheduler(optimizer, cfg.solver)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.solver.amp == "fp16" and device.type == "cuda")
    start_iter = 0
    if state is not None:
        model.load_state_dict(state["model"])
        load_optimizer_state(optimizer, state["optimizer"], cfg.solver)
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_iter = state["iteration"]
        if info.is_main:
            print(f"resumed from iteration {start_iter} ({ckpt_path})", file=sys.stderr, flush=True)
    if info.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    forward = training_forward(model, cfg.solver.compile)
    micro, accumulation = split_batch(cfg.solver.batch_size, info.world_size, cfg.solver.batch_per_gpu)
    if logger:
        logger.log_params({"train.batch_per_gpu": micro, "train.accumulation_steps": accumulation})
    dataset = ClipDataset(train_set, cfg.data, train=True, seed=cfg.seed)
    sampler = TrainSampler(len(dataset), seed=cfg.seed, rank=info.rank, world_size=info.world_size)
    landscape = landscape_items(train_set) if cfg.data.aspect_grouping else None
    batch_sampler = ClipBatches(sampler, micro, landscape)
    if state is not None:  # before the loader starts: its workers draw batches at once
        batch_sampler.load_state_dict(state["sampler"][info.rank])
    # The loader draws its base seed from torch's generator when it starts: start it before restoring
    # the RNG state, so that a resumed run draws (sampled loss points, drop-path) as an uninterrupted one.
    batches = _batches(dataset, batch_sampler, cfg.data.num_workers, cfg.model.pixel_mean)
    if state is not None:
        set_rng_state(state["rng"][info.rank])
    run_id = logger.run_id if logger else None
    metrics_buffer: list[tuple[int, dict[str, float]]] = []

    def checkpoint(iteration: int) -> None:
        # Weights that diverged (every rank holds the same) never replace the last good checkpoint.
        diverged = nonfinite_weights(model)
        if diverged:
            raise NonFiniteLossError(f"{diverged} after iteration {iteration}")
        # Every iteration consumes `accumulation` batches, so the state follows from the iteration (the
        # loader's prefetching runs the live sampler ahead of what training has consumed).
        samplers = gather(batch_sampler.state_dict(batches=iteration * accumulation), info)
        rngs = gather(rng_state(), info)
        if not info.is_main:
            return
        unwrapped = model.module if info.world_size > 1 else model
        # The checkpoint holds its steps' metrics, stamped once: a job killed (SIGKILL, a node lost) after
        # writing it and before sending them sends them at its resume (_open_run), and a resend of points
        # that did arrive is stored once. A signal that can wait, waits for both.
        metrics = {
            "timestamp_ms": int(time.time() * 1000),
            "history": [(step, {k: float(v) for k, v in values.items()}) for step, values in metrics_buffer],
        }
        with deferred_signals():
            save_checkpoint(
                ckpt_path,
                {
                    "model": unwrapped.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "iteration": iteration,
                    "sampler": samplers,
                    "rng": rngs,
                    "mlflow_run_id": run_id,
                    "train_time_s": prior_seconds + time.perf_counter() - tic,
                    "metrics": metrics,
                },
            )
            # Metrics are sent with the checkpoint they belong to: a resumed run never logs a step twice.
            logger.log_metric_history(metrics["history"], metrics["timestamp_ms"])
            metrics_buffer.clear()

    model.train()
    bar = tqdm(
        range(start_iter, cfg.solver.max_iters),
        initial=start_iter,
        total=cfg.solver.max_iters,
        desc=f"train {cfg.name} s{cfg.seed}",
        disable=not (cfg.logging.progress and info.is_main),
        dynamic_ncols=True,
    )
    tic = time.perf_counter()
    prior_seconds = state["train_time_s"] if state else 0.0
    amp_dtype = autocast_dtype(cfg, device)
    for iteration in bar:
        optimizer.zero_grad(set_to_none=True)
        micro_batches = [to_device(next(batches), device) for _ in range(accumulation)]
        try:
            losses = accumulate_gradients(forward, criterion, micro_batches, scaler, amp_dtype)
            problem = nonfinite_term(losses)
        except FloatingPointError:  # the matcher's cost of outputs that are not finite
            losses, problem = {}, DIVERGED
        bad, signum = agree_to_stop(problem, flag.received, info, device)
        if bad:  # before the optimizer step: the weights stay those of the last good iteration
            where = "".join(f" on rank {r}" for r, _ in bad) if info.world_size > 1 else ""
            raise NonFiniteLossError(f"{bad[0][1]} at iteration {iteration}{where}")
        loss = sum(losses.values())
        done = iteration + 1
        log_step = done % cfg.logging.log_every == 0 or done == cfg.solver.max_iters
        if cfg.solver.clip_grad_norm > 0 or log_step:
            scaler.unscale_(optimizer)  # true gradients, for clipping and for their logged norms
        norms = grad_norms(model.module if info.world_size > 1 else model) if log_step else {}
        if cfg.solver.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.solver.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]  # this iteration's head (non-backbone) learning rate
        scheduler.step()
        if log_step:
            clips_per_s = cfg.solver.batch_size * (done - start_iter) / (time.perf_counter() - tic)
            metrics_buffer.append((done, {**_loss_metrics(losses, loss, lr), **norms}))
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}", clips_s=f"{clips_per_s:.1f}")
        if cfg.logging.eval_every and done % cfg.logging.eval_every == 0 and done < cfg.solver.max_iters:
            if info.is_main and valid_set is not None and valid_set.has_annotations:
                metrics_buffer.append((done, _validation_metrics(model, valid_set, cfg, info)))
        if done % cfg.logging.checkpoint_every == 0 or done == cfg.solver.max_iters:
            checkpoint(done)
        if signum is not None:
            checkpoint(done)  # a signal held back while it saved is in flag.received now
            signum = flag.received or signum
            raise Interrupted(f"signal {signum} at iteration {done}: checkpoint saved to {ckpt_path}", signum)
    bar.close()
    train_seconds = prior_seconds + time.perf_counter() - tic
    if not info.is_main:
        return {}
    flag.training_done = True
    if flag.received is not None:  # arrived after the last iteration's check
        raise after_training(flag.received)
    unwrapped = model.module if info.world_size > 1 else model
    metrics = evaluate_model(unwrapped, valid_set, cfg, out_dir, logger) if valid_set is not None else {}
    metrics["train_time_s"] = train_seconds
    # A run whose last job logged these but could not finish (its store failed at the status) is
    # evaluated again: the metrics it already has are not logged a second time.
    logged = logger.logged_metrics()
    logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in logged})
    (out_dir / run_folder.METRICS).write_text(json.dumps(metrics, indent=2))
    logger.log_artifact(out_dir / run_folder.METRICS)
    return metrics


def split_batch(batch_size: int, world_size: int, batch_per_gpu: int = 0) -> tuple[int, int]:
    """(clips a rank computes at once, micro-batches it accumulates per step) for `batch_size` clips
    per step on `world_size` ranks; `batch_per_gpu` 0: a rank's whole share at once. ConfigError when
    the total cannot be split so."""
    share, left = divmod(batch_size, world_size)
    if left or share == 0:
        raise ConfigError(
            f"solver.batch_size = {batch_size} clips cannot be shared equally by {world_size} ranks: give a"
            f" multiple of {world_size}, or run on a number of ranks that divides it"
        )
    micro = batch_per_gpu or share
    if share % micro:
        raise ConfigError(
            f"solver.batch_per_gpu = {batch_per_gpu} does not divide a rank's share of solver.batch_size"
            f" ({batch_size} clips / {world_size} ranks = {share})"
        )
    return micro, share // micro


def to_device(
    batch: tuple[torch.Tensor, list[dict]], device: torch.device
) -> tuple[torch.Tensor, list[dict]]:
    images, targets = batch
    targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return images.to(device, non_blocking=True), targets


def training_forward(model: torch.nn.Module, compiled: bool) -> torch.nn.Module:
    """What a training step calls: `model` itself, or with `solver.compile` its `torch.compile`d call,
    which shares the weights (checkpoints, gradient norms and evaluation use `model` unchanged)."""
    if not compiled:
        return model
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # torch sets $TORCHINDUCTOR_CACHE_DIR to its default in /tmp (emptied by a reboot, node-local on a
    # cluster) the first time anything asks for the folder: a value equal to that default is not a
    # user's choice.
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path.home() / ".cache" / "ifrvis" / "inductor")
    return torch.compile(model)


def accumulate_gradients(model, criterion, micro_batches, scaler, amp_dtype) -> dict[str, torch.Tensor]:
    """Forward and backward of one step's micro-batches, their gradients summed in `.grad`; the step's
    loss terms (summed over micro-batches, detached) returned. Every micro-batch's terms are divided by
    the whole step's instance count (`criterion.normaliser`, averaged over ranks as Mask2Former's
    num_masks), so that k micro-batches of b clips give the gradients of one batch of k x b.
    `micro_batches`: [(images (B, T, 3, H, W), B target dicts)]."""
    device = micro_batches[0][0].device
    norm = criterion.normaliser([t for _, targets in micro_batches for t in targets], device)
    total: dict[str, torch.Tensor] = {}
    for index, (images, targets) in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        # DDP all-reduces the gradients once, after the last micro-batch's backward.
        with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            with autocast(amp_dtype, device):
                losses = criterion(model(images), targets, norm=norm)
            scaler.scale(sum(losses.values())).backward()
        for key, value in losses.items():
            total[key] = total[key] + value.detach() if key in total else value.detach()
    return total


def _load_initial_weights(model, cfg: Config, out_dir: Path, logger: runstore.RunLogger | None) -> None:
    """`model.weights` into `model`; what it gave the model goes to `weights_report.txt` (an MLflow
    artifact) and one summary line to the log."""
    report = load_weights(model, cfg.model.weights, cfg.model.ifr_init, cfg.model.extra_queries)
    if logger:
        (out_dir / run_folder.WEIGHTS_REPORT).write_text(report.render() + "\n")
        logger.log_artifact(out_dir / run_folder.WEIGHTS_REPORT)
        print(report.summary(), file=sys.stderr)


def _validation_metrics(model, valid_set: YTVIS, cfg: Config, info: DistInfo) -> dict[str, float]:
    """Periodic validation (`logging.eval_every`): AP/AR of the current weights as `val/<metric>`.
    Inference draws no random numbers, so a resumed run's training is unaffected."""
    unwrapped = model.module if info.world_size > 1 else model
    unwrapped.eval()
    results = run_inference(unwrapped, valid_set, cfg, progress=False)
    unwrapped.train()
    ap = evaluate_ytvis(valid_set.raw, results)
    return {f"val/{key}": float(ap[key]) for key in ("AP", "AP50", "AP75", "AR1", "AR10")}


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of `solver.amp`; fp16 only on a GPU, where the gradient scaler works with it."""
    if cfg.solver.amp == "fp16" and device.type != "cuda":
        return None
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.solver.amp]


@contextlib.contextmanager
def autocast(dtype: torch.dtype | None, device: torch.device) -> Iterator[None]:
    """torch.autocast to `dtype` (None: off). Under bf16 on the CPU attention runs on the math backend:
    PyTorch's CPU flash-attention backward is 3-7x slower in bf16 than in fp32 at the decoders' sizes."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device.type, dtype=dtype, enabled=dtype is not None))
        if dtype is torch.bfloat16 and device.type == "cpu":
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield


def grad_norms(model: torch.nn.Module) -> dict[str, float]:
    """L2 norm of the gradient per part of the model, as `grad_norm/<part>`: the backbone, the pixel
    decoder, and per decoder block kind summed over layers (IFR's Eq. 2-3 blocks `frame_*`, its clip
    update `temporal_cross_attn` / `clip_*`; the baseline's `cross_attn`, `self_attn`, `ffn`), the
    rest of the decoder (queries, heads) as `decoder`. Shows whether a block learns at all."""
    squares: dict[str, list[torch.Tensor]] = {}
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            parts = name.split(".")
            part = parts[3] if parts[:2] == ["decoder", "layers"] else parts[0]
            squares.setdefault(part, []).append(parameter.grad.detach().float().pow(2).sum())
    return {f"grad_norm/{part}": torch.stack(values).sum().sqrt().item() for part, values in squares.items()}


def _loss_metrics(losses: dict[str, torch.Tensor], total: torch.Tensor, lr: float) -> dict[str, float]:
    """Total loss, each term of the last decoder layer summed with its auxiliary copies, and lr."""
    metrics = {"train/loss": total.item(), "train/lr": lr}
    for name, value in losses.items():
        base = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
        metrics[f"train/{base}"] = metrics.get(f"train/{base}", 0.0) + value.item()
    return metrics
