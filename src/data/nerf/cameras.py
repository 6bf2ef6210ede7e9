"""Cameras and ray generation, following nerfstudio 1.1.5's `Cameras._generate_rays_from_coords`.

- `camera_to_worlds` are `(N, 3, 4)` OpenGL camera-to-world matrices: the camera looks down its
  -z axis, +y is up and +x is right in the image.
- Intrinsics are in pixels; pixel `(y, x)` (row, column, integers) is sampled at its centre
  `(y + 0.5, x + 0.5)`; `(u, v) = ((x - cx) / fx, (y - cy) / fy)` in the OpenCV image frame (y down).
- `distortion_params = [k1, k2, k3, k4, p1, p2]` (N, 6) or None. Wherever they are not all zero, the
  points are undistorted with nerfstudio's Newton iterations (10 steps, radial factor
  `1 + k1 r^2 + k2 r^4 + k3 r^6 + k4 r^8`, OpenCV's tangential terms) in the OpenCV frame, before
  the flip to OpenGL. This happens for every camera type except equirectangular, as in nerfstudio.
- `camera_type` (one per Cameras object, as nerfstudio's transforms.json has one `camera_model`):
  - "perspective" (COLMAP's SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV): direction
    `(u, -v, -1)`.
  - "fisheye" (OPENCV_FISHEYE): equidistant. The undistorted point's norm is the angle theta from
    the optical axis (clipped to [0, pi]) and the direction is `(u sin(theta)/theta, -v
    sin(theta)/theta, -cos(theta))`; with the polynomial above this inverts OpenCV's fisheye model
    `theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)`. At theta = 0 (a pixel
    centre exactly on the principal point) nerfstudio divides 0 by 0 and gets a NaN ray; here the
    limit, the optical axis, is used.
  - "equirectangular": longitude `-pi u`, colatitude `pi (1/2 + v)` (after the flip, nerfstudio's
    `pi (1/2 - v_gl)`); with nerfstudio's intrinsics for such images (fx = w/2, fy = h, centred
    principal point) the image spans the whole sphere, +y (up) at the top row.
- `pixel_area` is nerfstudio's: the product of the distances between the unit direction of the
  pixel and those of its right (x + 1) and lower (y + 1) neighbours, i.e. the footprint at unit
  distance. `directions_norm` is the length of the camera-frame direction before normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from data.nerf.rays import RayBundle

CAMERA_TYPES = ("perspective", "fisheye", "equirectangular")
_EPS = 4.0 * torch.finfo(torch.float64).eps  # nerfstudio's floor on a direction's norm


def _col(value, n: int, dtype, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=dtype)
    if t.ndim == 0:
        t = t.expand(n)
    t = t.reshape(-1)
    if t.numel() == 1 and n != 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"Cameras: {name} has {t.numel()} values for {n} cameras")
    return t.reshape(n, 1).clone()


@dataclass(init=False)
class Cameras:
    camera_to_worlds: torch.Tensor  # (N, 3, 4)
    fx: torch.Tensor  # (N, 1)
    fy: torch.Tensor  # (N, 1)
    cx: torch.Tensor  # (N, 1)
    cy: torch.Tensor  # (N, 1)
    width: torch.Tensor  # (N, 1) long
    height: torch.Tensor  # (N, 1) long
    distortion_params: torch.Tensor | None  # (N, 6) [k1, k2, k3, k4, p1, p2] or None
    camera_type: str

    def __init__(self, camera_to_worlds, fx, fy, cx, cy, width, height, distortion_params=None,
                 camera_type: str = "perspective"):
        c2w = torch.as_tensor(camera_to_worlds, dtype=torch.float32)
        if c2w.ndim == 2:
            c2w = c2w[None]
        if c2w.shape[-2] == 4:
            c2w = c2w[..., :3, :]
        if c2w.ndim != 3 or c2w.shape[1:] != (3, 4):
            raise ValueError(f"Cameras: camera_to_worlds must be (N, 3, 4), got {tuple(c2w.shape)}")
        n = c2w.shape[0]
        self.camera_to_worlds = c2w
        self.fx = _col(fx, n, torch.float32, "fx")
        self.fy = _col(fy, n, torch.float32, "fy")
        self.cx = _col(cx, n, torch.float32, "cx")
        self.cy = _col(cy, n, torch.float32, "cy")
        self.width = _col(width, n, torch.int64, "width")
        self.height = _col(height, n, torch.int64, "height")
        if camera_type not in CAMERA_TYPES:
            raise ValueError(f"Cameras: camera_type {camera_type!r} is not one of {CAMERA_TYPES}")
        self.camera_type = camera_type
        if distortion_params is None:
            self.distortion_params = None
        else:
            d = torch.as_tensor(distortion_params, dtype=torch.float32)
            if d.ndim == 1:
                d = d.expand(n, -1)
            if d.shape != (n, 6):
                raise ValueError(f"Cameras: distortion_params must be (N, 6) [k1, k2, k3, k4, p1, p2], "
                                 f"got {tuple(d.shape)}")
            self.distortion_params = d.clone()

    # ------------------------------------------------------------------ containers
    def __len__(self) -> int:
        return self.camera_to_worlds.shape[0]

    @property
    def device(self) -> torch.device:
        return self.camera_to_worlds.device

    def _fields(self):
        return ("camera_to_worlds", "fx", "fy", "cx", "cy", "width", "height", "distortion_params")

    def _map(self, fn) -> "Cameras":
        out = Cameras.__new__(Cameras)
        for name in self._fields():
            value = getattr(self, name)
            setattr(out, name, None if value is None else fn(value))
        out.camera_type = self.camera_type
        return out

    def __getitem__(self, index) -> "Cameras":
        if isinstance(index, int):
            index = [index]
        return self._map(lambda t: t[index])

    def to(self, device, non_blocking: bool = False) -> "Cameras":
        """`non_blocking`: the copies are queued without a host sync (`to_device_nowait`)."""
        device = torch.device(device)
        return self._map(lambda t: to_device_nowait(t, device) if non_blocking else t.to(device))

    def rescale_output_resolution(self, scale: float) -> "Cameras":
        """A copy for images resized by `scale` (nerfstudio: intrinsics scaled, sizes truncated)."""
        out = self._map(lambda t: t.clone())
        for name in ("fx", "fy", "cx", "cy"):
            setattr(out, name, getattr(out, name) * scale)
        out.width = (self.width * scale).to(torch.int64)
        out.height = (self.height * scale).to(torch.int64)
        return out

    # ------------------------------------------------------------------ rays
    def generate_rays(self, camera_indices: torch.Tensor, pixel_coords: torch.Tensor) -> RayBundle:
        """Rays through pixel centres.

        camera_indices: (N,) or (N, 1) long, indices into these cameras.
        pixel_coords: (N, 2) `[y, x]` pixel indices (row, column); the ray goes through
            `(y + 0.5, x + 0.5)`.
        """
        dev = self.device
        ci = torch.as_tensor(camera_indices, device=dev).reshape(-1).long()
        pc = torch.as_tensor(pixel_coords, device=dev).reshape(-1, 2).to(torch.float32)
        y = pc[:, 0] + 0.5
        x = pc[:, 1] + 0.5
        fx, fy = self.fx[ci, 0], self.fy[ci, 0]
        cx, cy = self.cx[ci, 0], self.cy[ci, 0]
        pts = torch.stack([  # (3, N, 2): the pixel, its right (x + 1) and lower (y + 1) neighbours
            torch.stack([(x - cx) / fx, (y - cy) / fy], -1),
            torch.stack([(x - cx + 1) / fx, (y - cy) / fy], -1),
            torch.stack([(x - cx) / fx, (y - cy + 1) / fy], -1),
        ], 0)
        if self.distortion_params is not None and self.camera_type != "equirectangular":
            params = self.distortion_params[ci]
            if bool((params != 0).any()):
                pts = radial_and_tangential_undistort(pts, params.expand(3, -1, -1))
        u, v = pts[..., 0], -pts[..., 1]  # OpenGL: y up
        if self.camera_type == "perspective":
            dirs_cam = torch.stack([u, v, -torch.ones_like(u)], -1)
        elif self.camera_type == "fisheye":
            theta = torch.sqrt(u * u + v * v).clamp(0.0, math.pi)
            sinc = torch.where(theta > 0, torch.sin(theta) / torch.where(theta > 0, theta, 1.0), 1.0)
            dirs_cam = torch.stack([u * sinc, v * sinc, -torch.cos(theta)], -1)
        else:  # equirectangular
            lon = -math.pi * u
            colat = math.pi * (0.5 - v)
            dirs_cam = torch.stack([-torch.sin(lon) * torch.sin(colat), torch.cos(colat),
                                    -torch.cos(lon) * torch.sin(colat)], -1)
        rot = self.camera_to_worlds[ci, :, :3]  # (N, 3, 3)
        dirs = torch.einsum("nij,knj->kni", rot, dirs_cam)
        norm = torch.linalg.norm(dirs, dim=-1, keepdim=True).clamp_min(_EPS)
        dirs = dirs / norm
        dx = torch.linalg.norm(dirs[0] - dirs[1], dim=-1)
        dy = torch.linalg.norm(dirs[0] - dirs[2], dim=-1)
        return RayBundle(
            origins=self.camera_to_worlds[ci, :, 3].clone(),
            directions=dirs[0].contiguous(),
            pixel_area=(dx * dy)[:, None],
            camera_indices=ci[:, None],
            directions_norm=norm[0].contiguous(),
        )

    def image_pixel_coords(self, camera_index: int) -> torch.Tensor:
        """(H*W, 2) `[y, x]` pixel indices of one camera's image, row-major."""
        return pixel_grid(int(self.height[camera_index, 0]), int(self.width[camera_index, 0]), self.device)

    def generate_image_rays(self, camera_index: int) -> RayBundle:
        """All rays of one camera, flattened row-major: `(H*W,)`; reshape to `(H, W)`."""
        coords = self.image_pixel_coords(camera_index)
        idx = torch.full((coords.shape[0],), camera_index, dtype=torch.long, device=self.device)
        return self.generate_rays(idx, coords)


