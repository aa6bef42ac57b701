"""Model speed: training step time per clip, inference frames/s, and peak inference memory.

    .venv/bin/python benchmarks/model_speed.py [--threads 1] [--iters 5] [--frames 120] [--train-only]
        [--set solver.compile=true solver.fused_optimizer=true ...]
    .venv/bin/python benchmarks/model_speed.py --profile [--iters 5]   # where the tiny step's time goes
    .venv/bin/python benchmarks/model_speed.py --paper [--iters 20]     # on a GPU: what a cluster plan needs

CPU, tiny config (experiments/configs/synthetic_tiny.yaml): random 96x128 clips (batch 4 x 2 frames,
two rectangle instances each) for the training step; a long in-memory video (`--frames` frames of
96x128, moving squares) for inference. Both decoders are measured in the same run, so the IFR /
Mask2Former-VIS ratios compare like with like. Peak memory of whole-video vs per-clip inference
(`inference.mode=video|clip`) is the RSS high-water mark (VmHWM, reset through /proc/self/clear_refs
just before the call) of a fresh subprocess per (decoder, mode): torch's CPU allocations are invisible
to tracemalloc, and `ru_maxrss` cannot be reset, so it keeps the peak of importing torch. With a GPU,
the same figures for ResNet-50 at 360 px (experiments/configs/ytvis19_r50.yaml), peak memory from
`torch.cuda.max_memory_allocated`. Prints Markdown tables.

`--profile`: where the tiny training step's time goes (torch.profiler, self time per op): the kernels the
same computation cannot do without (convolutions, matrix products, attention, sampling, random numbers)
and everything else (the unprofiled step minus those kernels); the unprofiled step over the kernels' time
bounds what any change that keeps those kernels (fusion, compilation, fewer op calls) can gain.

`--paper`: the paper's settings, for planning a cluster: R50 and Swin-L (ytvis19_r50.yaml,
ytvis19_swin_l.yaml, random weights), clips of T = 2 frames at short side 360 and 480 (16:9 frames),
the batch per GPU the configs give on one 8-GPU node (solver.batch_size / 8), AMP as the configs set
it (fp16): training iterations/s and peak training memory; whole-video inference frames/s and peak
memory on a 36-frame 360p video; both decoders and their ratios. `--paper-scale 0.1` shrinks the frames
(a CPU smoke run of the same code, as the tests do).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ifrvis.cli import ArgumentParser
from ifrvis.config import Config, ConfigError, load_config
from ifrvis.engine.solver import build_optimizer
from ifrvis.engine.train import autocast, autocast_dtype, training_forward
from ifrvis.inference import predict_video
from ifrvis.modeling import build_model
from ifrvis.modeling.criterion import build_criterion

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "experiments/configs/synthetic_tiny.yaml"
R50_CONFIG = ROOT / "experiments/configs/ytvis19_r50.yaml"
DECODERS = ("ifr", "mask2former")
MODES = ("video", "clip")


@dataclass(frozen=True)
class Setting:
    """One benchmarked model size: its config, input frame size and training batch."""

    label: str
    config: Path
    height: int
    width: int
    batch: int = 4
    clip_frames: int = 2
    overrides: tuple[str, ...] = ()  # KEY=VALUE settings of the config, e.g. solver.compile=true


TINY = Setting("tiny, 96x128, CPU", TINY_CONFIG, 96, 128)
R50 = Setting("R50, 360x480, GPU", R50_CONFIG, 360, 480)
SWIN_L_CONFIG = ROOT / "experiments/configs/ytvis19_swin_l.yaml"
GPUS_PER_NODE = 8  # the paper trains on one node of 8 V100s (Sec. 4.1)
PAPER_VIDEO_FRAMES = 36


def paper_settings(scale: float = 1.0) -> list[Setting]:
    """R50 and Swin-L at short sides 360 and 480 (16:9), the configs' batch per GPU; `scale` < 1
    shrinks the frames (a CPU smoke run)."""
    settings = []
    for name, config in (("R50", R50_CONFIG), ("Swin-L", SWIN_L_CONFIG)):
        per_gpu = max(load_config(config).solver.batch_size // GPUS_PER_NODE, 1)
        for short in (360, 480):
            # a 16:9 frame padded to a multiple of 32, as the data pipeline feeds the model
            h, w = (max(math.ceil(side * scale / 32), 1) * 32 for side in (short, short * 16 / 9))
            settings.append(Setting(f"{name}, {short}p", config, h, w, batch=per_gpu))
    return settings


def model_config(setting: Setting, decoder: str) -> Config:
    return load_config(setting.config, [f"model.decoder={decoder}", "model.weights=", *setting.overrides])


def random_clips(setting: Setting, num_classes: int, generator: torch.Generator, device) -> tuple:
    """Random images `(B, T, 3, H, W)` in [0, 255] and per-clip targets with two rectangle instances
    (`labels (2,)`, `masks (2, T, H, W)` bool, `present (2, T)` bool)."""
    b, t, h, w = setting.batch, setting.clip_frames, setting.height, setting.width
    images = torch.rand(b, t, 3, h, w, generator=generator) * 255
    targets = []
    for _ in range(b):
        masks = torch.zeros(2, t, h, w, dtype=torch.bool)
        for m in range(2):
            y0 = int(torch.randint(0, h // 2, (1,), generator=generator))
            x0 = int(torch.randint(0, w // 2, (1,), generator=generator))
            masks[m, :, y0 : y0 + h // 3, x0 : x0 + w // 3] = True
        targets.append(
            {
                "labels": torch.randint(0, num_classes, (2,), generator=generator).to(device),
                "masks": masks.to(device),
                "present": torch.ones(2, t, dtype=torch.bool, device=device),
            }
        )
    return images.to(device), targets


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def training_steps(setting: Setting, decoder: str, batches: int, device: torch.device) -> tuple:
    """`(step, batches)`: `step(images, targets)` runs one optimiser step (forward, loss, backward, step;
    under the config's AMP as the trainer applies it: bf16 on the CPU too, fp16 on a GPU only, with its
    gradient scaler; with `solver.compile` the forward compiled as the trainer compiles it) of a freshly
    built model on `batches` random batches."""
    cfg = model_config(setting, decoder)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.loss.class_loss).to(device).train()
    criterion = build_criterion(cfg).to(device)
    optimizer = build_optimizer(model, cfg.solver)
    forward = training_forward(model, cfg.solver.compile)
    amp = autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    generator = torch.Generator().manual_seed(0)
    data = [random_clips(setting, cfg.model.num_classes, generator, device) for _ in range(batches)]

    def step(images: torch.Tensor, targets: list[dict]) -> None:
        with autocast(amp, device):
            loss = sum(criterion(forward(images), targets).values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step, data


def train_step_stats(setting: Setting, decoder: str, iters: int, device: torch.device) -> dict:
    """Mean wall time of one optimiser step (`training_steps`) after one warm-up step, the warm-up step's
    own time (with `solver.compile`: the compilation's) and the peak GPU memory of the timed steps (MiB;
    None on the CPU)."""
    step, batches = training_steps(setting, decoder, iters + 1, device)
    tic = time.perf_counter()
    for n, (images, targets) in enumerate(batches):
        if n == 1:
            synchronize(device)
            first_step = time.perf_counter() - tic
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            tic = time.perf_counter()
        step(images, targets)
    synchronize(device)
    seconds = (time.perf_counter() - tic) / iters
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {"s_per_step": seconds, "first_step_s": first_step, "peak_mib": peak}


def op_calls_per_step(setting: Setting, decoder: str) -> int:
    """Operator calls (torch.profiler's events, nested ones included) of one CPU training step after a
    warm-up step: at the tiny sizes the per-call overhead, not arithmetic, sets most of the step time."""
    step, batches = training_steps(setting, decoder, 2, torch.device("cpu"))
    step(*batches[0])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step(*batches[1])
    return sum(event.count for event in profile.key_averages())


# The kernels a tiny step cannot do without while it computes the same numbers (aten op names: the
# compute runs inside these ops' self time); REST is what `--profile` calls everything else.
KERNEL_CLASSES = {
    "convolution": lambda name: name.startswith("aten::") and "conv" in name,
    "matrix products": lambda name: (
        name in {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::mv"}
    ),
    "attention": lambda name: "scaled_dot_product" in name or "flash_attention" in name,
    "sampling (grid_sample, resize, top-k)": lambda name: name.startswith(
        ("aten::grid_sampler", "aten::upsample", "aten::topk", "aten::sort")
    ),
    "random numbers": lambda name: name in {"aten::uniform_", "aten::normal_", "aten::bernoulli_"},
}
REST = "everything else: element-wise, copies, reductions, norms, optimiser updates, Python"


def gflops(events, flop_ops: set[str], member) -> float:
    """GFLOP/s of the ops whose names `member` accepts: the profiler's FLOP estimates of `flop_ops` (it
    estimates them at the op that dispatches the compute) over the members' self time."""
    flop = sum(event.flops for event in events if event.key in flop_ops)
    seconds = sum(event.self_cpu_time_total for event in events if member(event.key)) / 1e6
    return flop / seconds / 1e9 if seconds else float("nan")


