"""`ifrvis server-scores`: an evaluation server's AP and AR of a run's results.zip, logged into the run, so
that the tables of a validation split without public ground truth can be made from the logged runs."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from test_tables import log_run

from analysis.tables import build_table
from ifrvis.cli import main as cli_main
from ifrvis.commands.server_scores import parse_scores

FIGURES = ["AP=47.4", "AP50=69.5", "AP75=51.6", "AR1=44.9", "AR10=56.9"]


def test_percentages_become_the_fractions_a_run_logs():
    assert parse_scores(FIGURES, percent=True) == pytest.approx(
        {"AP": 0.474, "AP50": 0.695, "AP75": 0.516, "AR1": 0.449, "AR10": 0.569}
    )
    assert (
        parse_scores(["AP=0.5", "AP50=0.7", "AP75=0.5", "AR1=0.4", "AR10=0.6", "APs=0.3"], False)["APs"]
        == 0.3
    )


@pytest.mark.parametrize(
    "pairs, percent, message",
    [
        (FIGURES, False, "AP=47.4 is above 1: give --percent if these are percentages"),
        (["mAP=47.4", *FIGURES[1:]], True, "'mAP' is no AP or AR figure of a run; one of AP, AP50"),
        (FIGURES[:4], True, "the tables need AP, AP50, AP75, AR1, AR10: AR10 not given"),
        (["AP=nan", *FIGURES[1:]], True, "AP=nan is not a finite number"),
        (["AP=47,4", *FIGURES[1:]], True, "AP='47,4' is not a number"),
        (["AP=-1", *FIGURES[1:]], True, "AP=-1 is outside 0-100"),
        (["AP=101", *FIGURES[1:]], True, "AP=101 is outside 0-100"),
        ([*FIGURES, "AP=47.5"], True, "AP is given twice"),
        (["AP", *FIGURES[1:]], True, "'AP' is not NAME=VALUE"),
    ],
)
def test_a_bad_figure_is_one_line_and_nothing_is_logged(tmp_path, capsys, pairs, percent, message):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = log_run(uri, "val", "ifr", 0, {})
    capsys.readouterr()  # the store's own log lines
    argv = ["server-scores", run_id, *pairs, "--uri", uri, *(["--percent"] if percent else [])]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert MlflowClient(uri).get_run(run_id).data.metrics == {}


def test_runs_scored_by_the_server_make_the_table_and_its_caption_says_so(tmp_path, capsys):
    """Four runs of a split without ground truth log no AP: the table excludes them and says how to log
    the server's figures; once logged, the table is made from them (IFR 47.4 and 48.4 % -> 47.9 ± 0.7)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    runs = {
        (method, seed): log_run(uri, "val", method, seed, {})
        for method in ("ifr", "mask2former")
        for seed in (0, 1)
    }
    table, _ = build_table("val", 1, seeds=2, uri=uri, out=tmp_path / "before")
    assert table.numbers["n"].tolist() == [0, 0]
    lacking = [w for w in table.warnings if "lacks metrics AP" in w]
    assert len(lacking) == 4 and all("`ifrvis server-scores RUN_ID AP=... --percent`" in w for w in lacking)
    capsys.readouterr()
    for (method, seed), run_id in runs.items():
        ap = (47.4 if method == "ifr" else 46.4) + seed
        assert cli_main(["server-scores", run_id, f"AP={ap}", *FIGURES[1:], "--percent", "--uri", uri]) == 0
        assert f"run {run_id}: AP {ap:.1f}, AP50 69.5" in capsys.readouterr().out
    table, paths = build_table("val", 1, seeds=2, uri=uri, out=tmp_path / "after")
    assert "| IFR (ours) | resnet50 | synthetic | **47.9 ± 0.7** | **69.5** |" in paths["md"].read_text()
    assert "AP and AR of 4 of the 4 runs from the evaluation server." in table.caption
    assert MlflowClient(uri).get_run(runs["ifr", 0]).data.tags["metrics_source"] == "evaluation server"


def test_a_run_evaluated_here_an_unfinished_one_or_a_second_logging_is_refused(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    evaluated = log_run(uri, "val", "ifr", 0, {"AP": 0.12, "AP50": 0.2, "AP75": 0.1, "AR1": 0.1, "AR10": 0.2})
    running = log_run(uri, "val", "ifr", 1, {}, status="RUNNING")
    scored = log_run(uri, "val", "ifr", 2, {})
    command = [*FIGURES, "--percent", "--uri", uri]
    capsys.readouterr()
    assert cli_main(["server-scores", evaluated, *command]) == 2
    assert "was evaluated here against its split's ground truth (AP 0.1200)" in capsys.readouterr().err
    assert cli_main(["server-scores", running, *command]) == 2
    assert "is RUNNING: only a finished run" in capsys.readouterr().err
    assert cli_main(["server-scores", "0" * 32, *command]) == 2
    assert f"no run {'0' * 32} in the store" in capsys.readouterr().err
    assert cli_main(["server-scores", scored, *command]) == 0
    assert cli_main(["server-scores", scored, "AP=48.0", *FIGURES[1:], "--percent", "--uri", uri]) == 2
    assert "has the server's figures already (AP 0.4740): --replace" in capsys.readouterr().err
    assert (
        cli_main(["server-scores", scored, "AP=48.0", *FIGURES[1:], "--percent", "--replace", "--uri", uri])
        == 0
    )
    client = MlflowClient(uri)
    assert client.get_run(scored).data.metrics["AP"] == pytest.approx(0.48)
    assert client.get_run(evaluated).data.metrics["AP"] == 0.12 and client.get_run(running).data.metrics == {}
    assert cli_main(["server-scores", scored, *command[:-2], "--uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "no run store at" in capsys.readouterr().err and not (tmp_path / "none.db").exists()
