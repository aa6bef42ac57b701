"""Shared fixtures: a small synthetic YouTube-VIS folder and tiny run configs on private stores."""

import fcntl
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from ifrvis.config import load_config
from ifrvis.data.synthetic import generate
from ifrvis.engine.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "experiments" / "configs" / "synthetic_tiny.yaml"
PRETRAINED = "tiny_pretrained.pth"  # in the tiny data folder


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module (the benchmarks are scripts, not a package), registered in
    sys.modules, where a script's dataclasses look their module up."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Two threads fight over the many small matrix products of the decoders on 2 cores; `make test` runs one
# pytest-xdist worker a core instead.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def built_once(tmp_path_factory) -> Callable:
    """`built_once(name, build)`: `build(folder)` run once a test session, and its JSON value. Each
    pytest-xdist worker runs session fixtures of its own; this one is shared: the first worker to ask
    builds in a folder of the session's temporary root under a file lock, the others wait for it and
    read what it returned. A build that failed is redone from an empty folder by the next to ask."""
    root = tmp_path_factory.getbasetemp()
    shared = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root  # workers' roots share a parent

    def once(name: str, build: Callable[[Path], object]):
        folder, done = shared / f"once-{name}", shared / f"once-{name}.json"
        with open(shared / f"once-{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                done.write_text(json.dumps(build(folder), default=float))
            return json.loads(done.read_text())

    return once


@pytest.fixture(scope="session")
def tiny_data(built_once) -> Path:
    """8 training and 3 validation videos of 6 frames, 64x85 px, and the tiny model pretrained on
    them for a few iterations of each stage (what the tiny configs load). Read-only: built once for all
    workers."""

    def build(out: Path) -> str:
        generate(out, seed=3, train_videos=8, valid_videos=3, size=64, frames=6, progress=False)
        cfg = load_config(TINY_CONFIG, [f"data.root={out}", "data.train_short_sides=[64]"])
        pretrain(cfg, out / PRETRAINED, backbone_iters=3, image_iters=3, batch_size=2, progress=False)
        return str(out)

    return Path(built_once("tiny-data", build))


def write_run_config(folder: Path, data: Path, max_iters: int = 6, num_points: int = 0, **extra: str) -> Path:
    """A tiny run config whose MLflow store and outputs live in `folder`; it loads the model
    pretrained in `data` when there is one (`tiny_data`), else starts from scratch."""
    weights = data / PRETRAINED if (data / PRETRAINED).exists() else '""'
    lines = [
        f"_base_: {TINY_CONFIG}",
        f"model:\n  num_queries: 8\n  dec_layers: 2\n  weights: {weights}",
        f"data:\n  root: {data}\n  train_short_sides: [64]\n  test_short_side: 64\n  max_long_side: 96",
        f"solver:\n  batch_size: 2\n  max_iters: {max_iters}\n  steps: [{max_iters}]\n  warmup_iters: 0",
        f"loss:\n  num_points: {num_points}",
        f"logging:\n  mlflow_uri: sqlite:///{folder / 'mlflow.db'}\n  output_dir: {folder / 'outputs'}\n"
        "  log_every: 1\n  checkpoint_every: 2\n  progress: false\n  visualize: true",
    ]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
