"""Configuration of TD-MPC, also the Hydra schema of `policy=tdmpc`.

Defaults follow LeRobot's `TDMPCConfig` (FOWM's setup for xarm_lift_medium: one 84x84 camera and the
robot state). The training preset (LeRobot's optimizer_lr) lives in conf/optimizer/preset/tdmpc.yaml.
`__post_init__` refuses bad values with one line naming the option and the fix.
"""

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from config.ranges import check_fields, ranged
from models.common.checks import check_normalization_mapping
from models.common.feature_access import feature_type_and_shape, normalization_names

# The image encoder's four strided convolutions (kernel, stride): LeRobot's and FOWM's.
IMAGE_CONVS = ((7, 2), (5, 2), (3, 2), (3, 2))


def conv_stack_output(size: int) -> int:
    """Side of the image encoder's last feature map for an input side of `size` pixels (0: too small)."""
    for kernel, stride in IMAGE_CONVS:
        if size < kernel:
            return 0
        size = (size - kernel) // stride + 1
    return size


SMALLEST_IMAGE = next(s for s in range(1, 256) if conv_stack_output(s) >= 1)


@dataclass
class TDMPCConfig:
    """TD-MPC hyper-parameters (LeRobot's defaults), in the FOWM variant LeRobot implements: a state
    value V trained by expectile regression gives the TD targets, and pi is trained by advantage-weighted
    regression, so offline data alone trains every head."""

    _target_: str = "models.tdmpc.modeling.TDMPCPolicy"

    # Time windows: the current observation, then `horizon` actions, rewards and next observations.
    n_obs_steps: int = ranged(1, ge=1, le=1, why="TD-MPC encodes the current observation only")
    n_action_repeats: int = ranged(2, ge=1, why="times each planned action is sent to the env")
    horizon: int = ranged(5, ge=1, why="planning and training horizon in steps")
    n_action_steps: int = ranged(1, ge=1, why="actions of one plan executed; > 1 needs n_action_repeats=1")

    # LeRobot's: inputs as they are, actions to [-1, 1] (the planner clamps to that box).
    normalization_mapping: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "IDENTITY", "STATE": "IDENTITY", "ENV": "IDENTITY", "ACTION": "MIN_MAX"}
    )

    # The task-oriented latent dynamics model (TOLD).
    image_encoder_hidden_dim: int = ranged(32, ge=1, why="channels of the image encoder's convolutions")
    state_encoder_hidden_dim: int = ranged(256, ge=1)
    latent_dim: int = ranged(50, ge=1)
    q_ensemble_size: int = ranged(5, ge=2, why="the value targets take the smaller of two Q estimates")
    mlp_dim: int = ranged(512, ge=1, why="hidden width of the dynamics, reward, pi, Q and V networks")
    discount: float = ranged(0.9, ge=0, le=1)

    # Inference: MPPI with the cross-entropy method over the latent model, or pi alone.
    use_mpc: bool = True
    cem_iterations: int = ranged(6, ge=1)
    max_std: float = ranged(2.0, gt=0, why="the CEM's initial and largest standard deviation")
    min_std: float = ranged(0.05, ge=0, why="the CEM's smallest standard deviation and pi's sampling noise")
    n_gaussian_samples: int = ranged(512, ge=1)
    n_pi_samples: int = ranged(51, ge=0)
    uncertainty_regularizer_coeff: float = ranged(1.0, ge=0, why="the Q ensemble's std subtracted from values")
    n_elites: int = ranged(50, ge=1, why="at most n_gaussian_samples + n_pi_samples")
    elite_weighting_temperature: float = ranged(0.5, ge=0)
    gaussian_mean_momentum: float = ranged(0.1, ge=0, le=1)

    # Training: random-shift augmentation and the loss terms' weights.
    max_random_shift_ratio: float = ranged(0.0476, ge=0, le=1, why="pixels of shift per pixel of image side")
    reward_coeff: float = ranged(0.5, ge=0)
    expectile_weight: float = ranged(0.9, ge=0, le=1, why="tau of V's expectile regression")
    value_coeff: float = ranged(0.1, ge=0)
    consistency_coeff: float = ranged(20.0, ge=0)
    advantage_scaling: float = ranged(3.0, ge=0)
    pi_coeff: float = ranged(0.5, ge=0)
    temporal_decay_coeff: float = ranged(0.5, ge=0, why="loss weight of step t is coeff**t")
    target_model_momentum: float = ranged(0.995, ge=0, le=1, why="EMA of the target network per optimizer step")

    # Filled from the dataset at build time; informational (logged with the run).
    input_features: Optional[dict] = None
    output_features: Optional[dict] = None

    def __post_init__(self) -> None:
        self.normalization_mapping = normalization_names(self.normalization_mapping)
        self.validate()

    def validate(self) -> None:
        """Checks the options that do not depend on the dataset's features (the fields' ranges first)."""
        check_fields(self, "policy")
        check_normalization_mapping(self.normalization_mapping)
        action_mode = self.normalization_mapping.get("ACTION", "IDENTITY")
        if action_mode != "MIN_MAX":
            raise ValueError(
                f"policy.normalization_mapping.ACTION={action_mode}: TD-MPC plans in the box [-1, 1] of"
                " normalised actions, which only MIN_MAX gives; set policy.normalization_mapping.ACTION=MIN_MAX"
            )
        if self.n_action_steps > 1:
            if self.n_action_repeats != 1:
                raise ValueError(
                    f"policy.n_action_steps={self.n_action_steps} executes several planned actions, which excludes"
                    f" repeating one: set policy.n_action_repeats=1 (it is {self.n_action_repeats})"
                )
            if not self.use_mpc:
                raise ValueError(
                    f"policy.n_action_steps={self.n_action_steps} needs a plan of several actions; set"
                    " policy.use_mpc=true or policy.n_action_steps=1"
                )
            if self.n_action_steps > self.horizon:
                raise ValueError(
                    f"policy.n_action_steps={self.n_action_steps} exceeds policy.horizon={self.horizon}, the plan's"
                    " length; lower policy.n_action_steps or raise policy.horizon"
                )
        if self.use_mpc and self.n_elites > self.n_gaussian_samples + self.n_pi_samples:
            raise ValueError(
                f"policy.n_elites={self.n_elites} exceeds the {self.n_gaussian_samples + self.n_pi_samples}"
                " trajectories sampled per CEM iteration (policy.n_gaussian_samples + policy.n_pi_samples);"
                " lower policy.n_elites or sample more"
            )

    def validate_features(self, features: Mapping[str, Any]) -> None:
        """TD-MPC reads at most one camera (square or not), the state and/or the environment state, and
        predicts one action vector."""
        parsed = {key: feature_type_and_shape(ft) for key, ft in features.items()}
        actions = [k for k, (t, _) in parsed.items() if t == "ACTION"]
        if len(actions) != 1 or len(parsed[actions[0]][1]) != 1:
            raise ValueError(
                f"TD-MPC needs exactly one 1-D ACTION feature, got {actions or 'none'} among {sorted(parsed)};"
                " check the dataset's `action` feature"
            )
        images = {k: shape for k, (t, shape) in parsed.items() if t == "VISUAL"}
        if len(images) > 1:
            raise ValueError(
                f"TD-MPC encodes one camera, the dataset has {sorted(images)}; train on a dataset with one camera"
            )
        for key, shape in images.items():
            if len(shape) != 3:
                raise ValueError(f"image feature {key} has shape {list(shape)}; expected [C, H, W]")
            if min(shape[1:]) < SMALLEST_IMAGE:
                raise ValueError(
                    f"image feature {key} is {shape[1]}x{shape[2]} pixels; TD-MPC's image encoder (four strided"
                    f" convolutions) needs at least {SMALLEST_IMAGE}x{SMALLEST_IMAGE}"
                )
        vectors = [k for k, (t, _) in parsed.items() if t in ("STATE", "ENV")]
        for key in vectors:
            if len(parsed[key][1]) != 1:
                raise ValueError(f"feature {key} has shape {list(parsed[key][1])}; TD-MPC encodes 1-D vectors")
        if not images and not vectors:
            raise ValueError(
                f"TD-MPC needs an observation to encode (a camera, observation.state or"
                f" observation.environment_state), got {sorted(parsed)}"
            )

    @property
    def observation_delta_indices(self) -> list[int]:
        return list(range(self.horizon + 1))

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.horizon))

    @property
    def reward_delta_indices(self) -> list[int]:
        return list(range(self.horizon))
