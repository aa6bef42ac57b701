"""Does IFR keep one instance per query across frames better than Mask2Former-VIS? Figures from the
finished runs of one or more sweeps (benchmarks/README.md, "Consistency experiment, second protocol").

    .venv/bin/python benchmarks/consistency.py consistency consistency-crossing [--out results/consistency]

Per run (grouped by decoder, data set and the training settings `SETTINGS`: class head, IFR's start,
clip length, iterations, λ_e; mean ± std over seeds):
- the logged AP and the paper's tracking metrics IDF1, IDs, MOTA, IDP, IDR, with HOTA, DetA and AssA
  (predictions with score >= 0.5: descriptive, each head's number of tracks follows its score scale);
- the tracking figures on the `TOP_K` highest-scoring predictions of every video (`*@5`), for every arm
  alike: no score threshold and no ground truth choose the tracks. The primary endpoint is `switch
  rate@5`, the ID switches per 100 ground-truth boxes matched;
- the same on as many predictions per video as it has ground-truth instances (`*@N`): a diagnostic, as
  the count comes from the ground truth;
- identity consistency from the run's checkpoint on its validation split (quality_diagnostics.py):
  the share of ground-truth instances that ONE query covers at video IoU >= 0.5 ("single query"),
  against the share covered at IoU >= 0.5 in the mean over frames by the best query of each frame
  ("stitched");
- IDF1, HOTA, IDs and recall against the score threshold (`THRESHOLDS`), so that no conclusion hangs on
  one threshold (`thresholds.png`);
- the gradient norm reaching IFR's Eq. 2-3 blocks (`frame_*`) and its clip update (`temporal_cross_attn`,
  `clip_*`) at the first and the last logged step (`grad_norm/<block>`).
The protocol's contrasts (`CONTRASTS`) between arms trained alike (same data, clip length and
iterations): difference of means over seeds with a 95 % Welch interval and exact permutation p
(unpaired: analysis.comparisons.PAIRING says why). Holm's correction runs over the primary endpoint of
the primary contrasts on every data set (one family); the secondary endpoints (`SECONDARY`) are Holm-
corrected within each contrast. Writes `consistency.md` (two tables, then the comparisons in words),
`consistency_runs.csv` (one row per run: settings, seed, identity, MLflow run, every figure as computed,
the machine it logged), `consistency_comparisons.csv`, `thresholds.png`, `grad_norms.png` and, where
runs differ only in their iterations, `budget.png` (the `BUDGET` figures against the clip stage's
length). A run's figures are kept in its folder (`consistency.json`) and read back next time.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import sys
from collections import Counter
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # analysis/
import quality_diagnostics  # noqa: E402
from quality_diagnostics import diagnose, load_trained  # noqa: E402

from analysis.comparisons import PAIRING, compare_groups, comparison_block  # noqa: E402
from analysis.parts import with_prior  # noqa: E402
from analysis.stats import holm  # noqa: E402
from ifrvis import inference, run_folder, runstore  # noqa: E402
from ifrvis.cli import ArgumentParser, existing_file  # noqa: E402
from ifrvis.config import config_from_dict  # noqa: E402
from ifrvis.data.splits import load_splits  # noqa: E402
from ifrvis.evaluation import tracking, tracking_metrics  # noqa: E402
from ifrvis.metric_names import scale  # noqa: E402

LOGGED = ("AP", "IDF1", "IDs", "MOTA", "IDP", "IDR", "HOTA", "DetA", "AssA")
MATCHED = ("IDF1", "IDs", "switch rate", "MOTA", "HOTA", "DetA", "AssA")
IFR_BLOCKS = ("frame_cross_attn", "frame_self_attn", "frame_ffn", "temporal_cross_attn", "clip_self_attn")
# The primary endpoint's tracks: every video's TOP_K best predictions, for every arm. 5 is the most
# instances a synthetic video holds (ifrvis synth), fixed before any run of the second protocol.
TOP_K = 5
# Score thresholds of the curves; the tracking figures on each run's tracks with score >= threshold.
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
CURVES = ("IDF1", "HOTA", "IDs", "recall")
# Rows are grouped by decoder, data and these training settings (header label: config key).
SETTINGS = {
    "head": "loss.class_loss",
    "start": "model.ifr_init",
    "train T": "data.clip_length",
    "iters": "solver.max_iters",
    "λ_e": "loss.lambda_e",
}
GROUP = ["method", "dataset", *SETTINGS]
ALIKE = ["dataset", "train T", "iters"]  # what two arms share to be compared
ARM = ["method", "head", "start", "λ_e"]  # what tells the arms of one setting apart
PRIMARY = f"switch rate@{TOP_K}"
SECONDARY = (f"AssA@{TOP_K}", "single_query", f"DetA@{TOP_K}", "AP")
BUDGET = (PRIMARY, "AP", f"AssA@{TOP_K}", "single_query")
RATIO = "single / stitched"
# Arms as (method, head, IFR's start, λ_e as text); "-" where the decoder has no such setting.
IFR = ("ifr", "focal", "random", "0.3")
IFR_WARM = ("ifr", "focal", "checkpoint", "0.3")
M2F_FOCAL = ("mask2former", "focal", "-", "-")
M2F_VIS = ("mask2former", "softmax", "-", "-")
ARMS = {
    IFR: "IFR",
    IFR_WARM: "IFR-warm",
    M2F_FOCAL: "M2F-focal",
    M2F_VIS: "M2F-VIS",
    ("ifr", "focal", "random", "0"): "IFR λ_e=0",
}
# The protocol's contrasts: (name, arm a, arm b, primary), a - b. The primary ones form the family of
# Holm's correction of the primary endpoint, over every data set.
CONTRASTS = (
    ("recurrence, the paper's start", IFR, M2F_FOCAL, True),
    ("recurrence, warm start", IFR_WARM, M2F_FOCAL, True),
    ("IFR's start, random - warm", IFR, IFR_WARM, True),
    ("published baseline", IFR, M2F_VIS, False),
)
# Display factors of this benchmark's own figures; the logged metrics' are ifrvis.metric_names'.
OWN_SCALE = {"switch rate": 1.0, "single_query": 100.0, "stitched": 100.0, RATIO: 1.0, "recall": 100.0}
RUN_COLUMNS = ("config", "run_identity", "git_commit")


def run_rows(sweeps: list[str], uri: str) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row per FINISHED run of `sweeps` (each run once), and each run's grad-norm history."""
    frames = [runstore.load_sweep(sweep, uri=uri).runs for sweep in sweeps]
    runs = pd.concat(frames, ignore_index=True).drop_duplicates("run_id")
    runs = runs[runs["status"] == "FINISHED"]
    mlflow = runstore.client(uri)
    rows, histories = [], {}
    for _, run in runs.iterrows():
        run_dir = Path(run["run_dir"])
        cfg = config_from_dict(yaml.safe_load((run_dir / run_folder.CONFIG).read_text()), str(run_dir))
        row = {"method": run["method"], "dataset": run["dataset"]}
        row |= {label: setting(cfg, key) for label, key in SETTINGS.items()}
        # text, one type in the column: "-" where the decoder has no cross-frame masks to weigh (Eqs. 6-7)
        ifr = cfg.model.decoder == "ifr"
        row["λ_e"] = f"{float(row['λ_e']):g}" if ifr else "-"
        row["start"] = row["start"] if ifr else "-"  # IFR's recurrent blocks only
        row |= {"seed": run["seed"], "run_id": run["run_id"], "run_dir": str(run_dir)}
        row |= {key: run.get(key) for key in RUN_COLUMNS}
        row |= {key.removeprefix("tags."): run[key] for key in run.index if key.startswith("tags.env.")}
        row |= {key: run.get(f"metrics.{key}", np.nan) for key in LOGGED}
        row |= run_figures(cfg, run_dir)
        row["curves"] = json.dumps(row["curves"])  # one cell of the per-run CSV
        row[RATIO] = row["single_query"] / row["stitched"] if row["stitched"] > 0 else np.nan
        history = grad_history(mlflow, run["run_id"])
        for block in IFR_BLOCKS if not history.empty and IFR_BLOCKS[0] in history else ():
            row[f"grad_first/{block}"], row[f"grad_last/{block}"] = history[block].iloc[[0, -1]]
        histories[run["run_id"]] = history
        rows.append(row)
        print(f"{run['run_name']}: single query {row['single_query']:.2f}, stitched {row['stitched']:.2f}")
    return pd.DataFrame(rows), histories


