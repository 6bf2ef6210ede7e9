"""ACT (Zhao et al. 2023, "Learning Fine-Grained Bimanual Manipulation with Low-Cost Hardware").

A transformer encoder reads one token per camera feature-map cell (ResNet layer4, 2D sine position
embeddings), one for the robot state, one for the environment state and one for a style latent;
a transformer decoder turns `chunk_size` learned queries into an action chunk by cross-attending
to them. In training a second transformer, the VAE encoder, reads [CLS, state, action chunk] and
gives the latent's posterior (the CVAE of the paper); at inference the latent is zero (the prior's
mean). The math, defaults and parameter names follow LeRobot's ACTPolicy, so a LeRobot user gets
the same model; the code is ours.
"""

import math
from itertools import chain
from typing import Any, Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.act.config import ACTConfig
from models.common.normalize import Normalizer
from models.common.policy_config import build_policy_config
from models.common.queues import ActionQueue, PlansActionChunks
from models.common.vision import build_resnet_trunk

BACKBONE_PREFIX = "backbone."


def activation_fn(name: str) -> Callable[[Tensor], Tensor]:
    return {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}[name]


def sinusoidal_table(num_positions: int, dim: int) -> Tensor:
    """(num_positions, dim) sine/cosine embeddings of "Attention is all you need": even dims sin,
    odd dims cos, frequency 10000^(-2*(j//2)/dim)."""
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    exponent = 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim
    angles = position / torch.pow(10000.0, exponent)
    table = torch.empty_like(angles)
    table[:, 0::2] = angles[:, 0::2].sin()
    table[:, 1::2] = angles[:, 1::2].cos()
    return table.float()


