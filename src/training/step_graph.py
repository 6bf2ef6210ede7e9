"""A whole training step (forward, backward, gradient clipping, optimizer step) replayed from one CUDA
graph: Diffusion Policy's step is about 1,600 small kernels, and on a GPU a fifth to a third of it is
the host launching them (docs/ROBOT_LEARNING.md, "Training speed").

PyTorch documents this "whole-network capture" (torch.cuda.graphs) and gives the parts: capturable
fused Adam/AdamW (its step count and learning rate live on the device), graph-safe random draws from
the default CUDA generator. What it leaves to the caller is written here: a warm-up before the capture
that does not change the training (weights, optimizer state, buffers and RNG are put back, so replay
`n` is eager step `n`), and static input tensors that each batch is copied into.

Requirements, checked: every parameter on one CUDA device, an Adam or AdamW built with `fused=True,
capturable=True` (or a GroupedOptimizer of them), batches of one structure and shape (a batch's
non-tensor entries are read at the capture only). The
learning rate becomes a device tensor the graph reads; step the scheduler through `scheduler_step`,
which writes its new value there without reading the device. Not for AMP's grad scaler, gradient
accumulation or DDP (the loop refuses those: training/loop.py).
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, NamedTuple

import torch
from torch import Tensor
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten  # torch's own (torch.export uses it)

from models.common.cuda_graph import capture


def check_capturable(optimizer) -> None:
    """Adam or AdamW built fused and capturable; a GroupedOptimizer's (nerfacto's) every optimizer so."""
    for opt in getattr(optimizer, "optimizers", {"": optimizer}).values():
        if type(opt) not in (torch.optim.Adam, torch.optim.AdamW):
            raise ValueError(f"a graphed training step needs Adam or AdamW, got {type(opt).__name__}")
        for group in opt.param_groups:
            if not (group.get("fused") and group.get("capturable")):
                raise ValueError("a graphed training step needs the optimizer built with fused=True and "
                                 "capturable=True")
            for p in group["params"]:
                step = opt.state.get(p, {}).get("step")
                if isinstance(step, Tensor) and step.device != p.device:
                    raise ValueError(f"a graphed training step needs Adam's step counts on the parameters' device "
                                     f"({step.device} against {p.device}): call set_capturable after loading")


def portable_state(optimizer_state: dict) -> dict:
    """An optimizer's state_dict as an uncaptured optimizer saves it (learning rates as floats, not
    capturable), so a checkpoint resumes with or without machine.cuda_graph (`set_capturable` after
    loading restores the run's own choice). A GroupedOptimizer's ({group: state_dict}) per group."""
    if "param_groups" not in optimizer_state:
        for state in optimizer_state.values():
            portable_state(state)
        return optimizer_state
    for group in optimizer_state["param_groups"]:
        if isinstance(group.get("lr"), Tensor):
            group["lr"] = float(group["lr"])
        if group.get("capturable"):
            group["capturable"] = False
    return optimizer_state


def set_capturable(optimizer, capturable: bool) -> None:
    """After `load_state_dict` (which takes every setting from the saved groups): this run's choice. A
    capturable Adam keeps its step counts on the parameters' device; a checkpoint saved uncaptured holds
    them on the CPU, where `load_state_dict` leaves them (torch moves them only for a saved group that
    was fused or capturable), and a captured step would read host memory."""
    states = optimizer.state  # a GroupedOptimizer merges its optimizers' states on each access: once
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = capturable
            if capturable:
                group["fused"] = True
                for p in group["params"]:
                    state = states.get(p, {})
                    if isinstance(state.get("step"), Tensor):
                        state["step"] = state["step"].to(p.device, torch.float32)


class _Captured(NamedTuple):
    graph: torch.cuda.CUDAGraph
    spec: TreeSpec  # the batch's structure; its non-tensor leaves are the capture's
    inputs: list[Tensor | None]  # static copies of the batch's tensor leaves (None: not a tensor)
    outputs: dict[str, Tensor]
    grads: list[Tensor | None]  # the gradients this graph writes, one per parameter


class StepGraph:
    """`step(batch) -> {name: 0-d tensor}` captured once per variant and replayed for every batch of the
    same structure and shapes.

    `step` runs forward, backward and clipping, and the graph then `optimizer.step()`; nothing may zero
    the gradients (the graph's backward writes them afresh each replay, into the tensors it captured).
    A batch is any nesting of dicts, tuples, lists and registered dataclasses (nerfacto's RayBundle);
    its tensors are copied into the graph's static inputs, its other leaves (a step number) are read at
    the capture only. A model whose step differs by a host decision (nerfacto's proposal networks with
    or without gradients) names the variant per call: each variant has its own graph.
    The returned tensors are the graph's own outputs, overwritten by the next replay: clone them first.
    """

    def __init__(self, step: Callable[[Any], dict[str, Tensor]], model: torch.nn.Module, optimizer,
                 warmup: int = 3) -> None:
        check_capturable(optimizer)
        self.step, self.model, self.optimizer, self.warmup = step, model, optimizer, warmup
        self.captured: dict[Hashable, _Captured] = {}
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

    def __call__(self, batch: Any, variant: Hashable = None) -> dict[str, Tensor]:
        leaves, spec = tree_flatten(batch)
        if variant not in self.captured:
            self.captured[variant] = self._capture(leaves, spec)
        captured = self.captured[variant]
        if spec != captured.spec or any(
                (x is not None) != isinstance(leaf, Tensor) or (x is not None and (x.shape != leaf.shape or x.dtype != leaf.dtype))
                for x, leaf in zip(captured.inputs, leaves)):
            raise ValueError("a graphed training step needs batches of one structure and shape (drop_last=True); "
                             "set machine.cuda_graph=false for this run")
        for static, leaf in zip(captured.inputs, leaves):
            if static is not None:
                static.copy_(leaf, non_blocking=True)
        captured.graph.replay()
        if len(self.captured) > 1:  # point .grad at what this graph wrote (gradient logging reads it)
            for p, grad in zip(self._params(), captured.grads):
                p.grad = grad
        return captured.outputs

    def _params(self) -> list[Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _state_tensors(self) -> list[Tensor]:
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        for state in self.optimizer.state.values():
            tensors.extend(v for v in state.values() if isinstance(v, Tensor))
        return tensors

    def _capture(self, leaves: list, spec: TreeSpec) -> _Captured:
        inputs = [leaf.clone() if isinstance(leaf, Tensor) else None for leaf in leaves]
        static = tree_unflatten([x if x is not None else leaf for x, leaf in zip(inputs, leaves)], spec)
        device = next(x for x in inputs if x is not None).device
        with torch.no_grad():
            saved = [(t, t.clone()) for t in self._state_tensors()]
        cpu_rng = torch.get_rng_state()

        def run() -> dict[str, Tensor]:
            # set_to_none only drops Python references: inside the capture, backward then writes fresh
            # gradients into the graph's memory
            self.optimizer.zero_grad(set_to_none=True)
            outputs = self.step(static)
            self.optimizer.step()
            return outputs

        graph, outputs = capture(run, device, self.warmup)  # puts the CUDA generator back

        # the warm-up trained: put weights, buffers, optimizer state and CPU RNG back; state the warm-up
        # created (a first step makes Adam's) is zeroed: zero moments and step count, as a fresh
        # optimizer has them
        with torch.no_grad():
            kept = {id(t) for t, _ in saved}
            for tensor, value in saved:
                tensor.copy_(value)
            for tensor in self._state_tensors():
                if id(tensor) not in kept:
                    tensor.zero_()
        torch.set_rng_state(cpu_rng)
        return _Captured(graph, spec, inputs, outputs, [p.grad for p in self._params()])
