"""Structured-config schemas for the config groups that have no model class of their own.

Each YAML option extends one of these (``defaults: [/schema/<group>/<name>@_here_, _self_]``), so a
misspelt key or a wrong type fails while Hydra composes, naming the key, before anything is built.
Policies and environments register their own dataclasses (see ``config.store``). Each number's valid
range is declared with its field (``ranged``) and checked once the config is composed (``config.ranges``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

from config.errors import ConfigError
from config.ranges import check_options, ranged


# ----------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConfig:
    """Fields every optimizer takes; ``grad_clip_norm`` is read by the loop, not by torch."""

    _target_: str = "torch.optim.Adam"
    lr: float = ranged(1e-3, gt=0)
    weight_decay: float = ranged(0.0, ge=0)
    grad_clip_norm: float = ranged(10.0, ge=0, why="0: no clipping")


@dataclass
class AdamConfig(OptimizerConfig):
    _target_: str = "torch.optim.Adam"
    betas: list[float] = ranged(default_factory=lambda: [0.9, 0.999], ge=0, lt=1, length=2)
    eps: float = ranged(1e-8, ge=0)
    # one fused kernel per step instead of torch's foreach kernels; null: fused when every parameter
    # is on CUDA (training/optim.py)
    fused: Optional[bool] = None


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = ranged(1e-2, ge=0)


@dataclass
class SGDConfig(OptimizerConfig):
    _target_: str = "torch.optim.SGD"
    momentum: float = ranged(0.0, ge=0)
    dampening: float = ranged(0.0, ge=0, le=1)
    nesterov: bool = False


@dataclass
class ParamGroupOptimizerConfig:
    """One parameter group's optimizer in a neural field's preset (nerfstudio's
    --optimizers.<group>.optimizer.*); ``max_norm`` clips that group's gradients."""

    _target_: str = "torch.optim.Adam"
    lr: float = ranged(1e-2, gt=0)
    eps: float = ranged(1e-15, ge=0)
    weight_decay: float = ranged(0.0, ge=0)
    max_norm: Optional[float] = ranged(None, gt=0, why="null: no clipping")


@dataclass
class NerfactoOptimizersConfig:
    """nerfacto's optimizers, one per parameter group of the model (conf/optimizer/preset/nerfacto.yaml)."""

    proposal_networks: ParamGroupOptimizerConfig = field(default_factory=ParamGroupOptimizerConfig)
    fields: ParamGroupOptimizerConfig = field(default_factory=ParamGroupOptimizerConfig)
    camera_opt: ParamGroupOptimizerConfig = field(default_factory=ParamGroupOptimizerConfig)


# ----------------------------------------------------------------------------- scheduler
DIFFUSER_SCHEDULES = ("cosine", "linear", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


@dataclass
class DiffuserSchedulerConfig:
    """diffusers' named schedules (cosine, linear, constant_with_warmup, ...) over ``steps``."""

    _target_: str = "training.schedulers.diffuser_scheduler"
    name: str = ranged("cosine", choices=DIFFUSER_SCHEDULES, why="diffusers' schedules set by warmup and run length")
    num_warmup_steps: int = ranged(0, ge=0)


@dataclass
class CosineDecayWithWarmupSchedulerConfig:
    """Linear warmup to ``peak_lr`` then cosine decay to ``decay_lr`` (the pi0 recipe)."""

    _target_: str = "training.schedulers.cosine_decay_with_warmup"
    num_warmup_steps: int = ranged(1000, ge=0)
    num_decay_steps: int = ranged(30000, ge=1)
    peak_lr: float = ranged(2.5e-5, gt=0)
    decay_lr: float = ranged(2.5e-6, ge=0)


@dataclass
class ExponentialDecaySchedulerConfig:
    """nerfstudio's ExponentialDecayScheduler (--optimizers.<group>.scheduler.*)."""

    _target_: str = "training.schedulers.exponential_decay"
    lr_pre_warmup: float = ranged(1e-8, ge=0)
    lr_final: Optional[float] = ranged(None, gt=0, why="null: the optimizer's lr")
    warmup_steps: int = ranged(0, ge=0)
    max_steps: int = ranged(100_000, ge=1)
    ramp: str = ranged("cosine", choices=("cosine", "linear"))


@dataclass
class NerfactoSchedulersConfig:
    """nerfacto's schedulers, one per optimizer group (conf/scheduler/preset/nerfacto.yaml)."""

    proposal_networks: ExponentialDecaySchedulerConfig = field(default_factory=ExponentialDecaySchedulerConfig)
    fields: ExponentialDecaySchedulerConfig = field(default_factory=ExponentialDecaySchedulerConfig)
    camera_opt: ExponentialDecaySchedulerConfig = field(default_factory=ExponentialDecaySchedulerConfig)


@dataclass
class VQBeTSchedulerConfig:
    """LeRobot's `vqbet` schedule: constant during the VQ-VAE phase, then warmup and cosine. The
    YAML takes `num_vqvae_training_steps` from the policy (`policy.n_vqvae_training_steps`)."""

    _target_: str = "training.schedulers.vqbet_scheduler"
    num_warmup_steps: int = ranged(500, ge=0)
    num_vqvae_training_steps: int = ranged(20000, ge=0)
    num_cycles: float = ranged(0.5, gt=0, why="cosine cycles after the warmup; 0.5 decays once to 0")


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
    max_num_transforms: int = ranged(3, ge=1)
    random_order: bool = False
    tfs: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(LEROBOT_IMAGE_TFS))