def step_profile(setting: Setting, decoder: str, iters: int) -> dict[str, float]:
    """ms/step of each KERNEL_CLASSES class in a CPU training step (torch.profiler's self time over `iters`
    steps after a warm-up), and the convolutions' forward and the matrix products' GFLOP/s (the profiler's
    FLOP estimates). The profiler's own cost is per op call: small for these few, large kernels, but most
    of a profiled step's wall time at the tiny sizes, so the rest is measured without it."""
    step, batches = training_steps(setting, decoder, iters + 1, torch.device("cpu"))
    step(*batches[0])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as profile:
        for images, targets in batches[1:]:
            step(images, targets)
    events = profile.key_averages()
    row = {
        label: sum(e.self_cpu_time_total for e in events if member(e.key)) / 1000 / iters
        for label, member in KERNEL_CLASSES.items()
    }
    conv, products = KERNEL_CLASSES["convolution"], KERNEL_CLASSES["matrix products"]
    row["convolution forward, GFLOP/s"] = gflops(
        events, {"aten::conv2d"}, lambda n: conv(n) and "backward" not in n
    )
    row["matrix products, GFLOP/s"] = gflops(events, {"aten::mm", "aten::bmm", "aten::addmm"}, products)
    return row


class InMemoryVideo:
    """A video for `predict_video`: `len()`, `[t] -> (3, h, w)` in [0, 255], `.size`, `.orig_size`.
    Two squares move across a grey background, one frame per step."""

    def __init__(self, num_frames: int, height: int, width: int):
        self.frames = torch.full((num_frames, 3, height, width), 96.0)
        side = height // 4
        for t in range(num_frames):
            x = (3 * t) % (width - side)
            y = (2 * t) % (height - side)
            self.frames[t, 0, y : y + side, x : x + side] = 230.0
            self.frames[t, 2, height - side - y : height - y, width - side - x : width - x] = 230.0
        self.size = (height, width)
        self.orig_size = (height, width)

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, t: int) -> torch.Tensor:
        return self.frames[t]


