"""Load a sweep's runs from MLflow into pandas and audit them before anything is averaged.

    runs = load_runs("table1")                       # one row per run, params/tags cast
    audit = audit_runs(runs, seeds=5, metrics=["AP"]) # FINISHED, de-duplicated runs + problems
    for line in audit.warnings: print(line)

Only FINISHED runs with the metrics present enter averages. FAILED / unfinished runs, duplicates
(several FINISHED runs with one `run_identity`: the latest is kept), runs without the metrics and
groups with fewer seeds than asked are all reported in `audit.warnings`, never silently dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import mlflow
import pandas as pd

from ifrvis.tracking import resolve_uri

BASE_GROUP_KEYS = ("method", "backbone", "dataset")
# Tags every training run carries (docs/architecture.md, "Runs and MLflow").
RUN_TAGS = ("sweep", "method", "backbone", "dataset", "seed", "lambda_e", "config_hash", "run_identity")


def tracking_uri(uri: str = "") -> str:
    """`uri`, else $MLFLOW_TRACKING_URI, else the absolute SQLite file in the project folder."""
    return resolve_uri(uri or os.environ.get("MLFLOW_TRACKING_URI", ""))


def cast_value(text: object) -> object:
    """An MLflow param/tag string -> int, float, bool or None where it reads as one, else unchanged."""
    if not isinstance(text, str):
        return text
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def load_runs(sweep: str, experiment: str = "ifrvis", uri: str = "") -> pd.DataFrame:
    """All runs of `experiment` tagged `sweep=<sweep>`, without the sweep's parent run.

    Columns: `run_id`, `status`, `start_time`, `end_time`, the tags of RUN_TAGS as plain columns
    (`seed` int, `lambda_e` float), `metrics.*` (float) and `params.*` (cast from strings).
    An unknown experiment or a sweep without runs gives an empty frame with those columns."""
    mlflow.set_tracking_uri(tracking_uri(uri))
    frame = mlflow.search_runs(
        experiment_names=[experiment], filter_string=f"tags.sweep = '{sweep}'", output_format="pandas"
    )
    frame = frame.copy()
    for column in ("run_id", "status", "start_time", "end_time"):
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    if "tags.sweep_parent" in frame:
        frame = frame[frame["tags.sweep_parent"].fillna("0").astype(str) != "1"]
    for tag in RUN_TAGS:
        column = f"tags.{tag}"
        frame[tag] = frame[column] if column in frame else pd.Series(dtype=object)
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    frame["lambda_e"] = pd.to_numeric(frame["lambda_e"], errors="coerce")
    for column in [c for c in frame.columns if c.startswith("params.")]:
        frame[column] = frame[column].map(cast_value).astype(object)
    return frame.reset_index(drop=True)


@dataclass
class RunAudit:
    """The runs fit for averaging and what was left out of them, in words."""

    runs: pd.DataFrame  # FINISHED, one per run_identity, with the metrics present
    group_keys: list[str]
    seeds_asked: int
    warnings: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # run ids left out of every average
    seeds_per_group: dict[tuple, list[int]] = field(default_factory=dict)

    def caption_notes(self) -> list[str]:
        """Short caption notes, one per group whose seed count differs from the one asked (e.g. 'n=4')."""
        return [
            f"{' / '.join(str(v) for v in key)}: n={len(seeds)}"
            for key, seeds in self.seeds_per_group.items()
            if len(seeds) != self.seeds_asked
        ]


def group_keys_for(runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(method, backbone, dataset), plus `lambda_e` when it separates configs that share a group, plus
    `config_hash` when configs still collide. Returns (keys, warnings about the added keys)."""
    keys = list(BASE_GROUP_KEYS)
    warnings = []
    if runs.empty:
        return keys, warnings
    for extra in ("lambda_e", "config_hash"):
        hashes = runs.groupby(keys, dropna=False)["config_hash"].nunique()
        mixed = hashes[hashes > 1]
        if mixed.empty:
            break
        keys.append(extra)
        if extra == "config_hash":
            groups = ", ".join(" / ".join(map(str, key)) for key in mixed.index)
            warnings.append(
                f"WARNING: several configs (config_hash) share a row group ({groups}): "
                "rows are split by config_hash; check which settings differ"
            )
    return keys, warnings


def _group_label(keys: list[str], values: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values))


def audit_runs(runs: pd.DataFrame, seeds: int, metrics: list[str]) -> RunAudit:
    """Keep the FINISHED runs with every `metrics.<m>` present, one per run_identity (the latest), and
    report every run or seed left out. `seeds` is the number of seeds each row should average."""
    keys, warnings = group_keys_for(runs)
    excluded: list[str] = []
    runs = runs.assign(start_time=pd.to_datetime(runs["start_time"], utc=True))
    for status, group in runs[runs["status"] != "FINISHED"].groupby("status"):
        for _, run in group.iterrows():
            error = run.get("tags.error")
            reason = f": {error}" if isinstance(error, str) and error else ""
            warnings.append(
                f"WARNING: {status} run {run['run_id']} ({_group_label(keys, tuple(run[keys]))}, "
                f"seed={run['seed']}) excluded{reason}"
            )
            excluded.append(run["run_id"])
    finished = runs[runs["status"] == "FINISHED"].sort_values("start_time", ascending=False)
    duplicated = finished["run_identity"].duplicated(keep="first") & finished["run_identity"].notna()
    repeated = finished["run_identity"].isin(finished.loc[duplicated, "run_identity"])
    for identity, group in finished[repeated].groupby("run_identity"):
        kept, *dropped = group["run_id"].tolist()
        excluded += dropped
        warnings.append(
            f"WARNING: duplicate runs for run_identity {identity} (seed={group['seed'].iloc[0]}): kept the "
            f"latest {kept}, ignored {', '.join(dropped)}"
        )
    finished = finished[~duplicated]
    metric_columns = [f"metrics.{m}" for m in metrics]
    missing_columns = [c for c in metric_columns if c not in finished]
    if missing_columns:
        finished = finished.assign(**{c: float("nan") for c in missing_columns})
    incomplete = finished[metric_columns].isna().any(axis=1)
    for _, run in finished[incomplete].iterrows():
        absent = [m for m, c in zip(metrics, metric_columns) if pd.isna(run[c])]
        warnings.append(
            f"WARNING: FINISHED run {run['run_id']} ({_group_label(keys, tuple(run[keys]))}, "
            f"seed={run['seed']}) lacks metrics {', '.join(absent)}: excluded"
        )
        excluded.append(run["run_id"])
    kept = finished[~incomplete].sort_values([*keys, "seed"]).reset_index(drop=True)

    seeds_per_group: dict[tuple, list[int]] = {}
    for key, _ in runs.groupby(keys, dropna=False):
        seeds_per_group[key] = []
    for key, group in kept.groupby(keys, dropna=False):
        seeds_per_group[key] = sorted(int(s) for s in group["seed"].dropna())
    for key, present in seeds_per_group.items():
        if len(present) < seeds:
            absent = sorted(set(range(seeds)) - set(present)) if set(present) <= set(range(seeds)) else []
            which = f" (missing seeds {absent})" if absent else ""
            warnings.append(
                f"WARNING: {_group_label(keys, key)} has n={len(present)} of {seeds} seeds{which}: "
                "its mean is over fewer seeds"
            )
        elif len(present) > seeds:
            label = _group_label(keys, key)
            warnings.append(f"WARNING: {label} has n={len(present)} seeds, more than {seeds}")
    return RunAudit(kept, keys, seeds, warnings, excluded, seeds_per_group)