class SinusoidalPositionEmbedding2d(nn.Module):
    """Sine embeddings of a feature map's (row, column), each normalised to (0, 2*pi]: half of the
    channels encode the row, half the column (DETR's PositionEmbeddingSine, normalised)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.eps = 1e-6
        self.temperature = 10000

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) feature map -> (1, 2 * dim, H, W) embeddings."""
        height, width = x.shape[-2:]
        ones = torch.ones(1, height, width, dtype=torch.float32, device=x.device)
        rows = ones.cumsum(1)
        cols = ones.cumsum(2)
        rows = rows / (rows[:, -1:, :] + self.eps) * 2 * math.pi
        cols = cols / (cols[:, :, -1:] + self.eps) * 2 * math.pi
        freq = self.temperature ** (2 * (torch.arange(self.dim, dtype=torch.float32, device=x.device) // 2) / self.dim)
        rows = rows.unsqueeze(-1) / freq
        cols = cols.unsqueeze(-1) / freq
        emb_rows = torch.stack((rows[..., 0::2].sin(), rows[..., 1::2].cos()), dim=-1).flatten(3)
        emb_cols = torch.stack((cols[..., 0::2].sin(), cols[..., 1::2].cos()), dim=-1).flatten(3)
        return torch.cat((emb_rows, emb_cols), dim=3).permute(0, 3, 1, 2)


class FeedForward(nn.Module):
    """linear -> activation -> dropout -> linear. GLU halves its input, so the second layer reads
    dim_feedforward / 2 features then (LeRobot's glu option fails on a shape mismatch instead)."""

    def __init__(self, config: ACTConfig) -> None:
        super().__init__()
        self.linear1 = nn.Linear(config.dim_model, config.dim_feedforward)
        self.activation = activation_fn(config.feedforward_activation)
        self.dropout = nn.Dropout(config.dropout)
        hidden = config.dim_feedforward // 2 if config.feedforward_activation == "glu" else config.dim_feedforward
        self.linear2 = nn.Linear(hidden, config.dim_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


def _with_pos(x: Tensor, pos: Optional[Tensor]) -> Tensor:
    return x if pos is None else x + pos


def _residual(x: Tensor, norm: nn.Module, dropout: nn.Module, pre_norm: bool, sublayer: Callable[[Tensor], Tensor]):
    """x + dropout(sublayer(.)): the sublayer reads norm(x) with pre-norm, and post-norm normalises the sum."""
    if pre_norm:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, post-norm (DETR) or pre-norm. Positions are added to the
    queries and keys only, never the values. Tensors are (sequence, batch, dim)."""

    def __init__(self, config: ACTConfig) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(config.dim_model, config.n_heads, dropout=config.dropout)
        self.ff = FeedForward(config)
        self.norm1 = nn.LayerNorm(config.dim_model)
        self.norm2 = nn.LayerNorm(config.dim_model)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.dropout)
        self.pre_norm = config.pre_norm

    def forward(self, x: Tensor, pos: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        def attend(h: Tensor) -> Tensor:
            q = k = _with_pos(h, pos)
            return self.self_attn(q, k, value=h, key_padding_mask=key_padding_mask)[0]

        x = _residual(x, self.norm1, self.dropout1, self.pre_norm, attend)
        return _residual(x, self.norm2, self.dropout2, self.pre_norm, self.ff)


class Encoder(nn.Module):
    def __init__(self, config: ACTConfig, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(config) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(config.dim_model) if config.pre_norm else nn.Identity()

    def forward(self, x: Tensor, pos: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, pos=pos, key_padding_mask=key_padding_mask)
        return self.norm(x)


class DecoderLayer(nn.Module):
    """Self-attention over the action queries, cross-attention to the encoder, feed-forward."""

    def __init__(self, config: ACTConfig) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(config.dim_model, config.n_heads, dropout=config.dropout)
        self.multihead_attn = nn.MultiheadAttention(config.dim_model, config.n_heads, dropout=config.dropout)
        self.ff = FeedForward(config)
        self.norm1 = nn.LayerNorm(config.dim_model)
        self.norm2 = nn.LayerNorm(config.dim_model)
        self.norm3 = nn.LayerNorm(config.dim_model)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.dropout)
        self.dropout3 = nn.Dropout(config.dropout)
        self.pre_norm = config.pre_norm

    def forward(self, x: Tensor, memory: Tensor, query_pos: Tensor, memory_pos: Tensor) -> Tensor:
        def attend_self(h: Tensor) -> Tensor:
            q = k = _with_pos(h, query_pos)
            return self.self_attn(q, k, value=h)[0]

        def attend_memory(h: Tensor) -> Tensor:
            return self.multihead_attn(_with_pos(h, query_pos), _with_pos(memory, memory_pos), value=memory)[0]

        x = _residual(x, self.norm1, self.dropout1, self.pre_norm, attend_self)
        x = _residual(x, self.norm2, self.dropout2, self.pre_norm, attend_memory)
        return _residual(x, self.norm3, self.dropout3, self.pre_norm, self.ff)


class Decoder(nn.Module):
    def __init__(self, config: ACTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(config) for _ in range(config.n_decoder_layers)])
        self.norm = nn.LayerNorm(config.dim_model)

    def forward(self, x: Tensor, memory: Tensor, query_pos: Tensor, memory_pos: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, memory, query_pos, memory_pos)
        return self.norm(x)


class TemporalEnsembler:
    """Algorithm 2 of the ACT paper: the action executed at step t is the weighted mean of every
    prediction made for t so far, w_i = exp(-coeff * i) with i = 0 for the oldest prediction
    (coeff > 0 trusts older predictions more, 0 weighs all equally, < 0 favours new ones).

    Kept online: for each future step the running mean of its predictions and how many there are;
    each new chunk (B, chunk_size, A) folds into the means and the first step is returned."""

    def __init__(self, coeff: float, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.weights = torch.exp(-coeff * torch.arange(chunk_size, dtype=torch.float64)).float()
        self.weights_cumsum = torch.cumsum(self.weights, dim=0)
        self.reset()

    def reset(self) -> None:
        self.means: Optional[Tensor] = None
        self.counts: Optional[Tensor] = None

    def update(self, chunk: Tensor) -> Tensor:
        weights = self.weights.to(chunk.device, chunk.dtype)
        cumsum = self.weights_cumsum.to(chunk.device, chunk.dtype)
        if self.means is None:
            self.means = chunk.clone()
            self.counts = torch.ones(self.chunk_size, 1, dtype=torch.long, device=chunk.device)
        else:
            n = self.counts  # (chunk_size - 1, 1): predictions so far for each remaining step
            self.means = (self.means * cumsum[n - 1] + chunk[:, :-1] * weights[n]) / cumsum[n]
            self.means = torch.cat([self.means, chunk[:, -1:]], dim=1)
            self.counts = torch.cat([(n + 1).clamp(max=self.chunk_size), torch.ones_like(n[:1])])
        action = self.means[:, 0]
        self.means, self.counts = self.means[:, 1:], self.counts[1:]
        return action


class ACTPolicy(PlansActionChunks, nn.Module):
    """ACT behind the project's Policy contract (see docs/ARCHITECTURE.md).

    Built by `hydra.utils.instantiate(cfg.policy, features=..., stats=...)`; the remaining keywords
    are ACTConfig fields. Module names follow LeRobot's `ACT` model (`backbone`, `encoder`,
    `decoder`, `vae_encoder`, `*_input_proj`, `action_head`, ...).
    """

    name = "act"
    # Imitates its own rollouts too, as LeRobot's online loop trains any policy (training/online).
    learns_online = True
    init_only_options = ("pretrained_backbone_weights",)  # replaced by a checkpoint's weights

    def __init__(self, features: Mapping[str, Any], stats: Optional[Mapping] = None, **config_kwargs: Any) -> None:
        super().__init__()
        self.config, parsed = build_policy_config(ACTConfig, "act", config_kwargs, features)
        config = self.config
        self.state_key = next((k for k, (t, _) in parsed.items() if t == "STATE"), None)
        self.env_key = next((k for k, (t, _) in parsed.items() if t == "ENV"), None)
        self.image_keys = [k for k, (t, _) in parsed.items() if t == "VISUAL"]
        self.observation_keys = [k for k in (self.state_key, self.env_key) if k] + self.image_keys
        self.action_key = next(k for k, (t, _) in parsed.items() if t == "ACTION")
        self.action_dim = parsed[self.action_key][1][0]
        config.input_features = {k: {"type": parsed[k][0], "shape": list(parsed[k][1])} for k in self.observation_keys}
        config.output_features = {self.action_key: {"type": "ACTION", "shape": [self.action_dim]}}
        self.normalizer = Normalizer(
            {k: features[k] for k in self.observation_keys + [self.action_key]}, config.normalization_mapping, stats
        )
        d = config.dim_model

        if config.use_vae:
            self.vae_encoder = Encoder(config, config.n_vae_encoder_layers)
            self.vae_encoder_cls_embed = nn.Embedding(1, d)
            if self.state_key:
                self.vae_encoder_robot_state_input_proj = nn.Linear(parsed[self.state_key][1][0], d)
            self.vae_encoder_action_input_proj = nn.Linear(self.action_dim, d)
            self.vae_encoder_latent_output_proj = nn.Linear(d, config.latent_dim * 2)
            n_tokens = 1 + (1 if self.state_key else 0) + config.chunk_size
            self.register_buffer("vae_encoder_pos_enc", sinusoidal_table(n_tokens, d).unsqueeze(0))

        if self.image_keys:
            channels = parsed[self.image_keys[0]][1][0]
            self.backbone = build_resnet_trunk(
                config.vision_backbone,
                channels,
                config.pretrained_backbone_weights,
                replace_final_stride_with_dilation=config.replace_final_stride_with_dilation,
                frozen_batch_norm=True,
            )
            feature_channels = _trunk_channels(self.backbone)
            self.encoder_img_feat_input_proj = nn.Conv2d(feature_channels, d, kernel_size=1)
            self.encoder_cam_feat_pos_embed = SinusoidalPositionEmbedding2d(d // 2)

        self.encoder = Encoder(config, config.n_encoder_layers)
        self.decoder = Decoder(config)
        if self.state_key:
            self.encoder_robot_state_input_proj = nn.Linear(parsed[self.state_key][1][0], d)
        if self.env_key:
            self.encoder_env_state_input_proj = nn.Linear(parsed[self.env_key][1][0], d)
        self.encoder_latent_input_proj = nn.Linear(config.latent_dim, d)
        n_1d_tokens = 1 + (1 if self.state_key else 0) + (1 if self.env_key else 0)
        self.encoder_1d_feature_pos_embed = nn.Embedding(n_1d_tokens, d)
        self.decoder_pos_embed = nn.Embedding(config.chunk_size, d)
        self.action_head = nn.Linear(d, self.action_dim)

        # Xavier-uniform on the transformer's matrices, as the original code does.
        for p in chain(self.encoder.parameters(), self.decoder.parameters()):
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

        self.temporal_ensembler = (
            TemporalEnsembler(config.temporal_ensemble_coeff, config.chunk_size)
            if config.temporal_ensemble_coeff is not None
            else None
        )
        self.reset()

    def get_optim_params(self) -> list[dict]:
        """The ResNet backbone at `optimizer_lr_backbone`, everything else at the optimizer's lr
        (LeRobot's two groups; without cameras there is no backbone group)."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in named if not n.startswith(BACKBONE_PREFIX)]}]
        backbone = [p for n, p in named if n.startswith(BACKBONE_PREFIX)]
        if backbone:
            groups.append({"params": backbone, "lr": self.config.optimizer_lr_backbone})
        return groups

    def reset(self) -> None:
        """Empties the action queue (or the ensemble); call at every episode start."""
        self._action_queue = ActionQueue(self.config.n_action_steps)
        if self.temporal_ensembler is not None:
            self.temporal_ensembler.reset()

    def _latent(self, batch: Mapping[str, Tensor], batch_size: int, ref: Tensor):
        """The style latent and its posterior (mu, log sigma^2): sampled from the VAE encoder in
        training, zero (the prior's mean) otherwise."""
        config = self.config
        if not (config.use_vae and self.training and self.action_key in batch):
            return torch.zeros(batch_size, config.latent_dim, dtype=ref.dtype, device=ref.device), None, None
        actions = batch[self.action_key]
        tokens = [self.vae_encoder_cls_embed.weight.expand(batch_size, 1, -1)]
        if self.state_key:
            tokens.append(self.vae_encoder_robot_state_input_proj(batch[self.state_key]).unsqueeze(1))
        tokens.append(self.vae_encoder_action_input_proj(actions))
        tokens = torch.cat(tokens, dim=1).transpose(0, 1)  # (S, B, D)
        n_prefix = 2 if self.state_key else 1
        action_pad = batch.get(f"{self.action_key}_is_pad")
        if action_pad is None:
            action_pad = torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
        prefix_pad = torch.zeros(batch_size, n_prefix, dtype=torch.bool, device=actions.device)
        key_padding_mask = torch.cat([prefix_pad, action_pad.bool()], dim=1)
        pos = self.vae_encoder_pos_enc.transpose(0, 1)
        cls_out = self.vae_encoder(tokens, pos=pos, key_padding_mask=key_padding_mask)[0]
        params = self.vae_encoder_latent_output_proj(cls_out)
        mu, log_sigma_x2 = params[:, : config.latent_dim], params[:, config.latent_dim :]
        return mu + (log_sigma_x2 / 2).exp() * torch.randn_like(mu), mu, log_sigma_x2

    def predict_chunk(self, batch: Mapping[str, Tensor]):
        """Normalised batch -> (B, chunk_size, action_dim) normalised actions, and the latent's
        posterior (mu, log sigma^2) or (None, None)."""
        ref = batch[self.observation_keys[0]]
        batch_size = ref.shape[0]
        latent, mu, log_sigma_x2 = self._latent(batch, batch_size, ref)

        tokens = [self.encoder_latent_input_proj(latent)]
        pos = list(self.encoder_1d_feature_pos_embed.weight.unsqueeze(1))
        if self.state_key:
            tokens.append(self.encoder_robot_state_input_proj(batch[self.state_key]))
        if self.env_key:
            tokens.append(self.encoder_env_state_input_proj(batch[self.env_key]))
        tokens = [t.unsqueeze(0) for t in tokens]
        pos = [p.unsqueeze(0) for p in pos]
        for key in self.image_keys:
            feature_map = self.backbone(batch[key])
            cam_pos = self.encoder_cam_feat_pos_embed(feature_map).to(feature_map.dtype)
            cam_tokens = self.encoder_img_feat_input_proj(feature_map)
            tokens.append(cam_tokens.flatten(2).permute(2, 0, 1))  # (H*W, B, D)
            pos.append(cam_pos.flatten(2).permute(2, 0, 1))  # (H*W, 1, D)
        tokens = torch.cat(tokens, dim=0)
        pos = torch.cat(pos, dim=0)

        memory = self.encoder(tokens, pos=pos)
        queries = torch.zeros(self.config.chunk_size, batch_size, self.config.dim_model, dtype=pos.dtype,
                              device=pos.device)
        out = self.decoder(queries, memory, query_pos=self.decoder_pos_embed.weight.unsqueeze(1), memory_pos=pos)
        return self.action_head(out.transpose(0, 1)), (mu, log_sigma_x2)

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """L1 on the unpadded actions of the chunk, plus kl_weight x the KL to N(0, I) with the VAE."""
        batch = self.normalizer.normalize(batch)
        actions = batch[self.action_key]
        if actions.ndim != 3 or actions.shape[1] != self.config.chunk_size:
            raise ValueError(
                f"{self.action_key} has shape {list(actions.shape)}, expected [B, policy.chunk_size="
                f"{self.config.chunk_size}, {self.action_dim}]; build the dataset with the policy's"
                " action_delta_indices"
            )
        predicted, (mu, log_sigma_x2) = self.predict_chunk(batch)
        pad = batch.get(f"{self.action_key}_is_pad")
        valid = torch.ones_like(actions[..., :1]) if pad is None else (~pad.bool()).unsqueeze(-1).to(actions.dtype)
        abs_err = F.l1_loss(predicted, actions, reduction="none") * valid
        l1 = abs_err.sum() / (valid.sum() * actions.shape[-1]).clamp_min(1)
        info = {"l1_loss": l1.item()}
        loss = l1
        if mu is not None:
            kld = (-0.5 * (1 + log_sigma_x2 - mu.pow(2) - log_sigma_x2.exp())).sum(-1).mean()
            info["kld_loss"] = kld.item()
            loss = l1 + self.config.kl_weight * kld
        info["loss"] = loss.item()
        return loss, info

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, Tensor]) -> Tensor:
        """One action (B, action_dim) for the current observations (B, ...): the next of a queued
        chunk (a new chunk every n_action_steps calls), or the temporal ensemble of every chunk
        predicted so far. Call `eval()` first (dropout, and the latent is zero outside training)."""
        missing = [k for k in self.observation_keys if k not in obs]
        if missing:
            raise KeyError(f"select_action needs observations {missing}; got {sorted(obs)}")
        if self.temporal_ensembler is None and self._action_queue:
            return self._action_queue.popleft()
        batch = self.normalizer.normalize({k: obs[k] for k in self.observation_keys})
        chunk = self.predict_chunk(batch)[0]
        if self.temporal_ensembler is not None:
            action = self.temporal_ensembler.update(chunk)
            return self.normalizer.unnormalize({self.action_key: action})[self.action_key]
        actions = self.normalizer.unnormalize({self.action_key: chunk[:, : self.config.n_action_steps]})
        self._action_queue.plan(actions[self.action_key])
        return self._action_queue.popleft()


def _trunk_channels(trunk: nn.Sequential) -> int:
    """Channels of a ResNet trunk's last feature map (its fc.in_features)."""
    last_block = trunk[-1][-1]
    last_norm = last_block.bn3 if hasattr(last_block, "bn3") else last_block.bn2
    return last_norm.weight.shape[0]
