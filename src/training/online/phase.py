"""The online phase as the training loop sees it: a hook before each optimizer step, a state in each checkpoint.

After `offline_steps` steps, and then every `steps_between_rollouts` steps until the run ends, the
policy rolls out `rollout_n_episodes` episodes; they enter the online buffer, and until the buffer
holds `buffer_seed_size` frames (and one frame a sample can start at) more rollouts follow at once.
From the first online step, batches mix buffer and offline items (`MixedBatches`).

With `do_rollout_async` the rollout starts in a separate process with the weights of that step and its
episodes enter the buffer at the next rollout step (training goes on meanwhile); the first rollouts,
which seed the buffer, are waited for. A checkpoint taken while a rollout runs waits for it and holds
its chunk as pending, so a resumed run enters the same episodes at the same step. Rollout metrics are
logged at the step they feed (the rollout before step s + 1 at s + 1), so a resumed run logs them once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import torch

from config.errors import ConfigError
from data.online_buffer import FOLDER, OnlineBuffer, OnlineBufferError
from training.online.mixing import MixedBatches
from training.online.rollouts import RolloutJob, RolloutProcess, RolloutSettings, roll_out

log = logging.getLogger("train")
# What a rollout reports (training.online.rollouts.roll_out), and so what a saved pending rollout must hold.
_METRICS = ("episode_return", "pc_success", "episode_length", "episodes", "env_steps", "rollout_s", "write_s")


class OnlinePhase:
    def __init__(self, online_cfg, offline_steps: int, model: torch.nn.Module, buffer: OnlineBuffer,
                 batches: MixedBatches, settings: RolloutSettings, device: torch.device, env_seed: int,
                 make_policy: Callable[[], torch.nn.Module] | None = None):
        self.first, self.last = offline_steps, offline_steps + online_cfg.steps
        self.every, self.seed_size = online_cfg.steps_between_rollouts, online_cfg.buffer_seed_size
        self.do_async = online_cfg.do_rollout_async
        self.model, self.buffer, self.batches = model, buffer, batches
        self.settings, self.device, self.env_seed = settings, device, env_seed
        self.make_policy = make_policy
        self.rollouts = 0  # jobs started so far: the next job's index
        self.totals = {"episodes": 0.0, "env_steps": 0.0}
        self.ready: dict | None = None  # a finished async rollout not yet in the buffer: {"id", "metrics"}
        self.running: RolloutJob | None = None
        self.process: RolloutProcess | None = None

    def attach(self, run_dir: Path) -> None:
        """The buffer lives in `<run_dir>/online_buffer/`, empty at a start (a resume refills it)."""
        self.buffer.folder = Path(run_dir) / FOLDER
        self.buffer.clear_folder()

    # ------------------------------------------------------------------ loop hook
    def before_step(self, step: int, tracker) -> None:
        """Called before optimizer step `step + 1`: the rollouts due now, and their metrics."""
        self.batches.online = step >= self.first
        if not self.first <= step < self.last:
            return
        if (step - self.first) % self.every and self.buffer.num_sampleable:
            return  # not a rollout step (one also comes first where a run enters the phase off schedule)
        merged, wait_s = [], 0.0
        if self.ready is not None:
            merged.append(self._enter(self.ready))
            self.ready = None
        elif self.running is not None:
            start = time.perf_counter()
            merged.append(self._enter(self._finish()))
            wait_s = time.perf_counter() - start
        if not self.do_async:
            merged.append(self._enter(self._run_now()))
        while len(self.buffer) < self.seed_size or self.buffer.num_sampleable == 0:
            full = self.buffer.capacity is not None and len(self.buffer) >= self.buffer.capacity
            if full and self.buffer.num_sampleable == 0:
                raise ConfigError(f"online.buffer_capacity={self.buffer.capacity} frames hold no frame a sample can "
                                  f"start at (an episode's last {self.buffer.drop_n_last_frames + 1} frames are never "
                                  "a start); raise online.buffer_capacity")
            merged.append(self._enter(self._run_now()))
        if self.do_async and step + self.every < self.last:  # its episodes enter at the next rollout step
            self._start(self._next_job())
        tracker.log_metrics(self._summary(merged, wait_s), step=step + 1)

    def train_metrics(self) -> dict[str, float]:
        """For the loop's log line: the share of online items in the batches since the last one."""
        share = self.batches.take_share()
        return {"online_share": share} if share is not None and self.batches.online else {}

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None

    # ------------------------------------------------------------------ rollouts
    def _next_job(self) -> RolloutJob:
        job = RolloutJob.number(self.rollouts, self.env_seed, self.settings.n_episodes)
        self.rollouts += 1
        return job

    def _run_now(self) -> dict:
        job = self._next_job()
        if self.do_async:
            self._start(job)
            return self._finish()
        return roll_out(self.model, self.settings, job, self.device, self.buffer.folder)

    def _start(self, job: RolloutJob) -> None:
        if self.process is None:
            self.process = RolloutProcess(self.make_policy, self.settings, self.device, self.buffer.folder)
        self.process.submit(self.model, job)
        self.running = job

    def _finish(self) -> dict:
        out = self.process.result()
        self.running = None
        return out

    def _enter(self, out: dict) -> dict:
        """A finished rollout's chunk into the buffer; returns its metrics."""
        if "chunk" in out:
            self.buffer.register(out["chunk"])
        self.buffer.append(out["chunk"]["id"] if "chunk" in out else out["id"])
        for key in self.totals:
            self.totals[key] += out["metrics"][key]
        return out["metrics"]

    def _summary(self, merged: list[dict], wait_s: float) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if merged:
            episodes = sum(m["episodes"] for m in merged)
            env_steps = sum(m["env_steps"] for m in merged)
            rollout_s = sum(m["rollout_s"] for m in merged)
            metrics.update({
                "episode_return": sum(m["episode_return"] * m["episodes"] for m in merged) / episodes,
                "pc_success": sum(m["pc_success"] * m["episodes"] for m in merged) / episodes,
                "episode_length": env_steps / episodes,
                "env_steps_per_s": env_steps / rollout_s if rollout_s > 0 else 0.0,
                "rollout_s": rollout_s,
                "buffer_write_s": sum(m["write_s"] for m in merged),
            })
        metrics.update({"episodes": self.totals["episodes"], "env_steps": self.totals["env_steps"],
                        "buffer_frames": float(len(self.buffer)), "buffer_episodes": float(self.buffer.num_episodes)})
        if self.buffer.capacity is not None:
            metrics["buffer_fill"] = len(self.buffer) / self.buffer.capacity
        if self.do_async:
            metrics["rollout_wait_s"] = wait_s
        if merged:
            log.info("online rollouts: %d episodes, return %.4g, success %.0f%%, %.0f env steps/s; buffer %d frames",
                     sum(m["episodes"] for m in merged), metrics["episode_return"], metrics["pc_success"],
                     metrics["env_steps_per_s"], len(self.buffer))
        return {f"online/{k}": v for k, v in metrics.items()}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Waits for a running rollout first: its chunk is saved as pending (entering at its step)."""
        if self.running is not None:
            out = self._finish()
            self.buffer.register(out["chunk"])
            self.ready = {"id": out["chunk"]["id"], "metrics": out["metrics"]}
        return {"rollouts": self.rollouts, "totals": dict(self.totals), "ready": self.ready,
                "buffer": self.buffer.state_dict()}

    def checkpoint_files(self) -> dict:
        return self.buffer.checkpoint_files()

    def load_state_dict(self, state: dict | None, ckpt: Path, listed: dict) -> None:
        """The phase as saved in checkpoint `ckpt`; None: the checkpoint is from before the online phase was
        configured (an offline run continued online), which starts with an empty buffer."""
        if state is None:
            return
        where = Path(ckpt) / "training_state.pt"
        try:
            self.buffer.load_state_dict(state["buffer"], Path(ckpt) / FOLDER, listed)
            self.rollouts = int(state["rollouts"])
            self.totals = {k: float(state["totals"][k]) for k in self.totals}
            ready = state.get("ready")
            self.ready = None if ready is None else {"id": int(ready["id"]),
                                                      "metrics": {k: float(ready["metrics"][k]) for k in _METRICS}}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, OnlineBufferError):
                raise
            raise OnlineBufferError(f"{where}: its online state is damaged ({type(e).__name__}: {e}); resume from "
                                    "an intact checkpoint") from None
        if self.ready is not None and self.ready["id"] not in self.buffer.pending:
            raise OnlineBufferError(f"{where}: its online state names a pending rollout {self.ready['id']} that its "
                                    "buffer does not hold; resume from an intact checkpoint")
        if self.rollouts < len(self.buffer.chunks) + len(self.buffer.pending):
            raise OnlineBufferError(f"{where}: its online state counts fewer rollouts than its buffer holds; resume "
                                    "from an intact checkpoint")
