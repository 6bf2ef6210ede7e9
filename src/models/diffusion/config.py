"""Configuration of Diffusion Policy, also the Hydra schema of `policy=diffusion`.

Defaults follow LeRobot's `DiffusionConfig` (which reproduces the PushT setup of Chi et al. 2023).
Field types are the plain ones OmegaConf structured configs accept; `__post_init__` turns the
lists/DictConfigs Hydra hands over back into tuples/dicts and rejects bad values with one line that
names the option, the value and the fix, so a typo fails at config time rather than mid-training.
"""

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from config.ranges import check_fields, ranged
from models.common.checks import check_images, check_normalization_mapping, check_vision_options
from models.common.feature_access import feature_type_and_shape, normalization_names

NOISE_SCHEDULERS = ("DDPM", "DDIM")
PREDICTION_TYPES = ("epsilon", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
UNET_CONVS = ("auto", "native", "matmul")


@dataclass
class DiffusionConfig:
    """Diffusion Policy hyper-parameters (LeRobot's defaults).

    Its training preset (LeRobot's optimizer_* / scheduler_* fields) lives in
    conf/optimizer/preset/diffusion.yaml and conf/scheduler/preset/diffusion.yaml.
    """

    _target_: str = "models.diffusion.modeling.DiffusionPolicy"

    # Time windows: the policy sees n_obs_steps frames, predicts `horizon` actions and executes
    # n_action_steps of them before planning again.
    n_obs_steps: int = ranged(2, ge=1)
    horizon: int = ranged(16, ge=1)
    n_action_steps: int = ranged(8, ge=1)

    normalization_mapping: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}
    )

    # The last horizon - n_action_steps - n_obs_steps frames of an episode would train on mostly
    # padded action chunks; the dataset sampler skips them.
    drop_n_last_frames: int = ranged(7, ge=0)

    # Vision encoder.
    vision_backbone: str = "resnet18"
    crop_shape: Optional[tuple[int, int]] = ranged((84, 84), ge=1, length=2, why="[height, width] in pixels, or null")
    crop_is_random: bool = True
    pretrained_backbone_weights: Optional[str] = None
    use_group_norm: bool = True
    spatial_softmax_num_keypoints: int = ranged(32, ge=1)
    use_separate_rgb_encoder_per_camera: bool = False

    # 1D conditional UNet.
    down_dims: tuple[int, ...] = ranged((512, 1024, 2048), ge=1)
    kernel_size: int = ranged(5, ge=1, why="odd")
    n_groups: int = ranged(8, ge=1)
    diffusion_step_embed_dim: int = ranged(128, ge=4, why="even")
    use_film_scale_modulation: bool = True
    # How the UNet's Conv1d layers run: "matmul" (the window unfolded and one matrix multiply per layer:
    # models/diffusion/matmul_conv.py), "native" (torch's conv1d: cuDNN on CUDA), or "auto" (matmul on CUDA,
    # where it is faster, native elsewhere). Same parameters and checkpoints either way; the outputs agree to
    # float rounding.
    unet_conv: str = "auto"

    # Noise scheduler.
    noise_scheduler_type: str = "DDPM"
    num_train_timesteps: int = ranged(100, ge=1)
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = ranged(0.0001, gt=0, lt=1)
    beta_end: float = ranged(0.02, gt=0, lt=1)
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = ranged(1.0, gt=0)

    # Inference: None runs all num_train_timesteps reverse steps.
    num_inference_steps: Optional[int] = ranged(None, ge=1, why="at most num_train_timesteps; null: all of them")

    # Loss.
    do_mask_loss_for_padding: bool = False


    # Filled from the dataset at build time; informational (logged with the run).
    input_features: Optional[dict] = None
    output_features: Optional[dict] = None

    def __post_init__(self) -> None:
        self.down_dims = tuple(int(d) for d in self.down_dims)
        if self.crop_shape is not None:
            self.crop_shape = tuple(int(s) for s in self.crop_shape)
        self.normalization_mapping = normalization_names(self.normalization_mapping)
        self.validate()

    def validate(self) -> None:
        """Checks the options that do not depend on the dataset's features (the fields' ranges first)."""
        check_fields(self, "policy")
        max_action_steps = self.horizon - self.n_obs_steps + 1
        if self.n_action_steps > max_action_steps:
            raise ValueError(
                f"policy.n_action_steps={self.n_action_steps} exceeds policy.horizon - policy.n_obs_steps + 1"
                f" = {max_action_steps}; lower policy.n_action_steps or raise policy.horizon"
            )
        if not self.down_dims:
            raise ValueError("policy.down_dims=[] is empty; give at least one UNet width, e.g. [512,1024,2048]")
        factor = 2 ** len(self.down_dims)
        if self.horizon % factor != 0:
            raise ValueError(
                f"policy.horizon={self.horizon} is not a multiple of the UNet's downsampling factor"
                f" 2**len(policy.down_dims) = {factor}; set policy.horizon to a multiple of {factor}"
            )
        bad_groups = [d for d in self.down_dims if d % self.n_groups != 0]
        if bad_groups:
            raise ValueError(
                f"policy.down_dims={list(self.down_dims)} has widths {bad_groups} not divisible by"
                f" policy.n_groups={self.n_groups} (GroupNorm); make every width a multiple of policy.n_groups"
            )
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(
                f"policy.kernel_size={self.kernel_size} must be a positive odd number so convolutions keep"
                " the horizon length; use e.g. policy.kernel_size=5"
            )
        if self.diffusion_step_embed_dim < 4 or self.diffusion_step_embed_dim % 2 != 0:
            raise ValueError(
                f"policy.diffusion_step_embed_dim={self.diffusion_step_embed_dim} must be an even number >= 4"
                " (sin/cos halves); use e.g. 128"
            )
        if self.noise_scheduler_type not in NOISE_SCHEDULERS:
            raise ValueError(
                f"policy.noise_scheduler_type={self.noise_scheduler_type} is unknown;"
                f" use one of {list(NOISE_SCHEDULERS)}"
            )
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"policy.prediction_type={self.prediction_type} is unknown; use one of {list(PREDICTION_TYPES)}"
            )
        if self.unet_conv not in UNET_CONVS:
            raise ValueError(f"policy.unet_conv={self.unet_conv} is unknown; use one of {list(UNET_CONVS)}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"policy.beta_schedule={self.beta_schedule} is unknown; use one of {list(BETA_SCHEDULES)}")
        if self.num_inference_steps is not None and not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"policy.num_inference_steps={self.num_inference_steps} must lie in [1, policy.num_train_timesteps"
                f" = {self.num_train_timesteps}]; lower it or set it to null to use every training step"
            )
        check_normalization_mapping(self.normalization_mapping)
        check_vision_options(self.vision_backbone, self.pretrained_backbone_weights, self.use_group_norm)

    def validate_features(self, features: Mapping[str, Any]) -> None:
        """Checks the options against the dataset's features (known only when the policy is built)."""
        parsed = {key: feature_type_and_shape(ft) for key, ft in features.items()}
        actions = [k for k, (t, _) in parsed.items() if t == "ACTION"]
        if len(actions) != 1 or len(parsed[actions[0]][1]) != 1:
            raise ValueError(
                f"Diffusion Policy needs exactly one 1-D ACTION feature, got {actions or 'none'} among"
                f" {sorted(parsed)}; check the dataset's `action` feature"
            )
        observations = [k for k, (t, _) in parsed.items() if t in ("VISUAL", "STATE", "ENV")]
        if not observations:
            raise ValueError(
                f"Diffusion Policy needs at least one observation feature (VISUAL, STATE or ENV), got {sorted(parsed)}"
            )
        images = {k: shape for k, (t, shape) in parsed.items() if t == "VISUAL"}
        check_images(images, self.crop_shape)
        if not self.use_separate_rgb_encoder_per_camera and len(set(images.values())) > 1:
            raise ValueError(
                f"cameras have different shapes {images} but policy.use_separate_rgb_encoder_per_camera=false"
                " shares one encoder; set it to true or resize the cameras to one shape"
            )

    @property
    def observation_delta_indices(self) -> list[int]:
        return list(range(1 - self.n_obs_steps, 1))

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(1 - self.n_obs_steps, 1 - self.n_obs_steps + self.horizon))

    @property
    def reward_delta_indices(self) -> None:
        return None
