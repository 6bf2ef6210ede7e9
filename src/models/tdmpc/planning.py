"""TD-MPC's planner: MPPI with the cross-entropy method (CEM) over action sequences, scored by the
latent model (TD-MPC eqn. 4 with FOWM's uncertainty penalty).

Each of `cem_iterations` rounds scores `n_gaussian_samples` sequences drawn from a clamped Gaussian
and `n_pi_samples` sequences that pi rolls out in the latent model, keeps the `n_elites` best, and
moves the Gaussian to their softmax-weighted mean (with momentum) and spread. The plan is one elite
drawn by its weight. The steps and their order of random draws follow LeRobot's TDMPCPolicy.plan.
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch
from torch import Tensor

from models.tdmpc.config import TDMPCConfig
from models.tdmpc.told import two_of


class LatentModel(Protocol):
    """What planning needs of TOLD (a toy model with these methods plans too)."""

    def latent_dynamics(self, z: Tensor, a: Tensor) -> Tensor: ...
    def latent_dynamics_and_reward(self, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor]: ...
    def pi(self, z: Tensor, std: float = 0.0) -> Tensor: ...
    def Qs(self, z: Tensor, a: Tensor) -> Tensor: ...  # noqa: N802


@torch.no_grad()
def estimate_value(model: LatentModel, config: TDMPCConfig, z: Tensor, actions: Tensor) -> Tensor:
    """Discounted predicted rewards of `actions` (horizon, *, A) from `z` (*, latent), then the discounted
    value of the last latent (the smaller of two Qs at pi's action); every step's Q-ensemble std times
    `uncertainty_regularizer_coeff` is subtracted. Returns (*)."""
    coeff = config.uncertainty_regularizer_coeff
    value, discount = 0.0, 1.0
    for a in actions:
        penalty = coeff * model.Qs(z, a).std(0) if coeff > 0 else 0.0
        z, reward = model.latent_dynamics_and_reward(z, a)
        value = value + discount * (reward - penalty)
        discount *= config.discount
    terminal = model.Qs(z, model.pi(z, config.min_std))  # (ensemble, *)
    value = value + discount * terminal[list(two_of(terminal.shape[0]))].min(0).values
    if coeff > 0:
        value = value - discount * coeff * terminal.std(0)
    return value


@torch.no_grad()
def plan(model: LatentModel, config: TDMPCConfig, z: Tensor, action_dim: int,
         prev_mean: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Plans from latents `z` (B, latent). `prev_mean` (horizon, B, A): the last plan's Gaussian mean,
    which warm-starts this one shifted by a step. Returns (actions (horizon, B, A) in [-1, 1] normalised
    units, this plan's mean for the next call)."""
    horizon, batch = config.horizon, z.shape[0]
    n_gauss, n_pi = config.n_gaussian_samples, config.n_pi_samples
    # the sampling distribution in float32 (or float64) also when the model runs under autocast, as LeRobot's
    # planner keeps it: a bf16 mean would quantise the warm start carried from plan to plan
    dtype = torch.promote_types(z.dtype, torch.float32)
    pi_actions = torch.empty(horizon, n_pi, batch, action_dim, device=z.device, dtype=dtype)
    if n_pi > 0:
        latent = z.expand(n_pi, *z.shape)
        for t in range(horizon):
            pi_actions[t] = model.pi(latent, config.min_std)
            latent = model.latent_dynamics(latent, pi_actions[t])
    z = z.expand(n_gauss + n_pi, *z.shape)

    mean = torch.zeros(horizon, batch, action_dim, device=z.device, dtype=dtype)
    if prev_mean is not None:
        mean[:-1] = prev_mean[1:]
    std = torch.full_like(mean, config.max_std)
    for _ in range(config.cem_iterations):
        noise = torch.randn(horizon, n_gauss, batch, action_dim, device=z.device, dtype=dtype)
        gaussian = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(-1, 1)
        actions = torch.cat([gaussian, pi_actions], dim=1)  # (horizon, samples, B, A)
        value = estimate_value(model, config, z, actions).nan_to_num_(0)  # (samples, B)
        elite_idx = torch.topk(value, config.n_elites, dim=0).indices  # (elites, B)
        elite_value = value.take_along_dim(elite_idx, dim=0)
        elite_actions = actions.take_along_dim(elite_idx[None, :, :, None], dim=1)  # (horizon, elites, B, A)
        # Softmax weights over the elites' values: TD-MPC's Omega, normalised.
        score = torch.exp(config.elite_weighting_temperature * (elite_value - elite_value.max(0, keepdim=True).values))
        score = score / score.sum(0, keepdim=True)
        weights = score.unsqueeze(-1)  # (elites, B, 1)
        elite_mean = (weights * elite_actions).sum(1)
        elite_std = torch.sqrt((weights * (elite_actions - elite_mean.unsqueeze(1)) ** 2).sum(1))
        mean = config.gaussian_mean_momentum * mean + (1 - config.gaussian_mean_momentum) * elite_mean
        std = elite_std.clamp_(config.min_std, config.max_std)
    chosen = torch.multinomial(score.T, 1).squeeze(1)  # one elite per batch item, by weight
    return elite_actions[:, chosen, torch.arange(batch, device=z.device)], mean