@dataclass
class DemosConfig:
    """How to record the dataset with a scripted expert when ``root`` holds none."""

    expert: str = "pusht"
    n_episodes: int = ranged(100, ge=1)
    seed: int = 0
    keep_failed: bool = False
    use_videos: bool = True
    codebase_version: str = ranged("v2.1", choices=("v2.1", "v3.0"), why="v3.0: LeRobot >= 0.4's layout")


@dataclass
class DatasetConfig:
    """`repo_id` is one name or a list of names (several datasets concatenated); `root` is then null
    (each at $HYDRABOT_HOME/datasets/<repo_id>), one parent folder (each at <root>/<repo_id>, as in
    LeRobot's MultiLeRobotDataset) or a list of roots, one per repo_id (see data.demos.dataset_roots)."""

    repo_id: Any = "local/pusht_scripted"
    root: Any = None
    episodes: Optional[list[int]] = ranged(None, ge=0, why="episode indices")
    local_files_only: bool = True  # false: a dataset missing at its root is fetched from the Hugging Face Hub
    revision: Optional[str] = None  # the Hub revision (branch/tag) fetched when local_files_only=false
    use_imagenet_stats: bool = True
    video_backend: str = ranged("pyav", choices=("pyav",), why="frames are decoded once, with PyAV")
    image_transforms: ImageTransformsConfig = field(default_factory=ImageTransformsConfig)
    demos: Optional[DemosConfig] = None


# ----------------------------------------------------------------------------- data (neural fields)
@dataclass
class SyntheticSceneConfig:
    """How to generate the project's procedural scene (`data.nerf.synthetic`) when `data` holds none."""

    name: str = "synthetic"
    format: str = ranged("nerfstudio", choices=("nerfstudio", "blender"))
    n_views: int = ranged(48, ge=1)
    size: int = ranged(64, ge=1, why="image side in pixels")
    fov_deg: float = ranged(50.0, gt=0, lt=180)
    n_eval_views: int = ranged(8, ge=1)  # blender format only


@dataclass
class PixelSamplerConfig:
    """nerfstudio's --pipeline.datamanager.pixel-sampler.*. As nerfstudio's datamanager does, each split's
    sampler takes its batch size from train_num_rays_per_batch / eval_num_rays_per_batch, so
    `num_rays_per_batch` is not read (kept so a translated command stays valid); `keep_full_image` adds
    the split's images to every ray batch ("full_image"). `is_equirectangular` (sample rows uniformly
    over the sphere): nerfstudio sets it from the cameras whatever is passed; here null does that and a
    value that contradicts the cameras is refused."""

    num_rays_per_batch: int = ranged(4096, ge=1)
    keep_full_image: bool = False
    is_equirectangular: Optional[bool] = None


