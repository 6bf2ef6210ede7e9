"""Vectorised gym environments built from an ``EnvConfig``.

This module imports no torch: ``AsyncVectorEnv`` workers are started with ``spawn`` and import it
to unpickle ``_make_single_env``, so keeping it light keeps the worker start cheap.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from envs.configs import EnvConfig, as_env_config

# NEXT_STEP (gymnasium's default, named so it cannot change under us): the step that ends an
# episode returns that episode's own reward, terminated/truncated and info directly (no
# ``final_info`` indirection); the env's next step() is a reset whose action is ignored.
AUTORESET_MODE = AutoresetMode.NEXT_STEP


def import_env_package(env_type: str) -> None:
    """Imports ``gym_<type>``, whose import registers its environments with gymnasium."""
    try:
        importlib.import_module(f"gym_{env_type}")
    except ModuleNotFoundError as err:
        if err.name != f"gym_{env_type}":
            raise
        raise ModuleNotFoundError(
            f"env type {env_type!r} needs the gym-{env_type} package: pip install gym-{env_type}"
        ) from err


def _make_single_env(env_type: str, gym_id: str, kwargs: dict[str, Any]) -> gym.Env:
    """Module-level so that a ``spawn``-ed worker can unpickle it and register the env itself.

    The env checker is off: it only warns (e.g. PushT's agent leaving its declared box), once per
    worker, about things the features check in ``make_env`` covers.
    """
    import_env_package(env_type)
    return gym.make(gym_id, disable_env_checker=True, **kwargs)


def flatten_space(space: gym.Space, prefix: str = "") -> dict[str, gym.Space]:
    """``Dict`` spaces flattened to ``{"a/b": leaf}``, the key scheme of ``EnvConfig.features``."""
    if not isinstance(space, gym.spaces.Dict):
        return {prefix: space}
    flat: dict[str, gym.Space] = {}
    for key, sub in space.spaces.items():
        flat.update(flatten_space(sub, f"{prefix}/{key}" if prefix else key))
    return flat


def check_env_features(cfg: EnvConfig, env: VectorEnv) -> None:
    """Fails when the env's spaces differ from ``cfg.features``: a config that describes 384x384
    images while the env emits 96x96 ones would otherwise surface as a shape error in the policy."""
    if not isinstance(env.single_observation_space, gym.spaces.Dict):
        raise ValueError(
            f"obs_type {cfg.obs_type!r} gives a bare array; the evaluator needs a dict observation"
        )
    emitted = {key: tuple(space.shape) for key, space in flatten_space(env.single_observation_space).items()}
    emitted.update(
        {key: tuple(env.single_action_space.shape) for key, f in cfg.features.items() if f.type == "ACTION"}
    )
    described = {key: tuple(feature.shape) for key, feature in cfg.features.items()}
    if emitted != described:
        raise ValueError(f"{cfg.gym_id} emits {emitted} but the env config describes {described}")


def make_env(cfg: Any, n_envs: int, use_async: bool = False) -> VectorEnv:
    """``n_envs`` copies of the configured env in one vector env (autoreset mode ``NEXT_STEP``).

    ``use_async`` runs each copy in its own process, started with ``spawn``: the parent may hold
    CUDA state and torch's thread pools, which ``fork`` would copy into the children half-alive.
    The price is one fresh interpreter per env (about a second, in parallel); a script that
    evaluates with async envs must guard its entry point with ``if __name__ == "__main__"``.
    """
    cfg = as_env_config(cfg)
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    import_env_package(cfg.type)
    env_fn = functools.partial(_make_single_env, cfg.type, cfg.gym_id, cfg.make_kwargs)
    if use_async:
        env = AsyncVectorEnv([env_fn] * n_envs, context="spawn", autoreset_mode=AUTORESET_MODE)
    else:
        env = SyncVectorEnv([env_fn] * n_envs, autoreset_mode=AUTORESET_MODE)
    try:
        check_env_features(cfg, env)
    except Exception:
        env.close()
        raise
    return env


def render_envs(env: VectorEnv, indices: list[int]) -> list[np.ndarray]:
    """Frames of the envs at ``indices``; a sync env renders only those, an async one renders all
    (gymnasium has no per-worker call) and the rest are dropped."""
    if isinstance(env, SyncVectorEnv):
        return [env.envs[i].render() for i in indices]
    frames = env.render()
    return [frames[i] for i in indices]
