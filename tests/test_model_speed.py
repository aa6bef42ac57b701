"""The GPU benchmark (benchmarks/model_speed.py --paper) is the same code on the CPU at tiny sizes."""

import pytest
import torch
from conftest import load_benchmark


def test_paper_settings_are_the_configs_sizes_and_batch_per_gpu():
    settings = load_benchmark("model_speed").paper_settings()
    # 16:9 frames at short side 360 / 480, padded to 32; 16 clips per iteration over 8 GPUs
    assert [(s.label, s.height, s.width, s.batch, s.clip_frames) for s in settings] == [
        ("R50, 360p", 384, 640, 2, 2),
        ("R50, 480p", 480, 864, 2, 2),
        ("Swin-L, 360p", 384, 640, 2, 2),
        ("Swin-L, 480p", 480, 864, 2, 2),
    ]


@pytest.mark.slow
def test_the_paper_benchmark_runs_on_the_cpu_at_tiny_sizes():
    """R50 at 360p only: Swin-L at full width adds a minute on a 2-core CPU, and its build and published
    weights are tested in test_backbone.py and test_weights.py."""
    speed = load_benchmark("model_speed")
    settings = [s for s in speed.paper_settings(scale=0.1) if s.label == "R50, 360p"]
    rows = speed.paper_rows(settings, iters=1, num_frames=2, device=torch.device("cpu"))
    assert [(r["setting"], r["decoder"]) for r in rows] == [
        ("R50, 360p", "ifr"),
        ("R50, 360p", "mask2former"),
    ]
    assert all(r["s_per_step"] > 0 and r["inference_fps"] > 0 and r["inference_peak_mib"] > 0 for r in rows)
    assert all(r["peak_mib"] is None for r in rows)  # training memory is measured on a GPU only
    table = speed.paper_table(rows, 2).splitlines()
    assert len(table) == 2 + 2 + 1 and table[-1].startswith("| R50, 360p | IFR / Mask2Former-VIS |")
