"""benchmarks/model_speed.py: the GPU benchmark (--paper) is the same code on the CPU at tiny sizes, and
--profile sorts a step's ops into kernel classes and rates them as computed by hand."""

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


def test_the_profile_sorts_ops_into_kernel_classes_and_rates_them_by_hand():
    speed = load_benchmark("model_speed")

    def class_of(name):
        return next((label for label, member in speed.KERNEL_CLASSES.items() if member(name)), None)

    assert class_of("aten::mkldnn_convolution") == class_of("aten::convolution_backward") == "convolution"
    assert class_of("aten::bmm") == class_of("aten::addmm") == "matrix products"
    assert class_of("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert (
        class_of("aten::grid_sampler_2d_backward")
        == class_of("aten::topk")
        == class_of("aten::upsample_bilinear2d")
    )
    assert class_of("aten::uniform_") == "random numbers"
    assert (
        class_of("aten::mul")
        is class_of("aten::copy_")
        is class_of("autograd::engine::evaluate_function: ConvolutionBackward0")
        is None
    )

    class Event:
        def __init__(self, key, flops, self_us):
            self.key, self.flops, self.self_cpu_time_total = key, flops, self_us

    # 3 GFLOP estimated at aten::conv2d (no time of its own), computed in 0.02 s + 0.01 s: 100 GFLOP/s
    events = [
        Event("aten::conv2d", 3e9, 0),
        Event("aten::mkldnn_convolution", 0, 20_000),
        Event("aten::_slow_conv2d_forward", 0, 10_000),
    ]
    assert speed.gflops(events, {"aten::conv2d"}, speed.KERNEL_CLASSES["convolution"]) == pytest.approx(100.0)


def test_a_profiled_tiny_step_spends_time_in_each_kind_of_kernel_and_bounds_the_gain():
    speed = load_benchmark("model_speed")
    row = speed.step_profile(speed.TINY, "mask2former", iters=1)
    assert all(row[label] > 0 for label in speed.KERNEL_CLASSES)
    assert row["convolution forward, GFLOP/s"] > 0 and row["matrix products, GFLOP/s"] > 0
    table = speed.profile_table(speed.TINY, iters=1).splitlines()
    bounds = [line for line in table if line.startswith(("| at most", "| ... and if"))]
    assert len(bounds) == 2
    for line in bounds:  # IFR's and Mask2Former-VIS's, each above 1x
        assert all(float(cell[:-1]) > 1 for cell in line.split(" | ")[1::2])
