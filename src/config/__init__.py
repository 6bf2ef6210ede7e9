"""Config schemas, checks and the OmegaConf resolvers the YAML files use.

The resolvers are registered when this package is first imported, so that every process that
resolves a config (train.py, eval.py, spawned ranks, SLURM jobs unpickling the task) has them.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def amp_default(device_type: str) -> bool:
    """`use_amp: ${amp_default:${machine.device_type}}` (model=nerfacto): mixed precision where it pays.

    nerfstudio's `--mixed-precision` defaults to True and nerfstudio switches it off for CPU training;
    bf16 autocast on a CPU without native bf16 is slower than fp32 (about 1.5x on nerfacto, measured
    with oneDNN limited to AVX2). So the default is on for CUDA (`auto` with a CUDA device visible)
    and off on the CPU and MPS; `use_amp=true` still forces it anywhere."""
    if device_type == "auto":
        import torch

        return bool(torch.cuda.is_available())
    return device_type == "cuda"


if not OmegaConf.has_resolver("amp_default"):
    OmegaConf.register_new_resolver("amp_default", amp_default)


def hydrabot_groups() -> str:
    """`${hydrabot_groups:}` in conf/hydra/help/hydrabot.yaml: the groups --help lists (cli/help.py)."""
    from cli.help import groups_help

    return groups_help()


if not OmegaConf.has_resolver("hydrabot_groups"):
    OmegaConf.register_new_resolver("hydrabot_groups", hydrabot_groups)
