"""One run's folder on disk, `<output_dir>/<config name>-<identity>/`, and the names of what it holds:
the one owner of that layout for the trainer, the launchers, the run store, analysis/ and benchmarks/.
Torch-free (standard library and ifrvis.config only): readers of the store import it without torch.
The run's MLflow record (name, tags, statuses) is `ifrvis.runstore`'s.

    <run_dir>/config.yaml         the run's full config (CONFIG)
              categories.json     the training annotations' categories, for predictions (CATEGORIES)
              checkpoint.pt       the latest checkpoint, written atomically (CHECKPOINT)
              train.log           stdout and stderr of every job of the run, appended (LOG)
              weights_report.txt  what `model.weights` gave the model (WEIGHTS_REPORT)
              metrics.json        the final metrics (METRICS)
              results.json        predictions in the YouTube-VIS results format (RESULTS), and
              results.zip         the same zipped for the evaluation servers (RESULTS_ZIP)
              vis/                strips of predicted masks (VIS)
              metric_spool-<run id>.jsonl   metric points the store did not take yet (metric_spool_path)
"""

from __future__ import annotations

from pathlib import Path

from ifrvis.config import Config, run_identity

CONFIG = "config.yaml"
CATEGORIES = "categories.json"
CHECKPOINT = "checkpoint.pt"
LOG = "train.log"
WEIGHTS_REPORT = "weights_report.txt"
METRICS = "metrics.json"
RESULTS = "results.json"
RESULTS_ZIP = "results.zip"
VIS = "vis"


def run_dir(cfg: Config) -> Path:
    """`<output_dir>/<name>-<identity>`: checkpoints, results and logs of one run. The name is there for
    reading only: a run is found by its identity, so a config of another name asking for the same
    computation (a renamed config, a run shared by two sweeps) uses the folder that already exists."""
    output_dir = Path(cfg.logging.output_dir).resolve()
    identity = run_identity(cfg)
    existing = sorted(output_dir.glob(f"*-{identity}"))
    return existing[0] if existing else output_dir / f"{cfg.name}-{identity}"


def metric_spool_path(folder: Path, run_id: str) -> Path:
    """The spool of MLflow run `run_id` in a run folder (ifrvis.metric_spool): the run id in the name, so
    that a new run of the folder never sends an earlier run's points."""
    return Path(folder) / f"metric_spool-{run_id}.jsonl"


def checkpoint_path(cfg: Config) -> Path:
    return run_dir(cfg) / CHECKPOINT
