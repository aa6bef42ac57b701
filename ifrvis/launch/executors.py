"""Three ways to run a sweep's specs; each run is one call of `ifrvis.train`.

- local: one subprocess per run (`python -m ifrvis.engine.train ... --resume`), at most
  `max_parallel` at once, each run's log in its folder;
- slurm: a submitit job array; `TrainJob.checkpoint` requeues a fresh call that resumes from the
  run's latest checkpoint on disk, into the same MLflow run;
- ray: a Ray Tune grid over the specs, on a local Ray or an existing cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ifrvis.config import config_from_dict, dump_config, to_dict
from ifrvis.engine import runs
from ifrvis.launch.sweep import DONE, FAILED, Spec


def run_spec(cfg_dict: dict, stop_signals: tuple[int, ...] | None = None) -> dict:
    """Train one spec, resuming from its checkpoint when there is one. Picklable for every executor.
    `stop_signals`: the signals that checkpoint and stop the run (default: SIGTERM and SIGUSR2)."""
    from ifrvis.engine.preemption import PREEMPTION_SIGNALS
    from ifrvis.engine.train import train

    cfg = config_from_dict(cfg_dict)
    return train(cfg, resume=True, stop_signals=PREEMPTION_SIGNALS if stop_signals is None else stop_signals)


def _finish(spec: Spec, ok: bool, error: str = "") -> None:
    spec.state = DONE if ok else FAILED
    spec.error = error
    metrics_file = runs.run_dir(spec.cfg) / "metrics.json"
    if ok and metrics_file.exists():
        spec.result = json.loads(metrics_file.read_text())


# ---------------------------------------------------------------------------------------------- local
def run_local(specs: Sequence[Spec], max_parallel: int) -> None:
    """Subprocesses, `max_parallel` at a time, torch threads split among them."""
    threads = max(1, (os.cpu_count() or 1) // max_parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    queue, active = list(specs), {}
    with tqdm(total=len(specs), desc="runs", unit="run", dynamic_ncols=True) as bar:
        while queue or active:
            while queue and len(active) < max_parallel:
                spec = queue.pop(0)
                active[_start_local(spec, env)] = (spec, time.perf_counter())
            time.sleep(0.5)
            for process, (spec, started) in list(active.items()):
                if process.poll() is None:
                    continue
                del active[process]
                spec.wall_time_s = time.perf_counter() - started
                log = runs.run_dir(spec.cfg) / "train.log"
                _finish(spec, process.returncode == 0, "" if process.returncode == 0 else _last_line(log))
                bar.update(1)


def _start_local(spec: Spec, env: dict) -> subprocess.Popen:
    folder = runs.run_dir(spec.cfg)
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "sweep_config.yaml"
    dump_config(spec.cfg, config_file)
    command = [sys.executable, "-m", "ifrvis.engine.train", str(config_file), "--resume"]
    with open(folder / "train.log", "a") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"failed, see {log}"


# ---------------------------------------------------------------------------------------------- slurm
def slurm_job_class():
    import submitit

    from ifrvis.engine.preemption import Interrupted

    class TrainJob(submitit.helpers.Checkpointable):
        """One run as a Slurm task. On SIGUSR2 (preemption or time-out) the trainer checkpoints at the next
        iteration boundary and stops; the signal then goes on to submitit, whose handler calls
        `checkpoint` and requeues the task: the fresh callable resumes from that checkpoint."""

        def __call__(self, cfg_dict: dict) -> dict:
            import torch

            # As many threads as CPUs the task was given (Slurm does not set OMP_NUM_THREADS).
            torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", torch.get_num_threads())))
            if submitit.JobEnvironment().num_tasks > 1:  # one task per GPU -> torch.distributed
                submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            try:
                # Slurm sends SIGTERM, then SIGUSR2, on preemption: submitit ignores the first and
                # requeues on the second, so the run stops on SIGUSR2 only.
                return run_spec(cfg_dict, stop_signals=(signal.SIGUSR2,))
            except Interrupted as stop:
                signal.raise_signal(stop.signum)  # submitit's handler: requeue (and exit)
                raise

        def checkpoint(self, cfg_dict: dict):
            return submitit.helpers.DelayedSubmission(TrainJob(), cfg_dict)

    return TrainJob


def slurm_folder(sweep: str) -> Path:
    """Logs of a sweep's jobs: on the project's (shared) file system, never /tmp."""
    return Path(os.environ.get("IFRVIS_SLURM_LOGS", Path.cwd() / "slurm" / "logs")).resolve() / sweep


def run_slurm(specs: Sequence[Spec], sweep: str, profile: str, overrides: dict, poll_s: float = 5.0) -> list:
    from ifrvis.launch.slurm_profile import slurm_executor

    executor = slurm_executor(slurm_folder(sweep) / "%j", profile, overrides)
    executor.update_parameters(name=f"ifrvis-{sweep}")
    jobs = executor.map_array(slurm_job_class()(), [to_dict(spec.cfg) for spec in specs])
    started = time.perf_counter()
    pending = dict(zip(jobs, specs))
    with tqdm(total=len(jobs), desc=f"slurm {jobs[0].job_id.split('_')[0]}", unit="run") as bar:
        while pending:
            time.sleep(poll_s)
            for job, spec in list(pending.items()):
                if not job.done():
                    continue
                del pending[job]
                spec.wall_time_s = time.perf_counter() - started
                error = job.exception()
                _finish(spec, error is None, "" if error is None else str(error).strip().splitlines()[-1])
                bar.update(1)
    return jobs


# ------------------------------------------------------------------------------------------------ ray
def _ray_trainable(config: dict) -> None:
    from ray import tune

    os.chdir(config["cwd"])  # relative data paths are relative to where the sweep was launched
    metrics = run_spec(config["spec"], stop_signals=())  # Ray runs trials in threads: no signal handlers
    tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})


def run_ray(specs: Sequence[Spec], sweep: str, max_parallel: int, address: str = "", gpus: float = 0) -> None:
    import ray
    from ray import tune

    cpus = os.cpu_count() or 1
    if address:
        ray.init(address=address, ignore_reinit_error=True)
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        per_trial = {"cpu": max(1, cpus // max_parallel), "gpu": gpus}
        tuner = tune.Tuner(
            tune.with_resources(_ray_trainable, per_trial),
            param_space={"spec": tune.grid_search([to_dict(s.cfg) for s in specs]), "cwd": str(Path.cwd())},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_parallel),
            run_config=tune.RunConfig(  # Ray's own trial records, beside the runs' folders
                name=sweep,
                storage_path=str(Path(specs[0].cfg.logging.output_dir).resolve() / "ray"),
                verbose=0,
            ),
        )
        started = time.perf_counter()
        grid = tuner.fit()
        by_identity = {runs.run_identity(config_from_dict(r.config["spec"])): r for r in grid}
        for spec in specs:
            result = by_identity.get(spec.identity)
            spec.wall_time_s = time.perf_counter() - started
            ok = result is not None and result.error is None
            _finish(spec, ok, "" if ok else str(getattr(result, "error", "no result")).splitlines()[-1])
    finally:
        ray.shutdown()
