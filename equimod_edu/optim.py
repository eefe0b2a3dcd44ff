"""The optimiser and learning-rate schedule of SimCLR / BYOL / EquiMod: LARS, warm-up then cosine.

For example::

    groups = lars_param_groups(model, weight_decay=1e-6)
    optimizer = LARS(groups, lr=4.0, momentum=0.9, trust_coefficient=1e-3)
    for step in range(total_steps):
        set_lr(optimizer, warmup_cosine(step, total_steps, warmup_steps, base_lr=4.0))
        ...; optimizer.step()
"""

from __future__ import annotations

import math

import torch
from torch import nn


def lars_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters: weights get decay and LARS scaling; biases and norm weights neither.

    As in SimCLR and the official EquiMod code, every 1-D parameter (biases, BatchNorm scale and
    shift) is excluded from weight decay and from the trust-ratio adaptation.
    """
    decayed, excluded = [], []
    for param in model.parameters():
        if param.requires_grad:
            (excluded if param.ndim <= 1 else decayed).append(param)
    return [{"params": decayed, "weight_decay": weight_decay, "lars_exclude": False},
            {"params": excluded, "weight_decay": 0.0, "lars_exclude": True}]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg, 2017).

    For a parameter w with gradient g (weight decay wd added first: g <- g + wd * w), LARS scales
    the update by the trust ratio  eta * ||w|| / ||g||  (eta = trust_coefficient), so each layer
    moves by about lr * eta of its own norm per step whatever its gradient scale. Then momentum:
    v <- m * v + g;  w <- w - lr * v.  Groups with ``lars_exclude=True`` skip decay and scaling.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 1e-3):
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(f"LARS needs lr, momentum, weight_decay >= 0 and trust_coefficient > 0; got "
                             f"lr={lr}, momentum={momentum}, weight_decay={weight_decay}, "
                             f"trust_coefficient={trust_coefficient}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:  # foreach ops: a few kernels per group, not a Python loop per tensor
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            updates = [p.grad for p in params]
            if not group["lars_exclude"]:
                updates = torch._foreach_add(updates, params, alpha=group["weight_decay"])
                param_norm = torch.stack(torch._foreach_norm(params))       # (K,) one norm per tensor
                update_norm = torch.stack(torch._foreach_norm(updates))
                trust = group["trust_coefficient"] * param_norm / update_norm
                # no scaling where either norm is 0 (a fresh zero-initialised layer, a zero gradient)
                trust = torch.where((param_norm > 0) & (update_norm > 0), trust, torch.ones_like(trust))
                updates = torch._foreach_mul(updates, list(trust.unbind()))
            buffers = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:  # 0 * momentum + update = update, exactly
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffers.append(state["momentum_buffer"])
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, updates)
            torch._foreach_add_(params, buffers, alpha=-group["lr"])
        return loss


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Learning rate at `step` (0-based): linear warm-up from ~0, then cosine decay to 0.

    lr = base_lr * (step + 1) / warmup_steps during warm-up, then
    lr = base_lr * (1 + cos(pi * progress)) / 2 with progress going from 0 to 1 after it.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
