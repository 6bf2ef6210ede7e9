"""Vectorised gym environments built from an ``EnvConfig``.

This module imports no torch: async env workers are started with ``spawn`` and import it to
unpickle ``_make_single_env``, so keeping it light keeps the worker start cheap.
"""

from __future__ import annotations

import ctypes.util
import dataclasses
import functools
import importlib
import importlib.util
import logging
import os
import sys
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from envs.configs import EnvConfig, as_env_config
from envs.grouped_async import GroupedAsyncVectorEnv

# NEXT_STEP (gymnasium's default, named so it cannot change under us): the step that ends an
# episode returns that episode's own reward, terminated/truncated and info directly (no
# ``final_info`` indirection); the env's next step() is a reset whose action is ignored.
AUTORESET_MODE = AutoresetMode.NEXT_STEP


# gym-<type> packages whose registration we replace with an adapter module of ours (imported right
# after the package): gym-xarm 0.1.1 calls gymnasium 0.29's renderer API (envs/xarm_compat.py).
COMPAT_MODULES = {"xarm": "envs.xarm_compat"}
# The pip extra that brings each simulator (pyproject.toml); gym-xarm is installed with --no-deps.
INSTALL_HINTS = {
    "aloha": 'pip install -e ".[aloha]"',
    "xarm": 'pip install -e ".[xarm]" && pip install --no-deps "gym-xarm==0.1.1"',
}


def default_mujoco_gl() -> str:
    """MuJoCo's headless backend when ``MUJOCO_GL`` is unset: EGL where libEGL is found (GPU, or
    Mesa's llvmpipe on CPU-only machines), else OSMesa. Must be set before mujoco/dm_control import."""
    if ctypes.util.find_library("EGL"):
        return "egl"
    if ctypes.util.find_library("OSMesa"):
        return "osmesa"
    return "egl"


def preload_triton() -> None:
    """Loads triton's native library before a software GL does, in processes that use torch.

    Mesa's llvmpipe (EGL or OSMesa without a GPU) brings its own LLVM; triton's ``libtriton``
    (imported by ``torch._dynamo``, e.g. when the first optimizer is built) loaded into the same
    process afterwards segfaults. Loaded first, both work (measured: render then ``import
    torch._dynamo`` crashes; ``libtriton`` then render then ``torch._dynamo`` runs).
    """
    if "torch" in sys.modules and importlib.util.find_spec("triton") is not None:
        try:
            importlib.import_module("triton._C.libtriton")
        except Exception:  # a broken triton is torch's business, not the renderer's
            pass


def ensure_mujoco_gl() -> str:
    """Sets ``MUJOCO_GL`` (and PyOpenGL's ``PYOPENGL_PLATFORM``) if unset; returns the backend.
    Also preloads triton (``preload_triton``) so a later ``torch._dynamo`` import cannot crash."""
    preload_triton()
    backend = os.environ.setdefault("MUJOCO_GL", default_mujoco_gl())
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def import_env_package(env_type: str) -> None:
    """Imports ``gym_<type>``, whose import registers its environments with gymnasium (and our
    adapter for it, if any). MuJoCo simulators get a headless ``MUJOCO_GL`` default first."""
    if env_type != "pusht":
        ensure_mujoco_gl()
    try:
        importlib.import_module(f"gym_{env_type}")
    except ModuleNotFoundError as err:
        if err.name != f"gym_{env_type}":
            raise
        hint = INSTALL_HINTS.get(env_type, f"pip install gym-{env_type}")
        raise ModuleNotFoundError(f"env type {env_type!r} needs the gym-{env_type} package: {hint}") from err
    if env_type in COMPAT_MODULES:
        importlib.import_module(COMPAT_MODULES[env_type])


# Drop-in classes of ours for an upstream env's entry point, with the same physics, rewards, spaces
# and bit-identical observations, only faster (envs/pusht_pixels.py). make_gym_env builds them from
# a copy of the registered spec, leaving gymnasium's registry as the package left it.
FASTER_ENTRY_POINTS = {"gym_pusht.envs:PushTEnv": "envs.pusht_pixels:PushTEnv"}


