"""What a pipeline hands the live viewer: its training cameras with their images (and their refined poses),
and a renderer.

A pipeline that can be viewed declares `viewer_scene() -> ViewerScene` (pipelines/nerf.py does); the
viewer needs nothing else from it, and the training loop knows nothing of either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from data.nerf.cameras import Cameras
from data.nerf.rays import RayBundle


@dataclass(frozen=True)
class ViewerScene:
    cameras: Cameras  # the training cameras (OpenGL camera-to-world, the dataparser's frame)
    image: Callable[[int], np.ndarray]  # uint8 (H, W, 3) image of training camera i
    model: torch.nn.Module  # render_image(rays, chunk) -> {name: (N, C)} in eval mode
    outputs: tuple[str, ...]  # what the viewer's output selector offers; the first is the default
    center: np.ndarray  # (3,) where the viewer's camera looks first (the scene box's centre)
    depth_output: str = "depth"  # the output that places the render among the scene's objects
    # (N,) training-camera indices (on the device) -> (N, 3, 4) camera-to-world as training now casts their
    # rays (pose refinement), as device work without a host sync; None: the cameras keep their poses
    refined_poses: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.cameras.device

    @torch.no_grad()
    def render(self, rays: RayBundle, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The model's outputs `names` for `rays` in one forward pass, in host memory. In eval mode (deterministic
        samples, no pose refinement, no schedule counters advanced); the model's mode is put back after. From a
        GPU the copies are queued without a host sync (into pinned memory): read them once the device's queued
        work is done (DeviceShare.settle)."""
        was_training = self.model.training
        self.model.eval()
        try:
            outputs = self.model.render_image(rays, len(rays))
        finally:
            self.model.train(was_training)
        return {name: outputs[name].float().to("cpu", non_blocking=True) for name in names}
