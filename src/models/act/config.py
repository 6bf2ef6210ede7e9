"""Configuration of ACT, also the Hydra schema of `policy=act`.

Defaults follow LeRobot's `ACTConfig` (the bimanual ALOHA setup of Zhao et al. 2023). The training
preset (LeRobot's optimizer_lr / optimizer_weight_decay) lives in conf/optimizer/preset/act.yaml;
`optimizer_lr_backbone` stays here because the policy sets it on its backbone's parameter group.
"""

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from config.ranges import check_fields, ranged
from models.common.checks import check_chunk
from models.common.feature_access import feature_type_and_shape, normalization_names

FEATURE_TYPES = ("VISUAL", "STATE", "ENV", "ACTION")
NORMALIZATION_MODES = ("MEAN_STD", "MIN_MAX", "IDENTITY")
ACTIVATIONS = ("relu", "gelu", "glu")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


@dataclass
class ACTConfig:
    """ACT hyper-parameters (LeRobot's defaults)."""

    _target_: str = "models.act.modeling.ACTPolicy"

    # The policy sees the current frame only, predicts `chunk_size` actions and executes
    # `n_action_steps` of them before predicting again.
    n_obs_steps: int = ranged(1, ge=1, le=1, why="ACT conditions on the current frame only")
    chunk_size: int = ranged(100, ge=1)
    n_action_steps: int = ranged(100, ge=1, why="at most chunk_size")

    normalization_mapping: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "MEAN_STD", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    )

    # Vision backbone: a torchvision ResNet with frozen BatchNorm, cut after layer4.
    vision_backbone: str = ranged("resnet18", choices=BACKBONES)
    # A torchvision weights name (read from torch's cache, never downloaded) or a state_dict file.
    pretrained_backbone_weights: Optional[str] = "ResNet18_Weights.IMAGENET1K_V1"
    replace_final_stride_with_dilation: bool = False

    # Transformer.
    pre_norm: bool = False
    dim_model: int = ranged(512, ge=2, why="even, and a multiple of n_heads")
    n_heads: int = ranged(8, ge=1)
    dim_feedforward: int = ranged(3200, ge=1)
    feedforward_activation: str = ranged("relu", choices=ACTIVATIONS)
    n_encoder_layers: int = ranged(4, ge=1)
    # The original ACT code configures 7 decoder layers but, through a bug, uses only the first
    # (tonyzhaozh/act#25); 1 reproduces what it trained.
    n_decoder_layers: int = ranged(1, ge=1)

    # VAE (training only: at inference the latent is zero).
    use_vae: bool = True
    latent_dim: int = ranged(32, ge=1)
    n_vae_encoder_layers: int = ranged(4, ge=0, why="at least 1 with use_vae")

    # Inference: None executes action chunks from a queue; a coefficient (ACT uses 0.01) averages
    # the predictions of every chunk that covers the current step, which needs n_action_steps=1.
    temporal_ensemble_coeff: Optional[float] = ranged(
        None, ge=-1, le=1, why="weights exp(-coeff * i), i = 0 for the oldest prediction; ACT uses 0.01; null: off"
    )

    # Training.
    dropout: float = ranged(0.1, ge=0, lt=1)
    kl_weight: float = ranged(10.0, ge=0)
    optimizer_lr_backbone: float = ranged(1e-5, ge=0, why="the backbone's learning rate; 0 freezes it")

    # Filled from the dataset at build time; informational (logged with the run).
    input_features: Optional[dict] = None
    output_features: Optional[dict] = None

    def __post_init__(self) -> None:
        self.normalization_mapping = normalization_names(self.normalization_mapping)
        self.validate()

    def validate(self) -> None:
        """Checks the options that do not depend on the dataset's features (the fields' ranges first)."""
        check_fields(self, "policy")
        check_chunk(self.n_action_steps, self.chunk_size)
        if self.temporal_ensemble_coeff is not None and self.n_action_steps != 1:
            raise ValueError(
                f"policy.temporal_ensemble_coeff={self.temporal_ensemble_coeff} needs a prediction at every step;"
                f" set policy.n_action_steps=1 (it is {self.n_action_steps}) or policy.temporal_ensemble_coeff=null"
            )
        if self.temporal_ensemble_coeff is not None and -self.temporal_ensemble_coeff * (self.chunk_size - 1) > 80:
            raise ValueError(
                f"policy.temporal_ensemble_coeff={self.temporal_ensemble_coeff} gives the newest of"
                f" policy.chunk_size={self.chunk_size} predictions a weight exp({-self.temporal_ensemble_coeff}"
                f" * {self.chunk_size - 1}), beyond float32; use a coefficient >= {-80 / (self.chunk_size - 1):.3g}"
            )
        if self.dim_model % self.n_heads != 0:
            raise ValueError(
                f"policy.dim_model={self.dim_model} is not divisible by policy.n_heads={self.n_heads};"
                " make dim_model a multiple of n_heads"
            )
        if self.dim_model % 2 != 0:
            raise ValueError(
                f"policy.dim_model={self.dim_model} must be even (the 2D sine position embedding splits it"
                " between rows and columns); use e.g. 512"
            )
        if self.feedforward_activation == "glu" and self.dim_feedforward % 2 != 0:
            raise ValueError(
                f"policy.dim_feedforward={self.dim_feedforward} must be even with glu, which halves it; use e.g. 3200"
            )
        if self.use_vae and self.n_vae_encoder_layers < 1:
            raise ValueError(
                f"policy.n_vae_encoder_layers={self.n_vae_encoder_layers} must be >= 1 with policy.use_vae=true;"
                " raise it or set policy.use_vae=false"
            )
        for ftype, mode in self.normalization_mapping.items():
            if ftype not in FEATURE_TYPES:
                raise ValueError(
                    f"policy.normalization_mapping has unknown feature type {ftype};"
                    f" use keys among {list(FEATURE_TYPES)}"
                )
            if mode not in NORMALIZATION_MODES:
                raise ValueError(
                    f"policy.normalization_mapping.{ftype}={mode} is unknown; use one of {list(NORMALIZATION_MODES)}"
                )
        if self.replace_final_stride_with_dilation and self.vision_backbone in ("resnet18", "resnet34"):
            raise ValueError(
                f"policy.replace_final_stride_with_dilation=true needs a bottleneck ResNet, which"
                f" policy.vision_backbone={self.vision_backbone} is not; use resnet50 or set it to false"
            )
        if self.pretrained_backbone_weights:
            from models.common.vision import pretrained_weights_path

            try:
                pretrained_weights_path(self.pretrained_backbone_weights)
            except FileNotFoundError as err:
                raise ValueError(str(err)) from None

    def validate_features(self, features: Mapping[str, Any]) -> None:
        """Checks the options against the dataset's features (known only when the policy is built)."""
        parsed = {key: feature_type_and_shape(ft) for key, ft in features.items()}
        actions = [k for k, (t, _) in parsed.items() if t == "ACTION"]
        if len(actions) != 1 or len(parsed[actions[0]][1]) != 1:
            raise ValueError(
                f"ACT needs exactly one 1-D ACTION feature, got {actions or 'none'} among {sorted(parsed)};"
                " check the dataset's `action` feature"
            )
        images = {k: shape for k, (t, shape) in parsed.items() if t == "VISUAL"}
        if not images and not any(t == "ENV" for t, _ in parsed.values()):
            raise ValueError(
                f"ACT needs at least one camera (VISUAL) or observation.environment_state (ENV) input, got"
                f" {sorted(parsed)}; use a dataset with images or an environment state"
            )
        for key, shape in images.items():
            if len(shape) != 3:
                raise ValueError(f"image feature {key} has shape {list(shape)}; expected [C, H, W]")

    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None
