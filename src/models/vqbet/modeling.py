"""VQ-BeT (Lee et al. 2024, "Behavior Generation with Latent Actions").

Training has two phases in one run. Phase 1 (the first `n_vqvae_training_steps` optimizer steps)
fits a residual VQ-VAE to action chunks, which gives every chunk two discrete codes. Phase 2
freezes it and trains a causal GPT over observation tokens (one per camera and the state, per step)
interleaved with action-query tokens; each query's output predicts the codes (focal loss) and a
continuous offset added to the decoded code (L1 loss). A rollout samples codes at
`bet_softmax_temperature`, decodes the current token's chunk and executes it action by action.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.common.normalize import Normalizer
from models.common.policy_config import build_policy_config
from models.common.queues import ActionQueue, PlansActionChunks, check_observations, push_observations
from models.common.vision import ResNetImageEncoder
from models.vqbet.config import VQ_LAYERS, VQBeTConfig
from models.vqbet.layers import GPT, MLP, VqVae, focal_loss

log = logging.getLogger("train")


class VQBeTHead(nn.Module):
    """GPT features -> code logits per VQ layer and offsets for every code, then the action chunk
    (decoded sampled codes + their offsets). Holds the VQ-VAE whose codes it predicts."""

    def __init__(self, config: VQBeTConfig, action_dim: int) -> None:
        super().__init__()
        self.config = config
        self.vqvae_model = VqVae(action_dim, config.action_chunk_size, config.vqvae_embedding_dim,
                                 config.vqvae_enc_hidden_dim, config.vqvae_n_embed, VQ_LAYERS)
        hidden = [config.mlp_hidden_dim] if config.mlp_hidden_dim else []
        n_embed, width = config.vqvae_n_embed, config.gpt_output_dim
        if config.sequentially_select:
            self.map_to_cbet_preds_primary_bin = MLP(width, hidden + [n_embed])
            self.map_to_cbet_preds_secondary_bin = MLP(width + n_embed, hidden + [n_embed])
        else:
            self.map_to_cbet_preds_bin = MLP(width, hidden + [VQ_LAYERS * n_embed])
        self.map_to_cbet_preds_offset = MLP(
            width, hidden + [VQ_LAYERS * n_embed * config.action_chunk_size * action_dim])

    def bin_heads(self) -> list[nn.Module]:
        if self.config.sequentially_select:
            return [self.map_to_cbet_preds_primary_bin, self.map_to_cbet_preds_secondary_bin]
        return [self.map_to_cbet_preds_bin]

    def _sample(self, logits: Tensor) -> Tensor:
        probs = torch.softmax(logits / self.config.bet_softmax_temperature, dim=-1)
        return torch.multinomial(probs, num_samples=1).squeeze(-1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x (N, T, gpt_output_dim) -> logits (N*T, layers, n_embed), sampled codes (N*T, layers),
        predicted actions (N, T, chunk * A)."""
        n, t, _ = x.shape
        x = x.flatten(0, 1)
        n_embed = self.config.vqvae_n_embed
        offsets = self.map_to_cbet_preds_offset(x).view(n * t, VQ_LAYERS, n_embed, -1)
        if self.config.sequentially_select:
            primary_logits = self.map_to_cbet_preds_primary_bin(x)
            primary = self._sample(primary_logits)
            secondary_logits = self.map_to_cbet_preds_secondary_bin(
                torch.cat([x, F.one_hot(primary, n_embed).to(x.dtype)], dim=1))
            codes = torch.stack([primary, self._sample(secondary_logits)], dim=1)
            logits = torch.stack([primary_logits, secondary_logits], dim=1)
        else:
            logits = self.map_to_cbet_preds_bin(x).view(n * t, VQ_LAYERS, n_embed)
            codes = self._sample(logits.flatten(0, 1)).view(n * t, VQ_LAYERS)
        rows = torch.arange(n * t, device=x.device).unsqueeze(1)
        layers = torch.arange(VQ_LAYERS, device=x.device).unsqueeze(0)
        offset = offsets[rows, layers, codes].sum(dim=1)  # the offsets of the sampled codes, summed
        decoded = self.vqvae_model.decode(codes)
        predicted = decoded + offset.view_as(decoded)
        return {"cbet_logits": logits, "sampled_centers": codes, "decoded_action": decoded,
                "predicted_action": predicted.view(n, t, -1)}

    def loss(self, pred: dict[str, Tensor], target: Tensor) -> tuple[Tensor, dict[str, float]]:
        """target (N, T, chunk, A): offset L1 + weighted focal losses on the target chunks' codes."""
        config = self.config
        target = target.flatten(0, 1)
        predicted = pred["predicted_action"].flatten(0, 1).view_as(target)
        codes = self.vqvae_model.get_code(target)
        sampled, logits = pred["sampled_centers"], pred["cbet_logits"]
        offset_loss = F.l1_loss(target, predicted)
        code_loss = (focal_loss(logits[:, 0], codes[:, 0]) * config.primary_code_loss_weight
                     + focal_loss(logits[:, 1], codes[:, 1]) * config.secondary_code_loss_weight)
        loss = code_loss + config.offset_loss_weight * offset_loss
        error = (target - predicted).abs()
        return loss, {
            "classification_loss": code_loss.item(),
            "offset_loss": offset_loss.item(),
            "equal_primary_code_rate": (codes[:, 0] == sampled[:, 0]).float().mean().item(),
            "equal_secondary_code_rate": (codes[:, 1] == sampled[:, 1]).float().mean().item(),
            "vq_action_error": (target - pred["decoded_action"]).abs().mean().item(),
            "offset_action_error": error.mean().item(),
            "action_error_max": error.max().item(),
            "action_mse_error": error.pow(2).mean().item(),
        }


