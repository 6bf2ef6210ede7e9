"""Inference replayed from CUDA graphs: a policy's planning is hundreds of small kernels (Diffusion
Policy's 100 denoising steps run its UNet 100 times), so on a GPU it is bound by the host launching
them; a captured graph launches them all at once.

PyTorch gives the capture (`torch.cuda.graph`) and no cache around it for functions whose inputs
change shape (`torch.cuda.make_graphed_callables` is for training modules of one shape), so the cache
is written here: one graph per input signature, static input and output tensors, a warm-up on a side
stream before capture (cuDNN's autotuning and lazy initialisation may not run inside one).

Random draws inside the graph come from the default CUDA generator, as they would eagerly: the
generator's state is put back after the warm-up and the capture, so the first replay draws what an
eager call would have drawn, and each replay advances the generator as an eager call does.
"""

from __future__ import annotations

from typing import Callable, Iterable, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


def capture(run: Callable[[], T], device: torch.device, warmup: int) -> tuple[torch.cuda.CUDAGraph, T]:
    """`run()` warmed up `warmup` times on a side stream, then captured; returns the graph and what the
    captured call returned (its tensors are the graph's outputs). The CUDA generator is put back as it
    was before the warm-up. The capture is thread-local: another thread (a loader's pin-memory thread)
    may allocate pinned memory meanwhile."""
    rng = torch.cuda.get_rng_state(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            run()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        output = run()
    torch.cuda.set_rng_state(rng, device)
    return graph, output


class GraphedCalls:
    """`fn(*tensors) -> Tensor` replayed from a CUDA graph captured per input signature (and autocast state).

    The graph reads `weights` in place: an optimizer step that updates them in place is seen by the
    next replay; weights that moved (`.to()`, a new tensor) make every graph be captured again.
    """

    def __init__(self, fn: Callable[..., Tensor], weights: Callable[[], Iterable[Tensor]], warmup: int = 2) -> None:
        self.fn = fn
        self.weights = weights
        self.warmup = warmup
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[Tensor], Tensor]] = {}
        self._weights_at: tuple[int, ...] | None = None

    def clear(self) -> None:
        """Frees the graphs and their memory."""
        self._graphs.clear()
        self._weights_at = None

    def __call__(self, *inputs: Tensor) -> Tensor:
        weights_at = tuple(w.data_ptr() for w in self.weights())
        if weights_at != self._weights_at:
            self.clear()
            self._weights_at = weights_at
        kind = inputs[0].device.type
        # a graph replays the kernels it captured: one captured under autocast is not the eager call outside it
        key = (tuple((tuple(x.shape), x.dtype, x.device) for x in inputs),
               torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind))
        if key not in self._graphs:
            self._graphs[key] = self._capture(inputs)
        graph, static_inputs, output = self._graphs[key]
        for static, x in zip(static_inputs, inputs):
            static.copy_(x)
        graph.replay()
        return output.clone()

    def _capture(self, inputs: tuple[Tensor, ...]) -> tuple[torch.cuda.CUDAGraph, list[Tensor], Tensor]:
        with torch.inference_mode(False):  # normal tensors: later copies into them work in any grad mode
            static_inputs = [x.clone() for x in inputs]
        kind = inputs[0].device.type
        # under the caller's autocast, without its cast cache: a capture that hit the cache would replay reads of
        # weight copies the cache frees when the caller's region ends (and miss in-place weight updates)
        uncached = torch.autocast(kind, dtype=torch.get_autocast_dtype(kind), enabled=torch.is_autocast_enabled(kind),
                                  cache_enabled=False)

        def run() -> Tensor:
            with uncached:
                return self.fn(*static_inputs)

        graph, output = capture(run, inputs[0].device, self.warmup)
        return graph, static_inputs, output
