"""One pipeline per family: it builds the data, the model and the evaluation for the loop."""

from __future__ import annotations

import torch
from omegaconf import DictConfig


def build_pipeline(cfg: DictConfig, device: torch.device, need_dataset: bool = True, rank=None):
    """`need_dataset=False` builds the model from the features saved in a checkpoint's config."""
    if cfg.get("model") is not None:  # a neural field (model=nerfacto)
        from pipelines.nerf import NerfPipeline

        return NerfPipeline(cfg, device, need_dataset=need_dataset, rank=rank)
    if cfg.get("policy") is not None:
        from pipelines.robot import RobotPipeline

        return RobotPipeline(cfg, device, need_dataset=need_dataset, rank=rank)
    raise ValueError("the config selects no family: pick a robot policy (policy=diffusion env=pusht) or a neural field (model=nerfacto data=synthetic)")
