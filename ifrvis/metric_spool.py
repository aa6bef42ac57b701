"""A run's metric points that the run store did not take, kept in the run's folder until it does.

One JSON line per point, `{"key", "value", "timestamp", "step"}`, appended when a batch fails and
removed once all of them went through (`runstore.RunLogger` does both). Each point keeps its original
timestamp, so sending it again is harmless: MLflow's SQL store keeps one row per identical (key, value,
timestamp, step) of a run, over SQLite and over a tracking server's REST API alike
(tests/test_store_faults.py). A batch whose answer was lost, or a flush cut short, is resent whole.
The file's place in the run folder: `run_folder.metric_spool_path`.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.entities import Metric


def append(path: Path, metrics: list[Metric]) -> None:
    lines = [
        json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step})
        for m in metrics
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as spool:
        spool.write("".join(f"{line}\n" for line in lines))


def read(path: Path) -> list[Metric]:
    """The spooled points, none when there is no file. A line cut short by a killed process is skipped:
    its point is lost, as a batch is when the process dies before sending it."""
    if not path.exists():
        return []
    points = []
    for line in path.read_text().splitlines():
        try:
            point = json.loads(line)
        except json.JSONDecodeError:
            continue
        points.append(
            Metric(point["key"], float(point["value"]), int(point["timestamp"]), int(point["step"]))
        )
    return points


def clear(path: Path) -> None:
    path.unlink(missing_ok=True)
