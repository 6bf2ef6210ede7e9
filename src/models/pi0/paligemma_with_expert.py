"""PaliGemma (SigLIP + Gemma) and a second Gemma, the action expert, attending jointly layer by layer.

The modules are `transformers`' (SiglipVisionModel, PaliGemma's projector, GemmaModel and its decoder
layers, norms, MLPs and rotary embedding); what is ours is the layer loop: at every depth each token
group is normalised and projected with its own model's weights, the queries, keys and values of both
groups are concatenated and attend under one mask (attention.py), and each group's slice goes back
through its own output projection and MLP. This is pi0's "mixture of experts" transformer (openpi's
gemma.py); calling GemmaModel.forward cannot express it.

Three ways through: both groups at once (training, and inference without a cache), the prefix alone
filling a key/value cache, and the suffix alone reading that cache (each Euler step of inference).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from models.pi0.attention import ATTENTION, with_self_for_empty_rows
from models.pi0.variants import GemmaVariant, SiglipVariant, check_joinable, gemma_config, paligemma_config

KVCache = dict[int, tuple[Tensor, Tensor]]


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE on (B, H, L, D) with (B, L, D) tables, in float32 (openpi's apply_rope)."""
    half = x.shape[-1] // 2
    xf = x.float()
    rotated = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos[:, None] + rotated * sin[:, None]).to(x.dtype)


class PaliGemmaWithExpert(nn.Module):
    def __init__(self, vlm: GemmaVariant, vision: SiglipVariant, expert: GemmaVariant, image_size: int,
                 vocab_size: int, attention_implementation: str = "eager") -> None:
        super().__init__()
        from transformers.models.gemma.modeling_gemma import GemmaModel
        from transformers.models.paligemma.modeling_paligemma import PaliGemmaMultiModalProjector
        from transformers.models.siglip.modeling_siglip import SiglipVisionModel

        check_joinable(vlm, expert)
        # transformers runs SigLIP's own attention (no mask there): its SDPA unless eager is asked for
        hf_attention = "eager" if attention_implementation == "eager" else "sdpa"
        config = paligemma_config(vlm, vision, image_size, vocab_size, hf_attention)
        self.vision_tower = SiglipVisionModel(config.vision_config)
        self.multi_modal_projector = PaliGemmaMultiModalProjector(config)
        self.language_model = GemmaModel(config.text_config)
        self.gemma_expert = GemmaModel(gemma_config(expert, 1, hf_attention))
        self.gemma_expert.embed_tokens = None  # the expert reads projected states and actions, never tokens
        self.attend = ATTENTION[attention_implementation]
        self.depth = vlm.depth
        self.gradient_checkpointing = False

    # ------------------------------------------------------------------ embeddings
    def embed_image(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, patches, width) image tokens (SigLIP, then the projector).

        The projector's output is used as it is: PaliGemma in `transformers` divides it by
        sqrt(width), which pi0 (openpi) does not."""
        frozen = not any(p.requires_grad for p in self.vision_tower.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            features = self.vision_tower(pixel_values=pixels).last_hidden_state
        return self.multi_modal_projector(features)

    def embed_language(self, tokens: Tensor) -> Tensor:
        """Token embeddings times sqrt(width), as Gemma scales them. Read from the table's weight: transformers
        5 scales inside the embedding module, 4.x in GemmaModel.forward, which is never called here."""
        table = self.language_model.embed_tokens
        embedded = F.embedding(tokens, table.weight, padding_idx=table.padding_idx)
        return embedded * math.sqrt(embedded.shape[-1])

    def unused_vlm_parameters(self) -> list[nn.Parameter]:
        """The language model's last output projection, MLP and norms, which no pi0 output depends on."""
        last = self.language_model.layers[-1]
        return [*last.self_attn.o_proj.parameters(), *last.post_attention_layernorm.parameters(),
                *last.mlp.parameters(), *self.language_model.norm.parameters()]

    # ------------------------------------------------------------------ joint transformer
    def forward(self, prefix: Optional[Tensor], suffix: Optional[Tensor], mask: Tensor, position_ids: Tensor,
                cache: Optional[KVCache] = None, fill_cache: bool = False) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """prefix (B, P, W_vlm) and/or suffix (B, S, W_expert) embeddings -> (None, the suffix's final hidden
        states or None). The prefix's own outputs are never computed past its last keys and values: pi0
        reads the expert's tokens only (so `unused_vlm_parameters` get no gradient).

        `mask` (B, queries, keys) bool and `position_ids` (B, queries) cover the tokens passed, plus the
        cached prefix's keys when `cache` is read. `fill_cache=True` stores the prefix's keys and values."""
        hidden = [prefix, suffix]
        ref = prefix if prefix is not None else suffix
        cos, sin = self.language_model.rotary_emb(torch.zeros(1, dtype=torch.float32, device=ref.device),
                                                  position_ids)
        mask = with_self_for_empty_rows(mask)
        use_checkpoint = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for idx in range(self.depth):
            if use_checkpoint and not fill_cache:
                hidden = checkpoint(self._layer, idx, hidden, mask, cos, sin, cache, False, use_reentrant=False)
            else:
                hidden = self._layer(idx, hidden, mask, cos, sin, cache, fill_cache)
        return None, None if hidden[1] is None else self.gemma_expert.norm(hidden[1])

    def _layer(self, idx: int, hidden: list, mask: Tensor, cos: Tensor, sin: Tensor, cache: Optional[KVCache],
               fill_cache: bool) -> list:
        models = (self.language_model, self.gemma_expert)
        queries, keys, values = [], [], []
        for model, h in zip(models, hidden):
            if h is None:
                continue
            layer = model.layers[idx]
            x = layer.input_layernorm(h)
            attn = layer.self_attn
            shape = (*x.shape[:-1], -1, attn.head_dim)
            queries.append(attn.q_proj(x).view(shape).transpose(1, 2))
            keys.append(attn.k_proj(x).view(shape).transpose(1, 2))
            values.append(attn.v_proj(x).view(shape).transpose(1, 2))
        q = rotate(torch.cat(queries, dim=2), cos, sin)
        k = rotate(torch.cat(keys, dim=2), cos, sin)
        v = torch.cat(values, dim=2)
        if cache is not None:
            if fill_cache:
                cache[idx] = (k, v)
            else:
                cached_k, cached_v = cache[idx]
                k, v = torch.cat([cached_k.to(k.dtype), k], dim=2), torch.cat([cached_v.to(v.dtype), v], dim=2)
        attn0 = models[0].layers[idx].self_attn
        scale = getattr(attn0, "scaling", attn0.head_dim ** -0.5)
        out = self.attend(q, k.to(q.dtype), v.to(q.dtype), mask, scale)
        out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)

        result, start = [], 0
        for group, (model, h) in enumerate(zip(models, hidden)):
            if h is None:
                result.append(None)
                continue
            end = start + h.shape[1]
            if group == 0 and idx == self.depth - 1:
                result.append(None)  # the prefix's last output feeds nothing: only its keys and values are read
                start = end
                continue
            layer = model.layers[idx]
            h = h + layer.self_attn.o_proj(out[:, start:end])
            h = h + layer.mlp(layer.post_attention_layernorm(h))
            result.append(h)
            start = end
        return result
