"""pi0's flow matching (Black et al. 2024; openpi's pi0.py): the model, its loss and its sampler.

Prefix: image tokens of every camera and the prompt's tokens (the vision-language model's). Suffix:
one state token and `chunk_size` action tokens (the action expert's), each action token the noisy
action mixed with a sine embedding of the flow time by a small MLP. Training draws t ~ Beta(1.5, 1)
(shifted away from 0), x_t = t * noise + (1 - t) * actions, and regresses the expert's output on the
velocity noise - actions. Inference integrates dx/dt = v from pure noise at t = 1 to t = 0 in
`num_steps` Euler steps; the prefix does not depend on t, so its keys and values are computed once.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.pi0.attention import make_att_2d_masks
from models.pi0.paligemma_with_expert import KVCache, PaliGemmaWithExpert
from models.pi0.variants import GemmaVariant, SiglipVariant


def sinusoidal_time_embedding(time: Tensor, dim: int, min_period: float, max_period: float) -> Tensor:
    """(B,) times -> (B, dim) [sin | cos] at periods spaced geometrically in [min_period, max_period]."""
    if dim % 2:
        raise ValueError(f"the time embedding's width {dim} must be even")
    dtype = torch.float32 if time.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angles = (2 * math.pi / period)[None, :] * time.to(dtype)[:, None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sample_time(batch: int, alpha: float, beta: float, scale: float, offset: float, device) -> Tensor:
    """t = Beta(alpha, beta) * scale + offset, drawn on the CPU (torch's Beta has no MPS kernel)."""
    dist = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(beta))
    return (dist.sample((batch,)) * scale + offset).to(device=device, dtype=torch.float32)