class VQBeTPolicy(PlansActionChunks, nn.Module):
    """VQ-BeT behind the project's Policy contract (docs/ARCHITECTURE.md).

    Built by `hydra.utils.instantiate(cfg.policy, features=..., stats=...)`; the keywords are
    VQBeTConfig fields. The training phase lives in `action_head.vqvae_model`'s buffers; the loop
    advances it through `on_optimizer_step()`.
    """

    name = "vqbet"
    # Imitates its own rollouts too, as LeRobot's online loop trains any policy (training/online).
    learns_online = True
    init_only_options = ("pretrained_backbone_weights",)  # replaced by a checkpoint's weights
    # Phase 1 trains only the VQ-VAE and phase 2 everything else: data-parallel training must
    # expect parameters without gradients.
    ddp_find_unused_parameters = True

    def __init__(self, features: Mapping[str, Any], stats: Optional[Mapping] = None, **config_kwargs: Any) -> None:
        super().__init__()
        self.config, parsed = build_policy_config(VQBeTConfig, "vqbet", config_kwargs, features)
        config = self.config
        self.state_key = next(k for k, (t, _) in parsed.items() if t == "STATE")
        self.image_keys = [k for k, (t, _) in parsed.items() if t == "VISUAL"]
        self.observation_keys = [*self.image_keys, self.state_key]
        self.action_key = next(k for k, (t, _) in parsed.items() if t == "ACTION")
        self.action_dim = parsed[self.action_key][1][0]
        config.input_features = {k: {"type": parsed[k][0], "shape": list(parsed[k][1])} for k in self.observation_keys}
        config.output_features = {self.action_key: {"type": "ACTION", "shape": [self.action_dim]}}
        used = {k: features[k] for k in self.observation_keys + [self.action_key]}
        self.normalizer = Normalizer(used, config.normalization_mapping, stats)

        self.rgb_encoder = ResNetImageEncoder(
            parsed[self.image_keys[0]][1], vision_backbone=config.vision_backbone,
            pretrained_backbone_weights=config.pretrained_backbone_weights, use_group_norm=config.use_group_norm,
            spatial_softmax_num_keypoints=config.spatial_softmax_num_keypoints, crop_shape=config.crop_shape,
            crop_is_random=config.crop_is_random)
        # The action query token ("A_Q"), repeated wherever an action is asked for.
        self.action_token = nn.Parameter(torch.randn(1, 1, config.gpt_input_dim))
        self.state_projector = MLP(parsed[self.state_key][1][0], [config.gpt_input_dim])
        self.rgb_feature_projector = MLP(self.rgb_encoder.feature_dim, [config.gpt_input_dim])
        self.policy = GPT(config.gpt_input_dim, config.gpt_output_dim, config.gpt_hidden_dim, config.gpt_n_layer,
                          config.gpt_n_head, config.dropout, config.gpt_block_size)
        self.action_head = VQBeTHead(config, self.action_dim)
        # Row i: the action indices of the chunk that token i predicts (history tokens, then future ones).
        tokens = config.n_action_pred_token + config.n_obs_steps - 1
        targets = torch.arange(tokens).unsqueeze(1) + torch.arange(config.action_chunk_size).unsqueeze(0)
        self.register_buffer("select_target_actions_indices", targets, persistent=False)
        self._warned_undiscretized = False
        self.reset()

    # ------------------------------------------------------------------ phases
    @property
    def vqvae(self) -> VqVae:
        return self.action_head.vqvae_model

    @property
    def discretized(self) -> bool:
        """True once the VQ-VAE phase is over (phase 2: the GPT and its heads train)."""
        return bool(self.vqvae.discretized)

    def on_optimizer_step(self) -> None:
        """Called by the loop after every optimizer step: counts the VQ-VAE's steps and ends its
        phase after n_vqvae_training_steps (LeRobot ends it inside the forward of that step)."""
        if self.discretized:
            return
        self.vqvae.steps.add_(1)
        if int(self.vqvae.steps) >= self.config.n_vqvae_training_steps:
            self.vqvae.discretized.fill_(True)
            log.info("VQ-BeT: the residual VQ-VAE is trained (%d steps); training the GPT", int(self.vqvae.steps))

    def get_optim_params(self) -> list[dict]:
        """LeRobot's three groups: decayed weights (optimizer lr and weight_decay), the VQ-VAE (its
        own lr and weight decay) and what nanoGPT never decays (biases, LayerNorm, positions)."""
        gpt_decay, gpt_no_decay = self.policy.decay_groups()
        decay = [*gpt_decay, *self.rgb_encoder.parameters(), *self.state_projector.parameters(),
                 *self.rgb_feature_projector.parameters(), self.action_token,
                 *self.action_head.map_to_cbet_preds_offset.parameters(),
                 *(p for head in self.action_head.bin_heads() for p in head.parameters())]
        vqvae = [*self.vqvae.encoder.parameters(), *self.vqvae.decoder.parameters(), *self.vqvae.vq_layer.parameters()]
        return [
            {"params": decay, "name": "decay"},
            {"params": vqvae, "name": "vqvae", "lr": self.config.optimizer_vqvae_lr,
             "weight_decay": self.config.optimizer_vqvae_weight_decay},
            {"params": gpt_no_decay, "name": "no_decay", "weight_decay": 0.0},
        ]

    def reset(self) -> None:
        """Empties the observation and action queues; call at every episode start."""
        self._obs_queues = {key: deque(maxlen=self.config.n_obs_steps) for key in self.observation_keys}
        self._action_queue = ActionQueue(self.config.action_chunk_size)

    # ------------------------------------------------------------------ model
    def _features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Normalised observations (B, n_obs_steps, ...) -> GPT outputs at the action queries (B, T, D)."""
        config = self.config
        state = batch[self.state_key]
        b, n_obs = state.shape[:2]
        if n_obs != config.n_obs_steps:
            raise ValueError(f"{self.state_key} has {n_obs} time steps but policy.n_obs_steps={config.n_obs_steps};"
                             " build the dataset with the policy's observation_delta_indices")
        images = torch.stack([batch[k] for k in self.image_keys], dim=2)  # (B, S, N, C, H, W)
        img = self.rgb_encoder(images.flatten(0, 2)).view(b, n_obs, len(self.image_keys), -1)
        rgb_tokens = self.rgb_feature_projector(img)
        per_step = [rgb_tokens[:, :, i] for i in range(len(self.image_keys))]
        per_step += [self.state_projector(state), self.action_token.expand(b, n_obs, -1)]
        tokens = torch.stack(per_step, dim=2).flatten(1, 2)  # (B, S * (cameras + 2), D)
        future = config.n_action_pred_token - 1
        tokens = torch.cat([tokens, self.action_token.expand(b, future, -1)], dim=1)
        out = self.policy(tokens)
        per = len(self.image_keys) + 2
        history = torch.arange(n_obs, device=out.device) * per + per - 1  # the action queries' positions
        features = out[:, history]
        return torch.cat([features, out[:, out.shape[1] - future:]], dim=1) if future else features

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Phase 1: the VQ-VAE's loss on every action chunk of the window; phase 2: the GPT's."""
        batch = self.normalizer.normalize(batch)
        actions = batch[self.action_key]
        expected = len(self.config.action_delta_indices)
        if actions.ndim != 3 or actions.shape[1] != expected:
            raise ValueError(f"{self.action_key} has shape {list(actions.shape)}, expected [B, {expected},"
                             f" {self.action_dim}]; build the dataset with the policy's action_delta_indices")
        chunk = self.config.action_chunk_size
        if not self.discretized:
            chunks = torch.cat([actions[:, j:j + chunk] for j in range(actions.shape[1] + 1 - chunk)], dim=0)
            loss, info = self.vqvae(chunks)
            return loss, {"loss": loss.item(), **info}
        pred = self.action_head(self._features(batch))
        loss, info = self.action_head.loss(pred, actions[:, self.select_target_actions_indices])
        return loss, {"loss": loss.item(), **info}

    @torch.no_grad()
    def predict_action_chunk(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Normalised observation windows -> the current token's chunk, unnormalised (B, chunk, A)."""
        pred = self.action_head(self._features(batch))["predicted_action"]
        chunk = pred[:, self.config.n_obs_steps - 1].view(pred.shape[0], self.config.action_chunk_size, -1)
        return self.normalizer.unnormalize({self.action_key: chunk})[self.action_key]

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, Tensor]) -> Tensor:
        """One action (B, action_dim) for the current observations (B, ...); predicts a new chunk
        every action_chunk_size calls. Call `eval()` first so images are centre-cropped."""
        check_observations(self.observation_keys, obs)
        if not self.discretized and not self._warned_undiscretized:
            log.warning("VQ-BeT is evaluated before its VQ-VAE phase ended (%d of %d steps): its actions are noise",
                        int(self.vqvae.steps), self.config.n_vqvae_training_steps)
            self._warned_undiscretized = True
        windows = push_observations(self._obs_queues, self.normalizer.normalize({k: obs[k] for k in self.observation_keys}))
        if not self._action_queue:
            self._action_queue.plan(self.predict_action_chunk(windows))
        return self._action_queue.popleft()
