"""Robot learning: dataset -> features -> policy -> rollouts in the simulator.

Build order follows the data: the dataset's metadata (features, fps, stats) comes first; the
policy's config says which time windows it needs (delta indices), which become the dataset's
delta_timestamps; the policy is then instantiated from the dataset's features, never from shapes
written in YAML.
"""

from __future__ import annotations

import json
import logging
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from config.errors import ConfigError
from data.device_images import DeviceImages
from data.demos import ensure_dataset, ensure_datasets, is_multi
from data.features import FeatureType, PolicyFeature, policy_features
from data.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
from data.multi_dataset import MultiLeRobotDataset, MultiLeRobotDatasetMetadata
from data.transforms import build_image_transforms
from training.data_position import BatchStream
from training.device import acting_dtype
from training.distributed import SINGLE, Rank

log = logging.getLogger("train")

REWARD_KEY = "next.reward"
IMAGENET_STATS = {"mean": np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1),
                  "std": np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)}


def policy_config(cfg: DictConfig):
    """The policy's config dataclass, validated (its __post_init__ checks the option values)."""
    try:
        return OmegaConf.to_object(cfg.policy)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def check_env_matches_dataset(env_cfg, features: dict[str, PolicyFeature], dataset_fps: float | None) -> None:
    """The env the policy is evaluated in must feed it what it was trained on: every input has a
    source in `env.features_map`, the shapes agree (env images are (H, W, C), policy ones (C, H, W)),
    and actions run at the dataset's fps (None: unknown, e.g. a policy built from a checkpoint's
    config, where training already checked it). Checked at build time, not at the first evaluation."""
    fmap = dict(env_cfg.features_map)
    env_key_of = {fmap[k]: k for k in env_cfg.features if k in fmap}
    env_key_of.setdefault("action", next((k for k, f in env_cfg.features.items() if f.type == "ACTION"), None))
    for key, ft in features.items():
        if ft.type != FeatureType.ACTION and key not in fmap.values():
            raise ConfigError(f"policy input {key!r} (from the dataset) has no source in env.features_map "
                              f"{fmap}; map the env observation that provides it")
        env_key = env_key_of.get(key)
        if env_key is None:
            continue
        shape = tuple(int(d) for d in env_cfg.features[env_key].shape)
        if ft.type == FeatureType.VISUAL and len(shape) == 3:
            shape = (shape[2], shape[0], shape[1])
        if shape != tuple(ft.shape):
            raise ConfigError(f"env={env_cfg.type} gives {env_key!r} of shape {list(shape)} but the dataset's {key!r} "
                              f"is {list(ft.shape)}; evaluate in the env the dataset was recorded in, or set "
                              f"env.features.{env_key}.shape (and the env's observation size) to match")
    if dataset_fps is not None and abs(float(env_cfg.fps) - float(dataset_fps)) > 1e-6:
        raise ConfigError(f"env.fps={env_cfg.fps} but the dataset was recorded at {dataset_fps} fps; the policy's "
                          "actions would run at the wrong rate: set env.fps to the dataset's, or pick its env")


def delta_timestamps(pcfg, features: dict[str, PolicyFeature], fps: int,
                     dataset_features: dict | None = None) -> dict[str, list[float]]:
    """The time windows the policy's config declares: observations, actions and, for a policy that
    learns from rewards (TD-MPC), `next.reward`, which `dataset_features` must then hold."""
    out: dict[str, list[float]] = {}
    for key, ft in features.items():
        indices = pcfg.action_delta_indices if ft.type == FeatureType.ACTION else pcfg.observation_delta_indices
        if indices is not None:
            out[key] = [i / fps for i in indices]
    rewards = getattr(pcfg, "reward_delta_indices", None)
    if rewards is not None:
        if REWARD_KEY not in (dataset_features or {}):
            raise ConfigError(f"the policy trains on rewards ({REWARD_KEY}), which the dataset does not have; use a "
                              "dataset recorded by the project's experts (they write next.reward and next.done) "
                              "or a LeRobot dataset with rewards")
        out[REWARD_KEY] = [i / fps for i in rewards]
    return out


def features_to_config(features: dict[str, PolicyFeature]) -> dict:
    return {k: {"type": f.type.value, "shape": list(f.shape)} for k, f in features.items()}


def features_from_config(input_features: dict, output_features: dict) -> dict[str, PolicyFeature]:
    merged = {**input_features, **output_features}
    return {k: PolicyFeature(FeatureType(v["type"]), tuple(v["shape"])) for k, v in merged.items()}


def build_policy(policy_cfg, features: dict[str, PolicyFeature], stats) -> torch.nn.Module:
    """`instantiate(policy_cfg)` with the features and stats; module-level, so that the online phase's
    rollout process builds the same policy from the same (conf/-composed) node."""
    try:
        return instantiate(policy_cfg, features=features, stats=stats, _convert_="all")
    except InstantiationException as e:  # the policy's checks against the dataset's features
        if isinstance(e.__cause__, (ValueError, FileNotFoundError)):
            raise ConfigError(f"policy: {e.__cause__}") from e
        raise


