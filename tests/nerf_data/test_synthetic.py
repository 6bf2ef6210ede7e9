"""The procedural scene's ray tracer is exact: analytic distances and hand-computed pixel colours."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.nerf import synthetic as syn


def test_ray_through_sphere_centre_hits_at_analytic_distance():
    eye = np.array([[0.0, -4.0, 0.5]])
    d = np.array([[0.0, 1.0, 0.0]])
    assert syn.intersect_sphere(eye, d)[0] == pytest.approx(4.0 - 0.5, abs=1e-12)
    # oblique ray through the centre
    eye2 = np.array([[2.0, 3.0, 4.0]])
    d2 = syn.SPHERE_CENTER - eye2
    dist = np.linalg.norm(d2)
    t = syn.intersect_sphere(eye2, d2 / dist)[0]
    assert t == pytest.approx(dist - syn.SPHERE_RADIUS, abs=1e-12)
    assert np.isinf(syn.intersect_sphere(eye, np.array([[1.0, 0.0, 0.0]]))[0])  # a miss


def test_other_primitives_analytic_hits():
    # box face x = 1.2 hit from +x
    t = syn.intersect_box(np.array([[3.0, -0.7, 0.3]]), np.array([[-1.0, 0.0, 0.0]]))[0]
    assert t == pytest.approx(3.0 - 1.2, abs=1e-12)
    # cylinder side from +x at height 0.4, and its cap from above
    side, cap = syn.intersect_cylinder(np.array([[2.0, 0.6, 0.4]]), np.array([[-1.0, 0.0, 0.0]]))
    assert side[0] == pytest.approx(2.0 - (-0.8 + 0.3), abs=1e-12) and np.isinf(cap[0])
    side, cap = syn.intersect_cylinder(np.array([[-0.8, 0.6, 3.0]]), np.array([[0.0, 0.0, -1.0]]))
    assert cap[0] == pytest.approx(3.0 - 0.8, abs=1e-12)
    # ground
    assert syn.intersect_ground(np.array([[1.3, 1.3, 2.0]]), np.array([[0.0, 0.0, -1.0]]))[0] == pytest.approx(2.0)
    rgb, hit, t, obj = syn.trace(np.array([[0.0, 0.0, 5.0]]), np.array([[0.3, 0.0, 1.0]]))
    assert not hit[0] and np.allclose(rgb[0], syn.BACKGROUND) and obj[0] == syn.MISS


def test_centre_pixel_colour_equals_hand_computed_texture():
    size = 33  # odd: the centre pixel's ray is the optical axis
    eye = np.array([3.0, 2.0, 2.5])
    pose = syn.look_at(eye, target=syn.SPHERE_CENTER)
    cams = syn.make_cameras(pose[None], size)
    r = syn.render(cams)
    # by hand: the axis hits the sphere at c - r*d with normal -d
    d = (syn.SPHERE_CENTER - eye) / np.linalg.norm(syn.SPHERE_CENTER - eye)
    n = -d
    phi = math.atan2(n[1], n[0]) % (2 * math.pi)
    theta = math.acos(n[2])
    u, v = phi / (2 * math.pi) * 8, theta / math.pi * 4
    assert min(u % 1, 1 - u % 1, v % 1, 1 - v % 1) > 0.05  # well inside one checker cell
    albedo = syn.SPHERE_COLORS[int((math.floor(u) + math.floor(v)) % 2)]
    expected = albedo * (0.3 + 0.7 * max(0.0, float(n @ syn.LIGHT_DIR)))
    c = size // 2
    np.testing.assert_allclose(r.rgb[0, c, c], expected, atol=1e-6)
    assert r.alpha[0, c, c] and r.object_id[0, c, c] == syn.SPHERE
    assert r.depth[0, c, c] == pytest.approx(np.linalg.norm(syn.SPHERE_CENTER - eye) - 0.5, abs=1e-4)
    np.testing.assert_array_equal(syn.to_uint8(r.rgb[0, c, c]), np.round(expected * 255).astype(np.uint8))


def test_writers_make_both_formats(tmp_path):
    ns = syn.write_nerfstudio(tmp_path / "ns", n_views=4, size=16, masks=True)
    meta = json.loads((ns / "transforms.json").read_text())
    assert len(meta["frames"]) == 4 and meta["w"] == 16 and meta["camera_model"] == "OPENCV"
    assert all((ns / f["file_path"]).is_file() and (ns / f["mask_path"]).is_file() for f in meta["frames"])
    assert np.load(ns / meta["frames"][0]["gt_depth_path"]).shape == (16, 16)
    bl = syn.write_blender(tmp_path / "bl", n_views=4, size=16, n_eval_views=2)
    from PIL import Image

    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        m = json.loads((bl / f"transforms_{split}.json").read_text())
        assert len(m["frames"]) == n and 0 < m["camera_angle_x"] < math.pi
    img = np.asarray(Image.open(bl / "train" / "r_0.png"))
    assert img.shape == (16, 16, 4) and img[..., 3].min() == 0 and img[..., 3].max() == 255


def test_cli(tmp_path):
    src = Path(__file__).resolve().parents[2] / "src"
    out = subprocess.run([sys.executable, "-m", "data.nerf.synthetic", "--out", str(tmp_path / "s"),
                          "--format", "blender", "--n-views", "3", "--size", "8"], cwd=src,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "s" / "transforms_train.json").is_file()
