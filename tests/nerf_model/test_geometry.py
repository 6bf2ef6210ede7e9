"""Contraction, colliders, camera optimizer."""

import math

import pytest
import torch

from data.nerf.rays import RayBundle
from models.fields.camera_optimizer import CameraOptimizer, exp_map_se3, exp_map_so3xr3, exp_so3
from models.fields.colliders import AABBBoxCollider, NearFarCollider
from models.fields.contraction import SceneContraction, normalize_positions


def test_linf_contraction_known_points():
    c = SceneContraction(order=math.inf)
    x = torch.tensor([[0.5, -0.2, 0.9], [2.0, 0.0, 0.0], [4.0, 2.0, -1.0], [1e9, 0.0, 0.0], [1.0, 1.0, 1.0]])
    out = c(x)
    torch.testing.assert_close(out[0], x[0])  # inside the unit cube: unchanged
    torch.testing.assert_close(out[1], torch.tensor([1.5, 0.0, 0.0]))  # (2 - 1/2) * x/2
    torch.testing.assert_close(out[2], (2 - 1 / 4) * torch.tensor([1.0, 0.5, -0.25]))
    torch.testing.assert_close(out[3], torch.tensor([2.0, 0.0, 0.0]))
    torch.testing.assert_close(out[4], x[4])
    n = normalize_positions(x, None, c)
    assert (n >= 0).all() and (n <= 1).all()


def test_contraction_gradient_is_finite_everywhere():
    x = torch.tensor([[0.0, 0.0, 0.0], [3.0, 1.0, 0.0]], requires_grad=True)
    SceneContraction()(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_aabb_normalisation_without_contraction():
    aabb = torch.tensor([[-2.0, -2.0, -2.0], [2.0, 2.0, 2.0]])
    torch.testing.assert_close(normalize_positions(torch.tensor([[0.0, 2.0, -1.0]]), aabb, None),
                               torch.tensor([[0.5, 1.0, 0.25]]))


def _bundle(origins, directions):
    n = origins.shape[0]
    return RayBundle(origins, directions, torch.ones(n, 1), torch.zeros(n, 1, dtype=torch.long))


def test_colliders():
    rb = _bundle(torch.tensor([[0.0, 0.0, -3.0]]), torch.tensor([[0.0, 0.0, 1.0]]))
    out = NearFarCollider(2.0, 6.0)(rb)
    assert out.nears.item() == 2.0 and out.fars.item() == 6.0
    box = AABBBoxCollider(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))(rb)
    assert box.nears.item() == pytest.approx(2.0, abs=1e-4) and box.fars.item() == pytest.approx(4.0, abs=1e-4)


def test_exp_maps():
    zero = torch.zeros(2, 6, dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.float64)[:3].expand(2, 3, 4)
    torch.testing.assert_close(exp_map_so3xr3(zero), eye)
    torch.testing.assert_close(exp_map_se3(zero), eye)
    torch.manual_seed(0)
    v = torch.randn(5, 6, dtype=torch.float64)
    v[0, 3:] *= 1e-4  # the small-angle branch
    twist = torch.zeros(5, 4, 4, dtype=torch.float64)
    w, u = v[:, 3:], v[:, :3]
    twist[:, 0, 1], twist[:, 0, 2], twist[:, 1, 2] = -w[:, 2], w[:, 1], -w[:, 0]
    twist[:, 1, 0], twist[:, 2, 0], twist[:, 2, 1] = w[:, 2], -w[:, 1], w[:, 0]
    twist[:, :3, 3] = u
    torch.testing.assert_close(exp_map_se3(v), torch.linalg.matrix_exp(twist)[:, :3], atol=1e-10, rtol=1e-8)
    r = exp_so3(w)
    torch.testing.assert_close(r, torch.linalg.matrix_exp(twist[:, :3, :3]), atol=1e-10, rtol=1e-8)


def test_camera_optimizer_modes_and_gradients():
    rb = _bundle(torch.randn(4, 3), torch.nn.functional.normalize(torch.randn(4, 3), dim=-1))
    off = CameraOptimizer(3, mode="off")
    assert list(off.parameters()) == [] and off.apply_to_raybundle(rb) is rb
    for mode in ("SO3xR3", "SE3"):
        opt = CameraOptimizer(3, mode=mode)
        out = opt.apply_to_raybundle(rb)
        torch.testing.assert_close(out.origins, rb.origins)  # zero init: identity
        (out.origins.sum() + out.directions.sum()).backward()
        assert torch.isfinite(opt.pose_adjustment.grad).all() and opt.pose_adjustment.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        CameraOptimizer(3, mode="bogus")
