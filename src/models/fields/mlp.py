"""Plain MLP (nerfstudio's convention: `num_layers` counts the Linear layers)."""

from __future__ import annotations

import torch
from torch import nn

from models.fields._tcnn import tcnn_mlp
from models.fields.implementation import check_implementation

OUT_ACTIVATIONS = (None, "sigmoid", "relu")


class MLP(nn.Module):
    """Linear -> ReLU -> ... -> Linear [-> out_activation].

    `implementation="tcnn"` builds a tinycudann FullyFusedMLP instead (no biases, half precision).
    """

    def __init__(self, in_dim: int, num_layers: int, layer_width: int, out_dim: int,
                 out_activation: str | None = None, implementation: str = "torch"):
        super().__init__()
        check_implementation(implementation)
        if out_activation not in OUT_ACTIVATIONS:
            raise ValueError(f"out_activation={out_activation!r} is not one of {OUT_ACTIVATIONS}")
        self.in_dim, self.out_dim = in_dim, out_dim
        if implementation == "tcnn":
            self.net = tcnn_mlp(in_dim, num_layers, layer_width, out_dim, out_activation)
            return
        layers: list[nn.Module] = []
        dims = [in_dim] + [layer_width] * (num_layers - 1) + [out_dim]
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.ReLU())
        if out_activation == "sigmoid":
            layers.append(nn.Sigmoid())
        elif out_activation == "relu":
            layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
