"""AdamW with a 1/10 backbone learning rate (Sec. 4.1) and Mask2Former's iteration-based schedule."""

from __future__ import annotations

import torch
from torch import nn

from ifrvis.config import SolverConfig

# Mask2Former's optimizer (train_net_video.py `build_optimizer`): no weight decay on norms, on
# nn.Embedding (the decoder's queries and level embedding) and on Swin's position tables. Every other
# parameter decays, the pixel decoder's level embedding (a plain nn.Parameter there and here) included.
NO_DECAY_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.Embedding)
NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def param_groups(model: nn.Module, cfg: SolverConfig) -> list[dict]:
    """Backbone parameters at lr x backbone_lr_multiplier; norms and embeddings without weight decay."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{name}" if module_name else name
            is_backbone = full_name.startswith(("backbone.", "module.backbone."))
            no_decay = isinstance(module, NO_DECAY_TYPES) or any(key in name for key in NO_DECAY_NAMES)
            groups.setdefault((is_backbone, no_decay), []).append(param)
    return [
        {
            "params": params,
            "lr": cfg.lr * (cfg.backbone_lr_multiplier if is_backbone else 1.0),
            "weight_decay": 0.0 if no_decay else cfg.weight_decay,
            "name": f"{'backbone' if is_backbone else 'head'}{'/no_decay' if no_decay else ''}",
        }
        for (is_backbone, no_decay), params in sorted(groups.items())
    ]


def lr_factor(iteration: int, cfg: SolverConfig) -> float:
    """Multiplier of the base learning rate at `iteration`: linear warm-up, then step or poly decay."""
    if cfg.schedule == "step":
        factor = cfg.gamma ** sum(iteration >= step for step in cfg.steps)
    elif cfg.schedule == "poly":
        factor = (1 - min(iteration, cfg.max_iters) / cfg.max_iters) ** cfg.poly_power
    else:
        raise ValueError(f"solver.schedule must be 'step' or 'poly', got '{cfg.schedule}'")
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        factor *= cfg.warmup_factor * (1 - alpha) + alpha
    return factor


def build_optimizer(model: nn.Module, cfg: SolverConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cfg.fused_optimizer
    )


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, cfg: SolverConfig) -> None:
    """`optimizer.load_state_dict(state)`, keeping `cfg.fused_optimizer`: a saved state carries its own
    'fused' flag, which would otherwise replace the run's."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group["fused"] = cfg.fused_optimizer


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SolverConfig) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(0, cfg)  # fail early on an unknown schedule
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
