"""Structured-config schemas for the config groups that have no model class of their own.

Each YAML option extends one of these (``defaults: [/schema/<group>/<name>@_here_, _self_]``), so a
misspelt key or a wrong type fails while Hydra composes, naming the key, before anything is built.
Policies and environments register their own dataclasses (see ``config.store``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional


# ----------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConfig:
    """Fields every optimizer takes; ``grad_clip_norm`` is read by the loop, not by torch."""

    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip_norm: float = 10.0


@dataclass
class AdamConfig(OptimizerConfig):
    _target_: str = "torch.optim.Adam"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 1e-2


@dataclass
class SGDConfig(OptimizerConfig):
    _target_: str = "torch.optim.SGD"
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False


# ----------------------------------------------------------------------------- scheduler
@dataclass
class DiffuserSchedulerConfig:
    """diffusers' named schedules (cosine, linear, constant_with_warmup, ...) over ``steps``."""

    _target_: str = "training.schedulers.diffuser_scheduler"
    name: str = "cosine"
    num_warmup_steps: int = 0


@dataclass
class CosineDecayWithWarmupSchedulerConfig:
    """Linear warmup to ``peak_lr`` then cosine decay to ``decay_lr`` (the pi0 recipe)."""

    _target_: str = "training.schedulers.cosine_decay_with_warmup"
    num_warmup_steps: int = 1000
    num_decay_steps: int = 30000
    peak_lr: float = 2.5e-5
    decay_lr: float = 2.5e-6


@dataclass
class VQBeTSchedulerConfig:
    """LeRobot's `vqbet` schedule: constant during the VQ-VAE phase, then warmup and cosine. The
    YAML takes `num_vqvae_training_steps` from the policy (`policy.n_vqvae_training_steps`)."""

    _target_: str = "training.schedulers.vqbet_scheduler"
    num_warmup_steps: int = 500
    num_vqvae_training_steps: int = 20000
    num_cycles: float = 0.5


# ----------------------------------------------------------------------------- dataset
# LeRobot's default set (its ImageTransformsConfig), in the config so that `tfs.<name>.weight=...`
# overrides work and the saved run config shows what ran. Each entry is {weight, type, kwargs}:
# `type` a torchvision.transforms.v2 class name (or SharpnessJitter / Identity). The entries are
# untyped dicts, so `+dataset.image_transforms.tfs.<new>={type: RandomAffine, kwargs: {degrees: 5}}`
# can add one; data.transforms.build_image_transforms checks them.
LEROBOT_IMAGE_TFS: dict[str, dict[str, Any]] = {
    "brightness": {"weight": 1.0, "type": "ColorJitter", "kwargs": {"brightness": [0.8, 1.2]}},
    "contrast": {"weight": 1.0, "type": "ColorJitter", "kwargs": {"contrast": [0.8, 1.2]}},
    "saturation": {"weight": 1.0, "type": "ColorJitter", "kwargs": {"saturation": [0.5, 1.5]}},
    "hue": {"weight": 1.0, "type": "ColorJitter", "kwargs": {"hue": [-0.05, 0.05]}},
    "sharpness": {"weight": 1.0, "type": "SharpnessJitter", "kwargs": {"sharpness": [0.5, 1.5]}},
}


@dataclass
class ImageTransformsConfig:
    enable: bool = False
    max_num_transforms: int = 3
    random_order: bool = False
    tfs: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(LEROBOT_IMAGE_TFS))


@dataclass
class DemosConfig:
    """How to record the dataset with a scripted expert when ``root`` holds none."""

    expert: str = "pusht"
    n_episodes: int = 100
    seed: int = 0
    keep_failed: bool = False
    use_videos: bool = True
    codebase_version: str = "v2.1"  # v2.1 | v3.0 (LeRobot >= 0.4)


@dataclass
class DatasetConfig:
    """`repo_id` is one name or a list of names (several datasets concatenated); `root` is then null
    (each at $HYDRABOT_HOME/datasets/<repo_id>), one parent folder (each at <root>/<repo_id>, as in
    LeRobot's MultiLeRobotDataset) or a list of roots, one per repo_id (see data.demos.dataset_roots)."""

    repo_id: Any = "local/pusht_scripted"
    root: Any = None
    episodes: Optional[list[int]] = None
    local_files_only: bool = True  # false: a dataset missing at its root is fetched from the Hugging Face Hub
    revision: Optional[str] = None  # the Hub revision (branch/tag) fetched when local_files_only=false
    use_imagenet_stats: bool = True
    video_backend: str = "pyav"
    image_transforms: ImageTransformsConfig = field(default_factory=ImageTransformsConfig)
    demos: Optional[DemosConfig] = None


# ----------------------------------------------------------------------------- data (neural fields)
@dataclass
class SyntheticSceneConfig:
    """How to generate the project's procedural scene (`data.nerf.synthetic`) when `data` holds none."""

    name: str = "synthetic"
    format: str = "nerfstudio"  # nerfstudio | blender
    n_views: int = 48
    size: int = 64
    fov_deg: float = 50.0
    n_eval_views: int = 8  # blender format only


@dataclass
class PixelSamplerConfig:
    """nerfstudio's --pipeline.datamanager.pixel-sampler.*. As nerfstudio's datamanager does, each split's
    sampler takes its batch size from train_num_rays_per_batch / eval_num_rays_per_batch, so
    `num_rays_per_batch` is not read (kept so a translated command stays valid); `keep_full_image` adds
    the split's images to every ray batch ("full_image"). No equirectangular cameras: no such flag."""

    num_rays_per_batch: int = 4096
    keep_full_image: bool = False


