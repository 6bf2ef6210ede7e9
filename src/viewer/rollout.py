"""One evaluation episode of a policy, recorded for `view.py` to replay: the simulator's state at every
step and the action chunk the policy was executing.

The episode is evaluation's episode `i` (envs/evaluate.py seeds episode `i` with `machine.seed + i`), run
alone in a one-env vector env, so the replay shows what `eval.py`'s video `eval_episode_<i>.mp4` shows. Its
own loop rather than `evaluate_policy`'s: a replay needs the env's `info` (where the simulator's bodies
are) and the policy's plan at each step, which evaluation has no reason to keep.

Which simulators can be replayed: `SCENES` (env.type -> what viser draws). A policy tells its plan through
`action_plan()` (models/common/queues.py: `PlansActionChunks`); one without it is replayed without a chunk.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import torch

from config.errors import ConfigError

log = logging.getLogger("train")

# env.type -> the info keys its scene draws from (gym-pusht's `_get_info`: agent position, block pose
# x, y, angle, goal pose x, y, angle, in the simulator's pixels and radians)
SCENES = {"pusht": ("pos_agent", "block_pose", "goal_pose")}
# Why the MuJoCo simulators are not replayed: their scenes are meshes posed by forward kinematics
WHY_NOT = {
    "aloha": "ALOHA's scene is MuJoCo meshes of two arms posed by forward kinematics, and its action chunks are "
             "joint angles with no point in space to draw without that kinematics",
    "xarm": "xArm's scene is MuJoCo meshes of an arm posed by forward kinematics, which viser does not compute",
}


def check_replayable(env_type: str, ckpt) -> None:
    """One line for a policy whose simulator has no replay here, naming what is supported and what to use."""
    if env_type in SCENES:
        return
    why = WHY_NOT.get(env_type, f"env.type={env_type} has no scene description for viser")
    raise ConfigError(f"view.py replays rollouts of env={', env='.join(SCENES)} only, and {ckpt} holds a policy for "
                      f"env={env_type}: {why}; watch its rollouts with src/eval.py checkpoint={ckpt}, which saves "
                      "their videos")


@dataclass
class Rollout:
    """An episode of `length` steps: states at times 0..length (after the reset, then after each step),
    and for each step t < length the action taken and the chunk it came from."""

    episode: int
    seed: int
    fps: float
    states: dict[str, np.ndarray]  # info key -> (length + 1, ...)
    actions: np.ndarray  # (length, action_dim)
    chunks: list[np.ndarray | None]  # per step: the planned chunk (n, action_dim) step t took an action of
    chunk_index: np.ndarray  # (length,) which action of its chunk step t took (-1: no chunk)
    rewards: np.ndarray  # (length,)
    success: bool

    @property
    def length(self) -> int:
        return len(self.actions)

    def planned_at(self, t: int) -> int:
        """The step whose observation the chunk of step t was planned from."""
        return t - int(self.chunk_index[t])


def _info_state(info: dict, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    missing = [k for k in keys if k not in info]
    if missing:
        raise ValueError(f"the env's info has no {missing} (got {sorted(info)}); the replay draws the scene from them")
    return {k: np.asarray(info[k], dtype=np.float64)[0] for k in keys}


def record_rollout(policy, env_cfg, episode: int, seed: int, device: torch.device,
                   amp_dtype: torch.dtype | None = None) -> Rollout:
    """Runs evaluation's episode `episode` (env seed `seed + episode`) of `policy` and records it; the policy
    acts under autocast to `amp_dtype` when given, as in evaluation (a run's use_amp)."""
    from envs.configs import as_env_config
    from envs.evaluate import TASK_KEY, task_description
    from envs.factory import make_env
    from envs.observation import preprocess_observation

    cfg = as_env_config(env_cfg)
    keys = SCENES[cfg.type]
    log.info("view: running evaluation episode %d (env seed %d, at most %d steps)", episode, seed + episode,
             cfg.episode_length)
    env = make_env(cfg, 1)
    plans = getattr(policy, "action_plan", None)
    states, actions, chunks, index, rewards, success = [], [], [], [], [], False
    was_training = policy.training
    policy.eval()
    try:
        obs, info = env.reset(seed=[seed + episode])
        policy.reset()
        states.append(_info_state(info, keys))
        while len(actions) < cfg.episode_length:
            batch = {k: v.to(device) for k, v in preprocess_observation(obs, cfg.features_map).items()}
            batch[TASK_KEY] = [task_description(cfg)]
            amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
            with torch.inference_mode(), amp:
                action = policy.select_action(batch)
            plan = plans() if plans is not None else None
            action = action.float().cpu().numpy()
            actions.append(action[0])
            if plan is None:
                chunks.append(None)
                index.append(-1)
            else:
                chunk, taken = plan
                chunks.append(chunk[0].float().cpu().numpy())
                index.append(taken - 1)  # select_action has just taken this one from the queue
            obs, reward, terminated, truncated, info = env.step(action)
            rewards.append(float(reward[0]))
            states.append(_info_state(info, keys))
            success = bool(np.asarray(info.get("is_success", [False]))[0])
            if terminated[0] or truncated[0]:
                break
    finally:
        env.close()
        policy.train(was_training)
    return Rollout(episode, seed + episode, float(cfg.fps),
                   {k: np.stack([s[k] for s in states]) for k in keys}, np.stack(actions), chunks,
                   np.asarray(index, dtype=np.int64), np.asarray(rewards), success)
