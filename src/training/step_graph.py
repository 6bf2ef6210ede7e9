"""A whole training step (forward, backward, gradient clipping, optimizer step) replayed from one CUDA
graph: Diffusion Policy's step is about 1,600 small kernels, and on a GPU a fifth to a third of it is
the host launching them (docs/ROBOT_LEARNING.md, "Training speed").

PyTorch documents this "whole-network capture" (torch.cuda.graphs) and gives the parts: capturable
fused Adam/AdamW (its step count and learning rate live on the device), graph-safe random draws from
the default CUDA generator. What it leaves to the caller is written here: a warm-up before the capture
that does not change the training (weights, optimizer state, buffers and RNG are put back, so replay
`n` is eager step `n`), and static input tensors that each batch is copied into.

Requirements, checked: every parameter on one CUDA device, an Adam or AdamW built with `fused=True,
capturable=True`, batches of one shape (a batch's non-tensor entries are read at the capture only). The
learning rate becomes a device tensor the graph reads; step the scheduler through `scheduler_step`,
which writes its new value there without reading the device. Not for AMP's grad scaler, gradient
accumulation or DDP (the loop refuses those: training/loop.py).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from models.common.cuda_graph import capture


def check_capturable(optimizer: torch.optim.Optimizer) -> None:
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        raise ValueError(f"a graphed training step needs Adam or AdamW, got {type(optimizer).__name__}")
    for group in optimizer.param_groups:
        if not (group.get("fused") and group.get("capturable")):
            raise ValueError("a graphed training step needs the optimizer built with fused=True and capturable=True")


def portable_state(optimizer_state: dict) -> dict:
    """An optimizer's state_dict as an uncaptured optimizer saves it (learning rates as floats, not
    capturable), so a checkpoint resumes with or without machine.cuda_graph (`set_capturable` after
    loading restores the run's own choice)."""
    for group in optimizer_state.get("param_groups", []):
        if isinstance(group.get("lr"), Tensor):
            group["lr"] = float(group["lr"])
        if group.get("capturable"):
            group["capturable"] = False
    return optimizer_state


def set_capturable(optimizer, capturable: bool) -> None:
    """After `load_state_dict` (which takes every setting from the saved groups): this run's choice."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = capturable
            if capturable:
                group["fused"] = True


class StepGraph:
    """`step(batch) -> {name: 0-d tensor}` captured once and replayed for every batch of the same shape.

    `step` runs forward, backward and clipping, and the graph then `optimizer.step()`; nothing may zero
    the gradients (the graph's backward writes them afresh each replay, into the tensors it captured).
    The returned tensors are the graph's own outputs, overwritten by the next replay: clone them first.
    """

    def __init__(self, step: Callable[[dict[str, Tensor]], dict[str, Tensor]], model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, warmup: int = 3) -> None:
        check_capturable(optimizer)
        self.step, self.model, self.optimizer, self.warmup = step, model, optimizer, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: dict[str, Tensor] = {}
        self.outputs: dict[str, Tensor] = {}
        self.lrs = [float(group["lr"]) for group in optimizer.param_groups]  # host copies: read without a sync
        for group in optimizer.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), device=group["params"][0].device)

    def scheduler_step(self, scheduler) -> None:
        """`scheduler.step()` on the host values of the learning rates, then written into the tensors the
        graph reads (a fill from a Python float: no read-back)."""
        groups = self.optimizer.param_groups
        tensors = [group["lr"] for group in groups]
        for group, lr in zip(groups, self.lrs):
            group["lr"] = lr
        try:
            scheduler.step()
            self.lrs = [float(group["lr"]) for group in groups]
        finally:
            for group, tensor, lr in zip(groups, tensors, self.lrs):
                tensor.fill_(lr)
                group["lr"] = tensor

    def __call__(self, batch: dict) -> dict[str, Tensor]:
        tensors = {k: v for k, v in batch.items() if isinstance(v, Tensor)}
        if self.graph is None:
            self._capture(batch)
        elif tensors.keys() != self.inputs.keys() or any(
                v.shape != self.inputs[k].shape or v.dtype != self.inputs[k].dtype for k, v in tensors.items()):
            raise ValueError("a graphed training step needs batches of one shape and keys (drop_last=True); "
                             "set machine.cuda_graph=false for this run")
        for key, value in tensors.items():
            self.inputs[key].copy_(value, non_blocking=True)
        self.graph.replay()
        return self.outputs

    def _state_tensors(self) -> list[Tensor]:
        tensors = [p.data for p in self.model.parameters()] + list(self.model.buffers())
        for state in self.optimizer.state.values():
            tensors.extend(v for v in state.values() if isinstance(v, Tensor))
        return tensors

    def _capture(self, batch: dict) -> None:
        self.inputs = {k: v.clone() for k, v in batch.items() if isinstance(v, Tensor)}
        device = next(iter(self.inputs.values())).device
        static = {**batch, **self.inputs}
        saved = [t.clone() for t in self._state_tensors()]
        cpu_rng = torch.get_rng_state()

        def run() -> dict[str, Tensor]:
            # set_to_none only drops Python references: inside the capture, backward then writes fresh
            # gradients into the graph's memory
            self.optimizer.zero_grad(set_to_none=True)
            outputs = self.step(static)
            self.optimizer.step()
            return outputs

        self.graph, self.outputs = capture(run, device, self.warmup)  # puts the CUDA generator back

        # the warm-up trained: put weights, buffers, optimizer state and CPU RNG back (a first step creates
        # Adam's state, listed after the saved tensors: zero moments and step count, as a fresh optimizer
        # has them)
        with torch.no_grad():
            current = self._state_tensors()
            for tensor, value in zip(current, saved):
                tensor.copy_(value)
            for tensor in current[len(saved):]:
                tensor.zero_()
        torch.set_rng_state(cpu_rng)
