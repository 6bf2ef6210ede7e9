"""Optimizer construction from the `optimizer` group, with the policy's own parameter groups."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from config.errors import ConfigError


def build_optimizer(cfg: DictConfig, params: Iterable, capturable: bool = False
                    ) -> tuple[torch.optim.Optimizer, float | None]:
    """Returns the optimizer and the grad-norm clip (None or <= 0: no clipping).

    `grad_clip_norm` belongs to the loop, so it is taken out before torch sees the kwargs. `capturable`
    (machine.cuda_graph) builds a fused Adam/AdamW whose step can be captured in a CUDA graph.
    """
    if is_grouped(cfg):
        return GroupedOptimizer(cfg, params, capturable=capturable), None
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    clip = kwargs.pop("grad_clip_norm", None)
    params = list(params)
    if "fused" in kwargs and kwargs["fused"] is None:
        kwargs["fused"] = fused_default(params) or capturable
    if capturable:
        _make_capturable(kwargs, "optimizer")
    optimizer = instantiate(kwargs, params=params, _convert_="all")
    return optimizer, (clip if clip and clip > 0 else None)


def capture_blocker(cfg, name: str = "optimizer") -> str | None:
    """Why this optimizer config cannot step inside a CUDA graph (machine.cuda_graph), or None: only a
    fused Adam/AdamW can (every group's, for a grouped optimizer)."""
    if is_grouped(cfg):
        return next(filter(None, (capture_blocker(kw, f"{name}.{group}") for group, kw in cfg.items())), None)
    target, fused = cfg.get("_target_"), cfg.get("fused", True)
    adam = target in ("torch.optim.Adam", "torch.optim.AdamW")
    if adam and fused is not False:
        return None
    fix = f"{name}.fused=null" if adam else "an Adam or AdamW optimizer"
    return f"a fused Adam or AdamW ({name}={target}, fused={fused}; use {fix})"


def _make_capturable(kwargs: dict, name: str) -> None:
    """An Adam/AdamW config made fused and capturable (machine.cuda_graph); any other is refused."""
    why = capture_blocker(kwargs, name)
    if why:
        raise ConfigError(f"machine.cuda_graph=true needs {why}, or machine.cuda_graph=false")
    kwargs.update(fused=True, capturable=True)


def fused_default(params: list) -> bool:
    """`optimizer.fused=null`: Adam/AdamW's fused kernel when every parameter is a CUDA float tensor (one
    launch per step in place of the foreach path's dozens; torch's own default stays foreach)."""
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    return bool(tensors) and all(t.is_cuda and t.is_floating_point() for t in tensors)


def build_scheduler(cfg: DictConfig | None, optimizer: torch.optim.Optimizer, num_training_steps: int):
    if cfg is None:
        return None
    if isinstance(optimizer, GroupedOptimizer):
        return GroupedScheduler(cfg, optimizer, num_training_steps)
    return instantiate(cfg, optimizer=optimizer, num_training_steps=num_training_steps)


# ----------------------------------------------------------------------------- grouped (neural fields)
def is_grouped(cfg) -> bool:
    """A grouped optimizer/scheduler config: {group name: optimizer (or scheduler) config}, no `_target_`."""
    return cfg is not None and "_target_" not in cfg and all(
        isinstance(v, (dict, DictConfig)) and "_target_" in v for v in cfg.values())


class GroupedOptimizer:
    """One torch optimizer per named parameter group (nerfstudio's Optimizers), stepped together.

    Quacks like a torch optimizer for the loop (param_groups, state, step, zero_grad, state_dict) and
    keeps each group's `max_norm` for per-group gradient clipping (`clip_grad_norms`). `capturable`
    (machine.cuda_graph) builds every group's Adam fused and capturable."""

    def __init__(self, cfg: DictConfig, params: dict, capturable: bool = False):
        kwargs = OmegaConf.to_container(cfg, resolve=True)
        unknown = sorted(set(params) ^ set(kwargs))
        if unknown:
            raise ValueError(f"optimizer groups {sorted(kwargs)} do not match the model's parameter groups "
                             f"{sorted(params)} (differ in {unknown})")
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.max_norms: dict[str, float | None] = {}
        for name, kw in kwargs.items():
            self.max_norms[name] = kw.pop("max_norm", None)
            kw.pop("grad_clip_norm", None)
            group_params = list(params[name])
            if not group_params:  # e.g. camera_opt with mode=off: nothing to optimise
                continue
            if capturable:
                _make_capturable(kw, f"optimizer.{name}")
            self.optimizers[name] = instantiate(kw, params=group_params, _convert_="all")

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    @property
    def state(self) -> dict:
        return {p: st for opt in self.optimizers.values() for p, st in opt.state.items()}

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def clip_grad_norms(self) -> torch.Tensor | float:
        """Clips each group to its max_norm; returns the global grad norm before clipping, on the device (read
        back only when the loop logs it)."""
        norms = []
        for name, opt in self.optimizers.items():
            ps = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            if not ps:
                continue
            max_norm = self.max_norms.get(name)
            norms.append(torch.nn.utils.clip_grad_norm_(ps, max_norm if max_norm and max_norm > 0 else math.inf))
        return torch.linalg.vector_norm(torch.stack([n.float() for n in norms])) if norms else 0.0

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


class GroupedScheduler:
    def __init__(self, cfg: DictConfig, optimizer: GroupedOptimizer, num_training_steps: int):
        self.schedulers = {}
        for name, opt in optimizer.optimizers.items():
            if name not in cfg:
                raise ValueError(f"scheduler has no entry for optimizer group {name!r} (has {sorted(cfg)})")
            self.schedulers[name] = instantiate(cfg[name], optimizer=opt, num_training_steps=num_training_steps)

    def step(self) -> None:
        for s in self.schedulers.values():
            s.step()

    def state_dict(self) -> dict:
        return {name: s.state_dict() for name, s in self.schedulers.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, s in self.schedulers.items():
            s.load_state_dict(state[name])
