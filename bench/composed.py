"""The `train` config composed as `src/train.py` composes it, for benches that build the pipeline and
Trainer themselves: the schemas registered, Hydra's own node set as the runtime config (interpolations
such as `${hydra:runtime.choices.env}` resolve) and then dropped from the returned config."""

from __future__ import annotations

from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "conf"


def compose_train(overrides: list[str], resolve: bool = False):
    """The composed config for `overrides`; `resolve` also resolves every interpolation in place."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from config.store import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        if resolve:
            OmegaConf.resolve(cfg)
    return cfg