@dataclass
class NerfDataConfig:
    """nerfstudio's VanillaDataManager options (`--pipeline.datamanager.*`, snake_case); the
    dataparser is nested (its `_target_` picks nerfstudio's or the Blender format reader)."""

    _target_: str = "data.nerf.datamanager.NerfDataManager"
    data: Optional[str] = None
    dataparser: Any = None
    train_num_rays_per_batch: int = ranged(4096, ge=1)
    train_num_images_to_sample_from: int = ranged(-1, ge=1, also=(-1,), why="-1: all images")
    train_num_times_to_repeat_images: int = ranged(-1, ge=1, also=(-1,), why="-1: never pick new images")
    eval_num_rays_per_batch: int = ranged(4096, ge=1)
    eval_num_images_to_sample_from: int = ranged(-1, ge=1, also=(-1,), why="-1: all images")
    eval_num_times_to_repeat_images: int = ranged(-1, ge=1, also=(-1,), why="-1: never pick new images")
    eval_image_indices: Optional[list[int]] = ranged(default_factory=lambda: [0], ge=0, why="held-out view indices")
    camera_res_scale_factor: float = ranged(1.0, gt=0)
    patch_size: int = ranged(1, ge=1)
    images_on_gpu: bool = False
    masks_on_gpu: bool = False
    pixel_sampler: PixelSamplerConfig = field(default_factory=PixelSamplerConfig)
    scene: Optional[SyntheticSceneConfig] = None  # data=synthetic: generated on first use

    @staticmethod
    def cross_check(node: Any) -> None:
        """The dataparser is untyped here (its `_target_` picks the parser): its options get the ranges
        declared on that parser's dataclass."""
        from data.nerf.dataparsers import dataparser_class

        parser = node.get("dataparser")
        schema = dataparser_class(parser) if parser is not None else None
        if schema is not None:
            check_options(parser, schema, "data.dataparser")


# ----------------------------------------------------------------------------- machine
@dataclass
class MachineConfig:
    """Where a job runs: the seed's machine options plus the cluster resources that the SLURM
    launcher presets (conf/hydra/launcher/slurm*.yaml) read, so a cluster is described once."""

    seed: int = 1000
    device_type: str = ranged("auto", choices=("auto", "cpu", "cuda", "mps"))
    num_devices: int = ranged(1, ge=1, why="devices per machine")
    num_threads: Optional[int] = ranged(None, ge=1, why="torch's CPU threads per rank; null: the cores the process "
                                        "may use, shared among its ranks (training/threads.py)")
    num_machines: int = ranged(1, ge=1)
    machine_rank: int = ranged(0, ge=0)
    dist_url: str = "auto"
    # speed levers (training/speed.py, docs/ROBOT_LEARNING.md "Training speed"); CUDA only except compile
    tf32: bool = True             # TF32 matmuls and convolutions on CUDA (LeRobot's train sets the same)
    cudnn_benchmark: bool = True  # cuDNN times its algorithms per input shape once (LeRobot's choice too)
    channels_last: bool = False   # 4-D weights and images in NHWC: cuDNN's native layout, no conversions
    # torch.compile of the model (its forward and backward), on first use; null: where the step is captured
    # (machine.cuda_graph) and the model declares compile_blocker None (nerfacto: measured faster there;
    # training/speed.py), off otherwise
    compile: Optional[bool] = None
    # the whole training step replayed from one CUDA graph (training/step_graph.py); null: wherever the
    # run allows it (CUDA, one device, a model that declares a capturable step, no grad scaler, ...)
    cuda_graph: Optional[bool] = None
    # camera frames leave the loader as uint8, float + image_transforms on the device; null: on CUDA
    # when dataset.image_transforms are off (pipelines.robot.uses_uint8_transport)
    uint8_transport: Optional[bool] = None
    partition: Optional[str] = None
    timeout_min: int = ranged(60, ge=1)
    cpus_per_task: Optional[int] = ranged(None, ge=1)
    mem_gb: Optional[int] = ranged(None, ge=1)
    max_requeues: int = ranged(3, ge=0)
    signal_delay_s: int = ranged(120, ge=0, why="seconds before the time limit that the job is warned")

    @staticmethod
    def cross_check(node: Any) -> None:
        if node.machine_rank >= node.num_machines:
            raise ConfigError(f"machine.machine_rank={node.machine_rank} is out of range: must be below "
                              f"machine.num_machines={node.num_machines}; ranks count from 0")


