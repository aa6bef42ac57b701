"""`solver.compile`: the training forward through torch.compile computes what the eager forward computes
(the same loss terms and gradients to float tolerance on a fixed batch), shares its weights (a checkpoint
is the same module's state), and a run asks for a C++ compiler before it starts."""

import os

import pytest
import torch
from conftest import ROOT

from ifrvis.config import ConfigError, load_config
from ifrvis.engine.train import preflight, training_forward
from ifrvis.modeling import build_model
from ifrvis.modeling.criterion import build_criterion

TINY = ROOT / "experiments/configs/synthetic_tiny.yaml"


def fixed_batch(num_classes: int) -> tuple[torch.Tensor, list[dict]]:
    """Two clips `(2, 2, 3, 64, 96)` with two rectangle instances each."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 2, 3, 64, 96, generator=generator) * 255
    targets = []
    for clip in range(2):
        masks = torch.zeros(2, 2, 64, 96, dtype=torch.bool)
        masks[0, :, 8:30, 10 + clip : 40 + clip] = True
        masks[1, :, 30:60, 50 : 90 - clip] = True
        targets.append(
            {
                "labels": torch.tensor([clip, num_classes - 1]),
                "masks": masks,
                "present": torch.ones(2, 2, dtype=torch.bool),
            }
        )
    return images, targets


def loss_and_gradients(forward, model, criterion, batch) -> tuple[dict[str, torch.Tensor], dict]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same sampled loss points for both
    losses = criterion(forward(batch[0]), batch[1])
    sum(losses.values()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.slow
def test_the_compiled_training_forward_computes_the_eager_loss_and_gradients(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    # one decoder layer: the same code paths, a third of the kernels to compile (a cold compile of the
    # three-layer tiny model takes over 2 minutes on two cores)
    cfg = load_config(TINY, ["model.weights=", "model.dec_layers=1"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.loss.class_loss).train()
    criterion = build_criterion(cfg)
    batch = fixed_batch(cfg.model.num_classes)
    eager_losses, eager_grads = loss_and_gradients(model, model, criterion, batch)

    compiled = training_forward(model, compiled=True)
    assert all(a is b for a, b in zip(compiled.parameters(), model.parameters(), strict=True))
    compiled_losses, compiled_grads = loss_and_gradients(compiled, model, criterion, batch)

    assert compiled_losses.keys() == eager_losses.keys()
    for key, value in eager_losses.items():
        torch.testing.assert_close(compiled_losses[key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert compiled_grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)
    assert any((tmp_path / "inductor").rglob("*.py")), "no compiled kernel in the cache folder"


def test_the_eager_path_is_the_model_itself():
    model = torch.nn.Linear(2, 2)
    assert training_forward(model, compiled=False) is model


def test_compiled_kernels_are_cached_under_home_unless_the_user_chose_a_folder(tmp_path, monkeypatch):
    """torch has set the variable to its /tmp default (as building a model can make it do): ifrvis's
    folder replaces it; a folder the user set stays."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    training_forward(torch.nn.Linear(2, 2), compiled=True)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / ".cache/ifrvis/inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    training_forward(torch.nn.Linear(2, 2), compiled=True)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def test_a_compiled_run_without_a_cxx_compiler_stops_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++ nor clang++ here
    monkeypatch.delenv("CXX", raising=False)
    cfg = load_config(TINY, ["solver.compile=true"])
    with pytest.raises(ConfigError, match="solver.compile needs a C\\+\\+ compiler"):
        preflight(cfg)
