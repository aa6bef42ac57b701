"""Loading time of a full-size published checkpoint: the isolated reader against a plain `pickle.load`
(benchmarks/README.md, "Checkpoint loading in isolation").

Writes a Mask2Former COCO `.pkl` with the published key layout and shapes (tests/published_checkpoints.py),
float32 values as published (standard normal; the index buffers int64), then reads it, interleaved,
`--repeats` times each way (page cache warm after the first pass):

- `pickle.load`: the plain, unrestricted load in this already running process;
- `pickle.load, fresh process`: `python -c "import pickle; pickle.load(open(FILE, 'rb'))"`, what a
  first load in a new process pays (interpreter and NumPy start, fresh pages);
- `read_isolated`: the child process, its restricted unpickling and safetensors hand-over;
- `read_checkpoint`: the same plus the data checks (NaN/Inf, meta) of every load.

    python benchmarks/checkpoint_load.py [--backbone swin_l|resnet50] [--repeats 7] [--dir /tmp]

Swin-L's file is 826 MiB: the run needs about 4 GB of memory and as much free in `--dir`.
"""

from __future__ import annotations

import gc
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from published_checkpoints import published_shapes  # noqa: E402

from ifrvis.cli import ArgumentParser, positive_int  # noqa: E402
from ifrvis.modeling.isolated_read import read_isolated  # noqa: E402
from ifrvis.modeling.weights import read_checkpoint  # noqa: E402


def write_float_pkl(path: Path, backbone: str) -> tuple[int, int]:
    """The published file's layout with float32 standard-normal values: (tensors, values)."""
    rng = np.random.default_rng(0)
    model = {}
    for key, shape in published_shapes(backbone).items():
        if key.endswith("relative_position_index"):
            model[key] = np.zeros(shape, np.int64)
        else:
            model[key] = rng.standard_normal(shape, dtype=np.float32)
    with path.open("wb") as handle:
        pickle.dump(
            {"model": model, "__author__": "Mask2Former", "matching_heuristics": True}, handle, protocol=4
        )
    return len(model), sum(array.size for array in model.values())


def plain_load(path: Path) -> None:
    with path.open("rb") as handle:
        pickle.load(handle)


def fresh_process_load(path: Path) -> None:
    code = "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)


def seconds(load: Callable[[Path], object], path: Path) -> float:
    start = time.perf_counter()
    load(path)
    elapsed = time.perf_counter() - start
    gc.collect()
    return elapsed


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="swin_l", choices=["swin_l", "swin_b", "resnet50", "resnet101"])
    parser.add_argument("--repeats", type=positive_int, default=7)
    parser.add_argument(
        "--dir", default=None, help="where the file is written (default: the system's temp folder)"
    )
    args = parser.parse_args()
    ways = {
        "pickle.load": plain_load,
        "pickle.load, fresh process": fresh_process_load,
        "read_isolated": read_isolated,
        "read_checkpoint": read_checkpoint,
    }
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / f"{args.backbone}.pkl"
        tensors, values = write_float_pkl(path, args.backbone)
        plain_load(path)  # the page cache warm for every way
        times: dict[str, list[float]] = {way: [] for way in ways}
        for repeat in range(args.repeats):
            for way, load in ways.items():
                times[way].append(seconds(load, path))
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
        size = path.stat().st_size
    title = f"{args.backbone} ({tensors} tensors, {values / 1e6:.1f} M values, {size / 2**20:.0f} MiB)"
    print(f"| {title} | median | min | max |")
    print("| --- | --- | --- | --- |")
    for way, values_s in times.items():
        print(f"| {way} | {statistics.median(values_s):.2f} | {min(values_s):.2f} | {max(values_s):.2f} |")


if __name__ == "__main__":
    main()
