"""TD-MPC's task-oriented latent dynamics model (TOLD): an observation encoder into a latent z, and
from (z, a) the next latent, the reward, Q values (an ensemble); from z a state value V and the policy pi.

Layer sizes, activations and initialisation are LeRobot's (after FOWM), and so are the module names
(`_encoder`, `_dynamics`, `_reward`, `_pi`, `_Qs`, `_V`): a state dict moves between the two as it is.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from models.tdmpc.config import IMAGE_CONVS, TDMPCConfig, conv_stack_output


def _mish_mlp(in_dim: int, hidden: int, out_dim: int) -> list[nn.Module]:
    """Two LayerNorm-Mish hidden layers: the dynamics, reward and pi networks."""
    return [nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.Mish(),
            nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.Mish(), nn.Linear(hidden, out_dim)]


def _value_mlp(in_dim: int, hidden: int) -> nn.Sequential:
    """LayerNorm-tanh then ELU hidden layers to one value: each Q of the ensemble, and V."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.Tanh(),
                         nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, 1))


def _vector_encoder(in_dim: int, hidden: int, latent: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ELU(), nn.Linear(hidden, latent), nn.LayerNorm(latent),
                         nn.Sigmoid())


def two_of(n: int) -> tuple[int, int]:
    """Two distinct indices below `n`, drawn on the CPU (they index a module list or a small tensor, so
    drawing them costs no device sync); with `n` = 2 both, without drawing."""
    if n == 2:
        return 0, 1
    first, second = torch.randperm(n)[:2].tolist()
    return first, second


def apply_to_images(fn, images: Tensor) -> Tensor:
    """`fn` takes (N, C, H, W); `images` may have more leading dims (time, batch), which are kept."""
    lead = images.shape[:-3]
    out = fn(images.reshape(-1, *images.shape[-3:]))
    return out.reshape(*lead, *out.shape[1:])


class TDMPCObservationEncoder(nn.Module):
    """Each modality to a latent in (0, 1) (LayerNorm then sigmoid); the latent is their mean. The camera
    goes through four strided convolutions, the state and the environment state through an MLP each."""

    def __init__(self, config: TDMPCConfig, image_shape: Optional[tuple[int, int, int]],
                 state_dim: Optional[int], env_dim: Optional[int]) -> None:
        super().__init__()
        latent = config.latent_dim
        if image_shape is not None:
            channels, height, width = image_shape
            hidden = config.image_encoder_hidden_dim
            layers: list[nn.Module] = []
            for i, (kernel, stride) in enumerate(IMAGE_CONVS):
                layers += [nn.Conv2d(channels if i == 0 else hidden, hidden, kernel, stride=stride), nn.ReLU()]
            flat = hidden * conv_stack_output(height) * conv_stack_output(width)
            layers += [nn.Flatten(), nn.Linear(flat, latent), nn.LayerNorm(latent), nn.Sigmoid()]
            self.image_enc_layers = nn.Sequential(*layers)
        if state_dim is not None:
            self.state_enc_layers = _vector_encoder(state_dim, config.state_encoder_hidden_dim, latent)
        if env_dim is not None:
            self.env_state_enc_layers = _vector_encoder(env_dim, config.state_encoder_hidden_dim, latent)

    def forward(self, image: Optional[Tensor], env_state: Optional[Tensor], state: Optional[Tensor]) -> Tensor:
        """Inputs (*, ...) with the same leading dims -> (*, latent_dim). The mean is taken in LeRobot's
        order (image, environment state, state), which float addition is sensitive to."""
        features = []
        if image is not None:
            features.append(apply_to_images(self.image_enc_layers, image))
        if env_state is not None:
            features.append(self.env_state_enc_layers(env_state))
        if state is not None:
            features.append(self.state_enc_layers(state))
        return torch.stack(features, dim=0).mean(0)


class TOLD(nn.Module):
    """The latent model; `encode`, `latent_dynamics(_and_reward)`, `pi`, `V` and `Qs` work on any
    leading dims."""

    def __init__(self, config: TDMPCConfig, action_dim: int, image_shape: Optional[tuple[int, int, int]] = None,
                 state_dim: Optional[int] = None, env_dim: Optional[int] = None) -> None:
        super().__init__()
        latent, hidden = config.latent_dim, config.mlp_dim
        self._encoder = TDMPCObservationEncoder(config, image_shape, state_dim, env_dim)
        self._dynamics = nn.Sequential(*_mish_mlp(latent + action_dim, hidden, latent), nn.LayerNorm(latent),
                                       nn.Sigmoid())
        self._reward = nn.Sequential(*_mish_mlp(latent + action_dim, hidden, 1))
        self._pi = nn.Sequential(*_mish_mlp(latent, hidden, action_dim))
        self._Qs = nn.ModuleList([_value_mlp(latent + action_dim, hidden) for _ in range(config.q_ensemble_size)])
        self._V = _value_mlp(latent, hidden)
        self._init_weights()

    def _init_weights(self) -> None:
        """Orthogonal weights (convolutions with ReLU's gain) and zero biases everywhere; the last layers of
        the reward and Q networks start at zero, so predicted rewards and values start at 0."""

        def init(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight, nn.init.calculate_gain("relu"))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.apply(init)
        for head in (self._reward, *self._Qs):
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    def encode(self, obs: Mapping[str, Optional[Tensor]]) -> Tensor:
        """`obs`: {"image", "env_state", "state"} (absent modalities None) -> z."""
        return self._encoder(obs.get("image"), obs.get("env_state"), obs.get("state"))

    def latent_dynamics_and_reward(self, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([z, a], dim=-1)
        return self._dynamics(x), self._reward(x).squeeze(-1)

    def latent_dynamics(self, z: Tensor, a: Tensor) -> Tensor:
        return self._dynamics(torch.cat([z, a], dim=-1))

    def pi(self, z: Tensor, std: float = 0.0) -> Tensor:
        """tanh of the policy network, plus Gaussian noise of `std` (exploration while planning)."""
        action = torch.tanh(self._pi(z))
        if std > 0:
            action = action + torch.randn_like(action) * std
        return action

    def V(self, z: Tensor) -> Tensor:  # noqa: N802 (the paper's name)
        return self._V(z).squeeze(-1)

    def Qs(self, z: Tensor, a: Tensor) -> Tensor:  # noqa: N802
        """Every Q of the ensemble: (q_ensemble_size, *)."""
        x = torch.cat([z, a], dim=-1)
        return torch.stack([q(x).squeeze(-1) for q in self._Qs], dim=0)

    def min_of_two_Qs(self, z: Tensor, a: Tensor) -> Tensor:  # noqa: N802
        """The smaller of two distinct Qs drawn at random (FOWM, App. C), a conservative value estimate.
        LeRobot draws the two with replacement, so with 5 Qs a fifth of its draws use one Q alone; the
        paper and LeRobot's own comment say two of them, which is what this draws."""
        x = torch.cat([z, a], dim=-1)
        first, second = two_of(len(self._Qs))
        return torch.minimum(self._Qs[first](x), self._Qs[second](x)).squeeze(-1)
