"""Optimiser and learning-rate schedule of :class:`flowkit.train.Trainer`.

Weight decay is not applied to biases and normalisation parameters (1-D tensors). The learning rate
is set per optimiser step: linear warmup over ``warmup_epochs``, then cosine decay to 0, step decay
by ``gamma`` at ``milestones`` (epochs), or constant.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..errors import FlowkitError
from .config import TrainConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimiser groups: weights with ``weight_decay``, biases and normalisation parameters (any 1-D
    tensor) without it; frozen parameters are left out. Parameters under a prefix of the model's
    ``lr_scales()`` (:meth:`flowkit.models.VideoClassifier.lr_scales`) form one more group per
    prefix, with ``lr_scale`` set and no weight decay. Full-rate groups come first (the trainer
    reports group 0's learning rate)."""
    scales = dict(model.lr_scales()) if hasattr(model, "lr_scales") else {}
    decay, no_decay = [], []
    scaled: dict[str, list] = {prefix: [] for prefix in scales}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        prefix = next((k for k in scales if name.startswith(k)), None)
        if prefix is not None:
            scaled[prefix].append(p)
        else:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    groups += [{"params": ps, "weight_decay": 0.0, "lr_scale": float(scales[k]), "prefix": k}
               for k, ps in scaled.items()]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with (non-Nesterov) momentum or AdamW over :func:`parameter_groups`, each group at
    ``config.lr * lr_scale``."""
    groups = parameter_groups(model, config.weight_decay)
    if not groups:
        raise FlowkitError(f"model {config.model!r} has no trainable parameters")
    for g in groups:
        g["lr"] = config.lr * g["lr_scale"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str,
              milestones: Sequence[int] = (), gamma: float = 0.1) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Warmup rises linearly to 1 over ``warmup_steps`` (``(step + 1) / warmup_steps``); then
    ``cosine`` decays as ``0.5 (1 + cos(pi * progress))`` with progress from 0 to 1 over the
    remaining steps, ``step`` multiplies by ``gamma`` at each milestone step passed, ``constant``
    stays 1.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":
        return gamma ** sum(step >= m for m in milestones)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimiser step, following :func:`lr_factor`.

    Step milestones default to 1/2 and 3/4 of the epochs. The factor is a plain function (not
    stored in the scheduler's state), so a resumed run with more ``epochs`` follows the new length.
    """
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    milestones = config.milestones or (max(config.epochs // 2, 1), max(3 * config.epochs // 4, 1))
    milestone_steps = [m * steps_per_epoch for m in milestones]

    def factor(step: int) -> float:
        return lr_factor(step, total_steps=total, warmup_steps=warmup, schedule=config.schedule,
                         milestones=milestone_steps, gamma=config.gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
