"""Online training (LeRobot's `--online.*`): rollouts of the current policy feed an on-disk buffer that
batches draw from. `build_online` assembles it for a robot pipeline; the loop sees the `OnlinePhase`
hook (`phase.py`) and a batch stream (`mixing.py`); rollouts are `rollouts.py`, the buffer
`data/online_buffer.py`. Nothing here names a policy: a policy class declares `learns_online = True`
to be trained this way, and its config's delta indices and `drop_n_last_frames` shape the buffer's samples.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from config.errors import ConfigError
from data.online_buffer import OnlineBuffer
from envs.configs import as_env_config
from envs.space_stats import dataset_key
from training.data_position import BatchStream
from training.device import acting_dtype
from training.online.mixing import MixedBatches
from training.online.phase import OnlinePhase
from training.online.rollouts import RolloutSettings

# What a step records beside the observations and the action (LeRobot's online layout).
STEP_FEATURES = {"next.reward": {"dtype": "float32", "shape": [1]}, "next.done": {"dtype": "bool", "shape": [1]},
                 "next.success": {"dtype": "bool", "shape": [1]}}


def buffer_features(env_cfg, dataset_features: Mapping[str, Mapping] | None) -> dict[str, dict]:
    """What the buffer stores: every env observation and the action under their dataset keys, and the
    step's reward/done/success; dtypes are the dataset's where it has the key (images are stored as the
    env gives them, uint8 [H, W, C])."""
    cfg = as_env_config(env_cfg)
    dataset_features = dataset_features or {}
    out = {}
    for env_key, ft in cfg.features.items():
        key = dataset_key(cfg, env_key)
        if ft.type == "VISUAL":
            out[key] = {"dtype": "image", "shape": list(ft.shape)}
        else:
            out[key] = {"dtype": str(dataset_features.get(key, {}).get("dtype", "float32")), "shape": list(ft.shape)}
    for key, ft in STEP_FEATURES.items():
        out[key] = {"dtype": str(dataset_features.get(key, ft)["dtype"]), "shape": ft["shape"]}
    return out


def build_online(cfg, model: torch.nn.Module, offline: BatchStream | None, fps: float,
                 dataset_features: Mapping[str, Mapping] | None, delta_timestamps: Mapping[str, list[float]],
                 drop_n_last_frames: int, image_transforms, task: str, device: torch.device,
                 make_policy: Callable[[], torch.nn.Module], uint8_images: bool = False,
                 ) -> tuple[MixedBatches, OnlinePhase]:
    """The batch stream and loop hook of a run with `online.steps > 0`. With `uint8_images` the buffer's
    frames travel as stored, like the offline ones, and `image_transforms` run on the device
    (data/device_images.py), the items tagged with their seeds."""
    online = cfg.online
    if not getattr(type(model), "learns_online", False):
        raise ConfigError(f"online.steps={online.steps}: policy {type(model).__name__} does not declare that it learns "
                          "online (learns_online); set online.steps=0")
    if drop_n_last_frames >= cfg.env.episode_length:
        raise ConfigError(f"policy.drop_n_last_frames={drop_n_last_frames} leaves no frame of an online episode "
                          f"(env.episode_length={cfg.env.episode_length}) to sample; lower it or raise "
                          "env.episode_length")
    delta_indices = {key: [round(t * fps) for t in times] for key, times in delta_timestamps.items()}
    buffer = OnlineBuffer(None, buffer_features(cfg.env, dataset_features), online.buffer_capacity, fps,
                          delta_indices=delta_indices, drop_n_last_frames=drop_n_last_frames,
                          image_transforms=None if uint8_images else image_transforms, task=task,
                          uint8_images=uint8_images)
    batches = MixedBatches(offline, buffer, cfg.batch_size, online.sampling_ratio, seed=cfg.machine.seed,
                           tag_seeds=uint8_images and image_transforms is not None)
    settings = RolloutSettings(env=as_env_config(cfg.env), n_episodes=online.rollout_n_episodes,
                               batch_size=online.rollout_batch_size, use_async_envs=cfg.eval.use_async_envs,
                               cuda_graphs=cfg.eval.cuda_graphs, features=buffer.features,
                               amp_dtype=acting_dtype(cfg))
    env_seed = online.env_seed if online.env_seed is not None else cfg.machine.seed
    phase = OnlinePhase(online, cfg.steps, model, buffer, batches, settings, device, env_seed, make_policy)
    return batches, phase


def dataset_task(tasks: Mapping[int, str] | None, env_cfg) -> str:
    """The task text of online episodes: the dataset's, when it has one task; else what the env tells a
    policy (`envs.evaluate.task_description`), else the env's task name."""
    from envs.evaluate import task_description

    texts = list((tasks or {}).values())
    if len(set(texts)) == 1:
        return texts[0]
    cfg = as_env_config(env_cfg)
    return task_description(cfg) or cfg.task


__all__ = ["OnlinePhase", "MixedBatches", "build_online", "buffer_features", "dataset_task"]
