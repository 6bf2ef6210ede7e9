"""pi0 (Black et al. 2024, "pi0: A Vision-Language-Action Flow Model for General Robot Control").

The policy around the flow-matching model (flow.py): normalisation from the dataset's stats, each
frame's task string tokenised with the model's tokenizer (language.py), cameras resized with padding
to SigLIP's input and scaled to [-1, 1] (plus blank, masked ones: `empty_cameras`), state and actions
zero-padded to `max_state_dim` / `max_action_dim` and predictions cut back, the optional ALOHA space
conversions (aloha.py), and an action queue at inference. Defaults and behaviour follow LeRobot's
PI0Policy and openpi; the code is ours.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.common.normalize import Normalizer
from models.common.policy_config import build_policy_config
from models.common.queues import ActionQueue, PlansActionChunks, check_observations
from models.pi0 import aloha
from models.pi0.config import PI0Config
from models.pi0.flow import PI0FlowMatching, sample_time
from models.pi0.language import PromptTokenizer, load_tokenizer
from models.pi0.pretrained import load_pretrained
from models.pi0.variants import PALIGEMMA_VOCAB, VARIANTS, VLM_VARIANTS

log = logging.getLogger("train")
TASK_KEY = "task"
_said_random = False


def pad_vector(x: Tensor, dim: int) -> Tensor:
    """Zero-pads the last dimension to `dim`."""
    return x if x.shape[-1] >= dim else F.pad(x, (0, dim - x.shape[-1]))


def resize_with_pad(images: Tensor, height: int, width: int) -> Tensor:
    """(B, C, H, W) in [0, 1] -> (B, C, height, width): scaled to fit keeping the aspect ratio, then
    centred on black (openpi's resize_with_pad)."""
    cur_h, cur_w = images.shape[-2:]
    if (cur_h, cur_w) == (height, width):
        return images
    ratio = max(cur_w / width, cur_h / height)
    new_h, new_w = int(cur_h / ratio), int(cur_w / ratio)
    resized = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return F.pad(resized, (left, width - new_w - left, top, height - new_h - top), value=0.0)


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]