def inference_model(setting: Setting, decoder: str, device: torch.device):
    cfg = model_config(setting, decoder)
    torch.manual_seed(0)
    return build_model(cfg.model, cfg.loss.class_loss).to(device).eval(), cfg


def video_inference_stats(setting: Setting, decoder: str, num_frames: int, device: torch.device) -> dict:
    """Whole-video inference of one model: frames/s (after a short warm-up video) and the peak memory of
    the timed call (MiB: GPU allocated, or the process's RSS high-water mark on the CPU)."""
    model, cfg = inference_model(setting, decoder, device)
    predict_video(model, InMemoryVideo(2, setting.height, setting.width), cfg.inference)  # warm-up
    video = InMemoryVideo(num_frames, setting.height, setting.width)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    tic = time.perf_counter()
    predict_video(model, video, cfg.inference)
    synchronize(device)
    seconds = time.perf_counter() - tic
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else proc_status_kib("VmHWM") / 1024
    )
    return {"inference_fps": num_frames / seconds, "inference_peak_mib": peak}


def peak_memory_here(
    setting: Setting, decoder: str, mode: str, num_frames: int, device: torch.device
) -> dict:
    """Peak memory of one `predict_video` call in this process (MiB): on CPU the RSS high-water mark
    during the call and its growth over the RSS just before it; on GPU `torch.cuda.max_memory_allocated`."""
    model, cfg = inference_model(setting, decoder, device)
    inference_cfg = replace(cfg.inference, mode=mode)
    video = InMemoryVideo(num_frames, setting.height, setting.width)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        predict_video(model, video, inference_cfg)
        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20}
    before = proc_status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    predict_video(model, video, inference_cfg)
    peak = proc_status_kib("VmHWM")
    return {"peak_mib": peak / 1024, "growth_mib": (peak - before) / 1024}


