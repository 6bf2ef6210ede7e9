"""Per-camera pose refinement (nerfstudio's CameraOptimizer): a learned 6-vector per training camera,
mapped to a (3, 4) correction [R | t] applied to the rays of that camera during training.

mode "off": nothing learned; "SO3xR3": t = v[:3], R = exp(v[3:]) (Rodrigues); "SE3": the SE(3)
exponential of (v[:3], v[3:]). Its parameters form the `camera_opt` optimizer group.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from data.nerf.rays import RayBundle

MODES = ("off", "SO3xR3", "SE3")


def _skew(w: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(w[:, 0])
    return torch.stack([zero, -w[:, 2], w[:, 1], w[:, 2], zero, -w[:, 0], -w[:, 1], w[:, 0], zero],
                       dim=-1).view(-1, 3, 3)


def _series(w: torch.Tensor):
    """A = sin t / t, B = (1 - cos t) / t^2, C = (t - sin t) / t^3 with Taylor forms near t = 0."""
    t2 = (w * w).sum(dim=-1)[:, None, None]
    small = t2 < 1e-4
    t2s = torch.where(small, torch.ones_like(t2), t2)
    t = torch.sqrt(t2s)
    a = torch.where(small, 1 - t2 / 6 + t2 * t2 / 120, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24 + t2 * t2 / 720, (1 - torch.cos(t)) / t2s)
    c = torch.where(small, 1.0 / 6 - t2 / 120 + t2 * t2 / 5040, (t - torch.sin(t)) / (t2s * t))
    return a, b, c


def exp_so3(w: torch.Tensor) -> torch.Tensor:
    """(N, 3) axis-angle -> (N, 3, 3) rotation."""
    k = _skew(w)
    a, b, _ = _series(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def exp_map_so3xr3(v: torch.Tensor) -> torch.Tensor:
    return torch.cat([exp_so3(v[:, 3:]), v[:, :3, None]], dim=-1)


def exp_map_se3(v: torch.Tensor) -> torch.Tensor:
    """(N, 6) (translation part, rotation part) -> (N, 3, 4) with t = V(w) u."""
    u, w = v[:, :3], v[:, 3:]
    k = _skew(w)
    a, b, c = _series(w)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(k)
    rot = eye + a * k + b * (k @ k)
    vmat = eye + b * k + c * (k @ k)
    return torch.cat([rot, vmat @ u[:, :, None]], dim=-1)


class CameraOptimizer(nn.Module):
    def __init__(self, num_cameras: int, mode: str = "SO3xR3", position_noise_std: float = 0.0,
                 orientation_noise_std: float = 0.0, trans_l2_penalty: float = 0.0, rot_l2_penalty: float = 0.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"camera optimizer mode={mode!r} is not one of {MODES}")
        self.mode, self.num_cameras = mode, num_cameras
        self.trans_l2_penalty, self.rot_l2_penalty = trans_l2_penalty, rot_l2_penalty
        self.pose_adjustment = nn.Parameter(torch.zeros(num_cameras, 6)) if mode != "off" else None
        if position_noise_std or orientation_noise_std:  # debugging aid: fixed perturbation of the poses
            noise = torch.cat([torch.randn(num_cameras, 3) * position_noise_std,
                               torch.randn(num_cameras, 3) * orientation_noise_std], dim=-1)
            self.register_buffer("pose_noise", exp_map_se3(noise))
        else:
            self.pose_noise = None

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """(N,) camera indices -> (N, 3, 4) corrections."""
        n = indices.shape[0]
        out = torch.eye(4, device=indices.device)[None, :3, :].repeat(n, 1, 1)
        if self.pose_adjustment is not None:
            v = self.pose_adjustment[indices]
            out = exp_map_so3xr3(v) if self.mode == "SO3xR3" else exp_map_se3(v)
        if self.pose_noise is not None:
            noise = self.pose_noise[indices]
            out = torch.cat([out[:, :, :3] @ noise[:, :, :3],
                             out[:, :, :3] @ noise[:, :, 3:] + out[:, :, 3:]], dim=-1)
        return out

    @property
    def refines(self) -> bool:
        """True when training casts a camera's rays from another pose than the dataparser gave it."""
        return self.pose_adjustment is not None or self.pose_noise is not None

    def corrected_poses(self, camera_to_worlds: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """(N, 3, 4) camera-to-world of cameras `indices` (their dataparser poses `camera_to_worlds`, (N, 3, 4))
        as training casts their rays now: `apply_to_raybundle` turns a ray (o, d) into (o + t, R d), which are the
        rays of the camera [R Rc | oc + t]. (nerfstudio's viewer draws `c2w @ [R | t]` instead, a correction in
        the camera's frame that is not the pose its rays use; docs/NEURAL_FIELDS.md.) Device work only: no sync."""
        corr = self(indices)
        rotation = corr[:, :, :3] @ camera_to_worlds[:, :, :3]
        return torch.cat([rotation, camera_to_worlds[:, :, 3:] + corr[:, :, 3:]], dim=-1)

    def apply_to_raybundle(self, ray_bundle: RayBundle) -> RayBundle:
        if self.pose_adjustment is None and self.pose_noise is None:
            return ray_bundle
        corr = self(ray_bundle.camera_indices.view(-1).long())
        origins = ray_bundle.origins + corr[:, :3, 3]
        directions = torch.bmm(corr[:, :3, :3], ray_bundle.directions[..., None])[..., 0]
        return dataclasses.replace(ray_bundle, origins=origins, directions=directions)

    def regularizer(self) -> torch.Tensor | None:
        if self.pose_adjustment is None or not (self.trans_l2_penalty or self.rot_l2_penalty):
            return None
        p = self.pose_adjustment
        return (p[:, :3].norm(dim=-1).mean() * self.trans_l2_penalty
                + p[:, 3:].norm(dim=-1).mean() * self.rot_l2_penalty)
