"""Registers every schema in Hydra's ConfigStore under ``schema/<group>/<name>``.

The YAML options extend these nodes, which is what makes composition type-checked. Keeping the
schemas in their own group keeps them out of the user-facing choices of each group.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from config import schemas
from envs.configs import EnvConfig
from models.act.config import ACTConfig
from models.diffusion.config import DiffusionConfig
from models.nerfacto.config import NerfactoConfig
from models.pi0.config import PI0Config
from models.tdmpc.config import TDMPCConfig
from models.vqbet.config import VQBeTConfig
from viewer.config import ViewerConfig

SCHEMAS = {
    "optimizer": {"adam": schemas.AdamConfig, "adamw": schemas.AdamWConfig, "sgd": schemas.SGDConfig,
                  "nerfacto": schemas.NerfactoOptimizersConfig},
    "scheduler": {
        "diffuser": schemas.DiffuserSchedulerConfig,
        "cosine_decay_with_warmup": schemas.CosineDecayWithWarmupSchedulerConfig,
        "nerfacto": schemas.NerfactoSchedulersConfig,
        "vqbet": schemas.VQBeTSchedulerConfig,
    },
    "dataset": {"lerobot": schemas.DatasetConfig},
    "machine": {"machine": schemas.MachineConfig},
    "logger": {"mlflow": schemas.MLflowLoggerConfig, "none": schemas.NullLoggerConfig},
    "eval": {"rollout": schemas.RolloutEvalConfig, "views": schemas.ViewsEvalConfig},
    "policy": {"diffusion": DiffusionConfig, "act": ACTConfig, "vqbet": VQBeTConfig, "pi0": PI0Config,
               "tdmpc": TDMPCConfig},
    "env": {"env": EnvConfig},
    "model": {"nerfacto": NerfactoConfig},
    "data": {"nerf": schemas.NerfDataConfig},
    "viewer": {"viewer": ViewerConfig},
}


def register_schemas() -> None:
    """Idempotent: Hydra's ConfigStore simply replaces an entry stored twice."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=schemas.TrainConfig)
    for group, nodes in SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
