"""The names of the metrics a run logs, and how they are displayed: one owner for the run logger
(ifrvis.engine.evaluate), `ifrvis eval`, the tables (analysis/) and the benchmarks.

Torch-free on purpose (standard library only): analysis/ reads it without torch. It sits beside
ifrvis.runstore rather than in ifrvis.evaluation, whose package import loads the evaluators and torch.

A new logged metric is named here, in AP_KEYS or TRACKING_KEYS and in UNITS; the evaluator that computes
it, and a table that shows it, still have to be told.
"""

from __future__ import annotations

# The evaluators' outputs that a run logs as MLflow metrics (docs/architecture.md, "Run schema").
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# Sec. 4.4's box-based metrics, then HOTA and its parts on masks (NaN without the `hota` extra).
TRACKING_KEYS = ("IDF1", "MOTA", "IDP", "IDR", "IDs", "MOTP", "FP", "FN", "HOTA", "DetA", "AssA", "LocA")

# The columns of the paper's tables: Table 1/2, and Table 3 followed by HOTA, DetA, AssA (beyond the paper).
TABLE1 = ("AP", "AP50", "AP75", "AR1", "AR10")
TABLE3 = ("IDF1", "MOTA", "IDP", "IDR", "IDs", "HOTA", "DetA", "AssA")

# Display unit of each logged metric: "%" a fraction shown x100 as a percentage; "x100" a ratio
# shown x100 that is no percentage (MOTA can be negative, as in the paper; MOTP a mean IoU
# distance); "count" shown as logged.
UNITS = {key: "%" for key in AP_KEYS} | {
    "IDF1": "%",
    "MOTA": "x100",
    "IDP": "%",
    "IDR": "%",
    "IDs": "count",
    "MOTP": "x100",
    "FP": "count",
    "FN": "count",
    "HOTA": "%",
    "DetA": "%",
    "AssA": "%",
    "LocA": "%",
}
LOWER_IS_BETTER = frozenset({"IDs", "FP", "FN", "MOTP"})


def scale(metric: str) -> float:
    """Factor from the logged value to the displayed one: 100 for fractions and ratios, else 1."""
    return 100.0 if UNITS.get(metric) in ("%", "x100") else 1.0
