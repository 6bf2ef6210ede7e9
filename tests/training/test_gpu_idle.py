"""training.gpu_idle: the GPU's idle time between steps, from per-step events (a fake clock on the CPU; real
CUDA events and a loader that makes the GPU wait on a GPU)."""

from __future__ import annotations

import time

import pytest
import torch
from omegaconf import OmegaConf

from helpers import read_metrics
from toy_pipeline import ToyPipeline
from tracking.base import NullTracker
from training.gpu_idle import GpuIdle
from training.loop import LoopConfig, Trainer
from viewer import NoViewer

SGD = OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 0.1, "grad_clip_norm": 0.0})


class Clock:
    """Events whose record() reads a scripted GPU clock (ms)."""

    def __init__(self, times):
        self.times = iter(times)

    def __call__(self):
        clock = self

        class Event:
            def record(self):
                self.t = next(clock.times)

            def elapsed_time(self, other):
                return other.t - self.t
        return Event()


def test_idle_share_counts_the_gaps_between_steps_but_not_across_cuts():
    # steps (start, end): (0, 10), (10, 20) no gap, (25, 35) 5 ms gap, cut, (100, 110), (112, 122) 2 ms gap
    idle = GpuIdle(Clock([0, 10, 10, 20, 25, 35, 100, 110, 112, 122]))
    for i in range(5):
        idle.start()
        idle.end()
        if i == 2:
            idle.cut()
    # gaps counted: 0 + 5 + 2 = 7 ms, with the steps after them (2, 3 and 5): 30 ms busy
    assert idle.share() == pytest.approx(7 / 37)
    assert GpuIdle(Clock([])).share() is None  # nothing to compare
    only_cut = GpuIdle(Clock([0, 10, 50, 60]))
    for _ in range(2):
        only_cut.start()
        only_cut.end()
        only_cut.cut()
    assert only_cut.share() is None  # every gap cut: nothing measured, not "never idle"


def test_the_gap_to_the_next_window_counts_in_that_window():
    idle = GpuIdle(Clock([0, 10, 10, 20, 30, 40]))
    for _ in range(2):
        idle.start()
        idle.end()
    assert idle.share() == 0.0
    idle.start()
    idle.end()
    assert idle.share() == pytest.approx(10 / 20)  # step 3 began 10 ms after step 2 ended


def test_a_cpu_run_logs_no_gpu_idle_share(tmp_path):
    tracker = NullTracker()
    tracker.start(tmp_path, params={}, tags={})
    pipe = ToyPipeline(batch_size=4)
    Trainer(LoopConfig(steps=4, log_freq=2, progress_bar=False), pipe, SGD,
            None, tracker, tmp_path, torch.device("cpu"), "x: 1\n").fit()
    logged = [m for m in read_metrics(tmp_path) if "train/loss" in m]
    assert len(logged) == 2 and not any("train/gpu_idle_share" in m for m in logged)


def test_the_share_is_kept_with_train_py_s_default_viewer_and_not_with_a_live_one():
    """train.py always passes the viewer as the loop's hooks; `viewer=none`'s do nothing between steps, so
    the GPU's idle share is still measured, while a live viewer's `step_done` works between steps."""
    from types import SimpleNamespace

    from training.loop import LoopHooks

    class Live(LoopHooks):
        def step_done(self, step):
            pass

    def clock(hooks):
        trainer = SimpleNamespace(device=torch.device("cuda"), loop=LoopConfig(steps=4, log_freq=2), online=None,
                                  hooks=hooks)
        return Trainer._gpu_idle_clock(trainer)

    assert clock(LoopHooks()) is not None and clock(NoViewer()) is not None
    assert clock(Live()) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: GPU idle time is read from CUDA events")
@pytest.mark.parametrize("wait_s, expected", [(0.0, (0.0, 0.2)), (0.05, (0.6, 1.0))])
def test_a_slow_loader_shows_as_gpu_idle_time(tmp_path, wait_s, expected):
    """A step that keeps the GPU busy ~5 ms (10M clock cycles): with batches at once the GPU hardly waits; with
    a 50 ms wait for each batch it idles most of the time."""
    device = torch.device("cuda")

    class Loader(ToyPipeline):
        def to_device(self, batch):
            return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}

        def loss(self, model, batch):
            torch.cuda._sleep(10_000_000)
            return ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean(), {}

    class SlowBatches:
        def __init__(self, inner):
            self.inner = inner

        def __iter__(self):
            for batch in self.inner:
                time.sleep(wait_s)
                yield batch

        def __getattr__(self, name):  # state_dict and the rest: the real stream's
            return getattr(self.inner, name)

    pipe = Loader(batch_size=4)
    pipe.model.to(device)
    pipe.batches = SlowBatches(pipe.batches)
    tracker = NullTracker()
    tracker.start(tmp_path, params={}, tags={})
    Trainer(LoopConfig(steps=30, log_freq=15, progress_bar=False, cuda_graph=False), pipe,
            SGD, None, tracker, tmp_path, device, "x: 1\n", hooks=NoViewer()).fit()  # as train.py passes them
    shares = [m["train/gpu_idle_share"] for m in read_metrics(tmp_path) if "train/gpu_idle_share" in m]
    assert len(shares) == 2 and all(expected[0] <= s <= expected[1] for s in shares), shares
