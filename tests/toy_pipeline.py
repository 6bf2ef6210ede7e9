"""A deterministic toy pipeline (linear regression) for testing the loop, also across ranks.

Kept in its own module so spawned rank processes can import it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from tracking.base import NullTracker
from training.data_position import BatchStream
from training.distributed import SINGLE, Rank
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

    def __init__(self, batch_size: int, scale: float = 1.0, rank: Rank = SINGLE):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.batches = BatchStream(Points(), batch_size, seed=0, rank=rank.rank, world_size=rank.world_size)
        self.batch_size, self.scale = batch_size, scale
        self.evaluated_at: list[int] = []

    def optim_params(self):
        return self.model.parameters()

    def to_device(self, batch):
        return batch

    def loss(self, model, batch):
        loss = self.scale * ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()
        return loss, {"loss": loss.item()}

    def samples_per_step(self, loop):
        return self.batch_size * loop.gradient_accumulation_steps

    def evaluate(self, run_dir, step):
        self.evaluated_at.append(step)
        return {"score": float(step)}, []



def train_toy(run_dir: Path, batch_size: int, steps: int, rank: Rank = SINGLE) -> list[torch.Tensor]:
    """Trains the toy model with SGD on this rank; returns the final parameters."""
    import torch.distributed as dist

    from training import distributed as dist_lib

    if rank.distributed:
        dist_lib.init(OmegaConf.create({"dist_url": "auto"}), rank, "cpu")
    try:
        pipe = ToyPipeline(batch_size, rank=rank)
        tracker = NullTracker()
        if rank.is_main:
            tracker.start(run_dir, params={}, tags={})
        sgd = OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 0.1, "grad_clip_norm": 0.0})
        trainer = Trainer(LoopConfig(steps=steps, log_freq=1, progress_bar=False), pipe, sgd, None, tracker,
                          run_dir, torch.device("cpu"), "", rank=rank)
        trainer.fit()
        return [p.detach().clone() for p in pipe.model.parameters()]
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def report_ranks(run_dir: Path, nudge_rank: int | None, rank: Rank = SINGLE) -> list[dict]:
    """Every rank builds the toy model from one seed (rank `nudge_rank` then moves one weight by
    1e-7) and reports to `training.distributed.check_ranks_agree`."""
    from training import distributed as dist_lib

    dist_lib.init(OmegaConf.create({"dist_url": "auto"}), rank, "cpu")
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        if rank.rank == nudge_rank:
            with torch.no_grad():
                model.bias += 1e-7
        return dist_lib.check_ranks_agree(model, 0, 5, rank, run_dir)
    finally:
        dist_lib.shutdown()
