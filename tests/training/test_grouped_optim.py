"""Grouped optimizers/schedulers (nerfacto's named parameter groups) and the exponential decay."""

from __future__ import annotations

import math

import torch
from omegaconf import OmegaConf

from training.optim import GroupedOptimizer, GroupedScheduler, build_optimizer, build_scheduler


def _cfg(**extra):
    group = {"_target_": "torch.optim.Adam", "lr": 1e-2, "eps": 1e-15, "weight_decay": 0, "max_norm": None}
    return OmegaConf.create({"a": dict(group), "b": {**group, "max_norm": 0.5, **extra}})


def _sched():
    s = {"_target_": "training.schedulers.exponential_decay", "lr_pre_warmup": 1e-8, "lr_final": 1e-4,
         "warmup_steps": 0, "max_steps": 100, "ramp": "cosine"}
    return OmegaConf.create({"a": dict(s), "b": {**s, "warmup_steps": 10}})


def test_exponential_decay_matches_nerfstudio_formula():
    opt, _ = build_optimizer(_cfg(), {"a": [torch.nn.Parameter(torch.zeros(2))],
                                      "b": [torch.nn.Parameter(torch.zeros(2))]})
    sched = build_scheduler(_sched(), opt, 1000)
    assert isinstance(opt, GroupedOptimizer) and isinstance(sched, GroupedScheduler)
    lrs = {"a": [], "b": []}
    for _ in range(120):
        for k in lrs:
            lrs[k].append(opt.optimizers[k].param_groups[0]["lr"])
        opt.step()
        sched.step()
    a, b = lrs["a"], lrs["b"]
    assert math.isclose(a[0], 1e-2) and math.isclose(a[100], 1e-4) and math.isclose(a[119], 1e-4)
    t = 50 / 100
    assert math.isclose(a[50], math.exp(math.log(1e-2) * (1 - t) + math.log(1e-4) * t))
    assert math.isclose(b[0], 1e-8)  # warmup from lr_pre_warmup, sine ramp
    assert math.isclose(b[5], 1e-8 + (1e-2 - 1e-8) * math.sin(0.5 * math.pi * 0.5))
    assert math.isclose(b[10], 1e-2)


def test_grouped_clipping_state_and_empty_groups():
    pa, pb = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = GroupedOptimizer(_cfg(), {"a": [pa], "b": [pb]})
    pa.grad, pb.grad = torch.full((3,), 10.0), torch.full((3,), 10.0)
    opt.clip_grad_norms()
    assert math.isclose(float(pb.grad.norm()), 0.5, rel_tol=1e-5)  # b clipped to its max_norm
    assert math.isclose(float(pa.grad.norm()), math.sqrt(300), rel_tol=1e-5)  # a: no clipping
    opt.step()
    state = opt.state_dict()
    assert set(state) == {"a", "b"}
    opt2 = GroupedOptimizer(_cfg(), {"a": [pa], "b": [pb]})
    opt2.load_state_dict(state)
    assert set(GroupedOptimizer(_cfg(), {"a": [pa], "b": []}).optimizers) == {"a"}  # e.g. camera_opt off
