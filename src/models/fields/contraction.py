"""Scene contraction (mip-NeRF 360), nerfstudio's SceneContraction."""

from __future__ import annotations

import math

import torch
from torch import nn


class SceneContraction(nn.Module):
    """x if ||x|| <= 1 else (2 - 1/||x||) * x/||x||: maps R^3 into the ball of radius 2 of `order`.

    order=inf (nerfacto's choice) contracts into the cube [-2, 2]^3, which suits hash grids.
    """

    def __init__(self, order: float = math.inf):
        super().__init__()
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mag = torch.linalg.vector_norm(x, ord=self.order, dim=-1, keepdim=True)
        safe = mag.clamp_min(1.0)  # where mag <= 1 the first branch is taken; avoids 1/0 grads
        return torch.where(mag <= 1.0, x, (2.0 - 1.0 / safe) * (x / safe))


def normalize_positions(x: torch.Tensor, aabb: torch.Tensor, contraction: nn.Module | None) -> torch.Tensor:
    """World positions -> [0, 1]^3 grid coordinates: contracted ([-2,2] -> [0,1]) or by the AABB."""
    if contraction is not None:
        return (contraction(x) + 2.0) / 4.0
    return (x - aabb[0]) / (aabb[1] - aabb[0])
