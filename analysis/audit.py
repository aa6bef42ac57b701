"""Audit a sweep's runs before anything is averaged: which enter, which are left out, and why.

    sweep = runstore.load_sweep("table1")                       # the runs as one frame (ifrvis.runstore)
    audit = audit_runs(sweep.runs, seeds=5, metrics=["AP"], swept_keys=sweep.swept_keys)
    for line in audit.warnings: print(line)

Rows group runs by method x backbone x dataset x the sweep's swept keys, plus whichever settings
still tell configs of one group apart (Swin-L with 100 or 200 queries: `model.num_queries`).
Only FINISHED runs with the metrics present enter averages. FAILED / unfinished runs, duplicates
(several FINISHED runs with one `run_identity`: the latest is kept), runs without the metrics and
groups with fewer seeds than asked are all reported in `audit.warnings`, never silently dropped.
`run_rows` lists the runs that enter the averages, one row each, for the per-run CSV beside a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from ifrvis.config import NON_SEMANTIC_KEYS
from ifrvis.metric_names import UNITS, scale

BASE_GROUP_KEYS = ("method", "backbone", "dataset")
# What tells a run apart and where it ran: tags of the run schema, then the `env.*` tags training logs.
RUN_COLUMNS = ("config", "seed", "run_identity", "run_id", "git_commit")
UNIT_SUFFIX = {"%": "pct", "x100": "x100"}  # display column `<metric>_<suffix>`; counts have none
# a validation split without public ground truth logs no AP: its server scores the run's results.zip
SERVER_HINT = (
    " (scored by an evaluation server? `ifrvis server-scores RUN_ID AP=... --percent` logs its figures)"
)


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


def with_param_columns(runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """`runs` with a plain column `<key>` (from `params.<key>`) for each config key not yet a column."""
    missing = {key: runs[f"params.{key}"] for key in keys if key not in runs and f"params.{key}" in runs}
    return runs.assign(**missing) if missing else runs


def _semantic(param: str) -> bool:
    key = param.removeprefix("params.")
    return not any(key == skip or key.startswith(f"{skip}.") for skip in NON_SEMANTIC_KEYS)


def _mixed_groups(runs: pd.DataFrame, keys: list[str]) -> list[pd.DataFrame]:
    """The groups under `keys` that hold more than one config (config_hash)."""
    return [group for _, group in runs.groupby(keys, dropna=False) if group["config_hash"].nunique() > 1]


def group_keys_for(runs: pd.DataFrame, swept_keys: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(method, backbone, dataset) and the swept keys; then, where configs still share a group, the
    config keys whose values differ inside it (as columns from the params); `config_hash` with a
    warning when nothing else tells them apart. Returns (keys, warnings)."""
    runs = with_param_columns(runs, swept_keys)
    keys = [*BASE_GROUP_KEYS, *(key for key in swept_keys if key in runs)]
    if runs.empty:
        return keys, []
    differing = set()
    for group in _mixed_groups(runs, keys):
        for column in filter(_semantic, (c for c in group.columns if c.startswith("params."))):
            if group[column].astype(str).nunique(dropna=False) > 1:
                differing.add(column.removeprefix("params."))
    keys += sorted(differing)
    mixed = _mixed_groups(with_param_columns(runs, keys), keys)
    if not mixed:
        return keys, []
    labels = ", ".join(" / ".join(map(str, group[list(BASE_GROUP_KEYS)].iloc[0])) for group in mixed)
    return [*keys, "config_hash"], [
        f"WARNING: several configs (config_hash) share a row group ({labels}) and no logged setting "
        "tells them apart: rows are split by config_hash"
    ]


def _group_label(keys: list[str], values: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values))


def audit_runs(
    runs: pd.DataFrame, seeds: int, metrics: list[str], swept_keys: Sequence[str] = ()
) -> RunAudit:
    """Keep the FINISHED runs with every `metrics.<m>` present, one per run_identity (the latest), and
    report every run or seed left out. `seeds` is the number of seeds each row should average;
    `swept_keys` (the sweep's) are row keys."""
    keys, warnings = group_keys_for(runs, swept_keys)
    runs = with_param_columns(runs, keys)
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
            + (SERVER_HINT if "AP" in absent else "")
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


def run_rows(runs: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per run of `runs` (a `load_sweep` frame, e.g. `RunAudit.runs`): the row keys `keys`,
    RUN_COLUMNS, each metric as logged (`<m>_logged`, e.g. AP as a fraction) and in display units
    where they differ (`<m>_pct`: x100, a percentage; `<m>_x100`: x100, no percentage), then the
    machine the run logged (`env.cpu`, `env.threads`, `env.torch`, ...; empty for runs from before
    these tags)."""
    runs = with_param_columns(runs, keys)
    frame = pd.DataFrame({column: runs[column] for column in [*keys, *RUN_COLUMNS] if column in runs})
    for metric in metrics:
        logged = runs.get(f"metrics.{metric}", pd.Series(float("nan"), index=runs.index))
        frame[f"{metric}_logged"] = logged
        if UNITS.get(metric) in UNIT_SUFFIX:
            frame[f"{metric}_{UNIT_SUFFIX[UNITS[metric]]}"] = logged * scale(metric)
    env = sorted(c for c in runs.columns if c.startswith("tags.env."))
    for column in env or ["tags.env.cpu", "tags.env.threads", "tags.env.torch"]:
        frame[column.removeprefix("tags.")] = runs[column] if column in runs else ""
    return frame.reset_index(drop=True)
