"""`ifrvis server-scores RUN_ID AP=47.4 AP50=69.5 AP75=51.6 AR1=44.9 AR10=56.9 --percent`: the AP and AR
that an evaluation server gave a run's `results.zip`, logged into the run.

The validation splits of YouTube-VIS 2019 / 2021 and OVIS have no public ground truth: a run there
writes `results.zip` for the server and logs no AP, and the tables leave it out ("lacks metrics") until
the server's figures are logged here. They are logged as the run's own evaluation logs AP and AR
(fractions, step 0; `--percent` for figures read as percentages), and the run is tagged
`metrics_source=evaluation server`, which the tables' captions count. Every check runs before anything
is written: the figures (Table 1's five at least, each a finite fraction), the store, and the run
(finished, and not evaluated here against ground truth; a second logging needs `--replace`).
"""

from __future__ import annotations

import math

from mlflow.exceptions import MlflowException

from ifrvis import runstore
from ifrvis.cli import ArgumentParser
from ifrvis.errors import UserError
from ifrvis.metric_names import AP_KEYS, TABLE1
from ifrvis.runstore import SERVER_SOURCE, SOURCE_TAG


def parse_scores(pairs: list[str], percent: bool) -> dict[str, float]:
    """`["AP=47.4", ...]` -> `{"AP": 0.474, ...}` (fractions); a UserError naming the first bad pair."""
    scores: dict[str, float] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise UserError(f"{pair!r} is not NAME=VALUE (e.g. AP=47.4)")
        if key not in AP_KEYS:
            raise UserError(f"{key!r} is no AP or AR figure of a run; one of {', '.join(AP_KEYS)}")
        if key in scores:
            raise UserError(f"{key} is given twice")
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"{key}={text!r} is not a number") from None
        if not math.isfinite(value):
            raise UserError(f"{key}={text} is not a finite number")
        if not percent and value > 1:
            raise UserError(f"{key}={text} is above 1: give --percent if these are percentages")
        scores[key] = value / 100 if percent else value
        if not 0 <= scores[key] <= 1:
            raise UserError(f"{key}={text} is outside 0-{100 if percent else 1}")
    missing = [key for key in TABLE1 if key not in scores]
    if missing:
        raise UserError(f"the tables need {', '.join(TABLE1)}: {', '.join(missing)} not given")
    return scores


def checked_run(mlflow, run_id: str, replace: bool):
    """The finished run `run_id`, if the server's figures may be logged into it."""
    try:
        run = runstore.with_retry(mlflow.get_run, run_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise UserError(f"no run {run_id} in the store") from None
        raise
    if run.info.status != "FINISHED":
        raise UserError(f"run {run_id} is {run.info.status}: only a finished run has results.zip to score")
    logged = run.data.metrics.get("AP")
    source = run.data.tags.get(SOURCE_TAG)
    if logged is not None and source != SERVER_SOURCE:
        raise UserError(
            f"run {run_id} was evaluated here against its split's ground truth (AP {logged:.4f}): its"
            " figures stay"
        )
    if logged is not None and not replace:
        raise UserError(
            f"run {run_id} has the server's figures already (AP {logged:.4f}): --replace logs new ones"
        )
    return run


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="ifrvis server-scores",
        description="Log an evaluation server's AP and AR of a run's results.zip into its MLflow run.",
    )
    parser.add_argument("run_id", help="the MLflow run (a sweep's summary lists each run's)")
    parser.add_argument("scores", nargs="+", metavar="NAME=VALUE", help=f"at least {', '.join(TABLE1)}")
    parser.add_argument("--percent", action="store_true", help="the values are percentages (47.4, not 0.474)")
    parser.add_argument("--replace", action="store_true", help="replace server figures logged before")
    parser.add_argument("--uri", default="", help="run store (default: MLFLOW_TRACKING_URI, else mlflow.db)")
    args = parser.parse_args(argv)
    scores = parse_scores(args.scores, args.percent)
    uri = runstore.resolve_uri(args.uri)
    if not runstore.store_exists(uri):
        raise UserError(f"no run store at {uri}")
    runstore.check_store(uri)
    checked_run(runstore.client(uri), args.run_id, args.replace)
    logger = runstore.RunLogger(uri, args.run_id)
    logger.log_metrics(scores, step=0)
    logger.set_tags({SOURCE_TAG: SERVER_SOURCE})
    shown = ", ".join(f"{key} {100 * value:.1f}" for key, value in scores.items())
    print(f"run {args.run_id}: {shown} (%) logged from the evaluation server")
    return 0