def run_figures(cfg, run_dir: Path) -> dict:
    """The decomposition, the top-k and matched-count tracking figures and the threshold curves of a
    finished run, computed once and kept in `<run_dir>/consistency.json` (its checkpoint and results no
    longer change) with the digest of the code that computed each group (`figure_code`); a group the file
    lacks, or computed by other code, is computed again."""
    cache = run_dir / "consistency.json"
    figures = json.loads(cache.read_text()) if cache.is_file() else {}
    code, kept = figure_code(), figures.pop("code", {})
    keys = {
        "oracle": {"single_query", "stitched"},
        "tracks": {f"{key}@{n}" for key in MATCHED for n in ("N", TOP_K)},
        "curves": {"curves"},
    }
    stale = {
        group
        for group, names in keys.items()
        if not names <= figures.keys() or kept.get(group) != code[group]
    }
    if not stale:
        return figures
    _, valid = load_splits(cfg.data)
    if "oracle" in stale:
        oracle = diagnose(load_trained(cfg, run_dir / run_folder.CHECKPOINT), valid, cfg)
        figures["single_query"] = oracle["oracle_video_iou_over_0.5"]
        figures["stitched"] = oracle["oracle_per_frame_iou_over_0.5"]
    results = json.loads((run_dir / run_folder.RESULTS).read_text())
    if "tracks" in stale:
        figures |= matched_count_figures(valid.raw, results)
        figures |= top_k_figures(valid.raw, results)
    if "curves" in stale:
        figures["curves"] = threshold_curves(valid.raw, results)
    cache.write_text(json.dumps({**figures, "code": code}, indent=1) + "\n")
    return figures


