"""Progressive renders at each browser's camera, one chunk of rays at a time on the device share.

Each connected browser is a `Target`: its latest camera and how far its render has got. While a camera
moves, only the coarsest render is made (64 pixels on the long side), so the picture follows the mouse;
once it rests, the view is rendered again at twice the size each time up to the chosen resolution.
During training a finished view is rendered again at full size when the model has changed (at most
once a second), so the picture follows training. A finer render whose camera moves, or any render
whose output or resolution is changed, is dropped between two chunks. Every chunk (sized to take about
TURN_S at the measured speed, at most viewer.num_rays_per_chunk rays), and the picture's assembly,
encoding and sending, runs in a turn of the `DeviceShare`, which keeps renders to their share of time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from viewer.camera import render_size, viewer_rays, z_depth_factor
from viewer.scene import ViewerScene
from viewer.share import DeviceShare, Stopped, Turn

FIRST_LEVEL = 64  # long side of the render made while the camera moves
TURN_S = 0.05  # a chunk is sized to take about this long (at most viewer.num_rays_per_chunk rays), so a turn
MIN_CHUNK = 512  # never holds training up for long and the share is kept step by step, not only on average
MOVE_SETTLE_S = 0.15  # a camera rests once it has not moved for this long
REFRESH_S = 1.0  # while training, a finished view is rendered again at most this often

log = logging.getLogger("viewer")


class CudaSpan:
    """A render turn's GPU work, timed by CUDA events on the stream training uses, so the turn needs no host
    sync: the start event passes once the step's queued kernels are done, the end event once the turn's are."""

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.current_stream(device)
        self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.start.record(self.stream)

    def close(self) -> None:
        self.end.record(self.stream)

    def seconds(self) -> float:
        self.end.synchronize()  # releases the GIL: training runs on meanwhile
        return self.start.elapsed_time(self.end) / 1000.0


def levels(max_res: int) -> list[int]:
    """Long sides of the progressive renders, coarse to fine: 64, 128, ... below `max_res`, then `max_res`."""
    sides, side = [], FIRST_LEVEL
    while side < max_res:
        sides.append(side)
        side *= 2
    return [*sides, max_res]


@dataclass(frozen=True)
class View:
    """A browser camera (viser's: OpenCV axes, vertical field of view in radians)."""

    wxyz: tuple[float, ...]
    position: tuple[float, ...]
    fov: float
    aspect: float  # width / height of the browser's canvas


@dataclass
class Settings:
    """What the viewer's controls choose; `version` changes with each choice, dropping renders under way."""

    output: str
    max_res: int
    image_format: str = "jpeg"
    jpeg_quality: int = 90
    version: int = 0

    def choose(self, **values) -> None:
        for key, value in values.items():
            setattr(self, key, value)
        self.version += 1


@dataclass
class Done:
    version: int  # the camera version rendered
    settings: int
    level: int
    step: int  # the training step the render started at
    at: float  # monotonic time it was shown
    failed: bool = False  # not tried again until the camera or a setting changes


@dataclass
class Target:
    """One browser: `show(image, depth)` puts a picture behind its scene."""

    key: int
    show: Callable[[np.ndarray, np.ndarray], None]
    view: View | None = None
    version: int = 0
    moved_at: float = 0.0
    done: Done | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def move(self, view: View) -> None:
        with self.lock:
            self.view, self.version, self.moved_at = view, self.version + 1, time.monotonic()


@dataclass(frozen=True)
class Job:
    target: Target
    view: View
    version: int
    settings: int
    output: str
    level: int
    side: int


def display(values: torch.Tensor) -> np.ndarray:
    """uint8 (H, W, 3) of an output: colours as they are; one channel in grey, as it is when it lies in
    [0, 1] (accumulation), else scaled between its 1st and 99th percentiles (depth, whose misses lie at
    the far plane)."""
    if values.shape[-1] == 1:
        lo, hi = float(values.min()), float(values.max())
        if lo < 0.0 or hi > 1.0:
            lo, hi = (float(q) for q in torch.quantile(values.flatten()[::max(1, values.numel() // 100_000)],
                                                        torch.tensor([0.01, 0.99])))
            values = (values - lo) / max(hi - lo, 1e-8)
        values = values.expand(*values.shape[:2], 3)
    return (values[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


class Renderer(threading.Thread):
    def __init__(self, scene: ViewerScene, share: DeviceShare, settings: Settings, chunk: int):
        super().__init__(name="viewer-render", daemon=True)
        self.scene, self.share, self.settings, self.chunk = scene, share, settings, chunk
        self.targets: dict[int, Target] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._next = 0  # round-robin position among the targets
        self.images_shown = 0
        self.rays_per_s: float | None = None  # measured over the render turns

    def chunk_size(self) -> int:
        """Rays for the next chunk: about TURN_S of work at the measured speed, within [MIN_CHUNK, chunk]."""
        if self.rays_per_s is None:  # unmeasured: small, so the first turn cannot overrun the share by much
            return min(self.chunk, MIN_CHUNK)
        return max(min(self.chunk, MIN_CHUNK), min(self.chunk, int(self.rays_per_s * TURN_S)))

    def _settled(self, turn: Turn, rays: int) -> None:
        """Waits for a chunk's device work (its outputs are then in host memory) and measures the speed from
        what the chunk cost: its turn, or its device time where that was longer."""
        self.share.settle()
        rate = rays / max(turn.seconds, 1e-6)
        self.rays_per_s = rate if self.rays_per_s is None else 0.7 * self.rays_per_s + 0.3 * rate

    # ------------------------------------------------------------------ targets
    def add(self, target: Target) -> None:
        with self._lock:
            self.targets[target.key] = target
        self.wake()

    def remove(self, key: int) -> None:
        with self._lock:
            self.targets.pop(key, None)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    # ------------------------------------------------------------------ the thread
    def run(self) -> None:
        while not self._stopping.is_set():
            job = self.next_job()
            if job is None:
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            try:
                self.render(job)
            except Stopped:
                return
            except Exception:  # a failed render must not end the viewer (nor training): said, then go on
                log.exception("viewer render failed (client %s, %s)", job.target.key, job.output)
                with job.target.lock:
                    job.target.done = Done(job.version, job.settings, job.level, self.share.step, time.monotonic(),
                                           failed=True)

    def next_job(self) -> Job | None:
        """The next render due, taking the browsers in turn."""
        with self._lock:
            targets = list(self.targets.values())
        if not targets:
            return None
        settings = self.settings
        sides = levels(settings.max_res)
        now = time.monotonic()
        for i in range(len(targets)):
            target = targets[(self._next + i) % len(targets)]
            with target.lock:
                view, version, moved_at, done = target.view, target.version, target.moved_at, target.done
            if view is None:
                continue
            resting = now - moved_at >= MOVE_SETTLE_S
            if done is None or done.version != version or done.settings != settings.version:
                level = 0
            elif done.failed:
                continue
            elif done.level < len(sides) - 1:
                if not resting:
                    continue
                level = done.level + 1
            elif self.share.step != done.step and now - done.at >= REFRESH_S:
                level = len(sides) - 1  # the model changed: the full view again, the old one shown meanwhile
            else:
                continue
            self._next = (self._next + i + 1) % len(targets)
            return Job(target, view, version, settings.version, settings.output, level, sides[level])
        return None

    def _dropped(self, job: Job) -> bool:
        """A render under way is dropped when its browser leaves, a setting changes, or, past the coarse level, its
        camera moves (a coarse picture is finished, so that a camera that keeps moving still sees one)."""
        return (self._stopping.is_set() or job.target.key not in self.targets or self.settings.version != job.settings
                or (job.level > 0 and job.target.version != job.version))

    def render(self, job: Job) -> None:
        """Everything that uses the device or the CPU in earnest (rays, chunks, the picture, its encoding and
        sending) runs in turns of the share, so its time is counted against the render budget."""
        scene, view = self.scene, job.view
        height, width = render_size(view.aspect, job.side)
        names = tuple(dict.fromkeys((job.output, scene.depth_output)))
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        step, started, busy, rays = self.share.step, time.monotonic(), 0.0, None
        start = 0
        while start < height * width:
            if self._dropped(job):
                return
            size = self.chunk_size()
            with self.share.turn() as turn:
                if rays is None:
                    rays = viewer_rays(view.wxyz, view.position, view.fov, height, width, scene.device)
                out = scene.render(rays[start:start + size], names)
            self._settled(turn, min(size, height * width - start))
            busy += turn.seconds
            start += size
            for name in names:
                parts[name].append(out[name])
        if self._dropped(job):
            return
        with self.share.turn() as turn:
            outputs = {name: torch.cat(chunks).view(height, width, -1) for name, chunks in parts.items()}
            depth = outputs[scene.depth_output][..., 0].numpy() * z_depth_factor(height, width, view.fov)
            job.target.show(display(outputs[job.output]), depth.astype(np.float32))
        self.share.settle()
        busy += turn.seconds
        with job.target.lock:
            job.target.done = Done(job.version, job.settings, job.level, step, time.monotonic())
        self.images_shown += 1
        log.info("render client=%d output=%s size=%dx%d level=%d step=%d busy_s=%.4f wall_s=%.3f position=%s",
                 job.target.key, job.output, width, height, job.level, step, busy, time.monotonic() - started,
                 np.round(view.position, 4).tolist())
