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
from config.ranges import check_fields, ranged
from models.fields.encodings import TABLE_DTYPES
from models.fields.hash_layout import LAYOUTS
from models.fields.implementation import IMPLEMENTATIONS

BACKGROUND_COLORS = ("random", "last_sample", "black", "white")
INITIAL_SAMPLERS = ("piecewise", "uniform")
PROPOSAL_NET_KEYS = ("hidden_dim", "log2_hashmap_size", "num_levels", "max_res", "use_linear")


@dataclass
class ProposalNetArgs:
    hidden_dim: int = ranged(16, ge=1)
    log2_hashmap_size: int = ranged(17, ge=1, why="the hash table holds 2**log2_hashmap_size entries per level")
    num_levels: int = ranged(5, ge=1)
    max_res: int = ranged(128, ge=16, why="the proposal grids start at resolution 16")
    use_linear: bool = False


@dataclass
class CameraOptimizerConfig:
    """The seed's --pipeline.datamanager.camera-optimizer.* (nerfstudio keeps them on the datamanager;
    here they go to the model, which owns the pose corrections). Passed to `CameraOptimizer`."""

    mode: str = ranged("SO3xR3", choices=("off", "SO3xR3", "SE3"))
    position_noise_std: float = ranged(0.0, ge=0)
    orientation_noise_std: float = ranged(0.0, ge=0)
    trans_l2_penalty: float = ranged(0.0, ge=0)
    rot_l2_penalty: float = ranged(0.0, ge=0)


@dataclass
class NerfactoConfig:
    _target_: str = "models.nerfacto.model.NerfactoModel"

    enable_collider: bool = True
    collider_params: Optional[dict[str, float]] = field(
        default_factory=lambda: {"near_plane": 2.0, "far_plane": 6.0})
    eval_num_rays_per_chunk: int = ranged(32768, ge=1)
    prompt: Optional[str] = None
    near_plane: float = ranged(0.05, ge=0)
    far_plane: float = ranged(1000.0, gt=0)
    background_color: str = "last_sample"
    hidden_dim: int = ranged(64, ge=1)
    hidden_dim_color: int = ranged(64, ge=1)
    hidden_dim_transient: int = ranged(64, ge=1)
    num_levels: int = ranged(16, ge=1)
    base_res: int = ranged(16, ge=1)
    max_res: int = ranged(2048, ge=1, why="at least model.base_res")
    log2_hashmap_size: int = ranged(19, ge=1, why="the hash table holds 2**log2_hashmap_size entries per level")
    features_per_level: int = ranged(2, ge=1)
    num_proposal_samples_per_ray: tuple[int, ...] = ranged((256, 96), ge=1)
    num_nerf_samples_per_ray: int = ranged(48, ge=1)
    proposal_update_every: int = ranged(5, ge=1)
    proposal_warmup: int = ranged(5000, ge=0)
    num_proposal_iterations: int = ranged(2, ge=1)
    use_same_proposal_network: bool = False
    proposal_net_args_list: list[ProposalNetArgs] = field(
        default_factory=lambda: [ProposalNetArgs(max_res=128), ProposalNetArgs(max_res=256)])
    proposal_initial_sampler: str = "piecewise"
    interlevel_loss_mult: float = ranged(1.0, ge=0)
    distortion_loss_mult: float = ranged(0.002, ge=0)
    orientation_loss_mult: float = ranged(0.0001, ge=0)
    pred_normal_loss_mult: float = ranged(0.001, ge=0)
    use_proposal_weight_anneal: bool = True
    use_average_appearance_embedding: bool = True
    proposal_weights_anneal_slope: float = ranged(10.0, gt=0)
    proposal_weights_anneal_max_num_iters: int = ranged(1000, ge=1)
    use_single_jitter: bool = True
    predict_normals: bool = False
    disable_scene_contraction: bool = False
    use_gradient_scaling: bool = False
    # tcnn (the seed's default) | torch | triton (fused hash-grid kernels, CUDA) | auto (triton on CUDA,
    # torch elsewhere); torch, triton and auto share parameters (models/fields/implementation.py)
    implementation: str = "tcnn"
    # the hash grid's level sizes and indexing for torch/triton/auto: this project's torch layout, or
    # tiny-cuda-nn's (models/fields/hash_layout.py); implementation=tcnn always has tcnn's own
    hash_layout: str = ranged("torch", choices=LAYOUTS)
    # bfloat16: the hash tables are read as bf16 (half the gather bytes); weights, optimizer state and
    # gradient sums stay float32
    hash_table_dtype: str = ranged("float32", choices=TABLE_DTYPES)
    appearance_embed_dim: int = ranged(32, ge=0, why="0: no appearance embedding")
    # nerfstudio's later NerfactoModelConfig option (not in the seed's --help): the density's scale at
    # initialisation (density = average_init_density * trunc_exp(raw)), for the field and proposal networks
    average_init_density: float = ranged(1.0, gt=0)
    # depth-nerfacto (nerfstudio's DepthNerfactoModelConfig: its options and defaults, but depth_loss_mult,
    # whose 0 here is plain nerfacto; depth-nerfacto's is 1e-3). Needs depth_file_path in the scene.
    depth_loss_mult: float = ranged(0.0, ge=0, why="0: no depth loss (nerfacto); depth-nerfacto uses 1e-3")
    is_euclidean_depth: bool = False
    depth_sigma: float = ranged(0.01, gt=0, why="metres")
    should_decay_sigma: bool = False
    starting_depth_sigma: float = ranged(0.2, gt=0, why="metres")
    sigma_decay_rate: float = ranged(0.99985, gt=0, le=1)
    depth_loss_type: str = ranged("DS_NERF", choices=("DS_NERF", "URF"),
                                  why="SPARSENERF_RANKING needs nerfstudio's pair pixel sampler, not built here")
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
        check_fields(self, "model")
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
        if self.base_res > self.max_res:
            raise ConfigError(f"model.max_res={self.max_res} is out of range: must be >= model.base_res={self.base_res} "
                              "(the hash grid's finest level); raise model.max_res or lower model.base_res")
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
