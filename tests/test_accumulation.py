"""A step's batch split into micro-batches (`solver.batch_per_gpu`, issue: any cluster shape): k
accumulated micro-batches of b clips give the gradients of one batch of k x b, because every
micro-batch's loss is divided by the whole step's instance count (Mask2Former's num_masks)."""

from __future__ import annotations

import os
import signal
from functools import partial

import pytest
import torch
from conftest import write_run_config

from ifrvis import run_folder, runstore
from ifrvis.config import ConfigError, load_config
from ifrvis.data.datasets import ClipBatches, ClipDataset, TrainSampler, collate_clips
from ifrvis.data.splits import load_splits
from ifrvis.engine import train as train_module
from ifrvis.engine.checkpoint import load_checkpoint
from ifrvis.engine.train import accumulate_gradients, split_batch, train
from ifrvis.modeling import build_model
from ifrvis.modeling.criterion import build_criterion


@pytest.mark.parametrize(
    "batch, ranks, per_gpu, expected",
    [(16, 8, 0, (2, 1)), (16, 1, 0, (16, 1)), (16, 1, 2, (2, 8)), (16, 2, 4, (4, 2)), (16, 4, 1, (1, 4))],
)
def test_the_total_batch_is_split_into_ranks_and_micro_batches(batch, ranks, per_gpu, expected):
    assert split_batch(batch, ranks, per_gpu) == expected


@pytest.mark.parametrize(
    "batch, ranks, per_gpu, message",
    [
        (16, 3, 0, "16 clips cannot be shared equally by 3 ranks"),
        (16, 2, 3, "solver.batch_per_gpu = 3 does not divide a rank's share"),
    ],
)
def test_a_split_that_does_not_divide_is_one_line(batch, ranks, per_gpu, message):
    with pytest.raises(ConfigError, match=message):
        split_batch(batch, ranks, per_gpu)


def micro_batches(cfg, size: int, count: int) -> list:
    """`count` batches of `size` clips, the first `size * count` clips of the seed's stream."""
    dataset = ClipDataset(load_splits(cfg.data)[0], cfg.data, train=True, seed=cfg.seed)
    batches = ClipBatches(TrainSampler(len(dataset), seed=cfg.seed), size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, collate_fn=partial(collate_clips, pad_value=cfg.model.pixel_mean)
    )
    stream = iter(loader)
    return [next(stream) for _ in range(count)]


@pytest.mark.parametrize("decoder", ["ifr", "mask2former"])
def test_accumulated_micro_batches_give_the_whole_batch_gradients(tmp_path, tiny_data, decoder):
    """Dense mask losses (num_points 0: no random points), no dropout, and the tiny backbone's
    BatchNorm on its running statistics: in training it normalises by each micro-batch's own, as
    BatchNorm does per rank under DDP; the paper's backbones (frozen BatchNorm, LayerNorm) do not
    depend on the batch. The only difference left is float rounding."""
    cfg = load_config(
        write_run_config(tmp_path, tiny_data), [f"model.decoder={decoder}", "data.aspect_grouping=false"]
    )
    torch.manual_seed(0)
    model, criterion = build_model(cfg.model), build_criterion(cfg)
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def gradients(batches):
        model.zero_grad(set_to_none=True)
        losses = accumulate_gradients(model, criterion, batches, scaler, None)
        return losses, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    whole_losses, whole = gradients(micro_batches(cfg, 4, 1))
    split_losses, split = gradients(micro_batches(cfg, 2, 2))
    assert sorted(whole) == sorted(split) and len(whole) > 10
    for key in whole_losses:
        assert split_losses[key].item() == pytest.approx(whole_losses[key].item(), rel=1e-5, abs=1e-7), key
    for name, grad in whole.items():
        # float rounding: sums over other groupings of the same terms (~1e-6 of the largest entry)
        assert (split[name] - grad).abs().max() <= 1e-5 * grad.abs().max() + 1e-8, name


def test_a_run_with_micro_batches_logs_its_split_and_resumes_at_its_batch(tmp_path, tiny_data, monkeypatch):
    """batch_size 2 in micro-batches of 1: two batches drawn per step (the checkpoint's sampler says
    so), the split logged as params, and a run stopped by a signal resumes to the uninterrupted metrics."""
    overrides = ["solver.batch_per_gpu=1"]
    straight = train(load_config(write_run_config(tmp_path / "straight", tiny_data, max_iters=4), overrides))
    cfg = load_config(write_run_config(tmp_path / "stopped", tiny_data, max_iters=4), overrides)
    calls = []

    def signalled(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the run checkpoints after this step and stops
        return accumulate_gradients(*args, **kwargs)

    monkeypatch.setattr(train_module, "accumulate_gradients", signalled)
    with pytest.raises(train_module.Interrupted):
        train(cfg)
    state = load_checkpoint(run_folder.checkpoint_path(cfg))
    assert state["iteration"] == 3 and state["sampler"][0]["batches"] == 6
    monkeypatch.setattr(train_module, "accumulate_gradients", accumulate_gradients)
    resumed = train(cfg, resume=True)
    for key in ("AP", "AR10", "IDF1"):
        assert resumed[key] == pytest.approx(straight[key], nan_ok=True), key
    (run,) = runstore.find_runs(runstore.client(cfg.logging.mlflow_uri), cfg.logging.experiment)
    assert (
        run.data.params["train.batch_per_gpu"] == "1" and run.data.params["train.accumulation_steps"] == "2"
    )