def figure_code() -> dict[str, str]:
    """Per group of cached figures, a digest of the source of the code that computes it: the tracking
    metrics and this script's track selection; the oracle's diagnosis and inference."""
    sources = {
        "oracle": (quality_diagnostics, inference),
        "tracks": (
            tracking,
            figures_on,
            matched_count_figures,
            top_k_figures,
            instance_counts,
            top_per_video,
        ),
        "curves": (tracking, threshold_curves),
    }
    return {
        group: hashlib.sha256("".join(map(inspect.getsource, parts)).encode()).hexdigest()[:16]
        for group, parts in sources.items()
    }


def figures_on(gt: dict, results: list[dict], suffix: str) -> dict:
    """`tracking_metrics` of all of `results` (no threshold), keys suffixed `@<suffix>`; `switch rate`
    is the ID switches per 100 matched ground-truth boxes (num_objects - FN), so that a method that
    matches fewer boxes is not credited for the switches it had no chance to make."""
    matched = tracking_metrics(gt, results, 0.0)
    figures = {f"{key}@{suffix}": float(matched[key]) for key in MATCHED if key != "switch rate"}
    hits = matched["num_objects"] - matched["FN"]
    figures[f"switch rate@{suffix}"] = 100 * matched["IDs"] / hits if hits else float("nan")
    return figures


def matched_count_figures(gt: dict, results: list[dict]) -> dict:
    """`figures_on` each video's as many best predictions as it has ground-truth instances (`@N`)."""
    return figures_on(gt, top_per_video(results, instance_counts(gt)), "N")


def top_k_figures(gt: dict, results: list[dict], k: int = TOP_K) -> dict:
    """`figures_on` each video's `k` best predictions (`@k`): the same number of tracks for every arm,
    chosen by neither a score threshold nor the ground truth."""
    videos = {video["id"] for video in gt["videos"]}
    return figures_on(gt, top_per_video(results, Counter(dict.fromkeys(videos, k))), str(k))


