"""A vector env whose worker processes each step several envs: one process per core, not per env.

Gymnasium's ``AsyncVectorEnv`` runs one env per process, so 50 evaluation envs are 50 processes: every
vector step sends 50 commands, wakes 50 processes on however many cores there are and merges 50
replies, and on a 16-core machine that round trip cost more than the envs' own stepping. Gymnasium has
no worker that hosts several envs (nor do SB3's or envpool's vector envs for arbitrary gym envs), so
this one is written here: ``GroupedAsyncVectorEnv`` splits the envs into contiguous groups, one spawned
worker per group, each stepping its envs in turn. Observations come back through shared memory
(gymnasium's own helpers, as ``AsyncVectorEnv`` does); rewards, flags and the envs' info dicts through
the pipe, merged in env order as a ``SyncVectorEnv`` merges them, so what the caller sees is what a
``SyncVectorEnv`` of the same envs returns. Autoreset is gymnasium's ``NEXT_STEP`` (the project's mode):
the step after an episode's end resets that env and ignores its action.

This module imports no torch: workers are spawned and import it to run ``_worker``.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from copy import deepcopy
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, create_shared_memory, read_from_shared_memory, write_to_shared_memory


def _worker(env_fns: Sequence[Callable[[], gym.Env]], first: int, pipe, parent_pipe, shared_memory, space) -> None:
    """Builds envs ``first .. first + len(env_fns) - 1`` and serves the parent's commands until ``close``."""
    parent_pipe.close()
    envs: list[gym.Env] = []
    try:
        envs = [fn() for fn in env_fns]
        autoreset = [False] * len(envs)
        pipe.send((True, None))
        while True:
            command, data = pipe.recv()
            try:
                if command == "reset":
                    seeds, options = data
                    infos = []
                    for i, env in enumerate(envs):
                        observation, info = env.reset(seed=seeds[i], options=options)
                        write_to_shared_memory(space, first + i, observation, shared_memory)
                        infos.append(info)
                    autoreset = [False] * len(envs)
                    pipe.send((True, infos))
                elif command == "step":
                    out = []
                    for i, (env, action) in enumerate(zip(envs, data)):
                        if autoreset[i]:
                            observation, info = env.reset()
                            reward, terminated, truncated = 0.0, False, False
                        else:
                            observation, reward, terminated, truncated, info = env.step(action)
                        autoreset[i] = bool(terminated or truncated)
                        write_to_shared_memory(space, first + i, observation, shared_memory)
                        out.append((reward, terminated, truncated, info))
                    pipe.send((True, out))
                elif command == "render":
                    pipe.send((True, [env.render() for env in envs]))
                elif command == "close":
                    pipe.send((True, None))
                    break
                else:
                    raise ValueError(f"unknown command {command!r}")
            except Exception as err:  # reported to the parent, which raises it there
                pipe.send((False, (type(err).__name__, str(err), traceback.format_exc())))
    except (KeyboardInterrupt, EOFError):
        pass
    except Exception as err:  # building the envs failed
        pipe.send((False, (type(err).__name__, str(err), traceback.format_exc())))
    finally:
        for env in envs:
            env.close()


class WorkerError(RuntimeError):
    """An env raised inside a worker process; the message carries its type, text and traceback."""


class GroupedAsyncVectorEnv(VectorEnv):
    """``len(env_fns)`` envs in ``workers`` spawned processes (contiguous groups, sizes within one).

    Returns what ``SyncVectorEnv(env_fns, autoreset_mode=NEXT_STEP)`` returns for the same actions and
    seeds: observations (copied out of the shared buffer), rewards, terminated, truncated and infos in
    gymnasium's vectorised form. ``render()`` returns every env's frame.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], workers: int):
        if not env_fns:
            raise ValueError("GroupedAsyncVectorEnv needs at least one env")
        self.num_envs = len(env_fns)
        workers = max(1, min(int(workers), self.num_envs))
        dummy = env_fns[0]()  # the spaces and metadata, as gymnasium's AsyncVectorEnv reads them
        self.metadata = {**dummy.metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}
        self.render_mode = dummy.render_mode
        self.single_observation_space = dummy.observation_space
        self.single_action_space = dummy.action_space
        dummy.close()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        ctx = mp.get_context("spawn")  # the parent may hold CUDA state and thread pools
        shared = create_shared_memory(self.single_observation_space, n=self.num_envs, ctx=ctx)
        self._observations = read_from_shared_memory(self.single_observation_space, shared, n=self.num_envs)
        self.groups = [g.tolist() for g in np.array_split(np.arange(self.num_envs), workers)]
        self._pipes, self._processes = [], []
        self.closed = False
        try:
            for group in self.groups:
                parent, child = ctx.Pipe()
                process = ctx.Process(target=_worker, name=f"envs-{group[0]}-{group[-1]}", daemon=True,
                                      args=([env_fns[i] for i in group], group[0], child, parent, shared,
                                            self.single_observation_space))
                process.start()
                child.close()
                self._pipes.append(parent)
                self._processes.append(process)
            self._gather()  # every worker has built its envs
        except BaseException:
            self.close(terminate=True)
            raise

    def _gather(self) -> list[Any]:
        """Each worker's reply, in worker order; raises the first error a worker reported."""
        replies, error = [], None
        for pipe, process in zip(self._pipes, self._processes):
            try:
                ok, payload = pipe.recv()
            except EOFError:
                ok, payload = False, ("EOFError", f"worker {process.name} exited (code {process.exitcode})", "")
            if not ok and error is None:
                error = payload
            replies.append(payload if ok else None)
        if error is not None:
            name, message, trace = error
            raise WorkerError(f"{name} in an env worker: {message}\n{trace}")
        return replies

    def _send(self, command: str, data_per_worker: Sequence[Any]) -> list[Any]:
        if self.closed:
            raise RuntimeError("the vector env is closed")
        for pipe, data in zip(self._pipes, data_per_worker):
            pipe.send((command, data))
        return self._gather()

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} envs")
        replies = self._send("reset", [([seeds[i] for i in group], options) for group in self.groups])
        infos: dict[str, Any] = {}
        for group, group_infos in zip(self.groups, replies):
            for i, info in zip(group, group_infos):
                infos = self._add_info(infos, info, i)
        return deepcopy(self._observations), infos

    def step(self, actions):
        actions = np.asarray(actions)
        replies = self._send("step", [actions[group[0]: group[-1] + 1] for group in self.groups])
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        infos: dict[str, Any] = {}
        for group, results in zip(self.groups, replies):
            for i, (reward, term, trunc, info) in zip(group, results):
                rewards[i], terminated[i], truncated[i] = reward, term, trunc
                infos = self._add_info(infos, info, i)
        return deepcopy(self._observations), rewards, terminated, truncated, infos

    def render(self) -> tuple[Any, ...]:
        return tuple(frame for frames in self._send("render", [None] * len(self.groups)) for frame in frames)

    def close(self, terminate: bool = False, **kwargs: Any) -> None:
        if getattr(self, "closed", True):
            return
        self.closed = True
        if not terminate:
            for pipe, process in zip(self._pipes, self._processes):
                if process.is_alive():
                    try:
                        pipe.send(("close", None))
                        pipe.recv()
                    except (BrokenPipeError, EOFError, OSError):
                        pass
        for pipe, process in zip(self._pipes, self._processes):
            process.join(timeout=10 if not terminate else 0.1)
            if process.is_alive():
                process.terminate()
                process.join()
            pipe.close()

    def __del__(self):
        self.close(terminate=True)
