import os
import signal
import subprocess
import sys
import time
from collections import OrderedDict

import pytest
import torch
from test_meta_arch import tiny_config
from torch import nn

from ifrvis.config import SolverConfig
from ifrvis.engine.checkpoint import load_checkpoint, save_checkpoint
from ifrvis.engine.solver import (
    build_optimizer,
    build_scheduler,
    load_optimizer_state,
    lr_factor,
    param_groups,
)
from ifrvis.modeling import build_model


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)
        self.norm = nn.LayerNorm(2)
        self.query_embed = nn.Embedding(3, 2)


def test_backbone_gets_a_tenth_of_the_learning_rate_and_norms_no_decay():
    cfg = SolverConfig(lr=1e-3, backbone_lr_multiplier=0.1, weight_decay=0.05)
    groups = {g["name"]: g for g in param_groups(Toy(), cfg)}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4) and groups["backbone"]["weight_decay"] == 0.05
    assert groups["backbone/no_decay"]["lr"] == pytest.approx(1e-4)
    assert groups["backbone/no_decay"]["weight_decay"] == 0.0
    assert groups["head"]["lr"] == pytest.approx(1e-3)
    head_no_decay = {id(p) for p in groups["head/no_decay"]["params"]}
    model = Toy()
    assert len(head_no_decay) == 3  # LayerNorm weight and bias, query embedding
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_fused_adamw_takes_the_same_steps_and_stays_fused_after_a_resume():
    """`solver.fused_optimizer`: the fused kernel's updates equal the default loop's to float rounding over
    a few steps with decay on and off; a state saved by a non-fused optimizer does not turn it off."""
    torch.manual_seed(0)
    models = [Toy(), Toy()]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [
        build_optimizer(model, SolverConfig(lr=1e-2, fused_optimizer=fused))
        for model, fused in zip(models, (False, True))
    ]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in models[0].parameters()]
        for model, optimizer in zip(models, optimizers):
            for param, grad in zip(model.parameters(), grads):
                param.grad = grad.clone()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert all(group["fused"] for group in optimizers[1].param_groups)
    resumed = build_optimizer(models[1], SolverConfig(lr=1e-2, fused_optimizer=True))
    load_optimizer_state(resumed, optimizers[0].state_dict(), SolverConfig(fused_optimizer=True))
    assert all(group["fused"] for group in resumed.param_groups)
    plain = build_optimizer(models[1], SolverConfig(lr=1e-2))
    plain.load_state_dict(optimizers[0].state_dict())
    assert not any(group["fused"] for group in plain.param_groups)  # what load_optimizer_state guards


def test_swin_position_biases_get_no_weight_decay():
    from ifrvis.modeling.backbone import build_backbone
    from ifrvis.modeling.torchvision_backbones import SWIN_SPECS

    backbone = nn.Module()
    backbone.backbone = build_backbone("swin_t")
    groups = {g["name"]: g for g in param_groups(backbone, SolverConfig(weight_decay=0.05))}
    names = {id(p): n for n, p in backbone.named_parameters()}
    no_decay = [names[id(p)] for p in groups["backbone/no_decay"]["params"]]
    blocks = sum(SWIN_SPECS["swin_t"][1])  # one bias table per block
    assert sum("relative_position_bias_table" in n for n in no_decay) == blocks
    assert not any("relative_position_bias_table" in names[id(p)] for p in groups["backbone"]["params"])


def test_weight_decay_as_mask2formers_optimizer_on_the_model():
    """Mask2Former's build_optimizer: the decoder's nn.Embedding (queries, level embedding) and every norm
    without decay; the pixel decoder's level embedding (a plain parameter) decays like any weight."""
    model = build_model(tiny_config("ifr"))
    groups = param_groups(model, SolverConfig(weight_decay=0.05))
    decay = {
        name
        for name, param in model.named_parameters()
        for g in groups
        if g["weight_decay"] > 0 and any(param is p for p in g["params"])
    }
    assert "pixel_decoder.level_embed" in decay
    exempt = {"decoder.query_feat.weight", "decoder.query_embed.weight", "decoder.level_embed.weight"}
    assert not exempt & decay
    assert not any(".norm" in name for name in decay)
    assert "decoder.layers.0.frame_ffn.linear1.weight" in decay


def test_step_schedule_with_warmup():
    cfg = SolverConfig(schedule="step", steps=[10, 20], gamma=0.1, warmup_iters=4, warmup_factor=0.5)
    assert lr_factor(0, cfg) == pytest.approx(0.5)
    assert lr_factor(2, cfg) == pytest.approx(0.75)  # halfway from 0.5 to 1
    assert [lr_factor(i, cfg) for i in (4, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_poly_schedule():
    cfg = SolverConfig(schedule="poly", max_iters=100, poly_power=0.9, warmup_iters=0)
    assert lr_factor(50, cfg) == pytest.approx(0.5**0.9)
    assert lr_factor(100, cfg) == 0.0
    with pytest.raises(ValueError, match="solver.schedule"):
        lr_factor(0, SolverConfig(schedule="cosine"))


def test_scheduler_drives_the_optimizer():
    model = Toy()
    cfg = SolverConfig(lr=1.0, steps=[2], gamma=0.5, warmup_iters=0)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])  # the head group
        optimizer.step()
        scheduler.step()
    assert lrs == [1.0, 1.0, 0.5]


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    state = {"model": Toy().state_dict(), "iteration": 7, "note": [1, 2]}
    path = save_checkpoint(tmp_path / "checkpoint.pt", state)
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 7 and torch.equal(
        loaded["model"]["head.weight"], state["model"]["head.weight"]
    )
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_kill_during_a_save_keeps_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"iteration": 1})
    # A process that starts writing a large checkpoint and is killed mid-way.
    code = (
        "import torch, sys; from ifrvis.engine.checkpoint import save_checkpoint;"
        "print('go', flush=True);"
        f"save_checkpoint(r'{path}', {{'iteration': 2, 'big': torch.zeros(400_000_000, dtype=torch.uint8)}})"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "go"
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert load_checkpoint(path)["iteration"] == 1


class SignalsWhilePickled:
    """Sends SIGUSR2 to this process when `torch.save` pickles it, i.e. in the middle of the save."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGUSR2)
        return (OrderedDict, ())  # a type the weights-only loader allows


class Preempted(Exception):
    pass


def test_a_preemption_signal_during_a_save_waits_for_the_complete_checkpoint(tmp_path):
    """As submitit's requeue handler does, the handler here leaves by raising; it must run after the
    checkpoint is in place, not inside torch.save (whose zip writer would fail on the way out)."""
    path = tmp_path / "checkpoint.pt"
    seen_during_save = []

    def handler(signum, frame):
        seen_during_save.append(path.exists())
        raise Preempted

    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        with pytest.raises(Preempted):
            save_checkpoint(
                path, {"iteration": 3, "model": Toy().state_dict(), "marker": SignalsWhilePickled()}
            )
        assert signal.getsignal(signal.SIGUSR2) is handler  # the save put the handler back
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen_during_save == [True]
    assert load_checkpoint(path)["iteration"] == 3