def threshold_curves(gt: dict, results: list[dict]) -> dict[str, list[float]]:
    """`CURVES` on the predictions with score >= t for each t of `THRESHOLDS`; recall is the share of
    ground-truth boxes matched (1 - FN / num_objects)."""
    curves: dict[str, list[float]] = {name: [] for name in CURVES}
    for threshold in THRESHOLDS:
        figures = tracking_metrics(gt, results, threshold)
        objects = figures["num_objects"]
        for name in ("IDF1", "HOTA", "IDs"):
            curves[name].append(float(figures[name]))
        curves["recall"].append(1 - figures["FN"] / objects if objects else float("nan"))
    return curves


def display_scale(column: str) -> float:
    """Factor from a figure as computed to the tables' unit (x100 for fractions, 1 for counts and
    the switch rate per 100 matched boxes)."""
    name = column.split("@")[0]
    return OWN_SCALE[name] if name in OWN_SCALE else scale(name)


def setting(cfg, key: str):
    """The value of dotted config `key` in `cfg`."""
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def instance_counts(gt: dict) -> Counter:
    """Ground-truth instances per video id of a YouTube-VIS annotation dict."""
    return Counter(ann["video_id"] for ann in gt["annotations"])


def top_per_video(results: list[dict], counts: Counter) -> list[dict]:
    """The `counts[video]` highest-scoring predictions of each video (official results format); ties
    keep the results' order."""
    ranked = sorted(results, key=lambda res: -res["score"])
    kept: Counter = Counter()
    selected = []
    for res in ranked:
        if kept[res["video_id"]] < counts[res["video_id"]]:
            kept[res["video_id"]] += 1
            selected.append(res)
    return selected


def grad_history(mlflow, run_id: str) -> pd.DataFrame:
    """`grad_norm/<part>` of a run by step: one column per part."""
    run = mlflow.get_run(run_id)
    series = {}
    for key in (k for k in run.data.metrics if k.startswith("grad_norm/")):
        points = sorted((m.step, m.value) for m in mlflow.get_metric_history(run_id, key))
        series[key.split("/", 1)[1]] = pd.Series(dict(points))
    return pd.DataFrame(series)


def summary_table(rows: pd.DataFrame) -> str:
    """Markdown, one line per group: mean ± std over its seeds. The logged figures with the
    decomposition, then the tracking figures at matched count."""
    return "\n\n".join(
        (
            _table(rows, [*LOGGED, "single_query", "stitched"], ratio=True),
            _table(rows, [f"{key}@{TOP_K}" for key in MATCHED], ratio=False),
            _table(rows, [f"{key}@N" for key in MATCHED], ratio=False),
        )
    )


