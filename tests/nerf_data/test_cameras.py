"""Ray generation against hand-computed rays; OpenCV distortion round trips."""

from __future__ import annotations

import math

import torch

from data.nerf.cameras import Cameras, radial_and_tangential_distort, radial_and_tangential_undistort


def _rotation(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


def _camera(w=33, h=21, fx=30.0, fy=28.0, distortion=None):
    rot = _rotation()
    c2w = torch.cat([rot, torch.tensor([[1.0], [-2.0], [0.5]])], 1)
    return Cameras(c2w[None], fx, fy, w / 2.0, h / 2.0, w, h, distortion_params=distortion), c2w


def test_centre_pixel_ray_is_minus_z_axis():
    cams, c2w = _camera()
    rays = cams.generate_rays(torch.tensor([0]), torch.tensor([[10, 16]]))  # centre (10.5, 16.5)
    torch.testing.assert_close(rays.directions[0], -c2w[:, 2], atol=1e-6, rtol=0)
    torch.testing.assert_close(rays.origins[0], c2w[:, 3])
    assert rays.camera_indices.shape == (1, 1) and rays.camera_indices.dtype == torch.long


def test_corner_pixel_direction_matches_hand_formula():
    w, h, fx, fy = 33, 21, 30.0, 28.0
    cams, c2w = _camera(w, h, fx, fy)
    rays = cams.generate_rays(torch.tensor([0, 0]), torch.tensor([[0, 0], [h - 1, w - 1]]))
    for k, (py, px) in enumerate([(0.5, 0.5), (h - 0.5, w - 0.5)]):
        d_cam = torch.tensor([(px - w / 2) / fx, -(py - h / 2) / fy, -1.0])
        d = c2w[:, :3] @ (d_cam / d_cam.norm())
        torch.testing.assert_close(rays.directions[k], d, atol=1e-6, rtol=0)
    # top-left pixel looks left (-x) and up (+y) in the camera frame
    d_cam0 = c2w[:, :3].T @ rays.directions[0]
    assert d_cam0[0] < 0 and d_cam0[1] > 0 and d_cam0[2] < 0
    torch.testing.assert_close(rays.directions.norm(dim=-1), torch.ones(2))


def test_pixel_area_is_nerfstudios():
    w, h, fx, fy = 33, 21, 30.0, 28.0
    cams, c2w = _camera(w, h, fx, fy)
    rays = cams.generate_rays(torch.tensor([0]), torch.tensor([[3, 5]]))
    def unit(px, py):
        v = torch.tensor([(px - w / 2) / fx, -(py - h / 2) / fy, -1.0])
        return v / v.norm()
    d0, d1, d2 = unit(5.5, 3.5), unit(6.5, 3.5), unit(5.5, 4.5)
    expected = (d0 - d1).norm() * (d0 - d2).norm()
    torch.testing.assert_close(rays.pixel_area[0, 0], expected, atol=1e-9, rtol=1e-4)
    # near the centre it is about 1 / (fx * fy)
    centre = cams.generate_rays(torch.tensor([0]), torch.tensor([[10, 16]]))
    assert math.isclose(float(centre.pixel_area), 1 / (fx * fy), rel_tol=1e-2)


def test_distortion_round_trip():
    g = torch.Generator().manual_seed(0)
    pts = (torch.rand(500, 2, generator=g) - 0.5) * 1.2
    params = torch.tensor([-0.12, 0.03, -0.004, 0.0005, 0.0012, -0.0021]).expand(500, 6)
    distorted = radial_and_tangential_distort(pts, params)
    assert (distorted - pts).abs().max() > 1e-3  # the distortion does something
    torch.testing.assert_close(radial_and_tangential_undistort(distorted, params), pts, atol=1e-5, rtol=0)


def test_distorted_camera_rays_reproject_to_their_pixel():
    params = torch.tensor([-0.2, 0.05, 0.0, 0.0, 0.002, -0.001])
    w, h, fx, fy = 33, 21, 30.0, 28.0
    cams, c2w = _camera(w, h, fx, fy, distortion=params)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([ys.reshape(-1), xs.reshape(-1)], -1)
    rays = cams.generate_rays(torch.zeros(len(coords), dtype=torch.long), coords)
    d_cam = rays.directions @ c2w[:, :3]  # R^T d
    undist = torch.stack([d_cam[:, 0] / -d_cam[:, 2], -d_cam[:, 1] / -d_cam[:, 2]], -1)  # OpenCV frame
    dist = radial_and_tangential_distort(undist, params.expand(len(coords), 6))
    pix = torch.stack([dist[:, 1] * fy + h / 2, dist[:, 0] * fx + w / 2], -1)
    torch.testing.assert_close(pix, coords.float() + 0.5, atol=1e-3, rtol=0)


def test_rescale_and_index():
    cams, _ = _camera(64, 48, 50.0, 50.0)
    half = cams.rescale_output_resolution(0.5)
    assert int(half.width) == 32 and int(half.height) == 24 and float(half.fx) == 25.0 and float(half.cx) == 16.0
    assert len(cams[[0, 0]]) == 2
    full = cams.generate_image_rays(0)
    assert len(full) == 64 * 48
