"""The optimizer, its learning-rate schedule, and one optimizer step (sync, clip, step)."""

from __future__ import annotations

import math

import torch

from ..config import OptimConfig
from .distributed import Dist, sync_gradients
from .parallel import clip_sharded_grad_norm_, is_sharded


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW on the trainable parameters; biases and norms get no weight decay."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=optim.lr, betas=optim.betas)


def lr_at(optim: OptimConfig, step: int, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then the schedule."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    span = max(1, total_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    if optim.schedule == "linear":
        return optim.lr * (1.0 - progress)
    if optim.schedule == "cosine":
        return optim.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return optim.lr


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, optim: OptimConfig,
                   d: Dist, lr: float) -> float:
    """Sync, clip, step and zero; returns the global gradient norm before clipping."""
    sharded = is_sharded(model)
    if not sharded:  # fsdp reduce-scattered each gradient already, in the backward pass
        sync_gradients(model, d)
    params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
    max_norm = optim.max_grad_norm if optim.max_grad_norm > 0 else float("inf")
    if sharded:
        norm = clip_sharded_grad_norm_(params, max_norm, d)
    else:
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm
