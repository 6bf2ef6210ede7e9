"""Configuration of VQ-BeT, also the Hydra schema of `policy=vqbet`.

Defaults follow LeRobot's `VQBeTConfig` (its PushT setup, the version whose `--help` is our seed).
`__post_init__` turns what Hydra hands over back into tuples/dicts and refuses bad values with one
line naming the option and the fix.
"""

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from config.ranges import check_fields, ranged
from models.common.checks import check_images, check_normalization_mapping, check_vision_options
from models.common.feature_access import feature_type_and_shape, normalization_names

# The residual VQ has two layers (a primary and a secondary code), fixed as in LeRobot and the paper.
VQ_LAYERS = 2


@dataclass
class VQBeTConfig:
    """VQ-BeT hyper-parameters (LeRobot's defaults).

    Its training preset (LeRobot's optimizer_lr/betas/eps/weight_decay and scheduler_warmup_steps)
    lives in conf/optimizer/preset/vqbet.yaml and conf/scheduler/preset/vqbet.yaml; the VQ-VAE's own
    learning rate and weight decay stay here because the policy builds that parameter group.
    """

    _target_: str = "models.vqbet.modeling.VQBeTPolicy"

    # Time windows: n_obs_steps frames in; n_action_pred_token tokens (the current one and future
    # ones) each predict a chunk of action_chunk_size actions; a rollout executes the current chunk.
    n_obs_steps: int = ranged(5, ge=1)
    n_action_pred_token: int = ranged(3, ge=1)
    action_chunk_size: int = ranged(5, ge=1)

    normalization_mapping: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "IDENTITY", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}
    )

    # Vision encoder (the spatial-softmax ResNet shared with Diffusion Policy).
    vision_backbone: str = "resnet18"
    crop_shape: Optional[tuple[int, int]] = ranged((84, 84), ge=1, length=2, why="[height, width] in pixels, or null")
    crop_is_random: bool = True
    pretrained_backbone_weights: Optional[str] = None
    use_group_norm: bool = True
    spatial_softmax_num_keypoints: int = ranged(32, ge=1)

    # Phase 1: the residual VQ-VAE that turns action chunks into two codes.
    n_vqvae_training_steps: int = ranged(20000, ge=0, why="optimizer steps before the GPT trains")
    vqvae_n_embed: int = ranged(16, ge=1, why="codes per VQ layer")
    vqvae_embedding_dim: int = ranged(256, ge=1)
    vqvae_enc_hidden_dim: int = ranged(128, ge=1)

    # Phase 2: the GPT over observation and action-query tokens, and its code and offset heads.
    gpt_block_size: int = ranged(500, ge=1, why="the longest token sequence")
    gpt_input_dim: int = ranged(512, ge=1)
    gpt_output_dim: int = ranged(512, ge=1)
    gpt_n_layer: int = ranged(8, ge=1)
    gpt_n_head: int = ranged(8, ge=1)
    gpt_hidden_dim: int = ranged(512, ge=1, why="a multiple of gpt_n_head")
    dropout: float = ranged(0.1, ge=0, lt=1)
    # LeRobot lists 1024 but never reads it: its heads are single linear layers, which null keeps.
    # A width adds one hidden ReLU layer to the code and offset heads, as the option's help describes.
    mlp_hidden_dim: Optional[int] = ranged(None, ge=1, why="null: linear heads, as LeRobot builds them")
    offset_loss_weight: float = ranged(10000.0, ge=0)
    primary_code_loss_weight: float = ranged(5.0, ge=0)
    secondary_code_loss_weight: float = ranged(0.5, ge=0)
    bet_softmax_temperature: float = ranged(0.1, gt=0, why="code sampling temperature")
    sequentially_select: bool = False

    # The VQ-VAE's parameter group (the rest use the optimizer's lr and weight_decay).
    optimizer_vqvae_lr: float = ranged(1e-3, gt=0)
    optimizer_vqvae_weight_decay: float = ranged(1e-4, ge=0)

    # Filled from the dataset at build time; informational (logged with the run).
    input_features: Optional[dict] = None
    output_features: Optional[dict] = None

    def __post_init__(self) -> None:
        if self.crop_shape is not None:
            self.crop_shape = tuple(int(s) for s in self.crop_shape)
        self.normalization_mapping = normalization_names(self.normalization_mapping)
        self.validate()

    @property
    def tokens_needed(self) -> int:
        """GPT sequence length for one camera: per observation step an image, a state and an action
        query token, then the future action queries."""
        return self.n_obs_steps * 3 + self.n_action_pred_token - 1

    def validate(self) -> None:
        """Checks the options that do not depend on the dataset's features (the fields' ranges first)."""
        check_fields(self, "policy")
        if self.gpt_hidden_dim % self.gpt_n_head != 0:
            raise ValueError(
                f"policy.gpt_hidden_dim={self.gpt_hidden_dim} is not divisible by policy.gpt_n_head="
                f"{self.gpt_n_head}; make the width a multiple of the number of heads"
            )
        if self.tokens_needed > self.gpt_block_size:
            raise ValueError(
                f"policy.gpt_block_size={self.gpt_block_size} is shorter than the {self.tokens_needed} tokens of"
                " 3 * policy.n_obs_steps + policy.n_action_pred_token - 1; raise policy.gpt_block_size"
            )
        check_normalization_mapping(self.normalization_mapping)
        check_vision_options(self.vision_backbone, self.pretrained_backbone_weights, self.use_group_norm)

    def validate_features(self, features: Mapping[str, Any]) -> None:
        """VQ-BeT reads one state vector and one or more cameras of one shape, and predicts one action vector."""
        parsed = {key: feature_type_and_shape(ft) for key, ft in features.items()}
        actions = [k for k, (t, _) in parsed.items() if t == "ACTION"]
        if len(actions) != 1 or len(parsed[actions[0]][1]) != 1:
            raise ValueError(
                f"VQ-BeT needs exactly one 1-D ACTION feature, got {actions or 'none'} among {sorted(parsed)};"
                " check the dataset's `action` feature"
            )
        states = [k for k, (t, _) in parsed.items() if t == "STATE"]
        if len(states) != 1:
            raise ValueError(
                f"VQ-BeT needs exactly one STATE feature (observation.state), got {states or 'none'} among"
                f" {sorted(parsed)}; use a dataset that records the robot state"
            )
        images = {k: shape for k, (t, shape) in parsed.items() if t == "VISUAL"}
        if not images:
            raise ValueError(f"VQ-BeT needs at least one camera (a VISUAL feature), got {sorted(parsed)}")
        check_images(images, self.crop_shape)
        if len(set(images.values())) > 1:
            raise ValueError(f"cameras have different shapes {images}; VQ-BeT shares one encoder: resize them to one")
        tokens = self.n_obs_steps * (len(images) + 2) + self.n_action_pred_token - 1
        if tokens > self.gpt_block_size:
            raise ValueError(
                f"policy.gpt_block_size={self.gpt_block_size} is shorter than the {tokens} tokens {len(images)} cameras"
                " need; raise policy.gpt_block_size"
            )

    @property
    def observation_delta_indices(self) -> list[int]:
        return list(range(1 - self.n_obs_steps, 1))

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(1 - self.n_obs_steps, self.n_action_pred_token + self.action_chunk_size - 1))

    @property
    def reward_delta_indices(self) -> None:
        return None
