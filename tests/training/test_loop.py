"""The loop's mechanics on a toy pipeline: accumulation, clipping, frequencies, bad losses."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from tracking.base import NullTracker
from training.data_position import BatchStream
from training.loop import LoopConfig, Trainer


class Points(Dataset):
    def __init__(self, n: int = 16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class ToyPipeline:
    family = "toy"

    def __init__(self, batch_size: int, scale: float = 1.0):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.batches = BatchStream(Points(), batch_size, seed=0)
        self.batch_size, self.scale = batch_size, scale
        self.evaluated_at: list[int] = []

    def optim_params(self):
        return self.model.parameters()

    def to_device(self, batch):
        return batch

    def loss(self, batch):
        loss = self.scale * ((self.model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()
        return loss, {"loss": loss.item()}

    def samples_per_step(self, loop):
        return self.batch_size * loop.gradient_accumulation_steps

    def evaluate(self, run_dir, step):
        self.evaluated_at.append(step)
        return {"score": float(step)}, []


SGD = OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 0.1, "grad_clip_norm": 0.0})


def _trainer(tmp_path, pipeline, optimizer=SGD, **loop):
    tracker = NullTracker()
    tracker.start(tmp_path, params={}, tags={})
    cfg = {"steps": 1, "log_freq": 1, "progress_bar": False, **loop}
    return Trainer(LoopConfig(**cfg), pipeline, optimizer, None, tracker, tmp_path, torch.device("cpu"), "x: 1\n")


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    big = ToyPipeline(batch_size=4)
    _trainer(tmp_path / "a", big).fit()
    small = ToyPipeline(batch_size=2)
    _trainer(tmp_path / "b", small, gradient_accumulation_steps=2).fit()
    for p, q in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_grad_clip_bounds_the_update(tmp_path):
    clipped = OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 1.0, "grad_clip_norm": 0.01})
    pipe = ToyPipeline(batch_size=4, scale=1000.0)
    before = [p.detach().clone() for p in pipe.model.parameters()]
    _trainer(tmp_path, pipe, optimizer=clipped).fit()
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(pipe.model.parameters(), before)])
    assert step.norm() <= 0.01 + 1e-6


def test_log_save_eval_frequencies_and_final_step(tmp_path):
    pipe = ToyPipeline(batch_size=4)
    _trainer(tmp_path, pipe, steps=7, log_freq=3, save_freq=5, eval_freq=3).fit()
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "train/loss" in m] == [3, 6, 7]
    assert pipe.evaluated_at == [3, 6, 7]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["000005", "000007", "last"]
    first = [m for m in logged if "train/loss" in m][0]
    for key in ("train/lr", "train/grad_norm", "train/steps_per_s", "train/data_share", "train/samples_per_s"):
        assert key in first


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    pipe = ToyPipeline(batch_size=4, scale=float("nan"))
    with pytest.raises(FloatingPointError, match="loss is nan at step 1"):
        _trainer(tmp_path, pipe).fit()


def test_zero_steps_only_evaluates(tmp_path):
    pipe = ToyPipeline(batch_size=4)
    before = [p.detach().clone() for p in pipe.model.parameters()]
    assert _trainer(tmp_path, pipe, steps=0).fit() == {"score": 0.0}
    assert all(torch.equal(p, b) for p, b in zip(pipe.model.parameters(), before))