# ----------------------------------------------------------------------------- logger
@dataclass
class MLflowLoggerConfig:
    _target_: str = "tracking.mlflow_tracker.MLflowTracker"
    tracking_uri: Optional[str] = None
    experiment_name: str = "hydrabot"
    run_name: Optional[str] = None
    default_store_dir: str = "outputs"
    log_system_metrics: bool = False
    flush_timeout_s: float = ranged(30.0, ge=0, le=3600, why="seconds the run's end may wait for MLflow to take "
                                    "what is still queued")
    parent_run_id: Optional[str] = None


@dataclass
class NullLoggerConfig:
    _target_: str = "tracking.base.NullTracker"


# ----------------------------------------------------------------------------- eval
@dataclass
class RolloutEvalConfig:
    """Policy evaluation by rollouts in vectorised gym environments."""

    n_episodes: int = ranged(50, ge=1, why="eval_freq=0 skips evaluation")
    batch_size: int = ranged(50, ge=1, why="envs run at once")
    use_async_envs: bool = False
    max_videos: int = ranged(1, ge=0)
    cuda_graphs: Optional[bool] = None  # plans replayed from CUDA graphs; null: on for CUDA


@dataclass
class ViewsEvalConfig:
    """Neural-field evaluation at nerfstudio's three cadences (optimizer steps; 0 = never; each also runs
    at the last step): the loss and PSNR of one batch of eval rays, one whole held-out image (cycling
    through data.eval_image_indices), and all held-out views (the run's result)."""

    steps_per_eval_batch: int = ranged(500, ge=0, why="0: never")
    steps_per_eval_image: int = ranged(500, ge=0, why="0: never")
    steps_per_eval_all_images: int = ranged(25_000, ge=0, why="0: never")
    num_images: Optional[int] = ranged(None, ge=1, why="null: all of them")  # held-out views of the all-images eval
    chunk: Optional[int] = ranged(None, ge=1)  # rays per forward pass (None: model.eval_num_rays_per_chunk)
    # LPIPS (AlexNet) weights, all local: a combined file, or a directory with torchvision's
    # alexnet-owt-7be5be79.pth and lpips' alex.pth (models/fields/lpips.py); None: no LPIPS
    lpips_weights: Optional[str] = None
    save_images: bool = True  # ground truth | render | depth as PNG, logged as artifacts
    max_images_saved: int = ranged(1, ge=0)
    # the all-images eval also renders an orbit around the scene to orbit.mp4 (render.py's orbit)
    orbit_frames: int = ranged(0, ge=0, why="0: no orbit video")