class PI0Policy(PlansActionChunks, nn.Module):
    """pi0 behind the project's Policy contract (docs/ARCHITECTURE.md).

    Built by `hydra.utils.instantiate(cfg.policy, features=..., stats=...)`; the keywords are PI0Config
    fields. Training batches and observations carry `task`: one string per sample (the dataset's
    tasks; at evaluation the env's `task_description`).
    """

    name = "pi0"

    def __init__(self, features: Mapping[str, Any], stats: Optional[Mapping] = None, **config_kwargs: Any) -> None:
        super().__init__()
        self.config, parsed = build_policy_config(PI0Config, "pi0", config_kwargs, features)
        config = self.config
        self.state_key = next(k for k, (t, _) in parsed.items() if t == "STATE")
        self.image_keys = [k for k, (t, _) in parsed.items() if t == "VISUAL"]
        self.action_key = next(k for k, (t, _) in parsed.items() if t == "ACTION")
        self.observation_keys = [self.state_key, *self.image_keys]
        self.action_dim = parsed[self.action_key][1][0]
        config.input_features = {k: {"type": parsed[k][0], "shape": list(parsed[k][1])} for k in self.observation_keys}
        config.output_features = {self.action_key: {"type": "ACTION", "shape": [self.action_dim]}}
        used = {k: features[k] for k in self.observation_keys + [self.action_key]}
        self.normalizer = Normalizer(used, config.normalization_mapping, stats)

        self.prompts = PromptTokenizer(load_tokenizer(config.tokenizer_path, config.pretrained_path),
                                       config.tokenizer_max_length)
        # the real sizes keep PaliGemma's vocabulary (their weights load into it); tiny takes the tokenizer's
        vocab = self.prompts.vocab_size if config.paligemma_variant == "tiny" else PALIGEMMA_VOCAB
        if self.prompts.vocab_size > vocab:
            raise ValueError(f"the tokenizer has {self.prompts.vocab_size} tokens, more than the model's {vocab};"
                             " set policy.tokenizer_path to PaliGemma's tokenizer")
        self.image_size = (config.resize_imgs_with_padding or parsed[self.image_keys[0]][1][1:])[0]
        self.model = PI0FlowMatching(
            VARIANTS[config.paligemma_variant], VLM_VARIANTS[config.paligemma_variant],
            VARIANTS[config.action_expert_variant], self.image_size, vocab, config.max_state_dim,
            config.max_action_dim, config.chunk_size, config.attention_implementation, config.min_period,
            config.max_period)
        if config.pretrained_path:
            load_pretrained(self.model, config.pretrained_path)
        else:
            _say_random_once()
        self._freeze()
        self.compute_dtype = resolve_dtype(config.dtype)
        if self.compute_dtype == torch.bfloat16:  # frozen weights need no float32 master copy
            for p in self.model.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
        if config.gradient_checkpointing:
            self.model.paligemma_with_expert.gradient_checkpointing = True
            if not config.freeze_vision_encoder:
                self.model.paligemma_with_expert.vision_tower.gradient_checkpointing_enable()
        self.reset()

    # ------------------------------------------------------------------ training setup
    def _freeze(self) -> None:
        """What does not train gets requires_grad=False: the optimizer (get_optim_params) and DDP,
        which buckets only parameters that require gradients, both leave it out."""
        config, vlm = self.config, self.model.paligemma_with_expert
        frozen = list(vlm.unused_vlm_parameters())
        if config.freeze_vision_encoder:
            frozen += list(vlm.vision_tower.parameters())
        if config.train_expert_only:
            frozen += [*vlm.vision_tower.parameters(), *vlm.multi_modal_projector.parameters(),
                       *vlm.language_model.parameters()]
        if not config.train_state_proj:
            frozen += list(self.model.state_proj.parameters())
        for p in frozen:
            p.requires_grad_(False)

    @property
    def prefix_frozen(self) -> bool:
        vlm = self.model.paligemma_with_expert
        return not any(p.requires_grad for p in (*vlm.multi_modal_projector.parameters(),
                                                 *vlm.language_model.parameters()))

    def get_optim_params(self) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def reset(self) -> None:
        """Empties the action queue; call at every episode start."""
        self._action_queue = ActionQueue(self.config.n_action_steps)

    def _autocast(self, device: torch.device):
        if self.compute_dtype != torch.bfloat16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    # ------------------------------------------------------------------ inputs
    def _images(self, batch: Mapping[str, Tensor], batch_size: int, device: torch.device):
        """Cameras in [-1, 1] at SigLIP's size with their validity, then the blank `empty_cameras`."""
        images, masks = [], []
        for key in self.image_keys:
            image = batch[key]
            if self.config.resize_imgs_with_padding is not None:
                image = resize_with_pad(image, *self.config.resize_imgs_with_padding)
            images.append(image * 2.0 - 1.0)
            masks.append(torch.ones(batch_size, dtype=torch.bool, device=device))
        for _ in range(self.config.empty_cameras):
            images.append(torch.full((batch_size, 3, self.image_size, self.image_size), -1.0, device=device))
            masks.append(torch.zeros(batch_size, dtype=torch.bool, device=device))
        return images, masks

    def _tasks(self, batch: Mapping[str, Any], batch_size: int) -> Sequence[str]:
        tasks = batch.get(TASK_KEY)
        if tasks is None:
            raise KeyError(f"pi0 needs the task string of each sample under '{TASK_KEY}' (the dataset's tasks; the"
                           " env's task_description at evaluation); the batch has only"
                           f" {sorted(k for k in batch)}")
        tasks = [tasks] * batch_size if isinstance(tasks, str) else list(tasks)
        if len(tasks) != batch_size:
            raise ValueError(f"got {len(tasks)} task strings for a batch of {batch_size}")
        return tasks

    def _inputs(self, batch: Mapping[str, Any]):
        """Normalised, adapted and padded model inputs (and the batch they came from)."""
        batch = dict(batch)
        if self.config.adapt_to_pi_aloha:
            batch[self.state_key] = aloha.decode_state(batch[self.state_key])
            if self.action_key in batch:
                batch[self.action_key] = aloha.encode_actions_inv(batch[self.action_key])
        batch = self.normalizer.normalize(batch)
        state = batch[self.state_key]
        batch_size, device = state.shape[0], state.device
        images, image_masks = self._images(batch, batch_size, device)
        tokens, token_masks = self.prompts(self._tasks(batch, batch_size), device)
        return batch, images, image_masks, tokens, token_masks, pad_vector(state, self.config.max_state_dim)

    # ------------------------------------------------------------------ contract
    def forward(self, batch: Mapping[str, Any], noise: Optional[Tensor] = None,
                time: Optional[Tensor] = None) -> tuple[Tensor, dict[str, float]]:
        """Flow-matching loss: the mean squared velocity error over the real action dimensions of the
        chunk's steps inside the episode."""
        actions = batch[self.action_key]
        if actions.ndim != 3 or actions.shape[1] != self.config.chunk_size:
            raise ValueError(f"{self.action_key} has shape {list(actions.shape)}, expected [B, policy.chunk_size="
                             f"{self.config.chunk_size}, {self.action_dim}]; build the dataset with the policy's"
                             " action_delta_indices")
        batch, images, image_masks, tokens, token_masks, state = self._inputs(batch)
        actions = batch[self.action_key]
        if self.config.use_delta_joint_actions_aloha:
            actions = aloha.to_deltas(actions, batch[self.state_key])
        actions = pad_vector(actions, self.config.max_action_dim)
        if noise is None:
            noise = torch.randn_like(actions)
        if time is None:
            c = self.config
            time = sample_time(actions.shape[0], c.time_sampling_beta_alpha, c.time_sampling_beta_beta,
                               c.time_sampling_scale, c.time_sampling_offset, actions.device)
        with self._autocast(actions.device):
            losses = self.model(images, image_masks, tokens, token_masks, state, actions, noise, time,
                                prefix_frozen=self.prefix_frozen)
        losses = losses[:, :, : self.action_dim].float()
        pad = batch.get(f"{self.action_key}_is_pad")
        valid = torch.ones_like(losses[..., :1]) if pad is None else (~pad.bool()).unsqueeze(-1).float()
        loss = (losses * valid).sum() / (valid.sum() * self.action_dim).clamp_min(1)
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def predict_action_chunk(self, obs: Mapping[str, Any], noise: Optional[Tensor] = None,
                             use_cache: Optional[bool] = None) -> Tensor:
        """Observations (B, ...) and their task strings -> (B, chunk_size, action_dim) actions."""
        batch, images, image_masks, tokens, token_masks, state = self._inputs(
            {k: v for k, v in obs.items() if k != self.action_key})
        if noise is None:
            noise = torch.randn(state.shape[0], self.config.chunk_size, self.config.max_action_dim,
                                device=state.device)
        with self._autocast(state.device):
            actions = self.model.sample_actions(
                images, image_masks, tokens, token_masks, state, noise, self.config.num_steps,
                self.config.use_cache if use_cache is None else use_cache)
        actions = actions[:, :, : self.action_dim].float()
        if self.config.use_delta_joint_actions_aloha:
            actions = aloha.from_deltas(actions, batch[self.state_key])
        actions = self.normalizer.unnormalize({self.action_key: actions})[self.action_key]
        if self.config.adapt_to_pi_aloha:
            actions = aloha.encode_actions(actions)
        return actions

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, Any]) -> Tensor:
        """One action (B, action_dim): the next of the queued chunk, a new chunk every n_action_steps calls."""
        check_observations(self.observation_keys, obs)
        if not self._action_queue:
            chunk = self.predict_action_chunk(obs)
            self._action_queue.plan(chunk[:, : self.config.n_action_steps])
        return self._action_queue.popleft()


def _say_random_once() -> None:
    global _said_random
    if not _said_random:
        log.info("pi0: no policy.pretrained_path, so the model is built with random weights (a resume or "
                 "warm start then loads its checkpoint's)")
        _said_random = True
