"""A policy that always takes the action held in its one parameter: what a rollout did shows which weights
it used. Kept in its own module so the online phase's rollout process can import it."""

from __future__ import annotations

import torch


class ConstantPolicy(torch.nn.Module):
    learns_online = True

    def __init__(self, action=(100.0, 200.0)):
        super().__init__()
        self.action = torch.nn.Parameter(torch.tensor(action, dtype=torch.float32))

    def reset(self) -> None:
        pass

    def select_action(self, batch: dict) -> torch.Tensor:
        n = batch["observation.state"].shape[0]
        return self.action.detach().expand(n, -1).clone()
