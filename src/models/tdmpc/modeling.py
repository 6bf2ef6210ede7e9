"""TD-MPC (Hansen et al. 2022, "Temporal Difference Learning for Model Predictive Control"), trained as
FOWM (Feng et al. 2023, "Finetuning Offline World Models in the Real World") and LeRobot train it.

From a window of `horizon` transitions the latent model (told.py) rolls its latent forward through the
dataset's actions and is trained on five terms, each step t weighted `temporal_decay_coeff**t` and
masked where the window leaves the episode:
- consistency: the rolled-out latents against the target network's encoding of the next observations;
- reward: predicted against recorded rewards (`next.reward`);
- Q (TD): every Q of the ensemble against r + discount * V(next observation);
- V: expectile regression (`expectile_weight`) towards the target network's smaller of two Qs, so
  the TD targets use only actions in the data;
- pi: advantage-weighted regression onto the dataset's actions, weights exp(advantage_scaling * (Q - V))
  clamped at 100.
The target network is an exponential moving average of the model (`target_model_momentum`), updated
by `on_optimizer_step()`, which the loop calls after every optimizer step. Acting plans with MPPI/CEM
(planning.py) or samples pi (`use_mpc=false`); a planned action is repeated `n_action_repeats` times.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.common.normalize import Normalizer
from models.common.policy_config import build_policy_config
from models.common.queues import ActionQueue, PlansActionChunks, check_observations
from models.tdmpc.config import TDMPCConfig
from models.tdmpc.planning import plan
from models.tdmpc.told import TOLD, apply_to_images

REWARD_KEY = "next.reward"


def random_shift(images: Tensor, ratio: float) -> Tensor:
    """DrQ's augmentation (Kostrikov et al. 2020, as in DrQ-v2 and LeRobot) on (N, C, H, W): pad each side
    by round(ratio * side) edge pixels and crop back to the original size at a random offset, per image.
    LeRobot samples the padded image at shifted pixel centres with grid_sample, which is this crop. Two
    gathers keep the (N, C, H, W) layout that the encoder's convolutions are fast on (the shared
    `random_crop` gathers in channels-last order)."""
    n, channels, height, width = images.shape
    pad_y, pad_x = round(ratio * height), round(ratio * width)
    if pad_x == 0 and pad_y == 0:
        return images
    padded = F.pad(images, (pad_x, pad_x, pad_y, pad_y), mode="replicate")
    device = images.device
    top = torch.randint(0, 2 * pad_y + 1, (n, 1, 1, 1), device=device)
    left = torch.randint(0, 2 * pad_x + 1, (n, 1, 1, 1), device=device)
    rows = (top + torch.arange(height, device=device).view(1, 1, height, 1)).expand(-1, channels, -1, padded.shape[3])
    cols = (left + torch.arange(width, device=device).view(1, 1, 1, width)).expand(-1, channels, height, -1)
    return padded.gather(2, rows).gather(3, cols)


class TDMPCPolicy(PlansActionChunks, nn.Module):
    """TD-MPC behind the project's Policy contract (docs/ARCHITECTURE.md).

    Built by `hydra.utils.instantiate(cfg.policy, features=..., stats=...)`; the keywords are
    TDMPCConfig fields. `model` trains; `model_target` (its moving average, no gradients) gives the
    consistency and value targets. Both are in the state dict, so a checkpoint resumes exactly.
    """

    name = "tdmpc"
    # Learns from its own rollouts' rewards: LeRobot trains it offline, then online (training/online).
    learns_online = True

    def __init__(self, features: Mapping[str, Any], stats: Optional[Mapping] = None, **config_kwargs: Any) -> None:
        super().__init__()
        self.config, parsed = build_policy_config(TDMPCConfig, "tdmpc", config_kwargs, features)
        config = self.config
        by_type = {t: k for k, (t, _) in parsed.items()}  # at most one of each (validate_features)
        self.image_key = by_type.get("VISUAL")
        self.env_state_key = by_type.get("ENV")
        self.state_key = by_type.get("STATE")
        self.action_key = by_type["ACTION"]
        # LeRobot's encoding order: image, environment state, state.
        self.observation_keys = [k for k in (self.image_key, self.env_state_key, self.state_key) if k is not None]
        self.action_dim = parsed[self.action_key][1][0]
        config.input_features = {k: {"type": parsed[k][0], "shape": list(parsed[k][1])} for k in self.observation_keys}
        config.output_features = {self.action_key: {"type": "ACTION", "shape": [self.action_dim]}}
        used = {k: features[k] for k in self.observation_keys + [self.action_key]}
        self.normalizer = Normalizer(used, config.normalization_mapping, stats)

        shapes = {key: shape for key, (_, shape) in parsed.items()}
        self.model = TOLD(config, self.action_dim, image_shape=shapes.get(self.image_key),
                          state_dim=shapes[self.state_key][0] if self.state_key else None,
                          env_dim=shapes[self.env_state_key][0] if self.env_state_key else None)
        self.model_target = copy.deepcopy(self.model)
        self.model_target.requires_grad_(False)
        self.reset()

    # ------------------------------------------------------------------ training
    def get_optim_params(self) -> list[dict]:
        """One group: the model (LeRobot's preset, Adam at one learning rate). The target network is
        moved by on_optimizer_step(), not by the optimizer."""
        return [{"params": list(self.model.parameters())}]

    @torch.no_grad()
    def on_optimizer_step(self) -> None:
        """target <- momentum * target + (1 - momentum) * model, after every optimizer step (LeRobot's
        `update()`; FOWM updated every 2 steps at 0.99, LeRobot every step at 0.995)."""
        momentum = self.config.target_model_momentum
        target, online = list(self.model_target.parameters()), list(self.model.parameters())
        torch._foreach_mul_(target, momentum)
        torch._foreach_add_(target, online, alpha=1 - momentum)

    def _observations(self, batch: Mapping[str, Tensor]) -> dict[str, Optional[Tensor]]:
        return {"image": batch.get(self.image_key) if self.image_key else None,
                "env_state": batch.get(self.env_state_key) if self.env_state_key else None,
                "state": batch.get(self.state_key) if self.state_key else None}

    def _check_windows(self, batch: Mapping[str, Tensor]) -> None:
        horizon = self.config.horizon
        expected = {self.action_key: horizon, REWARD_KEY: horizon, **{k: horizon + 1 for k in self.observation_keys}}
        for key, steps in expected.items():
            if key not in batch:
                fix = ("use a dataset with rewards (the project's recorded datasets and LeRobot's have next.reward)"
                       if key == REWARD_KEY else "check the dataset's features")
                raise KeyError(f"TD-MPC trains on {key}, which the batch lacks; {fix}")
            if batch[key].ndim < 2 or batch[key].shape[1] != steps or f"{key}_is_pad" not in batch:
                raise ValueError(f"{key} has shape {list(batch[key].shape)}, expected [B, {steps}, ...] with"
                                 f" {key}_is_pad; build the dataset with the policy's delta indices")

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """The weighted sum of the five losses on (B, horizon [+ 1], ...) windows, and each term."""
        self._check_windows(batch)
        config, model, target = self.config, self.model, self.model_target
        batch = self.normalizer.normalize(batch)
        time_major = lambda x: x.transpose(0, 1)  # noqa: E731  (B, T, ...) -> (T, B, ...)
        obs = {k: time_major(v) if v is not None else None for k, v in self._observations(batch).items()}
        if obs["image"] is not None:  # time-major and contiguous, so each encoder call reads frames in place
            shift = config.max_random_shift_ratio if self.training else 0.0
            obs["image"] = (apply_to_images(lambda x: random_shift(x, shift), obs["image"]) if shift > 0
                            else obs["image"].contiguous())
        action = time_major(batch[self.action_key])  # (H, B, A)
        reward = time_major(batch[REWARD_KEY].reshape(*batch[REWARD_KEY].shape[:2]))  # (H, B)
        # Every observation key shares the window, so any one's padding is the observations' padding.
        obs_ok = ~time_major(batch[f"{self.observation_keys[0]}_is_pad"])  # (H + 1, B)
        action_ok = ~time_major(batch[f"{self.action_key}_is_pad"])
        reward_ok = ~time_major(batch[f"{REWARD_KEY}_is_pad"])
        horizon = action.shape[0]
        current = {k: v[0] if v is not None else None for k, v in obs.items()}
        following = {k: v[1:] if v is not None else None for k, v in obs.items()}

        # Roll the latent through the dataset's actions: z_0 from the first observation, then z_1..z_H.
        z_preds, reward_preds = [model.encode(current)], []
        for t in range(horizon):
            z_next, r = model.latent_dynamics_and_reward(z_preds[t], action[t])
            z_preds.append(z_next)
            reward_preds.append(r)
        z_preds, reward_preds = torch.stack(z_preds), torch.stack(reward_preds)
        q_preds = model.Qs(z_preds[:-1], action)  # (ensemble, H, B)
        v_preds = model.V(z_preds[:-1])

        with torch.no_grad():
            z_targets = target.encode(following)
            # FOWM eqn. 3: TD targets from V of the next observation (in-sample), with the online model
            # as FOWM and LeRobot do; V's targets from the target network's Qs.
            q_targets = reward + config.discount * model.V(model.encode(following))
            v_targets = target.min_of_two_Qs(z_preds[:-1].detach(), action)

        decay = config.temporal_decay_coeff ** torch.arange(horizon, device=action.device, dtype=action.dtype)
        decay = decay.unsqueeze(-1)  # (H, 1)
        # Predictions at step t depend on the first observation and actions 0..t.
        rollout_ok = obs_ok[0] & action_ok  # (H, B)
        consistency_loss = (decay * F.mse_loss(z_preds[1:], z_targets, reduction="none").mean(-1)
                            * (rollout_ok & obs_ok[1:])).sum(0).mean()
        reward_loss = (decay * F.mse_loss(reward_preds, reward, reduction="none")
                       * (rollout_ok & reward_ok)).sum(0).mean()
        q_value_loss = (decay * F.mse_loss(q_preds, q_targets.expand_as(q_preds), reduction="none").sum(0)
                        * (rollout_ok & reward_ok & obs_ok[1:])).sum(0).mean()
        diff = v_targets - v_preds
        expectile = torch.where(diff > 0, config.expectile_weight, 1 - config.expectile_weight)
        v_value_loss = (decay * (expectile * diff ** 2) * rollout_ok).sum(0).mean()

        # Advantage-weighted regression of pi (FOWM 3.1) on the detached rollout. Like FOWM and LeRobot,
        # its mean runs over time too (the other terms sum over time).
        z_fixed = z_preds.detach()
        with torch.no_grad():
            advantage = target.min_of_two_Qs(z_fixed[:-1], action) - model.V(z_fixed[:-1])
            exp_advantage = torch.exp(advantage * config.advantage_scaling).clamp(max=100.0)
        action_error = F.mse_loss(model.pi(z_fixed[:-1]), action, reduction="none").sum(-1)  # (H, B)
        pi_loss = (exp_advantage * action_error * decay * rollout_ok).mean()

        loss = (config.consistency_coeff * consistency_loss + config.reward_coeff * reward_loss
                + config.value_coeff * q_value_loss + config.value_coeff * v_value_loss + config.pi_coeff * pi_loss)
        info = {"consistency_loss": consistency_loss.item(), "reward_loss": reward_loss.item(),
                "Q_value_loss": q_value_loss.item(), "V_value_loss": v_value_loss.item(), "pi_loss": pi_loss.item(),
                "Q": q_preds.mean().item(), "V": v_preds.mean().item(), "advantage": advantage[0].mean().item(),
                "loss": loss.item(), "sum_loss": loss.item() * horizon}
        return loss, info

    # ------------------------------------------------------------------ acting
    def reset(self) -> None:
        """Empties the action queue and forgets the last plan's mean; call at every episode start."""
        self._action_queue = ActionQueue(max(self.config.n_action_steps, self.config.n_action_repeats))
        self._prev_mean: Optional[Tensor] = None

    @torch.no_grad()
    def predict_action_chunk(self, obs: Mapping[str, Tensor]) -> Tensor:
        """Normalised observations (B, ...) -> planned actions (horizon, B, A), or pi's one action (1, B, A),
        clamped to [-1, 1] and unnormalised."""
        z = self.model.encode(self._observations(obs))
        if self.config.use_mpc:
            actions, self._prev_mean = plan(self.model, self.config, z, self.action_dim, self._prev_mean)
        else:
            actions = self.model.pi(z).unsqueeze(0)
        actions = actions.clamp(-1, 1)
        return self.normalizer.unnormalize({self.action_key: actions})[self.action_key]

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, Tensor]) -> Tensor:
        """One action (B, action_dim) for the current observations (B, ...); plans again once the last
        plan's action has been repeated `n_action_repeats` times (or its first `n_action_steps` used)."""
        check_observations(self.observation_keys, obs)
        if not self._action_queue:
            actions = self.predict_action_chunk(self.normalizer.normalize({k: obs[k] for k in self.observation_keys}))
            if self.config.n_action_repeats > 1:
                self._action_queue.plan(actions[:1].expand(self.config.n_action_repeats, -1, -1).transpose(0, 1))
            else:
                self._action_queue.plan(actions[: self.config.n_action_steps].transpose(0, 1))
        return self._action_queue.popleft()
