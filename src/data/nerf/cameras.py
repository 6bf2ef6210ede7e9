"""Cameras and ray generation, following nerfstudio's conventions.

- `camera_to_worlds` are `(N, 3, 4)` OpenGL camera-to-world matrices: the camera looks down its
  -z axis, +y is up and +x is right in the image.
- Intrinsics are in pixels; pixel `(y, x)` (row, column, integers) is sampled at its centre
  `(y + 0.5, x + 0.5)`.
- `camera_type` is "pinhole" (no distortion) or "opencv" (radial k1..k4 and tangential p1, p2,
  stored as nerfstudio does: `distortion_params = [k1, k2, k3, k4, p1, p2]`, the radial factor
  being `1 + k1 r^2 + k2 r^4 + k3 r^6 + k4 r^8`). Distorted image points are undistorted with
  nerfstudio's Newton iterations (10 steps) in the OpenCV image frame (y down) before the flip to
  OpenGL, so the tangential terms keep OpenCV's signs.
- `pixel_area` is nerfstudio's: the product of the distances between the unit direction of the
  pixel and those of its right (x + 1) and lower (y + 1) neighbours, i.e. the footprint at unit
  distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data.nerf.rays import RayBundle

CAMERA_TYPES = ("pinhole", "opencv")


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
                 camera_type: str = "pinhole"):
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
        camera_type = camera_type.lower()
        if camera_type not in CAMERA_TYPES:
            raise ValueError(f"Cameras: camera_type {camera_type!r} is not one of {CAMERA_TYPES}")
        self.camera_type = camera_type
        if distortion_params is not None and camera_type == "opencv":
            d = torch.as_tensor(distortion_params, dtype=torch.float32)
            if d.ndim == 1:
                d = d.expand(n, 6)
            if d.shape != (n, 6):
                raise ValueError(f"Cameras: distortion_params must be (N, 6), got {tuple(d.shape)}")
            self.distortion_params = d.clone()
        else:
            self.distortion_params = None

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

    def to(self, device) -> "Cameras":
        return self._map(lambda t: t.to(device))

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
        u = (x - cx) / fx
        v = (y - cy) / fy  # OpenCV normalised image frame, y down
        pts = torch.stack([
            torch.stack([u, v], -1),
            torch.stack([u + 1.0 / fx, v], -1),  # right neighbour (x + 1)
            torch.stack([u, v + 1.0 / fy], -1),  # lower neighbour (y + 1)
        ], 0)  # (3, N, 2)
        if self.distortion_params is not None:
            params = self.distortion_params[ci]
            pts = radial_and_tangential_undistort(pts, params.expand(3, -1, -1))
        dirs_cam = torch.stack([pts[..., 0], -pts[..., 1], -torch.ones_like(pts[..., 0])], -1)  # OpenGL
        rot = self.camera_to_worlds[ci, :, :3]  # (N, 3, 3)
        dirs = torch.einsum("nij,knj->kni", rot, dirs_cam)
        dirs = dirs / torch.linalg.norm(dirs, dim=-1, keepdim=True)
        dx = torch.linalg.norm(dirs[0] - dirs[1], dim=-1)
        dy = torch.linalg.norm(dirs[0] - dirs[2], dim=-1)
        return RayBundle(
            origins=self.camera_to_worlds[ci, :, 3].clone(),
            directions=dirs[0].contiguous(),
            pixel_area=(dx * dy)[:, None],
            camera_indices=ci[:, None],
        )

    def image_pixel_coords(self, camera_index: int) -> torch.Tensor:
        """(H*W, 2) `[y, x]` pixel indices of one camera's image, row-major."""
        h, w = int(self.height[camera_index, 0]), int(self.width[camera_index, 0])
        ys, xs = torch.meshgrid(torch.arange(h, device=self.device), torch.arange(w, device=self.device),
                                indexing="ij")
        return torch.stack([ys.reshape(-1), xs.reshape(-1)], -1)

    def generate_image_rays(self, camera_index: int) -> RayBundle:
        """All rays of one camera, flattened row-major: `(H*W,)`; reshape to `(H, W)`."""
        coords = self.image_pixel_coords(camera_index)
        idx = torch.full((coords.shape[0],), camera_index, dtype=torch.long, device=self.device)
        return self.generate_rays(idx, coords)


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
