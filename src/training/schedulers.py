"""Learning-rate schedules named by the LeRobot seed, built by `hydra.utils.instantiate`.

Each factory takes the optimizer and the run's total number of optimizer steps, which the loop
passes in, so a schedule never needs the step count written twice in YAML.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def diffuser_scheduler(optimizer: torch.optim.Optimizer, num_training_steps: int, name: str = "cosine",
                       num_warmup_steps: int | None = None) -> LambdaLR:
    """diffusers' `get_scheduler` (cosine, linear, constant_with_warmup, ...), as LeRobot uses it."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(name, optimizer=optimizer, num_warmup_steps=num_warmup_steps,
                         num_training_steps=num_training_steps)


def cosine_decay_with_warmup(optimizer: torch.optim.Optimizer, num_training_steps: int, num_warmup_steps: int,
                             num_decay_steps: int, peak_lr: float, decay_lr: float) -> LambdaLR:
    """Linear warmup from peak_lr/(warmup+1) to peak_lr, then cosine down to decay_lr.

    The decay length is capped by the run length, as pi0's recipe does for short runs.
    """
    decay_steps = min(num_decay_steps, num_training_steps) if num_training_steps > 0 else num_decay_steps

    def lr_lambda(step: int) -> float:
        if step < num_warmup_steps:
            if step <= 0:
                return 1 / (num_warmup_steps + 1)
            frac = 1 - step / num_warmup_steps
            return (1 / (num_warmup_steps + 1) - 1) * frac + 1
        step = min(step, decay_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * step / decay_steps))
        alpha = decay_lr / peak_lr
        return (1 - alpha) * cosine + alpha

    return LambdaLR(optimizer, lr_lambda)


def exponential_decay(optimizer: torch.optim.Optimizer, num_training_steps: int, lr_pre_warmup: float = 1e-8,
                      lr_final: float | None = None, warmup_steps: int = 0, max_steps: int = 100000,
                      ramp: str = "cosine") -> LambdaLR:
    """nerfstudio's ExponentialDecayScheduler: from lr_pre_warmup up to the optimizer's lr over
    `warmup_steps` (linear, or cosine: lr_pre + (lr - lr_pre) * sin(pi/2 * t)), then a log-linear
    decay to `lr_final` at `max_steps` (lr_final None: the optimizer's lr). `max_steps` is the
    schedule's own length (nerfstudio's), independent of the run's `steps`."""
    if ramp not in ("linear", "cosine"):
        raise ValueError(f"ramp={ramp!r} is not one of linear, cosine")
    lr_init = optimizer.param_groups[0]["lr"]
    final = lr_init if lr_final is None else lr_final

    def lr_lambda(step: int) -> float:
        if step < warmup_steps:
            t = step / warmup_steps
            if ramp == "cosine":
                lr = lr_pre_warmup + (lr_init - lr_pre_warmup) * math.sin(0.5 * math.pi * min(max(t, 0.0), 1.0))
            else:
                lr = lr_pre_warmup + (lr_init - lr_pre_warmup) * t
        else:
            t = min(max((step - warmup_steps) / max(max_steps - warmup_steps, 1), 0.0), 1.0)
            lr = math.exp(math.log(lr_init) * (1 - t) + math.log(final) * t)
        return lr / lr_init

    return LambdaLR(optimizer, lr_lambda)


def vqbet_scheduler(optimizer: torch.optim.Optimizer, num_training_steps: int, num_warmup_steps: int,
                    num_vqvae_training_steps: int, num_cycles: float = 0.5) -> LambdaLR:
    """LeRobot's VQ-BeT schedule: the learning rates stay as set while the VQ-VAE trains (its first
    `num_vqvae_training_steps` steps), then warm up linearly from 0 over `num_warmup_steps` and follow
    `num_cycles` cosine cycles. As in LeRobot, the cosine's progress is measured against
    `num_training_steps - num_warmup_steps`, so the VQ-VAE steps shift the curve without shrinking it."""

    def lr_lambda(step: int) -> float:
        if step < num_vqvae_training_steps:
            return 1.0
        step -= num_vqvae_training_steps
        if step < num_warmup_steps:
            return step / max(1, num_warmup_steps)
        progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))

    return LambdaLR(optimizer, lr_lambda)