@dataclass
class NerfDataConfig:
    """nerfstudio's VanillaDataManager options (`--pipeline.datamanager.*`, snake_case); the
    dataparser is nested (its `_target_` picks nerfstudio's or the Blender format reader)."""

    _target_: str = "data.nerf.datamanager.NerfDataManager"
    data: Optional[str] = None
    dataparser: Any = None
    train_num_rays_per_batch: int = 4096
    train_num_images_to_sample_from: int = -1
    train_num_times_to_repeat_images: int = -1
    eval_num_rays_per_batch: int = 4096
    eval_num_images_to_sample_from: int = -1
    eval_num_times_to_repeat_images: int = -1
    eval_image_indices: Optional[list[int]] = field(default_factory=lambda: [0])
    camera_res_scale_factor: float = 1.0
    patch_size: int = 1
    images_on_gpu: bool = False
    masks_on_gpu: bool = False
    pixel_sampler: PixelSamplerConfig = field(default_factory=PixelSamplerConfig)
    scene: Optional[SyntheticSceneConfig] = None  # data=synthetic: generated on first use


# ----------------------------------------------------------------------------- machine
@dataclass
class MachineConfig:
    """Where a job runs: the seed's machine options plus the cluster resources that the SLURM
    launcher presets (conf/hydra/launcher/slurm*.yaml) read, so a cluster is described once."""

    seed: int = 1000
    device_type: str = "auto"
    num_devices: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    dist_url: str = "auto"
    partition: Optional[str] = None
    timeout_min: int = 60
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[int] = None
    max_requeues: int = 3
    signal_delay_s: int = 120


# ----------------------------------------------------------------------------- logger
@dataclass
class MLflowLoggerConfig:
    _target_: str = "tracking.mlflow_tracker.MLflowTracker"
    tracking_uri: Optional[str] = None
    experiment_name: str = "hydrabot"
    run_name: Optional[str] = None
    default_store_dir: str = "outputs"
    log_system_metrics: bool = False
    # How long the run's end may wait for MLflow to take what is still queued (0-3600 s).
    flush_timeout_s: float = 30.0
    parent_run_id: Optional[str] = None


@dataclass
class NullLoggerConfig:
    _target_: str = "tracking.base.NullTracker"


# ----------------------------------------------------------------------------- eval
@dataclass
class RolloutEvalConfig:
    """Policy evaluation by rollouts in vectorised gym environments."""

    n_episodes: int = 50
    batch_size: int = 50
    use_async_envs: bool = False
    max_videos: int = 1


@dataclass
class ViewsEvalConfig:
    """Neural-field evaluation at nerfstudio's three cadences (optimizer steps; 0 = never; each also runs
    at the last step): the loss and PSNR of one batch of eval rays, one whole held-out image (cycling
    through data.eval_image_indices), and all held-out views (the run's result)."""

    steps_per_eval_batch: int = 500
    steps_per_eval_image: int = 500
    steps_per_eval_all_images: int = 25_000
    num_images: Optional[int] = None  # held-out views of the all-images eval (None: all of them)
    chunk: Optional[int] = None  # rays per forward pass (None: model.eval_num_rays_per_chunk)
    # LPIPS (AlexNet) weights, all local: a combined file, or a directory with torchvision's
    # alexnet-owt-7be5be79.pth and lpips' alex.pth (models/fields/lpips.py); None: no LPIPS
    lpips_weights: Optional[str] = None
    save_images: bool = True  # ground truth | render | depth as PNG, logged as artifacts
    max_images_saved: int = 1


# ----------------------------------------------------------------------------- root
@dataclass
class TrainConfig:
    """Run-level keys; the groups are typed by their own schemas."""

    policy: Any = None
    env: Any = None
    dataset: Any = None
    model: Any = None
    data: Any = None
    optimizer: Any = None
    scheduler: Any = None
    machine: MachineConfig = field(default_factory=MachineConfig)
    logger: Any = None
    eval: Any = None

    job_name: str = "run"
    seed: int = 1000
    steps: int = 100_000
    batch_size: int = 8
    num_workers: int = 4
    gradient_accumulation_steps: int = 1
    use_amp: bool = False
    amp_dtype: str = "bf16"
    log_freq: int = 200
    eval_freq: int = 20_000
    save_freq: int = 20_000
    save_checkpoint: bool = True
    # nerfstudio's run options, for both families (model=nerfacto sets save_only_latest_checkpoint=true)
    save_only_latest_checkpoint: bool = False  # after each save, delete the older step folders
    relative_model_dir: str = "checkpoints"  # where checkpoints go, relative to the run directory
    use_grad_scaler: bool = False  # loss scaling even without fp16 mixed precision
    log_gradients: bool = False  # per-param-group gradient norms (train/gradients/*) every log_freq
    resume: bool = False
    # Warm start (nerfstudio's --load-dir/--load-step/--load-checkpoint): a new run that starts from
    # another run's weights, optimizer, scheduler and step. resume=true continues the same run instead.
    load_dir: Optional[str] = None  # a run folder (or its checkpoints/); the latest checkpoint unless load_step
    load_step: Optional[int] = None
    load_checkpoint: Optional[str] = None  # one checkpoint folder
    load_scheduler: bool = True
    progress_bar: bool = True
    objective: str = "pc_success"
