"""Diffusion Policy (Chi et al. 2023, "Diffusion Policy: Visuomotor Policy Learning via Action
Diffusion"), the CNN variant: a 1D temporal UNet denoises a chunk of `horizon` actions, FiLM-
conditioned on the diffusion step and on the last `n_obs_steps` observations (ResNet keypoint
features per camera + robot state). At rollout time the policy plans a chunk, executes
`n_action_steps` of it (receding horizon) and plans again.
"""

import math
from collections import deque
from itertools import chain
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from torch import Tensor, nn

from models.common.cuda_graph import GraphedCalls
from models.common.normalize import Normalizer
from models.common.policy_config import build_policy_config
from models.common.queues import ActionQueue, PlansActionChunks, check_observations, push_observations
from models.common.vision import ResNetImageEncoder
from models.diffusion.config import DiffusionConfig
from models.diffusion.matmul_conv import conv1d_class


def make_noise_scheduler(config: DiffusionConfig) -> DDPMScheduler | DDIMScheduler:
    cls = {"DDPM": DDPMScheduler, "DDIM": DDIMScheduler}[config.noise_scheduler_type]
    return cls(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule=config.beta_schedule,
        clip_sample=config.clip_sample,
        clip_sample_range=config.clip_sample_range,
        prediction_type=config.prediction_type,
    )