# ----------------------------------------------------------------------------- online
@dataclass
class OnlineConfig:
    """LeRobot's `--online.*`: after `steps` offline steps, `online.steps` more in which the policy
    rolls out in its env every `steps_between_rollouts` steps, its episodes go to an online buffer on
    disk and batches draw `sampling_ratio` of their items from it (training/online/)."""

    steps: int = ranged(0, ge=0, why="0: no online phase")
    rollout_n_episodes: int = ranged(1, ge=1)
    rollout_batch_size: int = ranged(1, ge=1, why="envs run at once")
    steps_between_rollouts: Optional[int] = ranged(None, ge=1, why="needed when online.steps > 0")
    sampling_ratio: float = ranged(0.5, ge=0, le=1, why="the share of each batch drawn from the online buffer")
    env_seed: Optional[int] = ranged(None, ge=0, why="null: machine.seed")
    buffer_capacity: Optional[int] = ranged(None, ge=1, why="frames kept (first in, first out); null: all of them")
    buffer_seed_size: int = ranged(0, ge=0, why="frames rolled out before the first online step")
    do_rollout_async: bool = False


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
    viewer: Any = None
    online: OnlineConfig = field(default_factory=OnlineConfig)

    job_name: str = "run"
    seed: int = 1000
    steps: int = ranged(100_000, ge=0, why="0: no training, only the final evaluation")
    batch_size: int = ranged(8, ge=1)
    num_workers: int = ranged(4, ge=0, why="0: load in the main process")
    gradient_accumulation_steps: int = ranged(1, ge=1)
    use_amp: bool = False
    amp_dtype: str = ranged("bf16", choices=("bf16", "fp16"))
    log_freq: int = ranged(200, ge=0, why="0: never")
    eval_freq: int = ranged(20_000, ge=0, why="0: never")
    save_freq: int = ranged(20_000, ge=0, why="0: never")
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
    load_step: Optional[int] = ranged(None, ge=0)
    load_checkpoint: Optional[str] = None  # one checkpoint folder
    load_scheduler: bool = True
    progress_bar: bool = True
    progress_interval_s: float = ranged(30.0, gt=0, why="seconds between progress lines when there is no terminal")
    objective: str = "pc_success"

    @staticmethod
    def cross_check(node: Any) -> None:
        """Ranges that span groups: a neural field has no eval_freq; a policy's image crop must fit in the
        env's camera images."""
        if node.get("model") is not None and node.eval_freq:
            raise ConfigError(f"eval_freq={node.eval_freq} is out of range for a neural field: must be 0 (it is the "
                              "robot family's eval cadence); set eval.steps_per_eval_batch / steps_per_eval_image / "
                              "steps_per_eval_all_images instead (nerfstudio's --steps-per-eval-*)")
        check_online(node)
        policy, env = node.get("policy"), node.get("env")
        crop = policy.get("crop_shape") if policy is not None else None
        if crop is None or env is None:
            return
        images = {key: feature.shape for key, feature in env.features.items() if feature.type == "VISUAL"}
        for key, (height, width, *_) in images.items():
            if crop[0] > height or crop[1] > width:
                raise ConfigError(f"policy.crop_shape={list(crop)} is out of range: must fit in the env's image {key} "
                                  f"of shape {list(images[key])} ([H, W, C]); set policy.crop_shape to at most "
                                  f"[{height}, {width}], or null")


def check_online(node: Any) -> None:
    """The online phase against the rest of the run: a robot policy, one process, a buffer that can
    hold its seed, and a dataset for whatever is not drawn from the buffer."""
    online = node.get("online")
    steps = online.steps if online is not None else 0
    if node.get("policy") is None:
        if steps:
            raise ConfigError(f"online.steps={steps} is out of range for a neural field: must be 0 (online training "
                              "rolls a robot policy out in its env)")
        return
    if node.get("dataset") is None and not steps:
        raise ConfigError("~dataset (no dataset) leaves nothing to train on: pick a dataset (dataset=pusht), or train "
                          "purely online with online.steps > 0 and steps=0")
    if not steps:
        return
    if online.steps_between_rollouts is None:
        raise ConfigError(f"online.steps={steps} needs online.steps_between_rollouts: set it to the optimizer steps "
                          "between two rollouts (e.g. online.steps_between_rollouts=50)")
    machine = node.get("machine")
    if machine is not None and machine.num_devices * machine.num_machines > 1:
        raise ConfigError(f"online.steps={steps} is out of range with machine.num_devices={machine.num_devices} x "
                          f"machine.num_machines={machine.num_machines}: online training runs on one device; set "
                          "machine.num_devices=1 machine.num_machines=1")
    capacity = online.buffer_capacity
    if capacity is not None and online.buffer_seed_size > capacity:
        raise ConfigError(f"online.buffer_seed_size={online.buffer_seed_size} is out of range: must be <= "
                          f"online.buffer_capacity={capacity}, or the buffer could never be seeded")
    if node.get("dataset") is None:
        wrong = [f"steps={node.steps}"] if node.steps else []
        if online.sampling_ratio != 1:
            wrong.append(f"online.sampling_ratio={online.sampling_ratio}")
        if wrong:
            raise ConfigError(f"{' and '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} out of range without a "
                              "dataset (~dataset): a pure online run has no offline steps or items; set steps=0 "
                              "online.sampling_ratio=1, or pick a dataset")
