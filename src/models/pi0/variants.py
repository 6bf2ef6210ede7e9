"""Model sizes of pi0 (openpi's `gemma.get_config`, LeRobot's `paligemma_variant` / `action_expert_variant`)
and the `transformers` configs they become. Plain data: the config schema reads it without torch.

Both token groups attend to each other layer by layer, so the language model and the action expert
share depth, heads and head size; widths and MLP sizes differ.
"""

from __future__ import annotations

from dataclasses import dataclass

PALIGEMMA_VOCAB = 257_152  # PaliGemma's tokenizer (Gemma's 256k + 1024 location + 128 segmentation tokens)


@dataclass(frozen=True)
class GemmaVariant:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class SiglipVariant:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int = 14


VARIANTS = {
    "gemma_2b": GemmaVariant(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256),
    "gemma_300m": GemmaVariant(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
    # a CPU test size: the same structure (grouped-query attention with one key/value head)
    "tiny": GemmaVariant(width=32, depth=2, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16),
}
# The vision encoder that comes with a language model: PaliGemma's SigLIP So400m/14, or a tiny one.
SIGLIP_SO400M = SiglipVariant(width=1152, depth=27, mlp_dim=4304, num_heads=16)
VLM_VARIANTS = {"gemma_2b": SIGLIP_SO400M, "gemma_300m": SIGLIP_SO400M,
                "tiny": SiglipVariant(width=32, depth=1, mlp_dim=64, num_heads=2)}


def expert_width(name: str) -> int:
    return VARIANTS[name].width


def check_joinable(vlm: GemmaVariant, expert: GemmaVariant) -> None:
    """The joint attention concatenates both groups' heads: depth and head layout must agree."""
    for attr in ("depth", "num_heads", "num_kv_heads", "head_dim"):
        if getattr(vlm, attr) != getattr(expert, attr):
            raise ValueError(
                f"the language model and the action expert differ in {attr} ({getattr(vlm, attr)} vs "
                f"{getattr(expert, attr)}); they attend jointly layer by layer, so pick variants that share it"
            )


def gemma_config(variant: GemmaVariant, vocab_size: int, attn_implementation: str):
    """A `transformers` GemmaConfig of `variant` (PaliGemma's Gemma: tanh-GELU, RMSNorm eps 1e-6, RoPE 10k)."""
    from transformers import GemmaConfig

    config = GemmaConfig(
        vocab_size=vocab_size, hidden_size=variant.width, intermediate_size=variant.mlp_dim,
        num_hidden_layers=variant.depth, num_attention_heads=variant.num_heads,
        num_key_value_heads=variant.num_kv_heads, head_dim=variant.head_dim, hidden_activation="gelu_pytorch_tanh",
        rms_norm_eps=1e-6, max_position_embeddings=8192, pad_token_id=0,
        bos_token_id=2 if vocab_size > 2 else None, eos_token_id=1 if vocab_size > 2 else None,
    )
    config._attn_implementation = attn_implementation
    return config


def paligemma_config(vlm: GemmaVariant, vision: SiglipVariant, image_size: int, vocab_size: int,
                     attn_implementation: str):
    """A `transformers` PaliGemmaConfig: SigLIP without its pooling head, projected to the language width."""
    from transformers import PaliGemmaConfig

    text = gemma_config(vlm, vocab_size, attn_implementation).to_dict()
    config = PaliGemmaConfig(
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=vision.width, intermediate_size=vision.mlp_dim,
            num_hidden_layers=vision.depth, num_attention_heads=vision.num_heads, patch_size=vision.patch_size,
            image_size=image_size, projection_dim=vlm.width, vision_use_head=False, hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6,
        ),
        text_config=text, projection_dim=vlm.width, image_token_index=vocab_size - 1,
    )
    config.vision_config._attn_implementation = attn_implementation
    config.text_config._attn_implementation = attn_implementation
    return config