def proc_status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def peak_memory_subprocess(decoder: str, mode: str, num_frames: int, threads: int) -> dict:
    """`peak_memory_here` for the tiny CPU setting in a fresh interpreter, so each figure starts from an
    unused RSS high-water mark."""
    command = [
        sys.executable, __file__, "--threads", str(threads), "--frames", str(num_frames),
        "--memory-probe", f"{decoder}:{mode}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {decoder}:{mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed_rows(
    setting: Setting, iters: int, num_frames: int, device: torch.device, inference: bool = True
) -> dict[str, dict]:
    rows = {}
    for decoder in DECODERS:
        train = train_step_stats(setting, decoder, iters, device)
        rows[decoder] = {
            "train_s_per_clip": train["s_per_step"] / setting.batch,
            "first_step_s": train["first_step_s"],
            "op_calls": op_calls_per_step(setting, decoder) if device.type == "cpu" else None,
            "inference_fps": (
                video_inference_stats(setting, decoder, num_frames, device)["inference_fps"]
                if inference
                else None
            ),
        }
    return rows


def speed_table(setting: Setting, rows: dict[str, dict]) -> str:
    ifr, base = rows["ifr"], rows["mask2former"]
    lines = [
        f"### {setting.label}",
        "",
        "| decoder | train step, ms/clip | first step, s | op calls/step | inference, frames/s |",
        "|---|---|---|---|---|",
    ]
    for decoder, row in rows.items():
        lines.append(
            f"| {decoder} | {1000 * row['train_s_per_clip']:.1f} | {row['first_step_s']:.1f} "
            f"| {_cell(row['op_calls'], 'd')} | {_cell(row['inference_fps'], '.1f')} |"
        )
    lines.append(
        f"| IFR / Mask2Former-VIS | {ifr['train_s_per_clip'] / base['train_s_per_clip']:.2f}x time | - "
        f"| {_cell(_ratio(ifr['op_calls'], base['op_calls']), '.2f', 'x')} "
        f"| {_cell(_ratio(ifr['inference_fps'], base['inference_fps']), '.2f', 'x speed')} |"
    )
    return "\n".join(lines)


