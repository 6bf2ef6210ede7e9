"""Policy evaluation by rollouts in vectorised gym environments.

Episodes run in batches of ``batch_size`` envs; episode ``i`` is reset with seed ``seed + i``, so
a per-episode result can be replayed alone. Every statistic is masked to the steps up to and
including the one that ended the episode. An env whose episode has ended is held
(``envs.factory.HoldFinished``): neither stepped nor autoreset until the next batch's seeded reset,
so the tail of a batch costs only the envs still running. The policy still gets the whole batch
every step (the ended envs' rows hold their last observation and their actions are dropped): a
policy's rows do not depend on each other, but its random draws depend on the batch's shape (a
diffusion policy's noise), so shrinking the batch would change the episodes still running.

An episode also ends at the config's ``episode_length`` whatever the env reports: gym.make's
``TimeLimit`` truncates there too, but an env that ignores it (or a ``gym_kwargs`` that drops it)
must not make evaluation hang. Such episodes are marked ``capped``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from envs.configs import EnvConfig, as_env_config
from envs.episodes import EpisodeRecorder
from envs.factory import make_env, render_envs
from envs.observation import preprocess_observation
from envs.video import write_video

log = logging.getLogger(__name__)


def _info_at(info: dict[str, Any], key: str, n_envs: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A vector env's info ``key`` and its ``_key`` mask (which envs reported it), or None."""
    if key not in info:
        return None
    return np.asarray(info[key]), np.asarray(info.get(f"_{key}", np.ones(n_envs, dtype=bool)), dtype=bool)


TASK_KEY = "task"


def task_description(cfg: EnvConfig) -> str:
    """What the env tells a language-conditioned policy to do (`env.task_description`, else the task text
    of the scripted demonstrations recorded in this env and task, as the dataset's tasks hold it)."""
    if cfg.task_description is not None:
        return cfg.task_description
    from data.demos import MUJOCO_EXPERTS, PUSHT_TASK

    recorded = {(expert[0], expert[1]): expert[5] for expert in MUJOCO_EXPERTS.values()}
    recorded[("pusht", "PushT-v0")] = PUSHT_TASK
    return recorded.get((cfg.type, cfg.task), "")


def _rollout(
    env,
    policy,
    cfg: EnvConfig,
    seeds: list[int],
    device: torch.device,
    record: list[int],
    progress_bar: tqdm,
    running: dict[str, int],
    recorder: EpisodeRecorder | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[list[dict[str, Any]], dict[int, list[np.ndarray]]]:
    """One batch of episodes, one per env, each at most ``cfg.episode_length`` steps; returns
    per-episode stats and the frames of ``record``; ``recorder`` keeps every step's data. The policy
    acts under autocast to ``amp_dtype`` when one is given."""
    n_envs = env.num_envs
    task = task_description(cfg)
    obs, _ = env.reset(seed=seeds)
    policy.reset()
    if recorder is not None:
        recorder.observe(obs, np.ones(n_envs, dtype=bool))
    done = np.zeros(n_envs, dtype=bool)
    capped = np.zeros(n_envs, dtype=bool)
    diverged = np.zeros(n_envs, dtype=bool)  # ended by envs.factory.EndOnUnstablePhysics
    length = np.zeros(n_envs, dtype=np.int64)
    sum_reward = np.zeros(n_envs)
    max_reward = np.full(n_envs, -np.inf)
    success = np.zeros(n_envs, dtype=bool)
    max_coverage = np.full(n_envs, np.nan)
    frames = {i: [frame] for i, frame in zip(record, render_envs(env, record))}

    while not done.all():
        batch = preprocess_observation(obs, cfg.features_map, device)
        batch[TASK_KEY] = [task] * n_envs
        amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), amp:
            action = policy.select_action(batch)
        if action.dtype in (torch.bfloat16, torch.float16):  # a policy's last op run in the autocast dtype
            action = action.float()
        action = action.to("cpu").numpy()
        if action.shape != (n_envs, *env.single_action_space.shape):
            raise ValueError(f"policy returned actions of shape {action.shape} for {n_envs} envs")
        obs, reward, terminated, truncated, info = env.step(action)

        live = ~done
        length[live] += 1
        sum_reward[live] += reward[live]
        max_reward[live] = np.maximum(max_reward[live], reward[live])
        reported = _info_at(info, "is_success", n_envs)
        if reported is not None:
            value, mask = reported
            success[live & mask] = value[live & mask].astype(bool)
        reported = _info_at(info, "physics_error", n_envs)
        if reported is not None:
            diverged |= live & reported[1]
        reported = _info_at(info, "coverage", n_envs)
        if reported is not None:
            value, mask = reported
            max_coverage[live & mask] = np.fmax(max_coverage[live & mask], value[live & mask])
        live_recorded = [i for i in record if live[i]]
        for i, frame in zip(live_recorded, render_envs(env, live_recorded)):
            frames[i].append(frame)

        by_env = live & (terminated | truncated)
        at_cap = live & ~by_env & (length >= cfg.episode_length)
        capped |= at_cap
        ended = by_env | at_cap
        if recorder is not None:
            recorder.step(action, reward, ended, success, live)
            recorder.observe(obs, live)
        done |= ended
        running["done"] += int(ended.sum())
        running["success"] += int((ended & success).sum())
        progress_bar.update(1)
        progress_bar.set_postfix(success=f"{running['success']}/{running['done']}", refresh=False)

    episodes = []
    for i, episode_seed in enumerate(seeds):
        episode = {
            "seed": episode_seed,
            "sum_reward": float(sum_reward[i]),
            "max_reward": float(max_reward[i]),
            "success": bool(success[i]),
            "length": int(length[i]),
            "capped": bool(capped[i]),
            "diverged": bool(diverged[i]),
        }
        if not np.isnan(max_coverage[i]):
            episode["max_coverage"] = float(max_coverage[i])
        episodes.append(episode)
    return episodes, frames


