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
import time
import traceback
from copy import deepcopy
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import (batch_space, create_shared_memory, iterate, read_from_shared_memory,
                                    write_to_shared_memory)


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
                    autoreset = [False] * len(envs)
                    infos = []
                    for i, env in enumerate(envs):
                        observation, info = env.reset(seed=seeds[i], options=options)
                        write_to_shared_memory(space, first + i, observation, shared_memory)
                        infos.append(info)
                    pipe.send((True, infos))
                elif command == "step":
                    out = []
                    for i, (env, action) in enumerate(zip(envs, data, strict=True)):
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
                    pipe.send((True, [envs[i].render() for i in data]))
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
    """An env raised inside a worker process (the message carries its type, text and traceback), or a worker
    died (``fatal``: the vector env cannot be used again)."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


CLOSE_TIMEOUT_S = 10.0  # for all workers together to close their envs and exit, then they are terminated


class GroupedAsyncVectorEnv(VectorEnv):
    """``len(env_fns)`` envs in ``workers`` spawned processes (contiguous groups, sizes within one).

    Returns what ``SyncVectorEnv(env_fns, autoreset_mode=NEXT_STEP)`` returns for the same actions and
    seeds: observations (copied out of the shared buffer), rewards, terminated, truncated and infos in
    gymnasium's vectorised form. ``render()`` returns every env's frame, ``render_only(indices)`` those
    envs' frames. A call that did not complete (interrupted, a worker that died) leaves the workers out of
    step with the parent: every later call but ``close`` then raises.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], workers: int):
        self.closed = True  # until the workers run: nothing for close() or __del__ to do
        self._pipes: list[Any] = []
        self._processes: list[Any] = []
        self._broken: str | None = None
        if not env_fns:
            raise ValueError("GroupedAsyncVectorEnv needs at least one env")
        self.num_envs = len(env_fns)
        workers = max(1, min(int(workers), self.num_envs))
        dummy = env_fns[0]()  # the spaces and metadata, as gymnasium's AsyncVectorEnv reads them
        self.autoreset_mode = AutoresetMode.NEXT_STEP
        self.metadata = {**dummy.metadata, "autoreset_mode": self.autoreset_mode}
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
            self._exchange(None, [])  # every worker has built its envs
        except BaseException:
            self.close(terminate=True)
            raise

    @staticmethod
    def _died(process) -> WorkerError:
        process.join(1.0)
        code = process.exitcode
        how = "is unresponsive" if code is None else (f"was killed by signal {-code}" if code < 0 else
                                                      f"exited with code {code}")
        return WorkerError(f"env worker {process.name} {how}", fatal=True)

    def _gather(self) -> list[Any]:
        """Each worker's reply, in worker order; raises the first error a worker reported or met."""
        replies, error = [], None
        for pipe, process in zip(self._pipes, self._processes):
            try:
                ok, payload = pipe.recv()
            except (EOFError, OSError):
                error = error or self._died(process)
                replies.append(None)
                continue
            if not ok and error is None:
                name, message, trace = payload
                error = WorkerError(f"{name} in an env worker: {message}\n{trace}")
            replies.append(payload if ok else None)
        if error is not None:
            raise error
        return replies

    def _exchange(self, command: str | None, data_per_worker: Sequence[Any]) -> list[Any]:
        """Sends ``command`` with each worker's data (None: only waits for a reply each) and gathers the replies."""
        if self.closed:
            raise RuntimeError("the vector env is closed")
        if self._broken is not None:
            raise RuntimeError(f"the vector env cannot be used after {self._broken}; close it and make a new one")
        try:
            if command is not None:
                for pipe, process, data in zip(self._pipes, self._processes, data_per_worker, strict=True):
                    try:
                        pipe.send((command, data))
                    except (BrokenPipeError, OSError):
                        raise self._died(process) from None
            return self._gather()
        except WorkerError as err:
            if err.fatal:
                self._broken = f"a worker died ({err})"
            raise
        except BaseException as err:  # interrupted between sending and gathering: replies are pending
            self._broken = f"an interrupted {command or 'start'} ({type(err).__name__})"
            raise

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        if options and "reset_mask" in options:
            raise NotImplementedError("GroupedAsyncVectorEnv resets every env: reset_mask is not supported")
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} envs")
        replies = self._exchange("reset", [([seeds[i] for i in group], options) for group in self.groups])
        infos: dict[str, Any] = {}
        for group, group_infos in zip(self.groups, replies):
            for i, info in zip(group, group_infos, strict=True):
                infos = self._add_info(infos, info, i)
        return deepcopy(self._observations), infos

    def step(self, actions):
        per_env = list(iterate(self.action_space, actions))
        if len(per_env) != self.num_envs:
            raise ValueError(f"step got {len(per_env)} actions for {self.num_envs} envs")
        replies = self._exchange("step", [[per_env[i] for i in group] for group in self.groups])
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        infos: dict[str, Any] = {}
        for group, results in zip(self.groups, replies):
            for i, (reward, term, trunc, info) in zip(group, results, strict=True):
                rewards[i], terminated[i], truncated[i] = reward, term, trunc
                infos = self._add_info(infos, info, i)
        return deepcopy(self._observations), rewards, terminated, truncated, infos

    def render(self) -> tuple[Any, ...]:
        return tuple(self.render_only(range(self.num_envs)))

    def render_only(self, indices: Sequence[int]) -> list[Any]:
        """The frames of the envs at ``indices`` (in that order); the other envs render nothing."""
        wanted = [int(i) for i in indices]
        local = [[i - group[0] for i in wanted if group[0] <= i <= group[-1]] for group in self.groups]
        frames = {}
        for group, ids, replies in zip(self.groups, local, self._exchange("render", local)):
            frames.update({group[0] + i: frame for i, frame in zip(ids, replies, strict=True)})
        return [frames[i] for i in wanted]

    def close(self, terminate: bool = False, **kwargs: Any) -> None:
        """Asks each worker to close its envs and exit (all within CLOSE_TIMEOUT_S), then terminates any left;
        ``terminate`` (or a call left incomplete) terminates them at once."""
        if self.closed:
            return
        self.closed = True
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        polite = not terminate and self._broken is None
        if polite:
            for pipe, process in zip(self._pipes, self._processes):
                try:
                    pipe.send(("close", None))
                except (BrokenPipeError, OSError):
                    pass
            for pipe in self._pipes:
                try:
                    if pipe.poll(max(0.0, deadline - time.monotonic())):
                        pipe.recv()
                except (EOFError, OSError):
                    pass
        for pipe, process in zip(self._pipes, self._processes):
            process.join(timeout=max(0.0, deadline - time.monotonic()) if polite else 0.0)
            if process.is_alive():
                process.terminate()
                process.join(1.0)
            pipe.close()

    def __del__(self):
        self.close(terminate=True)
