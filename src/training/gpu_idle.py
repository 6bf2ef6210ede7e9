"""How long the GPU sat idle between two training steps, waiting for the host.

The loop queues a step's work and goes on (on CUDA it reads nothing back between its sync points), so
while the host waits for the next batch the GPU is often still busy with the previous step: the host's
`data_share` then overstates what loading costs. What throughput loses is the GPU's own idle time between
a step's last kernel and the next step's first one. Two CUDA events a step measure it on the GPU's clock:
one recorded when the host starts queueing the step (after it has the batch, before the copy to the
device), one after the step's last work. The gap from one step's end to the next one's start is idle
time: the GPU had nothing queued because the host was waiting for data or doing its own work between steps
(host-side schedules). Gaps after a log step (the loop waits for the GPU there, then writes the log), an
evaluation or a checkpoint are not counted (`cut`), and neither are the steps that follow them.
"""

from __future__ import annotations

import torch


class GpuIdle:
    """Per-step start/end events on the current CUDA stream; `share()` after a sync reads them."""

    def __init__(self, event=None):
        self._event = event or (lambda: torch.cuda.Event(enable_timing=True))
        self._steps: list[tuple[object, object]] = []
        self._cuts: set[int] = set()  # indices i whose gap to step i + 1 is not counted
        self._start = None

    def start(self) -> None:
        self._start = self._event()
        self._start.record()

    def end(self) -> None:
        end = self._event()
        end.record()
        self._steps.append((self._start, end))

    def cut(self) -> None:
        """The host's work after the last step (an evaluation, a checkpoint) is not the GPU waiting for data."""
        if self._steps:
            self._cuts.add(len(self._steps) - 1)

    def share(self) -> float | None:
        """Idle time / (idle + busy time) over the steps since the last call, once their events have completed
        (call it where the loop has synchronised): each counted gap with the step that follows it; None without
        a gap to count. Keeps the last step, so the gap to the next window's first step counts in that window."""
        counted = [i for i in range(len(self._steps) - 1) if i not in self._cuts]
        busy = sum(self._steps[i + 1][0].elapsed_time(self._steps[i + 1][1]) for i in counted)
        idle = sum(max(0.0, self._steps[i][1].elapsed_time(self._steps[i + 1][0])) for i in counted)
        last = len(self._steps) - 1
        self._steps = self._steps[-1:]
        self._cuts = {0} if last in self._cuts else set()
        return idle / (idle + busy) if counted and idle + busy > 0 else None