def uses_uint8_transport(cfg: DictConfig, device: torch.device) -> bool:
    """machine.uint8_transport, its null resolved: on where there is a host->device copy to shrink (CUDA)
    and no augmentation to take from the parallel workers (unmeasured there: docs/ROBOT_LEARNING.md)."""
    choice = cfg.machine.get("uint8_transport")
    if choice is not None:
        return bool(choice)
    augments = bool(OmegaConf.select(cfg, "dataset.image_transforms.enable", default=False))
    return device.type == "cuda" and not augments


class RobotPipeline:
    family = "robot"

    def __init__(self, cfg: DictConfig, device: torch.device, need_dataset: bool = True, rank: Rank = SINGLE):
        self.cfg, self.device, self.rank = cfg, device, rank
        self.pcfg = policy_config(cfg)
        self.online = None  # training.online.OnlinePhase when online.steps > 0
        self.uint8_transport = uses_uint8_transport(cfg, device)
        self.image_transforms = None
        if need_dataset and cfg.get("dataset") is None:
            self._build_from_env(cfg)
        elif need_dataset:
            self._build_data(cfg)
        else:
            if not cfg.policy.get("input_features"):
                raise ConfigError("this config has no policy.input_features (it was not saved by a training run); "
                                  "evaluate a checkpoint folder written by src/train.py")
            self.features = features_from_config(cfg.policy.input_features, cfg.policy.output_features)
            self.stats = None
        self._check_env_provides_inputs(cfg)
        self.model = build_policy(cfg.policy, self.features, self.stats).to(device)
        online = cfg.get("online")
        if need_dataset and online is not None and online.steps > 0:
            self._build_online(cfg)
        visual = [k for k, f in self.features.items() if f.type == FeatureType.VISUAL]
        self._device_images = DeviceImages(visual, self.image_transforms if self.uint8_transport else None)

    # ------------------------------------------------------------------ build
    def _build_data(self, cfg: DictConfig) -> None:
        """One dataset, or the concatenation of several when `dataset.repo_id` is a list."""
        multi = is_multi(cfg.dataset)
        if multi and cfg.dataset.episodes is not None:
            raise ConfigError("dataset.episodes selects episodes of one dataset; with a dataset.repo_id list leave "
                              "it null")
        if multi:
            roots = ensure_datasets(cfg.dataset)
            self.meta = MultiLeRobotDatasetMetadata(roots)
        else:
            root = ensure_dataset(cfg.dataset)
            self.meta = LeRobotDatasetMetadata(root)
        self.features = policy_features(self.meta.features)
        if FeatureType.ACTION not in {f.type for f in self.features.values()}:
            raise ConfigError(f"dataset {self.meta.root} has no 'action' feature, so there is nothing for a policy "
                              "to imitate")
        self.stats = dict(self.meta.stats)
        if cfg.dataset.use_imagenet_stats:
            for key, ft in self.features.items():
                if ft.type == FeatureType.VISUAL:
                    self.stats[key] = {**self.stats.get(key, {}), **IMAGENET_STATS}
        self.fps = self.meta.fps
        self.delta_timestamps = delta_timestamps(self.pcfg, self.features, self.fps, self.meta.features)
        self.image_transforms = build_image_transforms(cfg.dataset.image_transforms)
        # machine.uint8_transport: frames leave the loader as stored; converted and augmented on the device
        options = dict(delta_timestamps=self.delta_timestamps, video_backend=cfg.dataset.video_backend,
                       image_transforms=None if self.uint8_transport else self.image_transforms,
                       uint8_images=self.uint8_transport)
        if multi:
            self.dataset = MultiLeRobotDataset(roots, meta=self.meta, **options)
        else:
            self.dataset = LeRobotDataset(
                root, episodes=list(cfg.dataset.episodes) if cfg.dataset.episodes is not None else None, **options)
        self.batches = BatchStream(self.dataset, cfg.batch_size, seed=cfg.machine.seed,
                                   indices=self._sample_indices(getattr(self.pcfg, "drop_n_last_frames", 0)),
                                   num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
                                   rank=self.rank.rank, world_size=self.rank.world_size,
                                   tag_seeds=self.uint8_transport and self.image_transforms is not None)

    def _build_from_env(self, cfg: DictConfig) -> None:
        """No dataset (~dataset, a pure online run): features and normalisation stats from the env
        (envs.space_stats)."""
        from envs.space_stats import env_policy_features, env_space_stats
        from training.online import buffer_features

        self.features = env_policy_features(cfg.env)
        normalised = {t for t, mode in (getattr(self.pcfg, "normalization_mapping", None) or {}).items()
                      if mode != "IDENTITY"}
        self.stats = env_space_stats(cfg.env, normalised)
        self.fps = cfg.env.fps
        self.delta_timestamps = delta_timestamps(self.pcfg, self.features, self.fps, buffer_features(cfg.env, None))

    def _build_online(self, cfg: DictConfig) -> None:
        """The online phase (training/online): its batches replace the offline stream."""
        from training.online import build_online, dataset_task

        meta = getattr(self, "meta", None)
        policy_node = OmegaConf.to_container(cfg.policy, resolve=True)
        for key in getattr(type(self.model), "init_only_options", ()):
            policy_node[key] = None  # the rollout process takes the run's weights, not the starting ones
        make_policy = partial(build_policy, policy_node, self.features, None)
        self.batches, self.online = build_online(
            cfg, self.model, getattr(self, "batches", None), self.fps, meta.features if meta else None,
            self.delta_timestamps, getattr(self.pcfg, "drop_n_last_frames", 0), self.image_transforms,
            dataset_task(getattr(meta, "tasks", None), cfg.env), self.device, make_policy,
            uint8_images=self.uint8_transport)

    def _sample_indices(self, drop_n_last_frames: int) -> list[int]:
        """Frames a training sample may start at: all but the last `drop_n_last_frames` of each
        episode, whose action windows would be mostly padding."""
        indices, start = [], 0
        for length in self.dataset.episode_lengths:
            indices.extend(range(start, start + max(length - drop_n_last_frames, 0)))
            start += length
        return indices

    def _check_env_provides_inputs(self, cfg: DictConfig) -> None:
        check_env_matches_dataset(cfg.env, self.features, self.meta.fps if hasattr(self, "meta") else None)

    # ------------------------------------------------------------------ loop hooks
    def resolved_config(self, cfg: DictConfig) -> DictConfig:
        """The config as trained: the features the policy was built with are written in."""
        out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        feats = features_to_config(self.features)
        out.policy.input_features = {k: v for k, v in feats.items() if v["type"] != "ACTION"}
        out.policy.output_features = {k: v for k, v in feats.items() if v["type"] == "ACTION"}
        return out

    def derived_params(self, cfg: DictConfig) -> dict:
        return {
            "dataset_root": str(self.meta.root) if hasattr(self, "meta") else None,
            "dataset_frames": len(self.dataset) if hasattr(self, "dataset") else None,
            "dataset_episodes": self.dataset.num_episodes if hasattr(self, "dataset") else None,
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "num_trainable_params": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "device": str(self.device),
        }

    def optim_params(self):
        return self.model.get_optim_params()

    def samples_per_step(self, loop) -> int:
        return self.cfg.batch_size * loop.gradient_accumulation_steps

    def to_device(self, batch: dict) -> dict:
        """Non-blocking copies (the loader pins memory on CUDA); uint8 frames become float, and are
        augmented, on the device (machine.uint8_transport, data/device_images.py)."""
        return self._device_images(batch, self.device)

    def warm_started(self, step: int) -> None:
        """Nothing to do: a warm start (load_dir=...) keeps the data position of the new run, whose
        dataset may be another one, and no schedule of the policy depends on the step."""

    def loss(self, model: torch.nn.Module, batch: dict):
        """`model` is the policy, or its DistributedDataParallel wrapper when training on several ranks."""
        return model(batch)

    def evaluate(self, run_dir: Path, step: int, out_dir: Path | None = None) -> tuple[dict, list[Path]]:
        """Rollouts in the env; videos and eval_info.json go to `out_dir` (default
        `<run_dir>/eval/step_<N>`, where eval.py gives its own)."""
        from envs.evaluate import evaluate_policy

        self.model.eval()
        ev = self.cfg.eval
        eval_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval" / f"step_{step:06d}"
        result = evaluate_policy(self.model, self.cfg.env, n_episodes=ev.n_episodes, batch_size=ev.batch_size,
                                 use_async=ev.use_async_envs, seed=self.cfg.machine.seed, device=self.device,
                                 videos_dir=eval_dir, max_videos=ev.max_videos,
                                 progress=self.cfg.progress_bar and sys.stderr.isatty(), cuda_graphs=ev.cuda_graphs,
                                 amp_dtype=acting_dtype(self.cfg))
        eval_dir.mkdir(parents=True, exist_ok=True)
        (eval_dir / "eval_info.json").write_text(json.dumps(result["per_episode"], indent=1, default=float))
        metrics = {k: float(v) for k, v in result["aggregated"].items() if isinstance(v, (int, float))}
        return metrics, [*map(Path, result["videos"]), eval_dir / "eval_info.json"]

    def viewer_rollout(self, episode: int):
        """Evaluation's episode `episode` (env seed machine.seed + episode), recorded for view.py to replay
        (viewer/rollout.py); the env must be one viser can draw (`viewer.rollout.check_replayable`)."""
        from viewer.rollout import record_rollout

        return record_rollout(self.model, self.cfg.env, episode, self.cfg.machine.seed, self.device,
                              acting_dtype(self.cfg))
