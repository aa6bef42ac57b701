"""Three ways to run a sweep's jobs; each job is one `ifrvis.launch.job.run_job` call.

- local: one subprocess per run (`python -m ifrvis.commands.job CONFIG`), at most `max_parallel` at
  once, its output in the run's `train.log`;
- slurm: a submitit job array; `TrainJob.checkpoint` requeues a fresh call that resumes from the
  run's latest checkpoint on disk, into the same MLflow run;
- ray: a Ray Tune grid over the runs, on a local Ray or an existing cluster.

Each returns one error per config, "" for a job that ended well. A problem before any job exists
(no Slurm controller, an sbatch error, no Ray cluster) raises `SubmissionError`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from ifrvis import run_folder
from ifrvis.config import Config, config_from_dict, dump_config, run_identity, to_dict
from ifrvis.errors import UserError
from ifrvis.launch.job import run_job, say_in_run_log


class SubmissionError(UserError):
    """The executor could not start the sweep's jobs; nothing ran."""


# ---------------------------------------------------------------------------------------------- local
def run_local(cfgs: Sequence[Config], max_parallel: int, gpus: Sequence[str] = ()) -> list[str]:
    """Subprocesses, `max_parallel` at a time, torch threads split among them. With `gpus` (device ids,
    `visible_gpus`), at most one run per GPU at once, each seeing only its own (CUDA_VISIBLE_DEVICES):
    every run would otherwise train on the first."""
    if gpus:
        max_parallel = min(max_parallel, len(gpus))
    threads = max(1, (os.cpu_count() or 1) // max_parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    errors = [""] * len(cfgs)
    queue, active, free = list(range(len(cfgs))), {}, list(gpus)
    with tqdm(total=len(cfgs), desc="runs", unit="run", dynamic_ncols=True) as bar:
        while queue or active:
            while queue and len(active) < max_parallel:
                index, gpu = queue.pop(0), free.pop(0) if free else None
                device = {"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {}
                active[_start_local(cfgs[index], {**env, **device})] = (index, gpu)
            time.sleep(0.5)
            for process, (index, gpu) in list(active.items()):
                if process.poll() is None:
                    continue
                del active[process]
                if gpu is not None:
                    free.append(gpu)
                if process.returncode != 0:
                    errors[index] = _last_line(run_folder.run_dir(cfgs[index]) / run_folder.LOG)
                bar.update(1)
    return errors


def visible_gpus(cfgs: Sequence[Config]) -> list[str]:
    """The GPUs local runs share out (CUDA_VISIBLE_DEVICES' ids where it is set), none when every run
    is on the CPU or no GPU is there."""
    if all(cfg.device == "cpu" for cfg in cfgs):
        return []
    import torch

    count = torch.cuda.device_count()
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def _start_local(cfg: Config, env: dict) -> subprocess.Popen:
    folder = run_folder.run_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "sweep_config.yaml"
    dump_config(cfg, config_file)
    command = [sys.executable, "-m", "ifrvis.commands.job", str(config_file)]
    with open(folder / run_folder.LOG, "a") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"failed, see {log}"


# ---------------------------------------------------------------------------------------------- slurm
# After its checkpoint at SIGTERM a task waits this long for Slurm's SIGKILL (KillWait: 30 s by default).
SIGTERM_WAIT_S = 300


def slurm_job_class():
    import submitit

    from ifrvis.engine.preemption import Interrupted

    class TrainJob(submitit.helpers.Checkpointable):
        """One run as a Slurm task. On SIGUSR2 (submitit's signal before the time limit) or SIGTERM
        (`scontrol requeue`, preemption, `scancel`) the trainer checkpoints at the next iteration
        boundary and stops. SIGUSR2 then goes on to submitit, whose handler calls `checkpoint` and
        requeues the task; the other ranks of a multi-task job wait to be killed by that requeue. After
        SIGTERM Slurm itself requeues or ends the job and kills it `KillWait` seconds later: the task
        waits for that, so that no half-finished result reaches submitit; either way the next start
        resumes from the checkpoint."""

        def __call__(self, cfg_dict: dict) -> dict:
            import torch

            # As many threads as CPUs the task was given (Slurm does not set OMP_NUM_THREADS).
            torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", torch.get_num_threads())))
            environment = submitit.JobEnvironment()
            if environment.num_tasks > 1:  # one task per GPU -> torch.distributed
                # overwrite: sbatch passes the submitting shell's environment on (a sweep started from
                # inside another job, or a torchrun shell, would hand down its RANK and MASTER_PORT)
                submitit.helpers.TorchDistributedEnvironment().export(
                    set_cuda_visible_devices=False, overwrite=True
                )
            os.environ["IFRVIS_SLURM_LOG"] = str(environment.paths.stdout)  # the run's launch.slurm_log tag
            try:
                return run_job(cfg_dict, stop_signals=(signal.SIGTERM, signal.SIGUSR2))
            except Interrupted as stop:
                if stop.signum == signal.SIGTERM or environment.global_rank != 0:
                    # Only rank 0 requeues at SIGUSR2 (submitit's handler returns on the others): a rank
                    # that failed meanwhile could end the step first (KillOnBadExit) and the job with it.
                    say_in_run_log(cfg_dict, "waiting for Slurm to requeue or end the job")
                    time.sleep(SIGTERM_WAIT_S)  # Slurm's SIGKILL comes first; a stray SIGTERM ends here
                else:
                    signal.raise_signal(stop.signum)  # submitit's handler: requeue (and exit)
                raise

        def checkpoint(self, cfg_dict: dict):
            return submitit.helpers.DelayedSubmission(TrainJob(), cfg_dict)

    return TrainJob


def slurm_folder(sweep: str) -> Path:
    """Logs of a sweep's jobs: on the project's (shared) file system, never /tmp."""
    return Path(os.environ.get("IFRVIS_SLURM_LOGS", Path.cwd() / "slurm" / "logs")).resolve() / sweep


@contextlib.contextmanager
def profile_errors() -> Iterator[None]:
    """A Slurm profile's errors (naming its file and key) as one-line SubmissionErrors."""
    try:
        yield
    except (FileNotFoundError, KeyError, TypeError, ValueError) as error:
        raise SubmissionError(f"Slurm profile: {error.args[0] if error.args else error}") from error


def slurm_ranks(profile: str, overrides: dict) -> int:
    """The ranks of one run under `profile` (nodes x tasks per node); a SubmissionError for a bad profile."""
    from ifrvis.launch.slurm_profile import ranks_per_run

    with profile_errors():
        return ranks_per_run(profile, overrides)


def submit_slurm(cfgs: Sequence[Config], sweep: str, profile: str, overrides: dict) -> list:
    """The job array, submitted; a SubmissionError in one line when Slurm refuses it or is not there."""
    from ifrvis.launch.slurm_profile import slurm_executor

    if shutil.which("sbatch") is None:
        raise SubmissionError("Slurm: sbatch is not on PATH (not a Slurm login node? try --executor local)")
    with profile_errors():
        executor = slurm_executor(slurm_folder(sweep) / "%j", profile, overrides)
    executor.update_parameters(name=f"ifrvis-{sweep}")
    # submitit prints sbatch's stderr before raising it: the error below says it once.
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            return executor.map_array(slurm_job_class()(), [to_dict(cfg) for cfg in cfgs])
        except Exception as error:  # submitit's FailedJobError holds sbatch's message
            raise SubmissionError(f"Slurm refused the job array: {_one_line(error)}") from error


def wait_slurm(jobs: Sequence, poll_s: float = 5.0) -> list[str]:
    """Wait for every job of the array; one error per job."""
    errors = [""] * len(jobs)
    pending = dict(enumerate(jobs))
    cancelled_polls = dict.fromkeys(pending, 0)
    with tqdm(total=len(jobs), desc=f"slurm {jobs[0].job_id.split('_')[0]}", unit="run") as bar:
        while pending:
            time.sleep(poll_s)
            for index, job in list(pending.items()):
                cancelled_polls[index] = cancelled_polls[index] + 1 if _preempted_for_good(job) else 0
                if cancelled_polls[index] >= 2:  # twice in a row: not the moment of a requeue
                    errors[index] = (
                        f"Slurm job {job.job_id}: preempted and not requeued (its partition's PreemptMode"
                        " cancels preempted jobs)"
                    )
                elif job.done():
                    error = job.exception()
                    errors[index] = "" if error is None else f"Slurm job {job.job_id}: {_one_line(error)}"
                else:
                    continue
                del pending[index]
                bar.update(1)
    return errors


def _preempted_for_good(job) -> bool:
    """Whether Slurm preempted the job and did not requeue it (a partition with PreemptMode=CANCEL):
    submitit counts PREEMPTED as unfinished, since a requeued job passes through it, and would wait
    forever; such a job has left the queue, where a requeued one waits as PENDING."""
    return job.state.upper() == "PREEMPTED" and not slurm_job_state(job.job_id)


def slurm_job_state(job_id: str) -> str:
    """Slurm's state of a job that is still queued or running ("PENDING", "RUNNING", ...), "" for one
    that ended or that Slurm no longer knows (or where there is no Slurm)."""
    if shutil.which("squeue") is None:
        return ""
    answer = subprocess.run(
        ["squeue", "--noheader", "--jobs", job_id, "--format", "%T"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    states = answer.stdout.split() if answer.returncode == 0 else []
    return states[0] if states else ""


def _one_line(error: BaseException) -> str:
    """The last non-empty line of an error (sbatch's message, a job's final exception)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


# ------------------------------------------------------------------------------------------------ ray
def _ray_trainable(config: dict) -> None:
    from ray import tune

    os.chdir(config["cwd"])  # relative data paths are relative to where the sweep was launched
    metrics = run_job(config["spec"], stop_signals=())  # Ray runs trials in threads: no signal handlers
    tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})


def start_ray(address: str = "") -> None:
    """Connect to the Ray cluster at `address`, or start a local one; a SubmissionError when there is
    no cluster there."""
    import ray

    _probe_ray(address)
    try:
        if address:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        else:
            # "local": a new Ray here even where `ray start` or RAY_ADDRESS names another
            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                ignore_reinit_error=True,
                log_to_driver=False,
            )
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise SubmissionError(
            f"Ray: no cluster at {address or 'a new local Ray'}: {_one_line(error)}"
        ) from error


def _probe_ray(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds when nothing listens at a `host:port` address (ray.init would retry for a minute)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():  # "", "auto", ...: Ray resolves those itself
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise SubmissionError(f"Ray: no cluster answers at {address} ({error.strerror or error})") from error


def trial_cpus(node_cpus: Sequence[float], max_parallel: int) -> int:
    """CPUs of one trial: the cluster's share of `max_parallel` trials at once, but no more than its
    largest node has (Ray places a trial on one node; a larger request waits forever, silently)."""
    share = int(sum(node_cpus)) // max_parallel
    return max(1, min(share, int(max(node_cpus, default=1))))


def run_ray(cfgs: Sequence[Config], sweep: str, max_parallel: int, gpus: float = 0) -> list[str]:
    """The runs as a Tune grid on the Ray that `start_ray` connected to; shuts Ray down at the end."""
    import ray
    from ray import tune

    try:
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        per_trial = {"cpu": trial_cpus([node.get("CPU", 0) for node in nodes], max_parallel), "gpu": gpus}
        cluster_gpus = sum(node.get("GPU", 0) for node in nodes)
        if cluster_gpus and not gpus:
            print(f"Ray: the cluster has {cluster_gpus:g} GPUs and --gpus-per-run is 0: runs train on CPUs")
        tuner = tune.Tuner(
            tune.with_resources(_ray_trainable, per_trial),
            param_space={"spec": tune.grid_search([to_dict(c) for c in cfgs]), "cwd": str(Path.cwd())},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_parallel),
            run_config=tune.RunConfig(  # Ray's own trial records, beside the runs' folders
                name=sweep,
                storage_path=str(Path(cfgs[0].logging.output_dir).resolve() / "ray"),
                verbose=0,
            ),
        )
        grid = tuner.fit()
        by_identity = {run_identity(config_from_dict(r.config["spec"])): r for r in grid}
        errors = []
        for cfg in cfgs:
            result = by_identity.get(run_identity(cfg))
            ok = result is not None and result.error is None
            errors.append(
                "" if ok else _one_line(getattr(result, "error", None) or RuntimeError("no result"))
            )
        return errors
    finally:
        ray.shutdown()