def make_gym_env(gym_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make(gym_id, **kwargs)``, with ``FASTER_ENTRY_POINTS`` in place of upstream classes."""
    spec = gym.spec(gym_id)
    faster = FASTER_ENTRY_POINTS.get(spec.entry_point) if isinstance(spec.entry_point, str) else None
    return gym.make(dataclasses.replace(spec, entry_point=faster) if faster else spec, **kwargs)


log = logging.getLogger(__name__)


def _physics_error_types() -> tuple[type[BaseException], ...]:
    """The loaded simulators' "physics diverged" errors: dm_control's PhysicsError (gym-aloha)."""
    control = sys.modules.get("dm_control.rl.control")
    return (control.PhysicsError,) if control is not None else ()


class EndOnUnstablePhysics(gym.Wrapper):
    """Ends an episode as a failure when the simulator's physics diverges under the policy's actions.

    Why: dm_control (under gym-aloha) raises PhysicsError when actions drive MuJoCo's state to NaN or
    Inf (mjWARN_BADQACC), as an untrained or diverged policy's can. One such episode would otherwise
    abort a whole evaluation or online run. The episode ends with its last good observation, reward 0,
    ``is_success`` False and the error in ``info["physics_error"]``; a warning names it. The next
    reset starts the simulator afresh.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._last_observation: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observation, info = self.env.reset(seed=seed, options=options)
        self._last_observation = observation
        return observation, info

    def step(self, action):
        try:
            observation, reward, terminated, truncated, info = self.env.step(action)
        except Exception as e:
            if not isinstance(e, _physics_error_types()):
                raise
            log.warning("an episode ended as a failure: the simulator's physics diverged under the policy's "
                        "actions (%s)", str(e).strip())
            return self._last_observation, 0.0, True, False, {"is_success": False, "physics_error": str(e)}
        self._last_observation = observation
        return observation, reward, terminated, truncated, info


class HoldFinished(gym.Wrapper):
    """An env that, once its episode has ended, is neither stepped nor reset until a reset that
    names a seed or options: the vector env's autoreset (an argument-less ``reset()``) and every
    later ``step()`` return the ended episode's last observation, reward 0, the ending flags and an
    empty info, without calling the env.

    Why: an evaluator runs one episode per env and a batch lasts as long as its longest episode; a
    plain vector env keeps resetting and stepping the envs that finished early (under ``NEXT_STEP``
    the step after the end is a reset into a new, unseeded episode, then that episode is stepped),
    work whose results are all thrown away. Gymnasium has no per-env step in a vector env, nor an
    autoreset mode that leaves a finished env alone (``DISABLED`` asserts it is not stepped), so the
    hold is this wrapper, around each env, inside the worker for async envs.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._held: tuple[Any, bool, bool] | None = None  # last observation, terminated, truncated

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self._held is not None and seed is None and options is None:
            return self._held[0], {}
        self._held = None
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        if self._held is not None:
            observation, terminated, truncated = self._held
            return observation, 0.0, terminated, truncated, {}
        observation, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            self._held = (observation, bool(terminated), bool(truncated))
        return observation, reward, terminated, truncated, info


def _make_single_env(env_type: str, gym_id: str, kwargs: dict[str, Any], hold_finished: bool = False) -> gym.Env:
    """Module-level so that a ``spawn``-ed worker can unpickle it and register the env itself.

    The env checker is off: it only warns (e.g. PushT's agent leaving its declared box), once per
    worker, about things the features check in ``make_env`` covers.
    """
    import_env_package(env_type)
    env = EndOnUnstablePhysics(make_gym_env(gym_id, disable_env_checker=True, **kwargs))
    return HoldFinished(env) if hold_finished else env


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


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: a container's or SLURM's
    allocation, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def make_env(cfg: Any, n_envs: int, use_async: bool = False, hold_finished: bool = False) -> VectorEnv:
    """``n_envs`` copies of the configured env in one vector env (autoreset mode ``NEXT_STEP``).

    ``use_async`` steps them in ``min(n_envs, usable_cores())`` worker processes, each stepping a
    contiguous group of envs (``envs.grouped_async``: one process per core rather than per env, since
    the round trip to each process costs more than a PushT step), started with ``spawn``: the parent
    may hold CUDA state and torch's thread pools, which ``fork`` would copy into the children
    half-alive. The price is one fresh interpreter per worker (about a second, in parallel); a script
    that evaluates with async envs must guard its entry point with ``if __name__ == "__main__"``.
    ``hold_finished`` wraps each env in ``HoldFinished`` (an ended episode is not stepped again).
    """
    cfg = as_env_config(cfg)
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    import_env_package(cfg.type)
    env_fn = functools.partial(_make_single_env, cfg.type, cfg.gym_id, cfg.make_kwargs, hold_finished)
    if use_async:
        env = GroupedAsyncVectorEnv([env_fn] * n_envs, workers=usable_cores())
    else:
        env = SyncVectorEnv([env_fn] * n_envs, autoreset_mode=AUTORESET_MODE)
    try:
        check_env_features(cfg, env)
    except Exception:
        env.close()
        raise
    return env


def render_envs(env: VectorEnv, indices: list[int]) -> list[np.ndarray]:
    """Frames of the envs at ``indices``, rendered by those envs only (sync envs, and our async envs'
    ``render_only``); another vector env renders all of its envs and the rest are dropped. Nothing is
    rendered when no frame is wanted (no video recorded, or the recorded episodes have ended)."""
    if not indices:
        return []
    if isinstance(env, SyncVectorEnv):
        return [env.envs[i].render() for i in indices]
    if isinstance(env, GroupedAsyncVectorEnv):
        return env.render_only(indices)
    frames = env.render()
    return [frames[i] for i in indices]
