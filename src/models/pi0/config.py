"""Configuration of pi0, also the Hydra schema of `policy=pi0`.

Every option of the seed's `PI0Config` (LeRobot's `--policy.type=pi0`) keeps its name and default;
the training preset (optimizer_lr, betas, eps, weight decay, scheduler_*) lives in
conf/optimizer/preset/pi0.yaml and conf/scheduler/preset/pi0.yaml. The options LeRobot 0.4.4 added
(model sizes, dtype, gradient checkpointing, flow-matching time sampling) and the local weights
and tokenizer (`pretrained_path`, `tokenizer_path`) follow them.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from config.ranges import check_fields, ranged
from models.common.checks import check_chunk, check_normalization_mapping
from models.common.feature_access import feature_type_and_shape, normalization_names
from models.pi0.variants import VARIANTS, VLM_VARIANTS, expert_width

ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flex", "fa2")
DTYPES = ("auto", "bfloat16", "float32")
ALOHA_STATE_DIM = 14  # two arms of 6 joints and a gripper each


@dataclass
class PI0Config:
    """pi0 hyper-parameters (LeRobot's defaults)."""

    _target_: str = "models.pi0.modeling.PI0Policy"

    # Input / output structure: the current frame in, `chunk_size` actions out, `n_action_steps` executed.
    n_obs_steps: int = ranged(1, ge=1, le=1, why="pi0 conditions on the current frame only")
    chunk_size: int = ranged(50, ge=1)
    n_action_steps: int = ranged(50, ge=1, why="at most chunk_size")

    normalization_mapping: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    )

    # State and action vectors are zero-padded to these sizes (the model's fixed input width) and the
    # predicted actions cut back to the dataset's size.
    max_state_dim: int = ranged(32, ge=1)
    max_action_dim: int = ranged(32, ge=1)

    # Each camera is resized to fit [height, width] keeping its aspect ratio, then padded (black);
    # null feeds the images as they are (square, all of one size).
    resize_imgs_with_padding: Optional[tuple[int, int]] = ranged((224, 224), ge=14, length=2,
                                                                 why="[height, width], square, a multiple of 14")
    # Extra image slots that are blank and masked out (pi0_aloha_sim adds the two wrist cameras it lacks).
    empty_cameras: int = ranged(0, ge=0)

    # ALOHA: convert joints and grippers between the standard Aloha space and the one of the pi runtime
    # the base model was trained in; and train on joint deltas to the current state (grippers absolute).
    adapt_to_pi_aloha: bool = False
    use_delta_joint_actions_aloha: bool = False

    tokenizer_max_length: int = ranged(48, ge=2, why="prompt tokens, <bos> and the newline included")
    # The width of the state, action and time projections, i.e. the action expert's hidden size.
    proj_width: int = ranged(1024, ge=2, why="the width of policy.action_expert_variant (gemma_300m: 1024)")
    num_steps: int = ranged(10, ge=1, why="Euler steps of the flow at inference")
    use_cache: bool = True  # reuse the prefix's keys and values across the Euler steps
    attention_implementation: str = ranged("eager", choices=ATTENTION_IMPLEMENTATIONS)

    # Fine-tuning: what trains. Frozen weights are left out of the optimizer and of DDP's buckets.
    freeze_vision_encoder: bool = True
    train_expert_only: bool = False
    train_state_proj: bool = True

    # Model sizes (LeRobot 0.4.4's options): the PaliGemma language model (with its SigLIP) and the
    # action expert. `tiny` is a test size.
    paligemma_variant: str = ranged("gemma_2b", choices=tuple(VLM_VARIANTS))
    action_expert_variant: str = ranged("gemma_300m", choices=tuple(VARIANTS))
    # auto: bfloat16 where CUDA is available (frozen weights stored in bf16, the forward pass under bf16
    # autocast, trainable weights kept float32 for the optimizer), float32 elsewhere.
    dtype: str = ranged("auto", choices=DTYPES)
    gradient_checkpointing: bool = False

    # Weights and tokenizer, all local (nothing is downloaded): a directory in the Hugging Face layout,
    # a PaliGemma base (config.json + *.safetensors, e.g. paligemma-3b-pt-224) or a pi0 checkpoint
    # in safetensors as LeRobot publishes it. null: random weights.
    pretrained_path: Optional[str] = None
    # A directory with the model's tokenizer.json; null: pretrained_path's, or (random weights) a
    # byte-level tokenizer.
    tokenizer_path: Optional[str] = None

    # Flow matching (openpi): t ~ Beta(alpha, beta) * scale + offset, and the time embedding's periods.
    time_sampling_beta_alpha: float = ranged(1.5, gt=0)
    time_sampling_beta_beta: float = ranged(1.0, gt=0)
    time_sampling_scale: float = ranged(0.999, gt=0, le=1)
    time_sampling_offset: float = ranged(0.001, ge=0, lt=1)
    min_period: float = ranged(4e-3, gt=0)
    max_period: float = ranged(4.0, gt=0)

    # Filled from the dataset at build time; informational (logged with the run).
    input_features: Optional[dict] = None
    output_features: Optional[dict] = None

    def __post_init__(self) -> None:
        if self.resize_imgs_with_padding is not None:
            self.resize_imgs_with_padding = tuple(int(s) for s in self.resize_imgs_with_padding)
        self.normalization_mapping = normalization_names(self.normalization_mapping)
        self.validate()

    def validate(self) -> None:
        """Checks the options that do not depend on the dataset's features (the fields' ranges first)."""
        check_fields(self, "policy")
        check_normalization_mapping(self.normalization_mapping)
        check_chunk(self.n_action_steps, self.chunk_size)
        width = expert_width(self.action_expert_variant)
        if self.proj_width != width:
            raise ValueError(
                f"policy.proj_width={self.proj_width} differs from the width {width} of policy.action_expert_variant="
                f"{self.action_expert_variant}; the projections feed the action expert: set policy.proj_width={width}"
            )
        size = self.resize_imgs_with_padding
        if size is not None and (size[0] != size[1] or size[0] % 14):
            raise ValueError(
                f"policy.resize_imgs_with_padding={list(size)} must be square and a multiple of SigLIP's 14-pixel"
                " patches; use e.g. [224, 224]"
            )
        if self.train_expert_only and not self.freeze_vision_encoder:
            raise ValueError(
                "policy.train_expert_only=true freezes the whole vision-language model, vision encoder included,"
                " which contradicts policy.freeze_vision_encoder=false; set freeze_vision_encoder=true"
            )
        if self.attention_implementation == "fa2" and importlib.util.find_spec("flash_attn") is None:
            raise ValueError(
                "policy.attention_implementation=fa2 needs the flash-attn package, which is not installed;"
                " pip install flash-attn on a CUDA machine, or use attention_implementation=sdpa"
            )
        if self.attention_implementation == "flex" and importlib.util.find_spec("torch.nn.attention.flex_attention") \
                is None:
            raise ValueError(
                "policy.attention_implementation=flex needs torch >= 2.5 (torch.nn.attention.flex_attention);"
                " upgrade torch or use attention_implementation=sdpa"
            )
        for key in ("pretrained_path", "tokenizer_path"):
            path = getattr(self, key)
            if path is not None and not os.path.isdir(os.path.expanduser(path)):
                raise ValueError(
                    f"policy.{key}={path} is not a directory; give a local folder in the Hugging Face layout"
                    " (nothing is downloaded), or null"
                )

    def validate_features(self, features: Mapping[str, Any]) -> None:
        """pi0 reads one state vector and its cameras (or blank ones) and predicts one action vector."""
        parsed = {key: feature_type_and_shape(ft) for key, ft in features.items()}
        actions = [k for k, (t, _) in parsed.items() if t == "ACTION"]
        if len(actions) != 1 or len(parsed[actions[0]][1]) != 1:
            raise ValueError(
                f"pi0 needs exactly one 1-D ACTION feature, got {actions or 'none'} among {sorted(parsed)};"
                " check the dataset's `action` feature"
            )
        states = [k for k, (t, _) in parsed.items() if t == "STATE"]
        if len(states) != 1:
            raise ValueError(
                f"pi0 needs exactly one STATE feature (observation.state), got {states or 'none'} among"
                f" {sorted(parsed)}; use a dataset that records the robot state"
            )
        state_dim, action_dim = parsed[states[0]][1][0], parsed[actions[0]][1][0]
        for what, dim, key in (("state", state_dim, "max_state_dim"), ("action", action_dim, "max_action_dim")):
            if dim > getattr(self, key):
                raise ValueError(
                    f"the dataset's {what} has {dim} dimensions, more than policy.{key}={getattr(self, key)};"
                    f" raise policy.{key} to at least {dim}"
                )
        if (self.adapt_to_pi_aloha or self.use_delta_joint_actions_aloha) and (
                state_dim != ALOHA_STATE_DIM or action_dim != ALOHA_STATE_DIM):
            flag = "adapt_to_pi_aloha" if self.adapt_to_pi_aloha else "use_delta_joint_actions_aloha"
            raise ValueError(
                f"policy.{flag}=true needs ALOHA's 14-dimensional state and action (2 x 6 joints + gripper), got"
                f" {state_dim} and {action_dim}; set it to false for this dataset"
            )
        images = {k: shape for k, (t, shape) in parsed.items() if t == "VISUAL"}
        if not images and (self.empty_cameras == 0 or self.resize_imgs_with_padding is None):
            raise ValueError(f"pi0 needs at least one camera (a VISUAL feature), got {sorted(parsed)}; or blank"
                             " ones: policy.empty_cameras > 0 with policy.resize_imgs_with_padding set")
        for key, shape in images.items():
            if len(shape) != 3 or shape[0] != 3:
                raise ValueError(f"image feature {key} has shape {list(shape)}; pi0 expects RGB [3, H, W]")
        if self.resize_imgs_with_padding is None:
            sizes = {tuple(shape[1:]) for shape in images.values()}
            if len(sizes) > 1 or any(h != w or h % 14 for h, w in sizes):
                raise ValueError(
                    f"policy.resize_imgs_with_padding=null needs square cameras of one size, a multiple of 14, got"
                    f" {images}; set policy.resize_imgs_with_padding=[224, 224]"
                )

    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None