def evaluate_policy(
    policy,
    env_cfg: Any,
    n_episodes: int,
    batch_size: int,
    use_async: bool,
    seed: int,
    device: str | torch.device,
    videos_dir: str | Path | None,
    max_videos: int = 1,
    progress: bool = True,
    keep_frames: Mapping[str, str] | None = None,
    cuda_graphs: bool | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Runs ``n_episodes`` episodes of ``policy`` and returns aggregated and per-episode metrics.

    ``policy`` needs ``reset()`` (called at each batch start) and ``select_action(obs) -> (B,
    action_dim)``, where ``obs`` also holds ``task``: the env's task_description, once per env; an ``nn.Module`` is put in eval mode for the rollouts and its training mode
    restored afterwards. Success is the env's ``is_success`` at the step that ended the episode.
    The first ``max_videos`` episodes are rendered (at the env's visualization size, one frame at
    reset and one per step) into ``videos_dir/eval_episode_<i>.mp4``. ``keep_frames`` (dataset key
    -> dtype) also returns every episode's frames under ``"episode_frames"`` (``envs.episodes``).
    ``cuda_graphs`` (True, or None: on for CUDA) replays the planning of a policy that offers it
    (``use_cuda_graphs``) from CUDA graphs during these rollouts. ``amp_dtype`` (a run's ``use_amp``:
    ``torch.bfloat16`` or ``torch.float16``) runs the policy under autocast, as LeRobot evaluates a
    policy with ``use_amp``.
    """
    if n_episodes < 1 or batch_size < 1:
        raise ValueError(f"n_episodes and batch_size must be >= 1, got {n_episodes} and {batch_size}")
    cfg = as_env_config(env_cfg)
    device = torch.device(device)
    n_videos = min(max_videos, n_episodes) if videos_dir is not None else 0
    start = time.perf_counter()

    was_training = getattr(policy, "training", None)
    if was_training is not None:
        policy.eval()
    graphs_toggle = getattr(policy, "use_cuda_graphs", None)
    graphs_before = None
    if graphs_toggle is not None:
        graphs_before = graphs_toggle(device.type == "cuda" if cuda_graphs is None else cuda_graphs)
    per_episode: list[dict[str, Any]] = []
    episode_frames: list[dict[str, np.ndarray]] = []
    videos: list[str] = []
    running = {"done": 0, "success": 0}
    env = None
    n_batches = math.ceil(n_episodes / batch_size)
    try:
        for batch_index in range(n_batches):
            first = batch_index * batch_size
            n_envs = min(batch_size, n_episodes - first)
            if env is None or env.num_envs != n_envs:
                if env is not None:
                    env.close()
                env = make_env(cfg, n_envs, use_async, hold_finished=True)
            seeds = [seed + first + i for i in range(n_envs)]
            record = [i for i in range(n_envs) if first + i < n_videos]
            with tqdm(
                total=cfg.episode_length,
                desc=f"eval batch {batch_index + 1}/{n_batches}",
                disable=not progress,
                leave=False,
            ) as bar:
                recorder = EpisodeRecorder(n_envs, cfg.features_map, keep_frames) if keep_frames else None
                episodes, frames = _rollout(env, policy, cfg, seeds, device, record, bar, running, recorder,
                                            amp_dtype)
            if recorder is not None:
                episode_frames.extend(recorder.episodes())
            for i, episode in enumerate(episodes):
                episode["episode_index"] = first + i
                if i in frames:
                    path = write_video(Path(videos_dir) / f"eval_episode_{first + i}.mp4", frames[i], cfg.fps)
                    episode["video"] = str(path)
                    videos.append(str(path))
            per_episode.extend(episodes)
    finally:
        if env is not None:
            env.close()
        if was_training:
            policy.train()
        if graphs_before is not None:
            graphs_toggle(graphs_before)

    aggregated: dict[str, Any] = {
        "avg_sum_reward": float(np.mean([e["sum_reward"] for e in per_episode])),
        "avg_max_reward": float(np.mean([e["max_reward"] for e in per_episode])),
        "pc_success": 100.0 * float(np.mean([e["success"] for e in per_episode])),
    }
    coverages = [e["max_coverage"] for e in per_episode if "max_coverage" in e]
    if coverages:
        aggregated["avg_max_coverage"] = float(np.mean(coverages))
    n_capped = sum(e["capped"] for e in per_episode)
    if n_capped:
        aggregated["n_capped"] = n_capped
        log.warning("%d of %d eval episodes reached env.episode_length=%d without the env ending them (no "
                    "terminated or truncated); they were ended there", n_capped, n_episodes, cfg.episode_length)
    n_diverged = sum(e["diverged"] for e in per_episode)
    if n_diverged:
        aggregated["n_diverged"] = n_diverged
        log.warning("%d of %d eval episodes ended early because the simulator's physics diverged under the "
                    "policy's actions; they count as failures", n_diverged, n_episodes)
    aggregated["n_episodes"] = n_episodes
    aggregated["eval_s"] = time.perf_counter() - start
    result = {"aggregated": aggregated, "per_episode": per_episode, "videos": videos}
    if keep_frames:
        result["episode_frames"] = episode_frames
    return result
