"""Configuration of VQ-BeT, also the Hydra schema of `policy=vqbet`.

Defaults follow LeRobot's `VQBeTConfig` (its PushT setup, the version whose `--help` is our seed).
`__post_init__` turns what Hydra hands over back into tuples/dicts and refuses bad values with one
line naming the option and the fix.
"""

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from models.common.feature_access import feature_type_and_shape, feature_type_name

FEATURE_TYPES = ("VISUAL", "STATE", "ENV", "ACTION")
NORMALIZATION_MODES = ("MEAN_STD", "MIN_MAX", "IDENTITY")
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
    n_obs_steps: int = 5
    n_action_pred_token: int = 3
    action_chunk_size: int = 5

    normalization_mapping: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "IDENTITY", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}
    )

    # Vision encoder (the spatial-softmax ResNet shared with Diffusion Policy).
    vision_backbone: str = "resnet18"
    crop_shape: Optional[tuple[int, int]] = (84, 84)
    crop_is_random: bool = True
    pretrained_backbone_weights: Optional[str] = None
    use_group_norm: bool = True
    spatial_softmax_num_keypoints: int = 32

    # Phase 1: the residual VQ-VAE that turns action chunks into two codes.
    n_vqvae_training_steps: int = 20000
    vqvae_n_embed: int = 16
    vqvae_embedding_dim: int = 256
    vqvae_enc_hidden_dim: int = 128

    # Phase 2: the GPT over observation and action-query tokens, and its code and offset heads.
    gpt_block_size: int = 500
    gpt_input_dim: int = 512
    gpt_output_dim: int = 512
    gpt_n_layer: int = 8
    gpt_n_head: int = 8
    gpt_hidden_dim: int = 512
    dropout: float = 0.1
    # LeRobot lists 1024 but never reads it: its heads are single linear layers, which null keeps.
    # A width adds one hidden ReLU layer to the code and offset heads, as the option's help describes.
    mlp_hidden_dim: Optional[int] = None
    offset_loss_weight: float = 10000.0
    primary_code_loss_weight: float = 5.0
    secondary_code_loss_weight: float = 0.5
    bet_softmax_temperature: float = 0.1
    sequentially_select: bool = False

    # The VQ-VAE's parameter group (the rest use the optimizer's lr and weight_decay).
    optimizer_vqvae_lr: float = 1e-3
    optimizer_vqvae_weight_decay: float = 1e-4

    # Filled from the dataset at build time; informational (logged with the run).
    input_features: Optional[dict] = None
    output_features: Optional[dict] = None

    def __post_init__(self) -> None:
        if self.crop_shape is not None:
            self.crop_shape = tuple(int(s) for s in self.crop_shape)
        self.normalization_mapping = {
            str(k): feature_type_name(v) for k, v in dict(self.normalization_mapping).items()
        }
        self.validate()

    @property
    def tokens_needed(self) -> int:
        """GPT sequence length for one camera: per observation step an image, a state and an action
        query token, then the future action queries."""
        return self.n_obs_steps * 3 + self.n_action_pred_token - 1

    def validate(self) -> None:
        """Checks the options that do not depend on the dataset's features."""
        positive = ("n_obs_steps", "n_action_pred_token", "action_chunk_size", "spatial_softmax_num_keypoints",
                    "vqvae_n_embed", "vqvae_embedding_dim", "vqvae_enc_hidden_dim", "gpt_block_size",
                    "gpt_input_dim", "gpt_output_dim", "gpt_n_layer", "gpt_n_head", "gpt_hidden_dim")
        for name in positive:
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"policy.{name}={value} must be >= 1; set policy.{name} to a positive integer")
        if self.n_vqvae_training_steps < 0:
            raise ValueError(f"policy.n_vqvae_training_steps={self.n_vqvae_training_steps} must be >= 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"policy.dropout={self.dropout} must lie in [0, 1); use e.g. 0.1")
        if self.bet_softmax_temperature <= 0:
            raise ValueError(
                f"policy.bet_softmax_temperature={self.bet_softmax_temperature} must be > 0; use e.g. 0.1"
            )
        for name in ("offset_loss_weight", "primary_code_loss_weight", "secondary_code_loss_weight",
                     "optimizer_vqvae_weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"policy.{name}={getattr(self, name)} must be >= 0")
        if self.optimizer_vqvae_lr <= 0:
            raise ValueError(f"policy.optimizer_vqvae_lr={self.optimizer_vqvae_lr} must be > 0; use e.g. 1e-3")
        if self.mlp_hidden_dim is not None and self.mlp_hidden_dim < 1:
            raise ValueError(
                f"policy.mlp_hidden_dim={self.mlp_hidden_dim} must be >= 1, or null for LeRobot's linear heads"
            )
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
        for ftype, mode in self.normalization_mapping.items():
            if ftype not in FEATURE_TYPES:
                raise ValueError(
                    f"policy.normalization_mapping has unknown feature type {ftype}; use keys among {list(FEATURE_TYPES)}"
                )
            if mode not in NORMALIZATION_MODES:
                raise ValueError(
                    f"policy.normalization_mapping.{ftype}={mode} is unknown; use one of {list(NORMALIZATION_MODES)}"
                )
        if self.crop_shape is not None and (len(self.crop_shape) != 2 or min(self.crop_shape) < 1):
            raise ValueError(
                f"policy.crop_shape={list(self.crop_shape)} must be two positive integers [height, width] or null"
            )
        if not self.vision_backbone.startswith("resnet"):
            raise ValueError(
                f"policy.vision_backbone={self.vision_backbone} is not a torchvision ResNet; use e.g. resnet18"
            )
        if self.pretrained_backbone_weights and self.use_group_norm:
            raise ValueError(
                f"policy.pretrained_backbone_weights={self.pretrained_backbone_weights} with policy.use_group_norm=true"
                " would replace the pretrained BatchNorm layers and ruin the weights; set policy.use_group_norm=false"
            )

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
        for key, shape in images.items():
            if len(shape) != 3:
                raise ValueError(f"image feature {key} has shape {list(shape)}; expected [C, H, W]")
            if self.crop_shape is not None and (self.crop_shape[0] > shape[1] or self.crop_shape[1] > shape[2]):
                raise ValueError(
                    f"policy.crop_shape={list(self.crop_shape)} does not fit in {key} of shape {list(shape)};"
                    f" set policy.crop_shape to at most [{shape[1]}, {shape[2]}] or null"
                )
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