def _table(rows: pd.DataFrame, columns: list[str], ratio: bool) -> str:
    header = ["method", "data", *SETTINGS, "n", *columns] + [RATIO] * ratio
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, group in rows.groupby(GROUP):
        cells = [_mean_std(group[c], display_scale(c)) for c in columns]
        if ratio:
            cells.append(_mean_std(group[RATIO], 1, ".2f"))
        lines.append(f"| {' | '.join(map(str, key))} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_std(values: pd.Series, scale: float, spec: str = ".1f") -> str:
    values = values.astype(float).dropna() * scale
    if values.empty:
        return "-"
    std = f" ± {values.std(ddof=1):{spec}}" if len(values) > 1 else ""
    return f"{values.mean():{spec}}{std}"


def arm_label(arm: tuple) -> str:
    method, head, start, lambda_e = arm
    return ARMS.get(arm, f"{method} {head} {start} λ_e={lambda_e}")


def comparisons(rows: pd.DataFrame) -> pd.DataFrame:
    """Each of `CONTRASTS` whose two arms were trained alike (data, train T, iters), on `PRIMARY` and
    `SECONDARY` in the tables' units: `contrast`, `family`, those three settings, then
    analysis.comparisons.COLUMNS. `p_holm`: Holm over the primary endpoint of every primary contrast on
    every setting (family "primary"); over the secondary endpoints within a contrast ("secondary", with
    every endpoint of a non-primary contrast)."""
    frames = []
    for key, setting_rows in rows.groupby(ALIKE):
        arms = {arm: runs for arm, runs in setting_rows.groupby(ARM)}
        for name, a, b, primary in CONTRASTS:
            if a not in arms or b not in arms:
                continue
            groups = [(arm_label(a), _display(arms[a])), (arm_label(b), _display(arms[b]))]
            families = [("primary", [PRIMARY]), ("secondary", list(SECONDARY))]
            if not primary:
                families = [("secondary", [PRIMARY, *SECONDARY])]
            for family, endpoints in families:
                frame = compare_groups(groups, endpoints, [(0, 1)])
                settings = {"contrast": name, "family": family, **dict(zip(ALIKE, key))}
                frames.append(frame.assign(**settings)[[*settings, *frame.columns]])
    if not frames:
        return pd.DataFrame()
    compared = pd.concat(frames, ignore_index=True)
    primary = compared["family"] == "primary"
    compared.loc[primary, "p_holm"] = holm(compared.loc[primary, "p"].tolist())
    return compared


def _display(runs: pd.DataFrame) -> pd.DataFrame:
    """`seed` and each endpoint of `runs` in the tables' units."""
    endpoints = [PRIMARY, *SECONDARY]
    return pd.DataFrame(
        {"seed": runs["seed"], **{c: runs[c].astype(float) * display_scale(c) for c in endpoints}}
    )


def comparison_text(frame: pd.DataFrame) -> str:
    """The comparisons as Markdown blocks, one per training setting and contrast, with the pairing note
    and the families of Holm's correction."""
    if frame.empty:
        return "No comparison: no two arms of the protocol's contrasts trained alike."
    tests = int((frame["family"] == "primary").sum())
    blocks = [
        PAIRING[False],
        f"p (Holm): the primary endpoint ({PRIMARY}) over its {tests} tests (primary contrasts x data "
        "sets); the secondary endpoints within each contrast.",
    ]
    for key, group in frame.groupby(["contrast", *ALIKE], sort=False):
        title = f"{key[0]}: " + ", ".join(f"{column} {value}" for column, value in zip(ALIKE, key[1:]))
        table = group.drop(columns=["contrast", "family", *ALIKE]).reset_index(drop=True)
        blocks.append(f"### {title}\n\n" + comparison_block(table))
    return "\n\n".join(blocks)


def threshold_figure(rows: pd.DataFrame, path: Path) -> None:
    """`CURVES` against the score threshold: one row of panels per data set, one line per arm (mean over
    its seeds), at each data set's largest budget."""
    datasets = sorted(rows["dataset"].unique())
    fig, axes = plt.subplots(len(datasets), len(CURVES), figsize=(4 * len(CURVES), 3.2 * len(datasets)))
    axes = np.atleast_2d(axes)
    for axes_row, dataset in zip(axes, datasets):
        runs = rows[rows["dataset"] == dataset]
        runs = runs[runs["iters"] == runs["iters"].max()]
        for arm, group in runs.groupby(ARM):
            curves = [json.loads(c) for c in group["curves"]]
            for ax, name in zip(axes_row, CURVES):
                mean = np.nanmean([curve[name] for curve in curves], axis=0) * display_scale(name)
                ax.plot(THRESHOLDS, mean, marker=".", label=f"{arm_label(arm)} (n={len(curves)})")
        for ax, name in zip(axes_row, CURVES):
            unit = "count" if name == "IDs" else "%"
            ax.set(title=f"{name}, {dataset}", xlabel="score threshold", ylabel=unit)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def grad_figure(rows: pd.DataFrame, histories: dict[str, pd.DataFrame], path: Path) -> None:
    """IFR's block gradient norms over training, mean over the seeds of each group."""
    ifr = rows[rows["method"] == "ifr"]
    groups = list(ifr.groupby(["dataset", *SETTINGS]))
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(5 * max(len(groups), 1), 3.5), squeeze=False)
    for ax, (key, group) in zip(axes[0], groups):
        for block in IFR_BLOCKS:
            curves = [histories[r][block] for r in group["run_id"] if block in histories.get(r, {})]
            if curves:
                mean = pd.concat(curves, axis=1).mean(axis=1)
                ax.plot(mean.index, mean.values, label=block)
        title = ", ".join([key[0], *(f"{label} {value}" for label, value in zip(SETTINGS, key[1:]))])
        ax.set(title=f"IFR, {title}", xlabel="iteration", ylabel="gradient L2 norm")
        ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def budget_curves(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per group of runs alike but for `iters`, with two budgets or more: mean and std over seeds of the
    `BUDGET` figures by iterations (switch rate per 100 matched boxes, the rest in %). Keyed by a label
    naming the group's arm (`ARMS`) and, where groups differ in them, its data and clip length."""
    others = [column for column in GROUP if column != "iters"]
    groups = [(dict(zip(others, key)), g) for key, g in rows.groupby(others) if g["iters"].nunique() > 1]
    varies = {column: len({key[column] for key, _ in groups}) > 1 for column in others}
    curves = {}
    for key, group in groups:
        named = [arm_label(tuple(key[column] for column in ARM))]
        named += [str(key["dataset"])] * varies["dataset"]
        named += [f"train T {key['train T']}"] * varies["train T"]
        scaled = group[["iters", *BUDGET]].astype(float)
        for metric in BUDGET:
            scaled[metric] *= display_scale(metric)
        curves[", ".join(named)] = scaled.groupby("iters").agg(["mean", "std"])
    return curves


def budget_figure(curves: dict[str, pd.DataFrame], path: Path) -> None:
    """`budget_curves` drawn: one panel per figure, one line per group, ± one std over seeds."""
    fig, axes = plt.subplots(1, len(BUDGET), figsize=(4 * len(BUDGET), 3.5))
    for ax, metric in zip(axes, BUDGET):
        for label, curve in curves.items():
            mean, std = curve[metric]["mean"], curve[metric]["std"].fillna(0)
            ax.errorbar(mean.index, mean.values, yerr=std.values, marker="o", capsize=3, label=label)
        unit = "per 100 matched boxes" if metric.startswith("switch") else "%"
        ax.set(title=metric, xlabel="clip iterations", ylabel=unit)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def keep_results(rows: pd.DataFrame, folder: Path) -> None:
    """Each run's `results.json` gzipped as `<config>-s<seed>-<identity>.json.gz` in `folder`, beside the
    per-run CSV: any endpoint can be recomputed from the committed files."""
    folder.mkdir(parents=True, exist_ok=True)
    for _, row in rows.iterrows():
        results = (Path(row["run_dir"]) / run_folder.RESULTS).read_bytes()
        name = f"{row['config']}-s{row['seed']}-{row['run_identity']}.json.gz"
        (folder / name).write_bytes(gzip.compress(results, mtime=0))  # mtime 0: the same file on a rerun


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="+")
    parser.add_argument("--out", type=Path, default=Path("results/consistency"))
    parser.add_argument(
        "--prior",
        type=existing_file,
        nargs="*",
        default=[],
        help="per-run CSVs of the experiment's earlier parts",
    )
    parser.add_argument(
        "--interim", action="store_true", help="runs so far: rows, results and tables, no tests"
    )
    args = parser.parse_args(argv)
    rows, histories = run_rows(args.sweeps, runstore.resolve_uri())
    if rows.empty and not args.prior:
        print(f"no finished runs in sweeps {args.sweeps}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    if not rows.empty:
        keep_results(rows, args.out / "results")
    rows = with_prior(rows, args.prior, text=tuple(ARM)) if args.prior else rows.drop(columns="run_dir")
    compared = comparisons(rows) if not args.interim else pd.DataFrame()
    tests = (
        f"Interim: {len(rows)} finished runs; the protocol's tests run when every cell has its seeds."
        if args.interim
        else comparison_text(compared)
    )
    table = summary_table(rows) + "\n\n" + tests
    (args.out / "consistency.md").write_text(table + "\n")
    rows.to_csv(args.out / "consistency_runs.csv", index=False)
    if not args.interim:
        compared.to_csv(args.out / "consistency_comparisons.csv", index=False)
    grad_figure(rows, histories, args.out / "grad_norms.png")
    threshold_figure(rows, args.out / "thresholds.png")
    curves = budget_curves(rows)
    if curves:
        budget_figure(curves, args.out / "budget.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