def profile_table(setting: Setting, iters: int) -> str:
    """Per decoder: ms/step of each kernel class, of everything else (the unprofiled step minus the
    kernels), and the most a change keeping the kernels could gain: the unprofiled step over their time;
    then the same with convolutions and matrix products at a large matrix product's rate, the most that
    batching them into larger kernels could add."""
    profiles = {decoder: step_profile(setting, decoder, iters) for decoder in DECODERS}
    steps = {
        d: 1000 * train_step_stats(setting, d, iters, torch.device("cpu"))["s_per_step"] for d in DECODERS
    }
    kernels = {d: sum(profiles[d][label] for label in KERNEL_CLASSES) for d in DECODERS}
    rows = {label: {d: profiles[d][label] for d in DECODERS} for label in KERNEL_CLASSES}
    rows["kernels above, together"] = kernels
    rows[REST] = {d: steps[d] - kernels[d] for d in DECODERS}
    rows["step (not profiled)"] = steps
    lines = [
        f"### Where the step goes, {setting.label}, {iters} steps",
        "",
        "| | IFR, ms/step | share | Mask2Former-VIS, ms/step | share |",
        "|---|---|---|---|---|",
    ]
    for label, values in rows.items():
        cells = [f"{values[d]:.1f} | {values[d] / steps[d]:.0%}" for d in DECODERS]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    peak = large_matmul_gflops()
    # Convolutions and matrix products at the large product's rate (the backward taken at the forward's).
    at_peak = {
        d: kernels[d]
        - rows["convolution"][d] * (1 - profiles[d]["convolution forward, GFLOP/s"] / peak)
        - rows["matrix products"][d] * (1 - profiles[d]["matrix products, GFLOP/s"] / peak)
        for d in DECODERS
    }
    bounds = {
        "at most this much faster if everything but the kernels cost nothing": kernels,
        "... and if convolutions and matrix products also ran at the 1024 x 1024 product's rate": at_peak,
    }
    for label, time_left in bounds.items():
        lines.append(f"| {label} | {' | '.join(f'{steps[d] / time_left[d]:.2f}x | -' for d in DECODERS)} |")
    for label in ("convolution forward, GFLOP/s", "matrix products, GFLOP/s"):
        lines.append(f"| {label} | {' | '.join(f'{profiles[d][label]:.1f} | -' for d in DECODERS)} |")
    lines.append(
        f"| a 1024 x 1024 matrix product, GFLOP/s (this core at its best) | {peak:.1f} | - | {peak:.1f} | - |"
    )
    return "\n".join(lines)


def large_matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of a `size` x `size` float32 matrix product, the best of `repeats`: what a core reaches when a
    kernel is large enough to run at its peak."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - tic)
    return 2 * size**3 / best / 1e9


def memory_table(label: str, num_frames: int, memory: dict[tuple[str, str], dict], cuda: bool) -> str:
    if cuda:
        header = "| decoder | mode | peak allocated, MiB |\n|---|---|---|"
        body = [f"| {d} | {m} | {v['peak_mib']:.0f} |" for (d, m), v in memory.items()]
    else:
        header = "| decoder | mode | peak RSS, MiB | growth during inference, MiB |\n|---|---|---|---|"
        body = [
            f"| {d} | {m} | {v['peak_mib']:.0f} | {v['growth_mib']:.0f} |" for (d, m), v in memory.items()
        ]
    return "\n".join([f"### Peak inference memory, {label}, {num_frames} frames", "", header, *body])


def paper_rows(settings: list[Setting], iters: int, num_frames: int, device: torch.device) -> list[dict]:
    """Per (setting, decoder): training iterations/s and peak memory; per backbone at 360p (the first
    setting of each config), whole-video inference frames/s and peak memory on `num_frames` frames."""
    rows = []
    for setting in settings:
        for decoder in DECODERS:
            train = train_step_stats(setting, decoder, iters, device)
            row = {"setting": setting.label, "decoder": decoder, "batch": setting.batch, **train}
            if setting.label.endswith("360p"):
                row.update(video_inference_stats(setting, decoder, num_frames, device))
            rows.append(row)
    return rows


