"""A rerun checked against committed per-run rows (analysis/parts.py)."""

import math

import pandas as pd

from analysis.parts import main, unequal_columns, with_prior


def _rows(ap_b: float, idf1_b: float, commit: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_identity": ["a", "b", "c"],
            "run_id": [f"{commit}-1", f"{commit}-2", f"{commit}-3"],
            "git_commit": [commit] * 3,
            "AP": [0.1871, ap_b, 0.2],
            "IDF1": [math.nan, idf1_b, 0.5],
            "env.cpu": ["AMD EPYC"] * 3,
        }
    )


def test_a_rerun_equal_but_for_its_record_has_no_differing_column():
    committed = _rows(0.15, 0.4, "aaaa")
    rerun = _rows(0.15, 0.4, "bbbb").iloc[:2]  # two of the three runs made again, another store and commit
    assert unequal_columns(rerun, committed) == {}


def test_one_float_off_in_the_last_digit_is_a_difference_and_runs_only_in_one_frame_are_ignored():
    committed = _rows(0.15, 0.4, "aaaa")
    rerun = _rows(0.15000000000000002, 0.4, "aaaa")
    rerun.loc[2, "run_identity"] = "d"  # not committed: nothing to compare it with
    rerun.loc[2, "AP"] = 0.9
    assert unequal_columns(rerun, committed) == {"AP": 1}
    rerun.loc[1, "IDF1"] = math.nan  # missing against 0.4 differs; missing against missing (run a) does not
    assert unequal_columns(rerun, committed) == {"AP": 1, "IDF1": 1}


def test_the_command_prints_what_differs_and_fails_on_it(tmp_path, capsys):
    _rows(0.15, 0.4, "aaaa").to_csv(tmp_path / "committed.csv", index=False)
    _rows(0.15, 0.4, "bbbb").to_csv(tmp_path / "same.csv", index=False)
    _rows(0.16, 0.4, "bbbb").to_csv(tmp_path / "other.csv", index=False)
    assert main([str(tmp_path / "same.csv"), str(tmp_path / "committed.csv")]) == 0
    assert "every figure of the 3 equal" in capsys.readouterr().out
    assert main([str(tmp_path / "other.csv"), str(tmp_path / "committed.csv")]) == 1
    assert "AP: differs in 1 of 3 runs" in capsys.readouterr().out


def test_the_command_fails_when_no_run_is_in_both(tmp_path, capsys):
    """Runs of changed configs have other identities: nothing compared is not 'every figure equal'."""
    _rows(0.15, 0.4, "aaaa").to_csv(tmp_path / "committed.csv", index=False)
    renamed = _rows(0.15, 0.4, "bbbb").assign(run_identity=["x", "y", "z"])
    renamed.to_csv(tmp_path / "renamed.csv", index=False)
    assert main([str(tmp_path / "renamed.csv"), str(tmp_path / "committed.csv")]) == 1
    assert "no run in both: nothing was compared" in capsys.readouterr().out


def test_text_columns_stay_text_when_every_joined_value_looks_like_a_number(tmp_path):
    """An earlier part of IFR runs only: its λ_e column holds "0.3" and "0", which a plain CSV read takes
    for the floats 0.3 and 0.0; the arms of benchmarks/consistency.py are keyed by the text."""
    prior = tmp_path / "part1.csv"
    pd.DataFrame({"run_identity": ["a", "b"], "λ_e": ["0.3", "0"], "AP": [0.1, 0.2]}).to_csv(
        prior, index=False
    )
    here = pd.DataFrame({"run_identity": ["c"], "λ_e": ["0.3"], "AP": [0.3], "run_dir": ["x"]})
    joined = with_prior(here, [prior], text=("λ_e",))
    assert joined["λ_e"].tolist() == ["0.3", "0.3", "0"]
    assert with_prior(here, [prior])["λ_e"].tolist() == [0.3, 0.3, 0.0]  # what the text columns prevent
