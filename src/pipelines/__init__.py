"""One pipeline per family: it builds the data, the model and the evaluation for the loop."""

from __future__ import annotations

import torch
from omegaconf import DictConfig


def build_pipeline(cfg: DictConfig, device: torch.device, need_dataset: bool = True, rank=None):
    """`need_dataset=False` builds the model from the features saved in a checkpoint's config."""
    if rank is None:
        from training.distributed import SINGLE

        rank = SINGLE
    if cfg.get("model") is not None:  # a neural field (model=nerfacto)
        from pipelines.nerf import NerfPipeline

        return NerfPipeline(cfg, device, need_dataset=need_dataset, rank=rank)
    if cfg.get("policy") is not None:
        from pipelines.robot import RobotPipeline

        return RobotPipeline(cfg, device, need_dataset=need_dataset, rank=rank)
    raise ValueError("the config selects no family: pick a robot policy (policy=diffusion env=pusht) or a neural field (model=nerfacto data=synthetic)")


def load_checkpoint(checkpoint: str, overrides: dict[str, str]):
    """What eval.py and render.py start from: `(checkpoint folder, pipeline with its weights, its
    config, its training state, its group choices)`, each checked first (training.checkpoint.verify,
    config.saved). The checkpoint carries its resolved config, so no training dataset is needed for a
    policy; `key=value` overrides (machine.device_type=cpu, eval.*) apply on top."""
    import yaml

    from config.ranges import check_ranges
    from config.saved import set_value
    from training import checkpoint as ckpt_lib
    from training.device import select_device
    from training.rng import seed_everything

    ckpt = ckpt_lib.resolve_checkpoint(checkpoint)
    ckpt_lib.verify(ckpt)
    state = ckpt_lib.load_training_state(ckpt)
    cfg, choices = ckpt_lib.load_checked_config(ckpt)
    for key, value in overrides.items():  # typed like a Hydra override value
        set_value(cfg, key, yaml.safe_load(value), ckpt / ckpt_lib.CONFIG_FILE)
    check_ranges(cfg)
    from training.threads import set_num_threads

    set_num_threads(cfg.machine.get("num_threads"), announce=False)
    seed_everything(cfg.machine.seed)
    device = select_device(cfg.machine.device_type)
    pipeline = build_pipeline(cfg, device, need_dataset=False)
    ckpt_lib.load_weights(ckpt, pipeline.model)
    return ckpt, pipeline, cfg, state, choices