def pixel_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(H*W, 2) `[y, x]` pixel indices of an image, row-major, made on `device`."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([ys.reshape(-1), xs.reshape(-1)], -1)


def to_device_nowait(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`, a copy from host memory queued through pinned memory, so the caller never waits for the
    device (a plain copy from pageable memory synchronises)."""
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


# ---------------------------------------------------------------------- distortion

def _split_params(params: torch.Tensor):
    return [params[..., i] for i in range(6)]


def radial_and_tangential_distort(coords: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Forward OpenCV model on normalised points `(..., 2)` (x right, y down)."""
    k1, k2, k3, k4, p1, p2 = _split_params(params)
    x, y = coords[..., 0], coords[..., 1]
    r = x * x + y * y
    d = 1.0 + r * (k1 + r * (k2 + r * (k3 + r * k4)))
    xd = d * x + 2 * p1 * x * y + p2 * (r + 2 * x * x)
    yd = d * y + 2 * p2 * x * y + p1 * (r + 2 * y * y)
    return torch.stack([xd, yd], -1)


def _residual_and_jacobian(x, y, xd, yd, params):
    k1, k2, k3, k4, p1, p2 = _split_params(params)
    r = x * x + y * y
    d = 1.0 + r * (k1 + r * (k2 + r * (k3 + r * k4)))
    fx = d * x + 2 * p1 * x * y + p2 * (r + 2 * x * x) - xd
    fy = d * y + 2 * p2 * x * y + p1 * (r + 2 * y * y) - yd
    d_r = k1 + r * (2.0 * k2 + r * (3.0 * k3 + r * 4.0 * k4))
    d_x = 2.0 * x * d_r
    d_y = 2.0 * y * d_r
    fx_x = d + d_x * x + 2.0 * p1 * y + 6.0 * p2 * x
    fx_y = d_y * x + 2.0 * p1 * x + 2.0 * p2 * y
    fy_x = d_x * y + 2.0 * p2 * y + 2.0 * p1 * x
    fy_y = d + d_y * y + 2.0 * p2 * x + 6.0 * p1 * y
    return fx, fy, fx_x, fx_y, fy_x, fy_y


def radial_and_tangential_undistort(coords: torch.Tensor, params: torch.Tensor, eps: float = 1e-3,
                                    max_iterations: int = 10) -> torch.Tensor:
    """Invert `radial_and_tangential_distort` with Newton's method (nerfstudio's solver)."""
    xd, yd = coords[..., 0], coords[..., 1]
    x, y = xd.clone(), yd.clone()
    for _ in range(max_iterations):
        fx, fy, fx_x, fx_y, fy_x, fy_y = _residual_and_jacobian(x, y, xd, yd, params)
        denominator = fy_x * fx_y - fx_x * fy_y
        x_num = fx * fy_y - fy * fx_y
        y_num = fy * fx_x - fx * fy_x
        ok = denominator.abs() > eps
        safe = torch.where(ok, denominator, torch.ones_like(denominator))
        x = x + torch.where(ok, x_num / safe, torch.zeros_like(x))
        y = y + torch.where(ok, y_num / safe, torch.zeros_like(y))
    return torch.stack([x, y], -1)
