"""Per-camera learned embeddings (appearance codes)."""

from __future__ import annotations

import torch
from torch import nn


class Embedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int):
        super().__init__()
        self.num_embeddings, self.dim = num_embeddings, dim
        self.embedding = nn.Embedding(num_embeddings, dim)  # N(0, 1) init, like nerfstudio

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embedding(indices)

    def mean(self) -> torch.Tensor:
        """(dim,) the average code: what nerfacto uses at eval for unseen cameras."""
        return self.embedding.weight.mean(dim=0)
