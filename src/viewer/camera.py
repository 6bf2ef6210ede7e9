"""Between viser's cameras and ours.

viser poses a camera by `wxyz` (its rotation into the world) and `position`, in OpenCV's camera axes
(+z forward, +y down, +x right), with a vertical field of view in radians. Our `Cameras` hold OpenGL
camera-to-world matrices (looking down -z, +y up), so the two rotations differ by a half turn about
the camera's x axis. The viewer shows the scene in the dataparser's frame, where the training cameras
and the model live (nerfstudio's viewer adds a x10 display scale; distances here are the model's own).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import viser.transforms as vtf

from data.nerf.cameras import Cameras, pixel_grid
from data.nerf.rays import RayBundle

OPENCV_FROM_OPENGL = np.diag([1.0, -1.0, -1.0])  # the same matrix both ways (a half turn about x)


def render_size(aspect: float, max_res: int) -> tuple[int, int]:
    """`(height, width)` of a render with the canvas' aspect (width / height), its longer side `max_res`."""
    if aspect >= 1.0:
        width = max_res
        height = max(1, round(max_res / aspect))
    else:
        height = max_res
        width = max(1, round(max_res * aspect))
    return height, width


def viewer_cameras(wxyz, position, fov: float, height: int, width: int, device: torch.device) -> Cameras:
    """One pinhole camera at viser's pose (OpenCV axes), `fov` vertical, for an image of `height` x `width`."""
    rotation = vtf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix() @ OPENCV_FROM_OPENGL
    c2w = np.concatenate([rotation, np.asarray(position, dtype=np.float64).reshape(3, 1)], axis=1)
    focal = 0.5 * height / math.tan(0.5 * fov)
    return Cameras(torch.as_tensor(c2w, dtype=torch.float32)[None], fx=focal, fy=focal, cx=width / 2.0,
                   cy=height / 2.0, width=width, height=height).to(device, non_blocking=True)


def viewer_rays(wxyz, position, fov: float, height: int, width: int, device: torch.device) -> RayBundle:
    """All rays of that camera's image, row-major, queued on `device` without a host sync (the render thread
    makes them in a turn between two training steps, whose kernels may still be running)."""
    cameras = viewer_cameras(wxyz, position, fov, height, width, device)
    return cameras.generate_rays(torch.zeros(height * width, dtype=torch.long, device=device),
                                 pixel_grid(height, width, device))


def frustum_pose(camera_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(wxyz, position)` for viser of an OpenGL camera-to-world `(3, 4)` matrix, or `(N, 4)` and `(N, 3)` of
    `(N, 3, 4)` matrices."""
    c2w = np.asarray(camera_to_world, dtype=np.float64)
    return vtf.SO3.from_matrix(c2w[..., :3] @ OPENCV_FROM_OPENGL).wxyz, c2w[..., 3].copy()


def z_depth_factor(height: int, width: int, fov: float) -> np.ndarray:
    """`(H, W)` factors from a ray's distance to its depth along the camera's axis (viser composites the
    scene with a background image by that depth)."""
    focal = 0.5 * height / math.tan(0.5 * fov)
    ys = (np.arange(height) + 0.5 - height / 2.0) / focal
    xs = (np.arange(width) + 0.5 - width / 2.0) / focal
    return 1.0 / np.sqrt(1.0 + ys[:, None] ** 2 + xs[None, :] ** 2)
