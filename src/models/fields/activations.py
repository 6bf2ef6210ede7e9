"""Activations for densities."""

from __future__ import annotations

import torch


class _TruncExp(torch.autograd.Function):
    """exp(x) forward; the backward clamps the input at 15 so large pre-activations cannot explode."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        # written with differentiable ops, so double backward (normals with create_graph) works
        return g * torch.exp(torch.clamp(x, max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp with a gradient computed from exp(min(x, 15)) (nerfstudio's / torch-ngp's trunc_exp)."""
    return _TruncExp.apply(x)