class PI0FlowMatching(nn.Module):
    """Embeddings, the joint transformer and the action head; inputs are already padded and normalised."""

    def __init__(self, vlm: GemmaVariant, vision: SiglipVariant, expert: GemmaVariant, image_size: int,
                 vocab_size: int, max_state_dim: int, max_action_dim: int, chunk_size: int,
                 attention_implementation: str = "eager", min_period: float = 4e-3, max_period: float = 4.0) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.min_period, self.max_period = min_period, max_period
        self.paligemma_with_expert = PaliGemmaWithExpert(vlm, vision, expert, image_size, vocab_size,
                                                         attention_implementation)
        width = expert.width
        self.state_proj = nn.Linear(max_state_dim, width)
        self.action_in_proj = nn.Linear(max_action_dim, width)
        self.action_out_proj = nn.Linear(width, max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * width, width)
        self.action_time_mlp_out = nn.Linear(width, width)

    # ------------------------------------------------------------------ tokens
    def embed_prefix(self, images: list[Tensor], image_masks: list[Tensor], tokens: Tensor, token_masks: Tensor):
        """-> embeddings (B, P, W), validity (B, P) bool, autoregressive flags (B, P): none in the prefix."""
        embs, pads = [], []
        for image, valid in zip(images, image_masks):
            emb = self.paligemma_with_expert.embed_image(image)
            embs.append(emb)
            pads.append(valid[:, None].expand(emb.shape[:2]))
        lang = self.paligemma_with_expert.embed_language(tokens)
        embs.append(lang.to(embs[0].dtype) if embs else lang)
        pads.append(token_masks)
        pad = torch.cat(pads, dim=1)
        return torch.cat(embs, dim=1), pad, torch.zeros_like(pad)

    def embed_suffix(self, state: Tensor, noisy_actions: Tensor, time: Tensor):
        """-> embeddings (B, 1 + H, W), validity, flags: the state and the first action each open a block."""
        state_emb = self.state_proj(state)[:, None]
        time_emb = sinusoidal_time_embedding(time, self.action_in_proj.out_features, self.min_period,
                                             self.max_period)
        action_emb = self.action_in_proj(noisy_actions)
        time_emb = time_emb.to(action_emb.dtype)[:, None].expand_as(action_emb)
        fused = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([action_emb, time_emb], dim=2))))
        embs = torch.cat([state_emb.to(fused.dtype), fused], dim=1)
        batch, length = embs.shape[:2]
        pad = torch.ones(batch, length, dtype=torch.bool, device=embs.device)
        flags = torch.zeros(batch, length, dtype=torch.bool, device=embs.device)
        flags[:, :2] = True
        return embs, pad, flags

    # ------------------------------------------------------------------ training
    def velocity(self, prefix, prefix_pad, prefix_flags, state: Tensor, x_t: Tensor, time: Tensor,
                 cache: Optional[KVCache] = None) -> Tensor:
        """The expert's predicted velocity (B, H, max_action_dim) at (x_t, t): with `cache`, the suffix
        attends to the cached prefix; otherwise both groups run together."""
        suffix, suffix_pad, suffix_flags = self.embed_suffix(state, x_t, time)
        if cache is not None:
            batch, n_suffix, n_prefix = suffix.shape[0], suffix.shape[1], prefix_pad.shape[1]
            mask = torch.cat([prefix_pad[:, None, :].expand(batch, n_suffix, n_prefix),
                              make_att_2d_masks(suffix_pad, suffix_flags)], dim=2)
            positions = prefix_pad.sum(dim=1, keepdim=True) + torch.cumsum(suffix_pad, dim=1) - 1
            _, out = self.paligemma_with_expert(None, suffix, mask, positions, cache=cache)
        else:
            pad = torch.cat([prefix_pad, suffix_pad], dim=1)
            mask = make_att_2d_masks(pad, torch.cat([prefix_flags, suffix_flags], dim=1))
            positions = torch.cumsum(pad, dim=1) - 1
            _, out = self.paligemma_with_expert(prefix, suffix, mask, positions)
        return self.action_out_proj(out[:, -self.chunk_size:].float())

    def fill_cache(self, prefix: Tensor, prefix_pad: Tensor, prefix_flags: Tensor) -> KVCache:
        cache: KVCache = {}
        mask = make_att_2d_masks(prefix_pad, prefix_flags)
        positions = torch.cumsum(prefix_pad, dim=1) - 1
        self.paligemma_with_expert(prefix, None, mask, positions, cache=cache, fill_cache=True)
        return cache

    def forward(self, images, image_masks, tokens, token_masks, state: Tensor, actions: Tensor,
                noise: Tensor, time: Tensor, prefix_frozen: bool = False) -> Tensor:
        """Per-element squared error (B, H, max_action_dim) of the velocity at a random point of the flow.

        `prefix_frozen`: nothing of the prefix trains (train_expert_only), so it runs without autograd
        into a key/value cache that the suffix reads, which is the same computation for less memory."""
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        target = noise - actions
        if prefix_frozen:
            with torch.no_grad():
                prefix = self.embed_prefix(images, image_masks, tokens, token_masks)
                cache = self.fill_cache(*prefix)
            v_t = self.velocity(None, prefix[1], prefix[2], state, x_t, time, cache=cache)
        else:
            prefix = self.embed_prefix(images, image_masks, tokens, token_masks)
            v_t = self.velocity(*prefix, state, x_t, time)
        return F.mse_loss(v_t, target, reduction="none")

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def sample_actions(self, images, image_masks, tokens, token_masks, state: Tensor, noise: Tensor,
                       num_steps: int, use_cache: bool = True) -> Tensor:
        """Euler integration of the flow from `noise` (t = 1) to actions (t = 0) -> (B, H, max_action_dim)."""
        prefix, prefix_pad, prefix_flags = self.embed_prefix(images, image_masks, tokens, token_masks)
        cache = self.fill_cache(prefix, prefix_pad, prefix_flags) if use_cache else None
        dt = -1.0 / num_steps
        x_t = noise
        for step in range(num_steps):
            time = torch.full((state.shape[0],), 1.0 + step * dt, dtype=torch.float32, device=state.device)
            v_t = self.velocity(None if use_cache else prefix, prefix_pad, prefix_flags, state, x_t, time, cache)
            x_t = x_t + dt * v_t
        return x_t
