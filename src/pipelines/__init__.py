"""One pipeline per family: it builds the data, the model and the evaluation for the loop."""

from __future__ import annotations

import torch
from omegaconf import DictConfig


def build_pipeline(cfg: DictConfig, device: torch.device, need_dataset: bool = True, rank=None,
                   test_mode: str = "val"):
    """`need_dataset=False` builds the model from the features saved in a checkpoint's config.
    `test_mode="test"`: a neural field is evaluated on its scene's test split (ns-eval), not val."""
    if rank is None:
        from training.distributed import SINGLE

        rank = SINGLE
    family = pipeline_class(cfg)
    split = {"test_mode": test_mode} if cfg.get("model") is not None else {}  # a neural field's eval split
    return family(cfg, device, need_dataset=need_dataset, rank=rank, **split)


def pipeline_class(cfg: DictConfig) -> type:
    """The family's pipeline class, before anything is built (what it declares can be checked first)."""
    if cfg.get("model") is not None:  # a neural field (model=nerfacto)
        from pipelines.nerf import NerfPipeline

        return NerfPipeline
    if cfg.get("policy") is not None:
        from pipelines.robot import RobotPipeline

        return RobotPipeline
    raise ValueError("the config selects no family: pick a robot policy (policy=diffusion env=pusht) or a neural field (model=nerfacto data=synthetic)")


def drop_init_only_options(cfg: DictConfig) -> None:
    """Nulls the options a policy declares in `init_only_options` (e.g. `pretrained_backbone_weights`):
    they only choose starting weights, which a checkpoint's replace, so evaluating a run must not need
    the ImageNet file it was trained from."""
    if cfg.get("policy") is None:
        return
    from hydra.utils import get_class

    for key in getattr(get_class(cfg.policy._target_), "init_only_options", ()):
        cfg.policy[key] = None


def load_checkpoint(checkpoint: str, overrides: dict[str, str], test_mode: str = "val", before_build=None):
    """What eval.py, render.py and view.py start from: `(checkpoint folder, pipeline with its weights, its
    config, its training state, its group choices)`, each checked first (training.checkpoint.verify,
    config.saved). The checkpoint carries its resolved config, so no training dataset is needed for a
    policy; `key=value` overrides (machine.device_type=cpu, eval.*) apply on top. test_mode: see
    build_pipeline (eval.py passes "test", as ns-eval). `before_build(cfg)` may refuse the checked config
    before anything is built."""
    import yaml

    from config.ranges import check_ranges
    from config.saved import set_value
    from training import checkpoint as ckpt_lib
    from training import speed
    from training.device import select_device
    from training.rng import seed_everything

    ckpt = ckpt_lib.resolve_checkpoint(checkpoint)
    ckpt_lib.verify(ckpt)
    state = ckpt_lib.load_training_state(ckpt)
    cfg, choices = ckpt_lib.load_checked_config(ckpt)
    for key, value in overrides.items():  # typed like a Hydra override value
        set_value(cfg, key, yaml.safe_load(value), ckpt / ckpt_lib.CONFIG_FILE)
    drop_init_only_options(cfg)
    check_ranges(cfg)
    if before_build is not None:
        before_build(cfg)
    from training.threads import set_num_threads

    set_num_threads(cfg.machine.get("num_threads"), announce=False)
    seed_everything(cfg.machine.seed)
    device = select_device(cfg.machine.device_type)
    speed.apply_backend_choices(cfg.machine, device)  # TF32 and cudnn.benchmark as the run trained and evaluated
    pipeline = build_pipeline(cfg, device, need_dataset=False, test_mode=test_mode)
    ckpt_lib.load_weights(ckpt, pipeline.model)
    return ckpt, pipeline, cfg, state, choices
