"""Rows of a table compared over their seeds: which pairs, one line per pair and metric (difference of
means, 95 % interval, permutation p, Holm across the pair's metrics), and the block printed under a
table, ending in plain words: which differences are distinguishable from seed noise.

    frame = compare_groups([("IFR", ifr_runs), ("Mask2Former", m2f_runs)], ["AP", "AP50"], [(0, 1)])
    print(comparison_block(frame, paired=False))

Groups hold one row per run: a `seed` column and one column per metric, in the unit to compare
(the table's display unit). Arithmetic lives in analysis.stats.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis.stats import compare, holm, smallest_p

ALPHA = 0.05
ALL_PAIRS_UP_TO = 4  # rows; above it each row is compared with a reference row only
COLUMNS = [
    "a", "b", "metric", "n_a", "n_b", "mean_a", "mean_b", "difference", "ci_low", "ci_high",
    "interval", "p", "p_holm", "test", "exact", "relabellings",
]  # fmt: skip
# Why the default test is unpaired, for captions.
PAIRING = {
    False: (
        "Unpaired (seeds relabelled between the two rows): runs of one seed in two rows share the clip "
        "order and frame draws (TrainSampler and ClipDataset are seeded by the run seed), but their "
        "training trajectories part from the first step (between architectures their new layers' "
        "initialisations differ too), so nothing makes their results correlated by seed."
    ),
    True: (
        "Paired by seed (sign flips of the per-seed differences; seeds present in both rows only), "
        "asked for: runs of one seed share the clip order and frame draws."
    ),
}


# The value of a swept key that tables and figures compare the others with (the paper's λ_e).
REFERENCE = {"loss.lambda_e": 0.3}


def reference_row(values_by_key: dict[str, list], keys: list[str]) -> int:
    """Which row the others are compared with: the one holding the REFERENCE value of a key that
    varies between rows, else the first. `values_by_key`: each key's value per row."""
    for key, reference in REFERENCE.items():
        if key in keys and key in values_by_key:
            for index, value in enumerate(values_by_key[key]):
                try:
                    if float(value) == reference:
                        return index
                except (TypeError, ValueError):
                    continue
    return 0


def pairs_for(count: int, reference: int = 0) -> list[tuple[int, int]]:
    """Row pairs to compare among `count` rows: all (i, j), i < j, up to ALL_PAIRS_UP_TO rows, else
    (reference, j) for every other row j."""
    if count <= ALL_PAIRS_UP_TO:
        return [(i, j) for i in range(count) for j in range(i + 1, count)]
    return [(reference, j) for j in range(count) if j != reference]


def pair_rule(count: int, reference_label: str) -> str:
    """`pairs_for`'s rule in words."""
    if count <= ALL_PAIRS_UP_TO:
        return "every pair of rows"
    return f"each row against the reference row {reference_label} (more than {ALL_PAIRS_UP_TO} rows)"


def _seed_values(group: pd.DataFrame, metric: str) -> pd.Series:
    return group.set_index("seed")[metric].astype(float).dropna()


def compare_groups(
    groups: Sequence[tuple[str, pd.DataFrame]],
    metrics: Sequence[str],
    pairs: Sequence[tuple[int, int]],
    paired: bool = False,
) -> pd.DataFrame:
    """One row per (pair, metric), COLUMNS: row a minus row b with analysis.stats.compare, and
    `p_holm`, Holm's correction across the metrics of each pair. Paired: the seeds both rows hold."""
    rows = []
    for i, j in pairs:
        (label_a, group_a), (label_b, group_b) = groups[i], groups[j]
        first = len(rows)
        for metric in metrics:
            a, b = _seed_values(group_a, metric), _seed_values(group_b, metric)
            if paired:
                common = a.index.intersection(b.index)
                a, b = a[common], b[common]
            if len(a) == 0 or len(b) == 0:
                continue
            result = compare(a.to_numpy(), b.to_numpy(), paired=paired)
            rows.append(
                {
                    "a": label_a, "b": label_b, "metric": metric, "n_a": len(a), "n_b": len(b),
                    "mean_a": a.mean(), "mean_b": b.mean(), "difference": result.difference,
                    "ci_low": result.low, "ci_high": result.high,
                    "interval": "paired t 95%" if paired else "Welch t 95%",
                    "p": result.p, "p_holm": float("nan"), "test": result.test(),
                    "exact": result.exact, "relabellings": result.relabellings,
                }
            )  # fmt: skip
        adjusted = holm([row["p"] for row in rows[first:]])
        for row, p_holm in zip(rows[first:], adjusted):
            row["p_holm"] = p_holm
    return pd.DataFrame(rows, columns=COLUMNS)


