"""Configuration of nerfacto, also the Hydra schema of `model=nerfacto`.

Every `--pipeline.model.*` option of `ns-train nerfacto` with its default, snake_case. Options that
nerfacto itself ignores are kept so that a translated command line stays valid: `prompt`,
`hidden_dim_transient` (used only as the width of the predicted-normals head), `loss_coefficients`
and `collider_params` (nerfacto replaces the base model's collider by NearFar(near_plane, far_plane)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from config.errors import ConfigError

BACKGROUND_COLORS = ("random", "last_sample", "black", "white")
INITIAL_SAMPLERS = ("piecewise", "uniform")
IMPLEMENTATIONS = ("tcnn", "torch")
PROPOSAL_NET_KEYS = ("hidden_dim", "log2_hashmap_size", "num_levels", "max_res", "use_linear")


@dataclass
class ProposalNetArgs:
    hidden_dim: int = 16
    log2_hashmap_size: int = 17
    num_levels: int = 5
    max_res: int = 128
    use_linear: bool = False


@dataclass
class CameraOptimizerConfig:
    """The seed's --pipeline.datamanager.camera-optimizer.* (nerfstudio keeps them on the datamanager;
    here they go to the model, which owns the pose corrections). Passed to `CameraOptimizer`."""

    mode: str = "SO3xR3"
    position_noise_std: float = 0.0
    orientation_noise_std: float = 0.0
    trans_l2_penalty: float = 0.0
    rot_l2_penalty: float = 0.0


@dataclass
class NerfactoConfig:
    _target_: str = "models.nerfacto.model.NerfactoModel"

    enable_collider: bool = True
    collider_params: Optional[dict[str, float]] = field(
        default_factory=lambda: {"near_plane": 2.0, "far_plane": 6.0})
    eval_num_rays_per_chunk: int = 32768
    prompt: Optional[str] = None
    near_plane: float = 0.05
    far_plane: float = 1000.0
    background_color: str = "last_sample"
    hidden_dim: int = 64
    hidden_dim_color: int = 64
    hidden_dim_transient: int = 64
    num_levels: int = 16
    base_res: int = 16
    max_res: int = 2048
    log2_hashmap_size: int = 19
    features_per_level: int = 2
    num_proposal_samples_per_ray: tuple[int, ...] = (256, 96)
    num_nerf_samples_per_ray: int = 48
    proposal_update_every: int = 5
    proposal_warmup: int = 5000
    num_proposal_iterations: int = 2
    use_same_proposal_network: bool = False
    proposal_net_args_list: list[ProposalNetArgs] = field(
        default_factory=lambda: [ProposalNetArgs(max_res=128), ProposalNetArgs(max_res=256)])
    proposal_initial_sampler: str = "piecewise"
    interlevel_loss_mult: float = 1.0
    distortion_loss_mult: float = 0.002
    orientation_loss_mult: float = 0.0001
    pred_normal_loss_mult: float = 0.001
    use_proposal_weight_anneal: bool = True
    use_average_appearance_embedding: bool = True
    proposal_weights_anneal_slope: float = 10.0
    proposal_weights_anneal_max_num_iters: int = 1000
    use_single_jitter: bool = True
    predict_normals: bool = False
    disable_scene_contraction: bool = False
    use_gradient_scaling: bool = False
    implementation: str = "tcnn"
    appearance_embed_dim: int = 32
    # nerfstudio's later NerfactoModelConfig option (not in the seed's --help): the density's scale at
    # initialisation (density = average_init_density * trunc_exp(raw)), for the field and proposal networks
    average_init_density: float = 1.0
    loss_coefficients: dict[str, float] = field(
        default_factory=lambda: {"rgb_loss_coarse": 1.0, "rgb_loss_fine": 1.0})
    # consumed by NerfactoModel's own `camera_optimizer` argument (never reaches this dataclass there)
    camera_optimizer: Optional[CameraOptimizerConfig] = None

    def __post_init__(self):
        # Hydra hands over ListConfig/DictConfig; keep plain Python containers
        self.num_proposal_samples_per_ray = tuple(int(n) for n in self.num_proposal_samples_per_ray)
        self.proposal_net_args_list = [_proposal_args(a) for a in self.proposal_net_args_list]
        if self.collider_params is not None:
            self.collider_params = {str(k): float(v) for k, v in dict(self.collider_params).items()}
        self.loss_coefficients = {str(k): float(v) for k, v in dict(self.loss_coefficients).items()}
        for name, value, choices in (("background_color", self.background_color, BACKGROUND_COLORS),
                                     ("proposal_initial_sampler", self.proposal_initial_sampler, INITIAL_SAMPLERS),
                                     ("implementation", self.implementation, IMPLEMENTATIONS)):
            if value not in choices:
                raise ConfigError(f"model.{name}={value!r} is not one of {', '.join(choices)}")
        if len(self.num_proposal_samples_per_ray) < self.num_proposal_iterations:
            raise ConfigError(f"model.num_proposal_samples_per_ray={list(self.num_proposal_samples_per_ray)} needs "
                              f"one entry per proposal iteration (num_proposal_iterations="
                              f"{self.num_proposal_iterations})")
        if self.use_same_proposal_network:
            if len(self.proposal_net_args_list) != 1:
                raise ConfigError("model.use_same_proposal_network=true needs exactly one entry in "
                                  "model.proposal_net_args_list (nerfstudio's rule); "
                                  f"it has {len(self.proposal_net_args_list)}")
        elif len(self.proposal_net_args_list) < self.num_proposal_iterations:
            raise ConfigError(f"model.proposal_net_args_list has {len(self.proposal_net_args_list)} entries, "
                              f"fewer than num_proposal_iterations={self.num_proposal_iterations}")
        if not self.average_init_density > 0:
            raise ConfigError(f"model.average_init_density={self.average_init_density} must be > 0")
        if self.near_plane >= self.far_plane:
            raise ConfigError(f"model.near_plane={self.near_plane} must be below model.far_plane={self.far_plane}")


def _proposal_args(a: Any) -> ProposalNetArgs:
    if isinstance(a, ProposalNetArgs):
        return a
    a = dict(a)
    unknown = sorted(set(a) - set(PROPOSAL_NET_KEYS))
    if unknown:
        raise ConfigError(f"model.proposal_net_args_list: unknown key(s) {unknown}; valid: {list(PROPOSAL_NET_KEYS)}")
    return ProposalNetArgs(**a)
