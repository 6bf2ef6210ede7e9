"""The training cameras' frustums follow pose refinement (nerfstudio's viewer does the same).

Pose refinement (the camera optimizer) moves the poses training casts its rays from; the frustums are
moved to them every `REFRESH_S` (longer where moving them all would take more than `MAX_SHARE` of the
time: viser sends each frustum's pose on its own, some 60 us a frustum on a CPU core), in two halves so that training
never waits for the device:
- `request()`, on the training thread at the loop's viewer points (`fit_started`, `step_done` when the
  interval has passed, `fit_ended`): the scene's `refined_poses` is queued on the device behind the step
  just finished, and its result copied to pinned host memory without blocking, an event marking the end.
  Nothing waits here; the parameters read are those of the step just finished, as the copy is queued in
  stream order before the next step's optimizer update.
- `apply()`, on the viewer's panel thread about once a second: once the event has passed, the frustums
  take the copied poses (those that moved: a converged camera costs nothing).
On a CPU device the copy is done at once (a few matrices per camera).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from viewer.camera import frustum_pose

REFRESH_S = 2.0  # the frustums are at most this far behind training (plus the panel thread's second) ...
MAX_SHARE = 0.005  # ... unless drawing them takes more than this share of the time: then every (drawing s / this)


class FrustumPoses:
    def __init__(self, refined_poses: Callable[[torch.Tensor], torch.Tensor], indices: Sequence[int], handles,
                 device: torch.device, atomic: Callable, clock: Callable[[], float] = time.monotonic):
        self.refined_poses = refined_poses
        self.handles = list(handles)  # viser frustum handles, one per index
        self.indices = torch.as_tensor(list(indices), dtype=torch.long).to(device)  # made once: no copy per request
        self.device, self.atomic, self.clock = device, atomic, clock
        self._lock = threading.Lock()
        self._pending: tuple[int, torch.Tensor, torch.cuda.Event | None] | None = None
        self._requested_at = -float("inf")
        self.drawn = np.stack([np.concatenate(_pose(h)) for h in self.handles]) if self.handles else np.zeros((0, 7))
        self.step: int | None = None  # the training step whose poses the frustums show (None: the initial ones)
        self.interval = REFRESH_S  # seconds between two copies; lengthened by a drawing that takes long

    def request(self, step: int, force: bool = False) -> None:
        """Queue a copy of the refined poses after step `step` when `interval` has passed since the last one (at
        once with `force`); it replaces one not drawn yet. Training thread, between steps; never waits for the
        device."""
        now = self.clock()
        if not self.handles or (not force and now - self._requested_at < self.interval):
            return
        self._requested_at = now
        poses = self.refined_poses(self.indices)
        if self.device.type == "cuda":
            host = poses.to("cpu", non_blocking=True)  # into pinned memory, in stream order after the step
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(self.device))
        else:
            host, done = poses.clone(), None
        with self._lock:
            self._pending = (step, host, done)

    def apply(self) -> bool:
        """Move the frustums to the last requested poses once their copy has arrived; True when it had."""
        with self._lock:
            pending = self._pending
            if pending is None or (pending[2] is not None and not pending[2].query()):
                return False
            self._pending = None
        step, host, _ = pending
        wxyz, position = frustum_pose(host.double().numpy())
        poses = np.concatenate([wxyz, position], axis=1)
        moved = np.flatnonzero((poses != self.drawn).any(axis=1))
        start = time.perf_counter()
        with self.atomic():
            for k in moved.tolist():
                self.handles[k].wxyz, self.handles[k].position = wxyz[k], position[k]
        self.interval = max(REFRESH_S, (time.perf_counter() - start) / MAX_SHARE)
        self.drawn[moved] = poses[moved]
        self.step = step
        return True


def _pose(handle) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(handle.wxyz, dtype=np.float64), np.asarray(handle.position, dtype=np.float64)
