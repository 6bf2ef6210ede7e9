"""Optimizer construction from the `optimizer` group, with the policy's own parameter groups."""

from __future__ import annotations

from typing import Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def build_optimizer(cfg: DictConfig, params: Iterable) -> tuple[torch.optim.Optimizer, float | None]:
    """Returns the optimizer and the grad-norm clip (None or <= 0: no clipping).

    `grad_clip_norm` belongs to the loop, so it is taken out before torch sees the kwargs.
    """
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    clip = kwargs.pop("grad_clip_norm", None)
    optimizer = instantiate(kwargs, params=params, _convert_="all")
    return optimizer, (clip if clip and clip > 0 else None)


def build_scheduler(cfg: DictConfig | None, optimizer: torch.optim.Optimizer, num_training_steps: int):
    if cfg is None:
        return None
    return instantiate(cfg, optimizer=optimizer, num_training_steps=num_training_steps)
