"""Colliders set each ray's near and far distances (left alone when the bundle already has them)."""

from __future__ import annotations

import dataclasses

import torch

from data.nerf.rays import RayBundle


class NearFarCollider(torch.nn.Module):
    def __init__(self, near_plane: float, far_plane: float):
        super().__init__()
        self.near_plane, self.far_plane = float(near_plane), float(far_plane)

    def forward(self, ray_bundle: RayBundle) -> RayBundle:
        if ray_bundle.nears is not None and ray_bundle.fars is not None:
            return ray_bundle
        ones = torch.ones_like(ray_bundle.origins[:, :1])
        return dataclasses.replace(ray_bundle, nears=ones * self.near_plane, fars=ones * self.far_plane)


class AABBBoxCollider(torch.nn.Module):
    """Near/far where each ray enters and leaves the scene box (slab test); near >= near_plane."""

    def __init__(self, aabb: torch.Tensor, near_plane: float = 0.0):
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone(), persistent=False)
        self.near_plane = float(near_plane)

    def forward(self, ray_bundle: RayBundle) -> RayBundle:
        if ray_bundle.nears is not None and ray_bundle.fars is not None:
            return ray_bundle
        inv = 1.0 / (ray_bundle.directions + 1e-6)
        t0 = (self.aabb[0] - ray_bundle.origins) * inv
        t1 = (self.aabb[1] - ray_bundle.origins) * inv
        nears = torch.minimum(t0, t1).amax(dim=-1, keepdim=True).clamp_min(self.near_plane)
        fars = torch.maximum(t0, t1).amin(dim=-1, keepdim=True)
        fars = torch.maximum(fars, nears + 1e-6)  # rays that miss the box get an empty interval
        return dataclasses.replace(ray_bundle, nears=nears, fars=fars)
