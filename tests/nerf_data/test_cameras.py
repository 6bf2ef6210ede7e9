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


# ---------------------------------------------------------------------- fisheye and equirectangular

def _opencv_fisheye_direction(px, py, fx, fy, cx, cy, k):
    """The OpenCV fisheye model inverted by bisection (float64): cv::fisheye's theta_d = theta (1 + k1
    theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8), the distorted point being theta_d times the unit
    direction of (X/Z, Y/Z); returned as a unit OpenGL camera-frame direction."""
    xd, yd = (px - cx) / fx, (py - cy) / fy
    theta_d = math.hypot(xd, yd)
    if theta_d == 0:
        return torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    lo, hi = 0.0, math.pi
    for _ in range(200):
        mid = (lo + hi) / 2
        f = mid * (1 + k[0] * mid ** 2 + k[1] * mid ** 4 + k[2] * mid ** 6 + k[3] * mid ** 8)
        lo, hi = (mid, hi) if f < theta_d else (lo, mid)
    theta = (lo + hi) / 2
    opencv = torch.tensor([math.sin(theta) * xd / theta_d, math.sin(theta) * yd / theta_d, math.cos(theta)],
                          dtype=torch.float64)
    return opencv * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)  # OpenCV -> OpenGL axes


def _all_pixels(w, h):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([ys.reshape(-1), xs.reshape(-1)], -1)


def test_fisheye_rays_match_the_opencv_fisheye_model():
    w, h, fx, fy = 24, 20, 9.0, 8.5  # about 150 degrees across: rays well beyond 45 degrees off-axis
    k = [0.05, -0.01, 0.002, -0.0003]
    rot = _rotation(3)
    c2w = torch.cat([rot, torch.tensor([[0.3], [0.1], [-0.7]])], 1)
    cams = Cameras(c2w[None], fx, fy, 11.3, 10.4, w, h, distortion_params=[*k, 0.0, 0.0], camera_type="fisheye")
    coords = _all_pixels(w, h)
    rays = cams.generate_rays(torch.zeros(len(coords), dtype=torch.long), coords)
    expected = torch.stack([rot.double() @ _opencv_fisheye_direction(x + 0.5, y + 0.5, fx, fy, 11.3, 10.4, k)
                            for y, x in coords.tolist()])
    torch.testing.assert_close(rays.directions.double(), expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(rays.origins, c2w[:, 3].expand(len(coords), 3))
    off_axis = torch.rad2deg(torch.acos((rays.directions @ -c2w[:, 2]).clamp(-1, 1)))
    assert float(off_axis.max()) > 70  # the corners are far outside what a pinhole could see
    torch.testing.assert_close(rays.directions_norm, torch.ones(len(coords), 1), atol=1e-5, rtol=0)


def test_fisheye_ray_on_the_principal_point_is_the_optical_axis():
    """nerfstudio divides 0 by 0 there (a NaN ray); the limit is the optical axis."""
    cams = Cameras(torch.eye(4)[None, :3], 10.0, 10.0, 4.5, 3.5, 9, 7, camera_type="fisheye")
    rays = cams.generate_rays(torch.tensor([0]), torch.tensor([[3, 4]]))  # centre (4.5, 3.5)
    torch.testing.assert_close(rays.directions[0], torch.tensor([0.0, 0.0, -1.0]))
    assert torch.isfinite(rays.pixel_area).all() and float(rays.pixel_area) > 0


def test_equirectangular_rays_are_longitude_and_latitude():
    h = 10
    w = 2 * h
    rot = _rotation(5)
    c2w = torch.cat([rot, torch.tensor([[1.0], [2.0], [3.0]])], 1)
    # nerfstudio's intrinsics for a full-sphere image: fx = w / 2, fy = h, principal point at the centre;
    # distortion is never applied to equirectangular cameras
    cams = Cameras(c2w[None], w / 2, float(h), w / 2, h / 2, w, h, distortion_params=[0.3, 0.1, 0, 0, 0.01, 0],
                   camera_type="equirectangular")
    coords = _all_pixels(w, h)
    rays = cams.generate_rays(torch.zeros(len(coords), dtype=torch.long), coords)
    lon = (coords[:, 1].double() + 0.5) / w * 2 * math.pi - math.pi  # 0 straight ahead, +pi/2 to the right
    lat = math.pi / 2 - (coords[:, 0].double() + 0.5) / h * math.pi  # +pi/2 straight up (top row)
    d_cam = torch.stack([torch.sin(lon) * torch.cos(lat), torch.sin(lat), -torch.cos(lon) * torch.cos(lat)], -1)
    torch.testing.assert_close(rays.directions.double(), d_cam @ rot.double().T, atol=1e-6, rtol=0)
    # pixel area: the footprint shrinks towards the poles like cos(latitude)
    area = rays.pixel_area.view(h, w)[:, 0].double()
    ratio = area / area[h // 2 - 1]
    torch.testing.assert_close(ratio[1:-1], (torch.cos(lat.view(h, w)[:, 0]) / math.cos(float(lat[(h // 2 - 1) * w]))
                                             )[1:-1], atol=0.05, rtol=0)


def test_pinhole_with_distortion_coefficients_is_distorted_as_nerfstudio_does():
    """nerfstudio applies k1..p2 to every perspective model (PINHOLE included) when they are not all 0."""
    params = torch.tensor([-0.2, 0.05, 0.0, 0.0, 0.002, -0.001])
    plain, _ = _camera()
    distorted, c2w = _camera(distortion=params)
    coords = torch.tensor([[0, 0], [20, 32], [10, 16]])
    a = plain.generate_rays(torch.zeros(3, dtype=torch.long), coords).directions
    b = distorted.generate_rays(torch.zeros(3, dtype=torch.long), coords).directions
    assert float((a - b).norm(dim=-1)[:2].min()) > 1e-2  # corners move
    d_cam = b.double() @ c2w[:, :3].double()
    undist = torch.stack([d_cam[:, 0] / -d_cam[:, 2], -d_cam[:, 1] / -d_cam[:, 2]], -1)
    pix = radial_and_tangential_distort(undist, params.double().expand(3, 6))
    torch.testing.assert_close(pix * torch.tensor([30.0, 28.0]).double() + torch.tensor([16.5, 10.5]).double(),
                               coords.flip(-1).double() + 0.5, atol=1e-3, rtol=0)
