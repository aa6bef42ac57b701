"""`ifrvis weights CONFIG FILE [key=value ...]`: what a checkpoint gives a config's model
(ifrvis.modeling.weights), its exit status something a script can gate on (EXIT_STATUS). The model is
built on the meta device (names, shapes, dtypes); the file's data is read and checked all the same, in
a child process unless the file is the project's own (ifrvis.modeling.isolated_read)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ifrvis.cli import ArgumentParser
from ifrvis.config import load_config
from ifrvis.modeling.meta_arch import build_model
from ifrvis.modeling.weights import load_weights

EXIT_STATUS = """exit status: 0 when the file gives the model every tensor of the modules it covers (or
leaves it random by design); 1 when tensors are left missing or mismatched (by shape, or integers or
booleans for floating-point weights; listed in the report), when the file holds backbone or
pixel-decoder tensors the model has no place for (a bigger model's file), or when it gives none at
all (a file for another model); 2 on an error (no such file; an unreadable, unsafe or unfitting
checkpoint, one that crashed or exhausted the isolated reader, NaN or Inf values, tensors without
data, bytes after the pickle's end; a bad config)"""


def report_checkpoint(
    model: nn.Module, path: str, ifr_init: str = "random", extra_queries: str = "first"
) -> int:
    """Load `path` into `model`, print the report and return the exit status (EXIT_STATUS)."""
    report = load_weights(model, path, ifr_init, extra_queries)
    print(report.render())
    return 0 if report.complete else 1


def main(argv: list[str] | None = None) -> int:
    """`ifrvis weights CONFIG FILE [key=value ...]`: print what FILE gives the config's model; the exit
    status says whether it gave everything (EXIT_STATUS), so that a script can gate on it."""
    parser = ArgumentParser(
        prog="ifrvis weights",
        description="report what a checkpoint gives a config's model",
        epilog=EXIT_STATUS,
    )
    parser.add_argument("config", help="run config (its model section; no data is read)")
    parser.add_argument("file", help="checkpoint: Mask2Former .pkl, torchvision or this project's .pth")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    with torch.device("meta"):  # names and shapes only: no memory for the weights
        model = build_model(replace(cfg.model, weights=""), cfg.loss.class_loss)
    return report_checkpoint(model, args.file, cfg.model.ifr_init, cfg.model.extra_queries)