class SinusoidalPosEmb(nn.Module):
    """Transformer-style embedding of the (integer) diffusion step."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * (-math.log(10000) / (half - 1)))
        angles = t.float().unsqueeze(-1) * freqs.unsqueeze(0)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class Conv1dBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish, length-preserving."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8,
                 conv: type[nn.Conv1d] = nn.Conv1d) -> None:
        super().__init__(
            conv(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )


class ConditionalResidualBlock1d(nn.Module):
    """Two conv blocks with FiLM between them: the condition predicts a per-channel scale and
    bias (or only a bias), which is how the observation steers the denoiser at every level."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        cond_dim: int,
        kernel_size: int = 3,
        n_groups: int = 8,
        use_film_scale_modulation: bool = False,
        conv: type[nn.Conv1d] = nn.Conv1d,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.use_film_scale_modulation = use_film_scale_modulation
        self.conv1 = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups, conv)
        cond_channels = out_channels * 2 if use_film_scale_modulation else out_channels
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, cond_channels))
        self.conv2 = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups, conv)
        self.residual_conv = (
            conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x: (B, in_channels, T), cond: (B, cond_dim) -> (B, out_channels, T)."""
        out = self.conv1(x)
        film = self.cond_encoder(cond).unsqueeze(-1)
        if self.use_film_scale_modulation:
            out = film[:, : self.out_channels] * out + film[:, self.out_channels :]
        else:
            out = out + film
        return self.conv2(out) + self.residual_conv(x)


class ConditionalUnet1d(nn.Module):
    """Temporal UNet over the action chunk; convolutions run along time, channels are action dims."""

    def __init__(self, config: DiffusionConfig, action_dim: int, global_cond_dim: int) -> None:
        super().__init__()
        embed_dim = config.diffusion_step_embed_dim
        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(embed_dim),
            nn.Linear(embed_dim, embed_dim * 4),
            nn.Mish(),
            nn.Linear(embed_dim * 4, embed_dim),
        )
        conv = conv1d_class(config.unet_conv)
        block_kwargs = {
            "cond_dim": embed_dim + global_cond_dim,
            "kernel_size": config.kernel_size,
            "n_groups": config.n_groups,
            "use_film_scale_modulation": config.use_film_scale_modulation,
            "conv": conv,
        }
        dims = config.down_dims
        in_out = [(action_dim, dims[0])] + list(zip(dims[:-1], dims[1:]))

        self.down_modules = nn.ModuleList()
        for index, (dim_in, dim_out) in enumerate(in_out):
            is_last = index == len(in_out) - 1
            self.down_modules.append(
                nn.ModuleList(
                    [
                        ConditionalResidualBlock1d(dim_in, dim_out, **block_kwargs),
                        ConditionalResidualBlock1d(dim_out, dim_out, **block_kwargs),
                        conv(dim_out, dim_out, 3, 2, 1) if not is_last else nn.Identity(),
                    ]
                )
            )
        self.mid_modules = nn.ModuleList(
            [
                ConditionalResidualBlock1d(dims[-1], dims[-1], **block_kwargs),
                ConditionalResidualBlock1d(dims[-1], dims[-1], **block_kwargs),
            ]
        )
        self.up_modules = nn.ModuleList()
        for dim_out, dim_in in reversed(in_out[1:]):
            self.up_modules.append(
                nn.ModuleList(
                    [
                        ConditionalResidualBlock1d(dim_in * 2, dim_out, **block_kwargs),
                        ConditionalResidualBlock1d(dim_out, dim_out, **block_kwargs),
                        nn.ConvTranspose1d(dim_out, dim_out, 4, 2, 1),
                    ]
                )
            )
        self.final_conv = nn.Sequential(
            Conv1dBlock(dims[0], dims[0], config.kernel_size, config.n_groups, conv),
            conv(dims[0], action_dim, 1),
        )

    def forward(self, x: Tensor, timestep: Tensor, global_cond: Tensor) -> Tensor:
        """x: (B, T, action_dim), timestep: (B,), global_cond: (B, global_cond_dim) -> (B, T, action_dim)."""
        x = x.transpose(1, 2)
        cond = torch.cat([self.diffusion_step_encoder(timestep), global_cond], dim=-1)
        skips = []
        for block1, block2, downsample in self.down_modules:
            x = block2(block1(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for block in self.mid_modules:
            x = block(x, cond)
        for block1, block2, upsample in self.up_modules:
            x = torch.cat((x, skips.pop()), dim=1)
            x = upsample(block2(block1(x, cond), cond))
        return self.final_conv(x).transpose(1, 2)


class DiffusionPolicy(PlansActionChunks, nn.Module):
    """Diffusion Policy behind the project's Policy contract (see docs/ARCHITECTURE.md).

    Built by `hydra.utils.instantiate(cfg.policy, features=..., stats=...)`: `features` maps
    dataset keys to PolicyFeatures, `stats` is the dataset's `{key: {"mean","std","min","max"}}`
    (None when a checkpoint will be loaded), the remaining keywords are DiffusionConfig fields.
    """

    name = "diffusion"
    # Imitates its own rollouts too, as LeRobot's online loop trains any policy (training/online).
    learns_online = True
    init_only_options = ("pretrained_backbone_weights",)  # replaced by a checkpoint's weights
    # machine.cuda_graph may capture its training step: fixed shapes, nothing read back to the host, random
    # draws (crop, noise, timesteps) from the default generator
    capturable_step = True

    def __init__(self, features: Mapping[str, Any], stats: Optional[Mapping] = None, **config_kwargs: Any) -> None:
        super().__init__()
        self.config, parsed = build_policy_config(DiffusionConfig, "diffusion", config_kwargs, features)
        config = self.config
        self.state_keys = [k for k, (t, _) in parsed.items() if t == "STATE"]
        self.image_keys = [k for k, (t, _) in parsed.items() if t == "VISUAL"]
        self.env_keys = [k for k, (t, _) in parsed.items() if t == "ENV"]
        self.observation_keys = self.state_keys + self.image_keys + self.env_keys
        self.action_key = next(k for k, (t, _) in parsed.items() if t == "ACTION")
        self.action_dim = parsed[self.action_key][1][0]
        config.input_features = {
            k: {"type": parsed[k][0], "shape": list(parsed[k][1])} for k in self.observation_keys
        }
        config.output_features = {self.action_key: {"type": "ACTION", "shape": [self.action_dim]}}

        used = {k: features[k] for k in self.observation_keys + [self.action_key]}
        self.normalizer = Normalizer(used, config.normalization_mapping, stats)

        cond_dim = sum(parsed[k][1][0] for k in self.state_keys + self.env_keys)
        if self.image_keys:
            def make_encoder(key: str) -> ResNetImageEncoder:
                return ResNetImageEncoder(
                    parsed[key][1],
                    vision_backbone=config.vision_backbone,
                    pretrained_backbone_weights=config.pretrained_backbone_weights,
                    use_group_norm=config.use_group_norm,
                    spatial_softmax_num_keypoints=config.spatial_softmax_num_keypoints,
                    crop_shape=config.crop_shape,
                    crop_is_random=config.crop_is_random,
                )

            if config.use_separate_rgb_encoder_per_camera:
                self.rgb_encoder = nn.ModuleList([make_encoder(k) for k in self.image_keys])
                cond_dim += sum(encoder.feature_dim for encoder in self.rgb_encoder)
            else:
                self.rgb_encoder = make_encoder(self.image_keys[0])
                cond_dim += self.rgb_encoder.feature_dim * len(self.image_keys)
        self.unet = ConditionalUnet1d(config, self.action_dim, global_cond_dim=cond_dim * config.n_obs_steps)

        self.noise_scheduler = make_noise_scheduler(config)
        self.num_inference_steps = config.num_inference_steps or config.num_train_timesteps
        self._graphs: GraphedCalls | None = None
        self.reset()

    def use_cuda_graphs(self, enabled: bool) -> bool:
        """Plans replayed from CUDA graphs (models/common/cuda_graph.py) from now on, or not (their
        memory is freed); returns the previous setting. They apply in eval mode, on CUDA, without an
        explicit generator: one plan is 100 UNet passes of small kernels, bound by launching them."""
        previous = self._graphs is not None
        if enabled and self._graphs is None:
            self._graphs = GraphedCalls(self._plan, weights=lambda: chain(self.parameters(), self.buffers()))
        elif not enabled and self._graphs is not None:
            self._graphs.clear()
            self._graphs = None
        return previous

    def get_optim_params(self) -> list[dict]:
        """One group: the paper trains encoder and UNet with the same learning rate."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def reset(self) -> None:
        """Empties the observation and action queues; call at every episode start."""
        self._obs_queues = {key: deque(maxlen=self.config.n_obs_steps) for key in self.observation_keys}
        self._action_queue = ActionQueue(self.config.n_action_steps)

    def _global_conditioning(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Normalised observations (B, n_obs_steps, ...) -> (B, n_obs_steps * per-step features)."""
        first = batch[self.observation_keys[0]]
        batch_size, n_obs = first.shape[:2]
        if n_obs != self.config.n_obs_steps:
            raise ValueError(
                f"{self.observation_keys[0]} has {n_obs} time steps but policy.n_obs_steps={self.config.n_obs_steps};"
                " build the dataset with the policy's observation_delta_indices"
            )
        feats = [batch[k] for k in self.state_keys]
        if self.image_keys:
            if self.config.use_separate_rgb_encoder_per_camera:
                for key, encoder in zip(self.image_keys, self.rgb_encoder):
                    feats.append(encoder(batch[key].flatten(0, 1)).view(batch_size, n_obs, -1))
            else:
                images = torch.stack([batch[k] for k in self.image_keys], dim=2)  # (B, S, N, C, H, W)
                encoded = self.rgb_encoder(images.flatten(0, 2))
                feats.append(encoded.view(batch_size, n_obs, -1))
        feats.extend(batch[k] for k in self.env_keys)
        return torch.cat(feats, dim=-1).flatten(1)

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Denoising loss on a training batch of unnormalised observations and action chunks."""
        batch = self.normalizer.normalize(batch)
        actions = batch[self.action_key]
        if actions.ndim != 3 or actions.shape[1] != self.config.horizon:
            raise ValueError(
                f"{self.action_key} has shape {list(actions.shape)}, expected [B, policy.horizon={self.config.horizon},"
                f" {self.action_dim}]; build the dataset with the policy's action_delta_indices"
            )
        global_cond = self._global_conditioning(batch)

        noise = torch.randn_like(actions)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (actions.shape[0],), device=actions.device
        )
        noisy_actions = self.noise_scheduler.add_noise(actions, noise, timesteps)
        pred = self.unet(noisy_actions, timesteps, global_cond)
        target = noise if self.config.prediction_type == "epsilon" else actions
        loss = F.mse_loss(pred, target, reduction="none")
        if self.config.do_mask_loss_for_padding:
            pad_key = f"{self.action_key}_is_pad"
            if pad_key not in batch:
                raise ValueError(
                    f"policy.do_mask_loss_for_padding=true needs '{pad_key}' in the batch; the dataset adds it"
                    " for keys with delta timestamps"
                )
            loss = loss * (~batch[pad_key].bool()).unsqueeze(-1)
        loss = loss.mean()
        return loss, {"loss": loss.detach()}  # a tensor: the loop reads metrics back every log_freq steps

    @torch.no_grad()
    def generate_actions(self, batch: Mapping[str, Tensor], generator: Optional[torch.Generator] = None) -> Tensor:
        """Reverse diffusion from noise; returns the normalised actions the policy will execute,
        (B, n_action_steps, action_dim), starting at the current (last observed) step."""
        inputs = [batch[k] for k in self.observation_keys]
        if self._graphs is not None and not self.training and generator is None and inputs[0].is_cuda:
            return self._graphs(*inputs)
        return self._plan(*inputs, generator=generator)

    def _plan(self, *inputs: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """generate_actions on the observation windows in `observation_keys` order."""
        global_cond = self._global_conditioning(dict(zip(self.observation_keys, inputs)))
        param = next(self.unet.parameters())
        sample = torch.randn(
            (global_cond.shape[0], self.config.horizon, self.action_dim),
            dtype=param.dtype,
            device=param.device,
            generator=generator,
        )
        self.noise_scheduler.set_timesteps(self.num_inference_steps)
        for t in self.noise_scheduler.timesteps:
            timestep = torch.full((sample.shape[0],), int(t), dtype=torch.long, device=sample.device)
            model_output = self.unet(sample, timestep, global_cond)
            sample = self.noise_scheduler.step(model_output, t, sample, generator=generator).prev_sample
        start = self.config.n_obs_steps - 1
        return sample[:, start : start + self.config.n_action_steps]

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, Tensor]) -> Tensor:
        """One action (B, action_dim) for the current observations (B, ...); plans a new chunk
        every n_action_steps calls. Call `eval()` first so images are centre-cropped."""
        check_observations(self.observation_keys, obs)
        windows = push_observations(self._obs_queues, self.normalizer.normalize({k: obs[k] for k in self.observation_keys}))
        if not self._action_queue:
            actions = self.generate_actions(windows)
            actions = self.normalizer.unnormalize({self.action_key: actions})[self.action_key]
            self._action_queue.plan(actions)
        return self._action_queue.popleft()
