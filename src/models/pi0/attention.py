"""pi0's attention pattern and the kernels that apply it.

Tokens carry an "autoregressive" flag (big_vision's `mask_ar`): a token sees every valid token whose
running count of flags is at most its own. pi0 flags nothing in the prefix (images and language
attend to each other freely), the state token and the first action token: so the prefix never sees
the suffix, the state sees the prefix and itself, and the actions see everything, each other included.

Written by hand because no library offers attention across two models' token groups with this mask;
the softmax attention itself is torch's (SDPA, flex attention) or the plain matmul form (eager).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

# A large finite negative score (big_vision's), so a row with nothing to attend to stays finite.
MASKED_SCORE = -2.3819763e38


def make_att_2d_masks(pad_masks: Tensor, att_masks: Tensor) -> Tensor:
    """(B, N) validity and (B, N) autoregressive flags -> (B, N, N) bool, True where query i may attend key j."""
    if pad_masks.ndim != 2 or att_masks.ndim != 2:
        raise ValueError(f"expected (B, N) masks, got {tuple(pad_masks.shape)} and {tuple(att_masks.shape)}")
    cumsum = torch.cumsum(att_masks.long(), dim=1)
    causal = cumsum[:, None, :] <= cumsum[:, :, None]
    valid = pad_masks[:, None, :] & pad_masks[:, :, None]
    return causal & valid


def with_self_for_empty_rows(mask: Tensor) -> Tensor:
    """A padding query sees nothing; letting it see itself keeps every kernel finite (its output is
    never read, and no valid query attends to it)."""
    empty = ~mask.any(dim=-1)
    if not bool(empty.any()):
        return mask
    n_q, n_k = mask.shape[-2:]
    eye = torch.zeros(n_q, n_k, dtype=torch.bool, device=mask.device)
    eye[:, n_k - n_q:] = torch.eye(n_q, dtype=torch.bool, device=mask.device)
    return mask | (empty[..., None] & eye)


def _repeat_kv(x: Tensor, groups: int) -> Tensor:
    """(B, H_kv, L, D) -> (B, H_kv * groups, L, D): grouped-query attention spelt out."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def eager_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
    """Scores and softmax in float32, as openpi computes them. q (B, H, Lq, D), k/v (B, H_kv, Lk, D),
    mask (B, Lq, Lk) bool -> (B, H, Lq, D)."""
    groups = q.shape[1] // k.shape[1]
    k, v = _repeat_kv(k, groups), _repeat_kv(v, groups)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    scores = torch.where(mask[:, None], scores, torch.tensor(MASKED_SCORE, dtype=scores.dtype, device=scores.device))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
    groups = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, _repeat_kv(k, groups), _repeat_kv(v, groups), attn_mask=mask[:, None],
                                          scale=scale)


@functools.lru_cache(maxsize=1)
def _flex():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    return flex_attention, create_block_mask


def flex_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
    """torch's flex attention with the boolean mask as its mask_mod (block-sparse: the prefix's
    blocks never read the suffix's)."""
    if q.device.type == "cpu" and q.requires_grad:
        raise ValueError("policy.attention_implementation=flex cannot train on the CPU (torch's flex attention has no"
                         " CPU backward); use sdpa or eager there")
    flex, create_block_mask = _flex()
    batch, _, n_q, _ = q.shape
    n_k = k.shape[2]

    def mask_mod(b, h, q_idx, kv_idx):
        return mask[b, q_idx, kv_idx]

    block_mask = create_block_mask(mask_mod, B=batch, H=None, Q_LEN=n_q, KV_LEN=n_k, device=q.device)
    groups = q.shape[1] // k.shape[1]
    return flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=groups > 1)


def fa2_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
    """flash-attn takes no mask, but pi0's rows are few: every query of a group (the prefix, the state,
    the actions) sees the same keys. Each (sample, distinct row) becomes one variable-length sequence of
    its queries over its valid keys, all packed into one `flash_attn_varlen_func` call."""
    from flash_attn import flash_attn_varlen_func

    batch, heads, n_q, dim = q.shape
    valid = mask.any(dim=-1)  # (B, Lq): padding queries are left at zero
    sample, position = torch.nonzero(valid, as_tuple=True)
    rows = mask[sample, position]  # (Nq, Lk)
    groups, inverse = torch.unique(torch.cat([sample[:, None], rows.long()], dim=1), dim=0, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    group_sample, group_rows = groups[:, 0], groups[:, 1:].bool()
    q_counts = torch.bincount(inverse, minlength=len(groups))
    k_counts = group_rows.sum(dim=1)
    key_group, key_pos = torch.nonzero(group_rows, as_tuple=True)
    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    qs = q.transpose(1, 2)[sample[order], position[order]].to(dtype)  # (Nq, H, D)
    ks = k.transpose(1, 2)[group_sample[key_group], key_pos].to(dtype)  # (Nk, H_kv, D)
    vs = v.transpose(1, 2)[group_sample[key_group], key_pos].to(dtype)
    cu_q = F.pad(torch.cumsum(q_counts, 0), (1, 0)).to(torch.int32)
    cu_k = F.pad(torch.cumsum(k_counts, 0), (1, 0)).to(torch.int32)
    packed = flash_attn_varlen_func(qs, ks, vs, cu_q, cu_k, int(q_counts.max()), int(k_counts.max()),
                                    softmax_scale=scale)
    out = torch.zeros(batch, n_q, heads, dim, dtype=q.dtype, device=q.device)
    out[sample[order], position[order]] = packed.to(q.dtype)
    return out.transpose(1, 2)


ATTENTION = {"eager": eager_attention, "sdpa": sdpa_attention, "flex": flex_attention, "fa2": fa2_attention}
