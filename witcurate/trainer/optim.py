"""AdamW parameter groups and the learning-rate schedule, as open_clip_train sets them up."""

from __future__ import annotations

import math

import torch


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """open_clip_train's exclusion rule: gains, biases, norms, the class token and the logit scale
    (anything below 2-D, or named bn/ln/bias/logit_scale) get no weight decay."""
    return (param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
            or "logit_scale" in name)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if no_weight_decay(name, p) else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0},
            {"params": decay, "weight_decay": weight_decay}]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """CLIP's betas/eps for ViTs (open_clip_train's defaults for them). The fused kernel: on CPU
    it steps a tiny CLIP's 6M-entry token embedding in ~4 ms instead of ~27 ms."""
    groups = param_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    except (RuntimeError, TypeError):   # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warmup over `warmup` steps (step 0 gets base_lr/warmup), then cosine to zero."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return 0.5 * (1 + math.cos(math.pi * progress)) * base_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
