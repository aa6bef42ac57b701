"""The quality bar's control (benchmarks/calibration_prototype.py) still runs end to end: a smoke run."""

import json
import subprocess
import sys

from conftest import ROOT


def test_calibration_prototype_trains_and_evaluates(tiny_data, tmp_path):
    script = ROOT / "benchmarks" / "calibration_prototype.py"
    args = ["--minutes", "0.01", "--root", str(tiny_data), "--out", str(tmp_path)]
    subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True, timeout=300)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iterations"] >= 1 and 0.0 <= summary["AP"] <= 1.0
    videos = {v["id"] for v in json.loads((tiny_data / "valid.json").read_text())["videos"]}
    assert {r["video_id"] for r in json.loads((tmp_path / "results.json").read_text())} == videos
