"""Rollouts of the online phase: the current policy in its env, its episodes written as a buffer chunk.

`roll_out` runs one job, in the training process or in the `RolloutProcess` that `do_rollout_async`
starts. A job is fully named by its index (the episodes' env seeds and the policy's random stream
follow from it), so the same weights give the same chunk in either process, and a resumed run
repeats a rollout exactly.
"""

from __future__ import annotations

import logging
import queue
import random
import signal
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from data.online_buffer import storage, write_chunk
from data.transforms import sample_seed
from envs.evaluate import evaluate_policy

log = logging.getLogger("train")


@dataclass(frozen=True)
class RolloutJob:
    """Rollout number `index` (its chunk id): episodes seeded `first_seed, first_seed + 1, ...`, the
    policy's sampling drawn from `rng_seed`."""

    index: int
    first_seed: int
    rng_seed: int

    @staticmethod
    def number(index: int, env_seed: int, n_episodes: int) -> "RolloutJob":
        return RolloutJob(index, env_seed + index * n_episodes, sample_seed(env_seed, index, -1))


@dataclass(frozen=True)
class RolloutSettings:
    env: Any  # an EnvConfig (or its plain mapping)
    n_episodes: int
    batch_size: int
    use_async_envs: bool
    features: Mapping[str, Mapping]  # what the buffer stores (data.online_buffer)
    cuda_graphs: bool | None = None  # eval.cuda_graphs
    amp_dtype: torch.dtype | None = None  # use_amp's dtype: the policy acts under autocast, as in evaluation


@contextmanager
def _own_random_streams(seed: int, device: torch.device):
    """Every generator a policy or env may draw from, seeded for the rollout and put back afterwards, so
    rollouts neither depend on nor disturb the training's random streams."""
    py, np_state = random.getstate(), np.random.get_state()
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def roll_out(policy, settings: RolloutSettings, job: RolloutJob, device: torch.device, folder: Path) -> dict:
    """Runs the job's episodes and writes them as chunk `job.index` in `folder`; returns
    `{"chunk": write_chunk's info, "metrics": {...}}`."""
    start = time.perf_counter()
    keys = {key: storage(ft)[0] for key, ft in settings.features.items()}
    with _own_random_streams(job.rng_seed, device):
        result = evaluate_policy(policy, settings.env, n_episodes=settings.n_episodes,
                                 batch_size=settings.batch_size, use_async=settings.use_async_envs,
                                 seed=job.first_seed, device=device, videos_dir=None, progress=False,
                                 keep_frames=keys, cuda_graphs=settings.cuda_graphs, amp_dtype=settings.amp_dtype)
    rollout_s = time.perf_counter() - start
    chunk = write_chunk(folder, job.index, settings.features, result["episode_frames"])
    episodes = result["per_episode"]
    return {"chunk": chunk, "metrics": {
        "episode_return": float(np.mean([e["sum_reward"] for e in episodes])),
        "pc_success": 100.0 * float(np.mean([e["success"] for e in episodes])),
        "episode_length": float(np.mean([e["length"] for e in episodes])),
        "episodes": float(len(episodes)),
        "env_steps": float(sum(e["length"] for e in episodes)),
        "rollout_s": rollout_s,
        "write_s": time.perf_counter() - start - rollout_s,
    }}


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the training process dies, even by kill -9."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(make_policy: Callable[[], torch.nn.Module], settings: RolloutSettings, device: str, folder: str,
           weights: dict[str, torch.Tensor], requests, results) -> None:
    """The rollout process: builds the policy once, then for each job loads the weights as the training
    process left them at submission, rolls out and writes the chunk."""
    import multiprocessing

    _die_with_parent()
    try:
        torch_device = torch.device(device)
        policy = make_policy().to(torch_device)
    except BaseException:
        results.put(("error", traceback.format_exc()))
        return
    parent = multiprocessing.parent_process()
    while True:
        try:
            job = requests.get(timeout=1.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return
            continue
        if job is None:
            return
        try:
            policy.load_state_dict(weights)
            results.put(("ok", roll_out(policy, settings, job, torch_device, Path(folder))))
        except BaseException:
            results.put(("error", traceback.format_exc()))


class RolloutProcess:
    """`do_rollout_async`: rollouts in a separate process while training goes on. One job at a time: `submit`
    copies the model's current weights into shared memory and queues the job; `result()` waits for it.
    The weights are only written between a result and the next submission, so the process always rolls
    out with the weights of the moment its job was submitted."""

    def __init__(self, make_policy: Callable[[], torch.nn.Module], settings: RolloutSettings, device: torch.device,
                 folder: Path):
        self.make_policy, self.settings, self.device, self.folder = make_policy, settings, device, folder
        self.weights: dict[str, torch.Tensor] | None = None
        self.process = None
        self.busy = False

    def submit(self, model: torch.nn.Module, job: RolloutJob) -> None:
        if self.busy:
            raise RuntimeError("a rollout is already running; wait for its result first")
        state = model.state_dict()
        if self.weights is None:
            self.weights = {k: v.detach().to("cpu", copy=True).share_memory_() for k, v in state.items()}
            self._start()
        else:
            with torch.no_grad():
                for k, v in state.items():
                    self.weights[k].copy_(v.detach())
        self.requests.put(job)
        self.busy = True

    def _start(self) -> None:
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")  # the parent may hold CUDA state, which fork would copy half-alive
        self.requests, self.results = ctx.Queue(), ctx.Queue()
        # not a daemon: its vector env may start env processes of its own
        self.process = ctx.Process(target=_serve, name="online-rollouts", args=(
            self.make_policy, self.settings, str(self.device), str(self.folder), self.weights, self.requests,
            self.results))
        self.process.start()

    def result(self) -> dict:
        """The running job's `roll_out` result; a failure in the process is raised here with its traceback."""
        if not self.busy:
            raise RuntimeError("no rollout is running")
        while True:
            try:
                kind, value = self.results.get(timeout=1.0)
                break
            except queue.Empty:
                if not self.process.is_alive():
                    self.busy = False
                    raise RuntimeError(f"the rollout process died (exit code {self.process.exitcode})") from None
        self.busy = False
        if kind == "error":
            raise RuntimeError(f"online rollout failed in the rollout process:\n{value}")
        return value

    def close(self) -> None:
        if self.process is None:
            return
        if self.process.is_alive():
            self.requests.put(None)
            self.process.join(timeout=30)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self.process = None
