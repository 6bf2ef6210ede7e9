"""`policy.pretrained_path`: weights from a local folder in the Hugging Face layout, read as data.

Two kinds of folder load: a PaliGemma base (`paligemma-3b-pt-224`: config.json, model*.safetensors,
tokenizer.json), which fills the vision-language model and leaves the action expert and projections
at random; and a pi0 checkpoint converted to safetensors as LeRobot publishes it, which fills all.
Tensor names differ between those layouts and `transformers` versions (`language_model.model.` vs
`model.language_model.`, SigLIP's `vision_model.`, LeRobot's `model.paligemma_with_expert.paligemma.`),
so both sides are reduced to one canonical name before matching. Only safetensors are read: a
`pytorch_model.bin` is a pickle, which could run code.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("train")

# Name segments that only say which wrapper a tensor sat in.
WRAPPERS = {"model", "paligemma_with_expert", "paligemma", "vision_model"}
RENAMED = {"time_mlp_in": "action_time_mlp_in", "time_mlp_out": "action_time_mlp_out"}  # openpi's names
VLM_PARTS = ("vision_tower.", "multi_modal_projector.", "language_model.")


def canonical(key: str) -> str:
    parts = [RENAMED.get(p, p) for p in key.split(".") if p not in WRAPPERS]
    return ".".join(parts)


def safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / shard for shard in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        bins = sorted(p.name for p in folder.glob("*.bin"))
        extra = f" ({', '.join(bins)} is a pickle and is not read: convert it to safetensors)" if bins else ""
        raise ValueError(f"policy.pretrained_path={folder} holds no *.safetensors weights{extra}")
    return files


def load_pretrained(model: nn.Module, folder: str | Path) -> None:
    """Copies every tensor of `folder` that `model` (a PI0FlowMatching) has, checking shapes; the
    vision-language model must be complete, the action expert may be absent (a PaliGemma base)."""
    from safetensors import safe_open

    folder = Path(folder).expanduser()
    ours = {canonical(name): tensor for name, tensor in model.state_dict(keep_vars=True).items()}
    loaded, ignored = set(), []
    with torch.no_grad():
        for file in safetensors_files(folder):
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    name = canonical(key)
                    target = ours.get(name)
                    if target is None:
                        ignored.append(key)
                        continue
                    value = f.get_tensor(key)
                    if name.endswith("embed_tokens.weight") and value.shape[0] > target.shape[0] \
                            and value.shape[1:] == target.shape[1:]:
                        # PaliGemma's hub weights keep rows past the tokenizer's 257152 (image-token slots)
                        value = value[: target.shape[0]]
                    if value.shape != target.shape:
                        raise ValueError(
                            f"policy.pretrained_path={folder}: {key} has shape {list(value.shape)} but the model"
                            f" expects {list(target.shape)}; set policy.paligemma_variant / action_expert_variant"
                            " (and max_state_dim / max_action_dim, resize_imgs_with_padding) to the checkpoint's"
                        )
                    target.copy_(value)
                    loaded.add(name)
    missing = sorted(set(ours) - loaded)
    vlm_missing = [name for name in missing if name.startswith(VLM_PARTS)]
    if vlm_missing or not loaded:
        raise ValueError(
            f"policy.pretrained_path={folder} lacks {len(vlm_missing) or len(missing)} tensors of the vision-language"
            f" model (e.g. {(vlm_missing or missing)[0]}); give a PaliGemma or pi0 checkpoint of the configured sizes"
        )
    if missing:
        log.info("pi0: loaded %d tensors from %s (a PaliGemma base); %d of the action expert and projections start"
                 " from random weights", len(loaded), folder, len(missing))
    else:
        log.info("pi0: loaded all %d tensors from %s", len(loaded), folder)
    if ignored:
        log.info("pi0: %d tensors of %s are not part of the model and were skipped (e.g. %s)", len(ignored), folder,
                 ignored[0])
