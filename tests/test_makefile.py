"""The make targets a user runs as the README says: every sweep a target starts takes the launcher options
of `LAUNCH` (a cluster's partition, account, data folder), so the paper's sweeps reach a cluster
without editing a file; `make figures` reads the sweeps of its profile. Checked on `make -n` (nothing
runs)."""

import re
import subprocess

import pytest
from conftest import ROOT

SWEEP_TARGETS = [
    "table1", "table2", "table3", "consistency", "consistency-lambda0", "consistency-pilot", "consistency2",
    "precision-parity", "fp32-parity", "consistency-long", "ablation", "ablation-clip",
]  # fmt: skip
LAUNCH = "--partition zz9 --account vis --set data.root=/data/elsewhere"


def planned_commands(*arguments: str) -> list[str]:
    """The shell commands `make -n` prints, continuation lines joined."""
    printed = subprocess.run(
        ["make", "-n", *arguments], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [line.strip() for line in re.sub(r"\\\n", " ", printed).splitlines() if line.strip()]


@pytest.mark.parametrize("profile", ["tiny", "paper"])
@pytest.mark.parametrize("target", SWEEP_TARGETS)
def test_every_sweep_of_a_target_takes_the_launch_options(target, profile):
    commands = planned_commands(target, f"PROFILE={profile}", "EXECUTOR=slurm", f"LAUNCH={LAUNCH}")
    sweeps = [c for c in commands if re.search(r"experiments/(run_seeds|ablate\w*)\.py", c)]
    if profile == "paper" and target in ("consistency-long", "consistency-lambda0"):  # tiny profile only
        assert not sweeps
        return
    assert sweeps, commands
    for command in sweeps:
        assert LAUNCH in command and "--executor slurm" in command, command


@pytest.mark.parametrize("profile", ["tiny", "paper"])
def test_make_figures_reads_the_sweeps_of_its_profile(profile):
    (command,) = [c for c in planned_commands("figures", f"PROFILE={profile}") if "run_notebook.py" in c]
    assert command.startswith(f"IFRVIS_PROFILE={profile} ")