def _number(value: float, decimals: int = 1) -> str:
    return "–" if pd.isna(value) else f"{value:+.{decimals}f}"


def _named(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "none"
    groups = frame.groupby(["a", "b"], sort=False)
    return "; ".join(f"{a} − {b}: {', '.join(group['metric'])}" for (a, b), group in groups)


def verdict(frame: pd.DataFrame, paired: bool = False) -> str:
    """Plain words: the differences with p < ALPHA before and after Holm, and the smallest p the seeds
    allow (and whether Holm across the metrics lets any difference pass)."""
    if frame.empty:
        return "No comparison: fewer than two rows with runs."
    metrics = frame.groupby(["a", "b"], sort=False)["metric"].count().max()
    words = (
        f"Distinguishable from seed noise at p < {ALPHA}: unadjusted, {_named(frame[frame['p'] < ALPHA])}; "
        f"after Holm across the {metrics} metrics of each pair, {_named(frame[frame['p_holm'] < ALPHA])}."
    )
    limits = []
    for (n_a, n_b, exact), group in frame.groupby(["n_a", "n_b", "exact"], sort=False):
        sizes = f"{n_a} paired seeds" if paired else f"n = {n_a} vs {n_b} seeds"
        if exact:
            numerator, denominator = smallest_p(n_a, n_b, paired)
            text = f"with {sizes} the smallest attainable exact p is {numerator}/{denominator}"
        else:  # random relabellings: the observed one is always counted
            numerator, denominator = 1, int(group["relabellings"].max())
            text = f"with {sizes} the random relabellings give p >= {numerator}/{denominator}"
        floor = numerator / denominator
        text += f" = {floor:.2g}"
        if metrics * floor >= ALPHA:
            text += f" ({metrics} x that = {metrics * floor:.2g} after Holm: no difference can pass)"
        limits.append(text)
    limit = "; ".join(limits)
    return f"{words} {limit[0].upper()}{limit[1:]}."


def comparison_block(frame: pd.DataFrame, paired: bool = False, decimals: int = 1) -> str:
    """Markdown under a table: one line per pair and metric, then `verdict`."""
    if frame.empty:
        return verdict(frame, paired)
    metrics = frame["metric"].nunique()
    tests = "; ".join(frame["test"].unique())
    lines = [
        f"**Comparisons** (a − b in the table's units; {frame['interval'].iloc[0]} interval; p: "
        f"two-sided permutation test over seeds, {tests}; Holm across the {metrics} metrics of each pair).",
        "",
        "| a − b | metric | difference | 95 % CI | p | p (Holm) |",
        "|---|---|---|---|---|---|",
    ]
    for _, row in frame.iterrows():
        interval = f"[{_number(row['ci_low'], decimals)}, {_number(row['ci_high'], decimals)}]"
        lines.append(
            f"| {row['a']} − {row['b']} | {row['metric']} | {_number(row['difference'], decimals)} | "
            f"{interval} | {row['p']:.2g} | {row['p_holm']:.2g} |"
        )
    return "\n".join([*lines, "", verdict(frame, paired)])