def paper_table(rows: list[dict], num_frames: int) -> str:
    """Markdown: one line per (setting, decoder), then the IFR / Mask2Former-VIS ratio per setting."""
    lines = [
        f"| setting | decoder | clips/GPU | train it/s | train peak, MiB | video inference ({num_frames} "
        "frames), frames/s | inference peak, MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            _cell(1 / row["s_per_step"], ".2f"),
            _cell(row["peak_mib"], ".0f"),
            _cell(row.get("inference_fps"), ".1f"),
            _cell(row.get("inference_peak_mib"), ".0f"),
        ]
        lines.append(f"| {row['setting']} | {row['decoder']} | {row['batch']} | {' | '.join(cells)} |")
    for setting in dict.fromkeys(row["setting"] for row in rows):
        ifr, base = (next(r for r in rows if r["setting"] == setting and r["decoder"] == d) for d in DECODERS)
        ratios = [
            base["s_per_step"] / ifr["s_per_step"],
            _ratio(ifr["peak_mib"], base["peak_mib"]),
            _ratio(ifr.get("inference_fps"), base.get("inference_fps")),
            _ratio(ifr.get("inference_peak_mib"), base.get("inference_peak_mib")),
        ]
        lines.append(
            f"| {setting} | IFR / Mask2Former-VIS | | {' | '.join(_cell(r, '.2f', 'x') for r in ratios)} |"
        )
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _cell(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--iters", type=int, default=5, help="timed training steps per decoder")
    parser.add_argument(
        "--frames", type=int, help=f"frames of the inference video (120; --paper: {PAPER_VIDEO_FRAMES})"
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="settings of the tiny training step's config, e.g. solver.amp=bf16 solver.compile=true"
        " solver.fused_optimizer=true",
    )
    parser.add_argument(
        "--train-only", action="store_true", help="the tiny training step only (no inference, no memory)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="where the tiny training step's time goes, by kernel class"
    )
    parser.add_argument("--paper", action="store_true", help="R50 and Swin-L at the paper's settings")
    parser.add_argument(
        "--paper-scale", type=float, default=1.0, help="--paper frames x this (CPU smoke run)"
    )
    parser.add_argument("--memory-probe", default="", help=argparse.SUPPRESS)  # DECODER:MODE, internal
    args = parser.parse_args(argv)
    args.frames = args.frames or (PAPER_VIDEO_FRAMES if args.paper else 120)
    if args.threads < 1 or args.iters < 1 or args.frames < 2:
        parser.error("need --threads >= 1, --iters >= 1 and --frames >= 2")
    try:
        load_config(TINY_CONFIG, args.set)
    except ConfigError as error:
        parser.error(f"--set: {error}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    if args.memory_probe:
        decoder, mode = args.memory_probe.split(":")
        print(json.dumps(peak_memory_here(TINY, decoder, mode, args.frames, cpu)))
        return 0
    if args.paper:
        device = torch.device("cuda") if torch.cuda.is_available() else cpu
        name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (no GPU)"
        print(f"{name}, torch {torch.__version__}, {args.iters} timed steps, scale {args.paper_scale}\n")
        rows = paper_rows(paper_settings(args.paper_scale), args.iters, args.frames, device)
        print(paper_table(rows, args.frames))
        return 0
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, {args.iters} timed steps, {args.frames}-frame video, "
        f"tiny step settings {' '.join(args.set) or '(the config)'}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}\n"
    )
    tiny = replace(TINY, overrides=tuple(args.set), label=", ".join([TINY.label, *args.set]))
    if args.profile:
        print(profile_table(tiny, args.iters))
        return 0
    print(
        speed_table(tiny, speed_rows(tiny, args.iters, args.frames, cpu, inference=not args.train_only)), "\n"
    )
    if args.train_only:
        return 0
    memory = {
        (d, m): peak_memory_subprocess(d, m, args.frames, args.threads) for d in DECODERS for m in MODES
    }
    print(memory_table(TINY.label, args.frames, memory, cuda=False), "\n")
    if not torch.cuda.is_available():
        print("No GPU (torch.cuda.is_available() is False): the R50 360 px measurements are skipped.")
        return 0
    gpu = torch.device("cuda")
    print(speed_table(R50, speed_rows(R50, args.iters, args.frames, gpu)), "\n")
    gpu_memory = {(d, m): peak_memory_here(R50, d, m, args.frames, gpu) for d in DECODERS for m in MODES}
    print(memory_table(R50.label, args.frames, gpu_memory, cuda=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
