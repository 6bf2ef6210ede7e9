"""Scripted demonstrations recorded into a LeRobotDataset: what the policies train on when no
dataset hub is reachable, and what `dataset=pusht` builds on its first run.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.lerobot_dataset import DatasetError
from data.lerobot_writer import LeRobotDatasetWriter

log = logging.getLogger(__name__)

PUSHT_TASK = "Push the T-shaped block onto the T-shaped target."


def home() -> Path:
    """The project's cache ($HYDRABOT_HOME, default ~/.cache/hydrabot)."""
    return Path(os.environ.get("HYDRABOT_HOME", "~/.cache/hydrabot")).expanduser()


def dataset_root(dataset_cfg) -> Path:
    return Path(dataset_cfg.root).expanduser() if dataset_cfg.root else home() / "datasets" / dataset_cfg.repo_id


def ensure_dataset(dataset_cfg) -> Path:
    """The dataset's root, recording it first when it is absent and the config says how."""
    root = dataset_root(dataset_cfg)
    if (root / "meta" / "info.json").is_file():
        return root
    if dataset_cfg.demos is None:
        raise DatasetError(
            f"no LeRobotDataset at {root} (meta/info.json missing) and no hub can be reached here; put a local copy "
            f"of {dataset_cfg.repo_id} there (dataset.root=<path>) or record scripted demos (dataset=pusht)")
    if root.exists() and any(root.iterdir()):
        raise DatasetError(f"{root} exists but holds no meta/info.json; it is not a LeRobotDataset. Remove it, "
                           "or point dataset.root at a dataset")
    record(root, dataset_cfg.demos)
    return root


def record(root: Path, demos_cfg) -> Path:
    if demos_cfg.expert != "pusht":
        raise DatasetError(f"dataset.demos.expert={demos_cfg.expert!r} has no scripted expert; available: pusht")
    return record_pusht(root, n_episodes=demos_cfg.n_episodes, seed=demos_cfg.seed,
                        keep_failed=demos_cfg.keep_failed, use_videos=demos_cfg.use_videos)


def pusht_features(use_videos: bool, image_size: int = 96) -> dict:
    return {
        "observation.image": {"dtype": "video" if use_videos else "image", "shape": [image_size, image_size, 3],
                              "names": ["height", "width", "channel"]},
        "observation.state": {"dtype": "float32", "shape": [2], "names": {"motors": ["x", "y"]}},
        "action": {"dtype": "float32", "shape": [2], "names": {"motors": ["x", "y"]}},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
    }


def record_pusht(root: Path, n_episodes: int, seed: int = 0, keep_failed: bool = False, use_videos: bool = True,
                 max_attempts_factor: int = 3, progress: bool = True) -> Path:
    """Runs the scripted PushT expert until `n_episodes` are kept (only successes unless
    `keep_failed`), seeds `seed, seed+1, ...`, and writes them as one LeRobotDataset at `root`."""
    import gymnasium as gym
    import gym_pusht  # noqa: F401  (registers the env)

    from envs.pusht_expert import PushTExpert

    env = gym.make("gym_pusht/PushT-v0", obs_type="pixels_agent_pos", max_episode_steps=300)
    writer = LeRobotDatasetWriter(root, fps=env.metadata.get("render_fps", 10), features=pusht_features(use_videos),
                                  robot_type="2d pointer", use_videos=use_videos)
    expert = PushTExpert()
    kept, attempts = 0, 0
    bar = tqdm(total=n_episodes, desc=f"recording PushT demos into {root}", unit="episode", disable=not progress)
    try:
        while kept < n_episodes:
            if attempts >= max_attempts_factor * n_episodes:
                raise DatasetError(f"the PushT expert succeeded in only {kept} of {attempts} episodes; "
                                   "set dataset.demos.keep_failed=true or lower dataset.demos.n_episodes")
            obs, _ = env.reset(seed=seed + attempts)
            attempts += 1
            expert.reset()
            success = False
            for _ in range(300):
                action = expert.act(env.unwrapped)
                next_obs, reward, terminated, truncated, info = env.step(action)
                success = bool(info.get("is_success", terminated))
                writer.add_frame({
                    "observation.image": obs["pixels"],
                    "observation.state": np.asarray(obs["agent_pos"], dtype=np.float32),
                    "action": np.asarray(action, dtype=np.float32),
                    "next.reward": np.float32(reward),
                    "next.done": bool(terminated or truncated),
                    "next.success": success,
                })
                obs = next_obs
                if terminated or truncated:
                    break
            if success or keep_failed:
                writer.save_episode(task=PUSHT_TASK)
                kept += 1
                bar.update(1)
            else:
                writer.discard_episode()
        writer.finalize()
    except BaseException:
        shutil.rmtree(getattr(writer, "tmp_root", root.with_name(root.name + ".tmp")), ignore_errors=True)
        raise
    finally:
        bar.close()
        env.close()
    log.info("recorded %d PushT episodes (%d attempts) into %s", kept, attempts, root)
    return root
