"""A procedural test scene, rendered by an exact ray tracer, written as a nerfstudio or Blender scene.

The scene (world z up, units of metres):
- a ground square z = 0, |x|, |y| <= 1.5, with a checkerboard of period `GROUND_CHECK`;
- a sphere (centre (0, 0, 0.5), radius 0.5) checkered in longitude (8) x latitude (4);
- an axis-aligned box [0.6, 1.2] x [-1.0, -0.4] x [0, 0.6], horizontal stripes (0.1 m) on its sides;
- a vertical cylinder (centre (-0.8, 0.6), radius 0.3, z in [0, 0.8]) with 12 angular stripes and a
  plain top cap;
- a constant background colour (transparent in the Blender format).

One ray per pixel through the pixel centre (`Cameras.generate_rays`, the same rays the
datamanager makes), analytic intersections, no anti-aliasing, Lambertian shading with a fixed
directional light and an ambient term, no shadows: colour = albedo * (AMBIENT + (1 - AMBIENT) *
max(0, n . L)), n facing the ray. Cameras lie on a hemisphere (Fibonacci spiral, elevations
15-65 degrees, radius 4) looking at (0, 0, 0.3).

CLI: `python -m data.nerf.synthetic --out DIR --format nerfstudio|blender|both --n-views 48 --size 64
[--camera-model OPENCV_FISHEYE|EQUIRECTANGULAR]` (run from src/).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.nerf.cameras import Cameras

GROUND_HALF = 1.5
GROUND_CHECK = 0.25
GROUND_COLORS = np.array([[0.85, 0.85, 0.80], [0.25, 0.30, 0.35]])
SPHERE_CENTER = np.array([0.0, 0.0, 0.5])
SPHERE_RADIUS = 0.5
SPHERE_COLORS = np.array([[0.90, 0.20, 0.15], [0.95, 0.85, 0.20]])
SPHERE_CHECKS = (8, 4)  # longitude, latitude
BOX_LO = np.array([0.6, -1.0, 0.0])
BOX_HI = np.array([1.2, -0.4, 0.6])
BOX_COLORS = np.array([[0.15, 0.35, 0.85], [0.90, 0.90, 0.95]])
BOX_STRIPE = 0.1
CYL_CENTER = np.array([-0.8, 0.6])
CYL_RADIUS = 0.3
CYL_Z = (0.0, 0.8)
CYL_COLORS = np.array([[0.20, 0.70, 0.30], [0.05, 0.30, 0.10]])
CYL_CAP_COLOR = np.array([0.60, 0.40, 0.20])
CYL_STRIPES = 12
BACKGROUND = np.array([0.60, 0.75, 0.90])
LIGHT_DIR = np.array([0.4, 0.3, 0.85]) / np.linalg.norm([0.4, 0.3, 0.85])
AMBIENT = 0.3
LOOK_AT = np.array([0.0, 0.0, 0.3])
EPS = 1e-6

# object ids in the hit buffer
MISS, GROUND, SPHERE, BOX, CYL_SIDE, CYL_CAP = -1, 0, 1, 2, 3, 4


# ---------------------------------------------------------------------- intersections (numpy, float64)

def intersect_sphere(o, d, center=SPHERE_CENTER, radius=SPHERE_RADIUS):
    """Nearest t > 0 along unit directions `d` (inf on a miss)."""
    oc = o - center
    b = np.sum(oc * d, -1)
    c = np.sum(oc * oc, -1) - radius * radius
    disc = b * b - c
    sq = np.sqrt(np.maximum(disc, 0.0))
    t0, t1 = -b - sq, -b + sq
    t = np.where(t0 > EPS, t0, np.where(t1 > EPS, t1, np.inf))
    return np.where(disc >= 0, t, np.inf)


def intersect_ground(o, d):
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -o[:, 2] / d[:, 2]
    p = o + np.nan_to_num(t, posinf=0, neginf=0)[:, None] * d
    ok = np.isfinite(t) & (t > EPS) & (np.abs(p[:, 0]) <= GROUND_HALF) & (np.abs(p[:, 1]) <= GROUND_HALF)
    return np.where(ok, t, np.inf)


def intersect_box(o, d, lo=BOX_LO, hi=BOX_HI):
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (lo - o) * inv
        t2 = (hi - o) * inv
    tnear = np.nanmax(np.minimum(t1, t2), -1)
    tfar = np.nanmin(np.maximum(t1, t2), -1)
    ok = tfar >= np.maximum(tnear, EPS)
    t = np.where(tnear > EPS, tnear, tfar)
    return np.where(ok, t, np.inf)


def intersect_cylinder(o, d):
    """(t_side, t_cap) for the vertical cylinder (inf on a miss)."""
    ox, oy = o[:, 0] - CYL_CENTER[0], o[:, 1] - CYL_CENTER[1]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (ox * d[:, 0] + oy * d[:, 1])
    c = ox ** 2 + oy ** 2 - CYL_RADIUS ** 2
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = np.sqrt(np.maximum(disc, 0.0))
        t0 = (-b - sq) / (2 * a)
        t1 = (-b + sq) / (2 * a)
    t_side = np.full(len(o), np.inf)
    for t in (t1, t0):  # t0 (nearer) wins where valid
        z = o[:, 2] + t * d[:, 2]
        ok = (disc >= 0) & (a > 1e-12) & (t > EPS) & (z >= CYL_Z[0]) & (z <= CYL_Z[1])
        t_side = np.where(ok, t, t_side)
    t_cap = np.full(len(o), np.inf)
    for zc in CYL_Z:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (zc - o[:, 2]) / d[:, 2]
        tt = np.nan_to_num(t, posinf=0, neginf=0)
        px, py = o[:, 0] + tt * d[:, 0] - CYL_CENTER[0], o[:, 1] + tt * d[:, 1] - CYL_CENTER[1]
        ok = np.isfinite(t) & (t > EPS) & (px ** 2 + py ** 2 <= CYL_RADIUS ** 2)
        t_cap = np.minimum(t_cap, np.where(ok, t, np.inf))
    return t_side, t_cap


# ---------------------------------------------------------------------- textures

def sphere_albedo(p):
    q = p - SPHERE_CENTER
    phi = np.arctan2(q[:, 1], q[:, 0]) % (2 * np.pi)
    theta = np.arccos(np.clip(q[:, 2] / SPHERE_RADIUS, -1, 1))
    k = (np.floor(phi / (2 * np.pi) * SPHERE_CHECKS[0]) + np.floor(theta / np.pi * SPHERE_CHECKS[1])) % 2
    return SPHERE_COLORS[k.astype(int)]


def ground_albedo(p):
    k = (np.floor(p[:, 0] / GROUND_CHECK) + np.floor(p[:, 1] / GROUND_CHECK)) % 2
    return GROUND_COLORS[k.astype(int)]


def box_albedo(p, axis):
    """Horizontal stripes on the side faces; the top and bottom faces (axis 2) are plain."""
    k = np.where(axis == 2, 0, np.floor(p[:, 2] / BOX_STRIPE) % 2)
    return BOX_COLORS[k.astype(int)]


def cylinder_albedo(p):
    ang = np.arctan2(p[:, 1] - CYL_CENTER[1], p[:, 0] - CYL_CENTER[0]) % (2 * np.pi)
    k = np.floor(ang / (2 * np.pi) * CYL_STRIPES) % 2
    return CYL_COLORS[k.astype(int)]


def shade(albedo, normal, d):
    n = np.where((np.sum(normal * d, -1) > 0)[:, None], -normal, normal)  # face the ray
    return albedo * (AMBIENT + (1 - AMBIENT) * np.maximum(0.0, n @ LIGHT_DIR))[:, None]


# ---------------------------------------------------------------------- tracer

def trace(origins, directions):
    """Exact first-hit tracing. Returns (rgb (N, 3) float64, hit (N,) bool, t (N,), object id (N,))."""
    o = np.asarray(origins, np.float64)
    d = np.asarray(directions, np.float64)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    t_ground = intersect_ground(o, d)
    t_sphere = intersect_sphere(o, d)
    t_box = intersect_box(o, d)
    t_side, t_cap = intersect_cylinder(o, d)
    ts = np.stack([t_ground, t_sphere, t_box, t_side, t_cap], -1)
    obj = np.argmin(ts, -1)
    t = ts[np.arange(len(o)), obj]
    hit = np.isfinite(t)
    obj = np.where(hit, obj, MISS)
    p = o + np.where(hit, t, 0.0)[:, None] * d
    rgb = np.tile(BACKGROUND, (len(o), 1)).astype(np.float64)

    m = obj == GROUND
    if m.any():
        rgb[m] = shade(ground_albedo(p[m]), np.tile([0.0, 0.0, 1.0], (m.sum(), 1)), d[m])
    m = obj == SPHERE
    if m.any():
        rgb[m] = shade(sphere_albedo(p[m]), (p[m] - SPHERE_CENTER) / SPHERE_RADIUS, d[m])
    m = obj == BOX
    if m.any():
        pm = p[m]
        centre, half = (BOX_LO + BOX_HI) / 2, (BOX_HI - BOX_LO) / 2
        rel = (pm - centre) / half
        axis = np.argmax(np.abs(rel), -1)
        normal = np.zeros_like(pm)
        normal[np.arange(len(pm)), axis] = np.sign(rel[np.arange(len(pm)), axis])
        rgb[m] = shade(box_albedo(pm, axis), normal, d[m])
    m = obj == CYL_SIDE
    if m.any():
        pm = p[m]
        normal = np.stack([(pm[:, 0] - CYL_CENTER[0]) / CYL_RADIUS, (pm[:, 1] - CYL_CENTER[1]) / CYL_RADIUS,
                           np.zeros(len(pm))], -1)
        rgb[m] = shade(cylinder_albedo(pm), normal, d[m])
    m = obj == CYL_CAP
    if m.any():
        rgb[m] = shade(np.tile(CYL_CAP_COLOR, (m.sum(), 1)), np.tile([0.0, 0.0, 1.0], (m.sum(), 1)), d[m])
    return rgb, hit, np.where(hit, t, np.inf), obj


def look_at(eye, target=LOOK_AT, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(3, 4) OpenGL camera-to-world: -z towards the target, +y up."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    z = eye - target
    z /= np.linalg.norm(z)
    x = np.cross(up, z)
    if np.linalg.norm(x) < 1e-9:
        x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z, eye], -1)


def hemisphere_poses(n: int, radius: float = 4.0, min_elev_deg: float = 15.0, max_elev_deg: float = 65.0,
                     offset: float = 0.0) -> np.ndarray:
    """(n, 3, 4) cameras on a Fibonacci spiral over a band of the upper hemisphere."""
    golden = math.pi * (3.0 - math.sqrt(5.0))
    lo, hi = math.sin(math.radians(min_elev_deg)), math.sin(math.radians(max_elev_deg))
    poses = []
    for i in range(n):
        s = lo + (hi - lo) * ((i + 0.5) / n)
        elev = math.asin(s)
        az = golden * i + offset
        eye = radius * np.array([math.cos(elev) * math.cos(az), math.cos(elev) * math.sin(az), math.sin(elev)])
        poses.append(look_at(eye))
    return np.stack(poses)


def make_cameras(poses: np.ndarray, size: int, fov_deg: float = 50.0, distortion=None,
                 camera_model: str = "OPENCV") -> Cameras:
    """Cameras of a `size` px scene: OPENCV (pinhole, `fov_deg` across, optional OpenCV distortion),
    OPENCV_FISHEYE (equidistant, `fov_deg` across the image's width, optional k1..k4) or
    EQUIRECTANGULAR (2 size x size, the whole sphere; nerfstudio's intrinsics fx = w/2, fy = h)."""
    c2w = torch.from_numpy(poses).float()
    dist = None if distortion is None else torch.as_tensor(distortion, dtype=torch.float32)
    if camera_model == "OPENCV":
        focal = 0.5 * size / math.tan(0.5 * math.radians(fov_deg))
        return Cameras(c2w, focal, focal, size / 2.0, size / 2.0, size, size, distortion_params=dist)
    if camera_model == "OPENCV_FISHEYE":
        focal = 0.5 * size / math.radians(0.5 * fov_deg)  # theta = r / f without distortion
        return Cameras(c2w, focal, focal, size / 2.0, size / 2.0, size, size, distortion_params=dist,
                       camera_type="fisheye")
    if camera_model == "EQUIRECTANGULAR":
        return Cameras(c2w, float(size), float(size), float(size), size / 2.0, 2 * size, size,
                       camera_type="equirectangular")
    raise ValueError(f"camera_model {camera_model!r} is not one of OPENCV, OPENCV_FISHEYE, EQUIRECTANGULAR")


@dataclass
class Render:
    rgb: np.ndarray  # (N, H, W, 3) float in [0, 1]
    alpha: np.ndarray  # (N, H, W) bool: a primitive was hit
    depth: np.ndarray  # (N, H, W) float32 z-depth along the camera's -z (0 where nothing was hit)
    object_id: np.ndarray  # (N, H, W) int


def render(cameras: Cameras, max_rays: int = 1 << 21) -> Render:
    """Render every camera (all cameras must share one size), `max_rays` rays at a time at most (the
    tracer's float64 temporaries take about 0.5 KB a ray)."""
    h, w = int(cameras.height[0, 0]), int(cameras.width[0, 0])
    n = len(cameras)
    coords = cameras.image_pixel_coords(0)
    rgb = np.empty((n, h * w, 3))
    hit = np.empty((n, h * w), bool)
    depth = np.empty((n, h * w), np.float32)
    obj = np.empty((n, h * w), np.int64)
    per_chunk = max(1, max_rays // (h * w))
    for first in range(0, n, per_chunk):
        cams = torch.arange(first, min(n, first + per_chunk))
        idx = cams.repeat_interleave(coords.shape[0])
        rays = cameras.generate_rays(idx, coords.repeat(len(cams), 1))
        o = rays.origins.double().numpy()
        d = rays.directions.double().numpy()
        c_rgb, c_hit, t, c_obj = trace(o, d)
        fwd = -cameras.camera_to_worlds[:, :, 2].double().numpy()[idx.numpy()]
        c_depth = np.where(c_hit, np.where(c_hit, t, 0.0) * np.sum(d * fwd, -1), 0.0)
        sl = slice(first, first + len(cams))
        rgb[sl], hit[sl], obj[sl] = c_rgb.reshape(-1, h * w, 3), c_hit.reshape(-1, h * w), c_obj.reshape(-1, h * w)
        depth[sl] = c_depth.reshape(-1, h * w)
    return Render(rgb.reshape(n, h, w, 3), hit.reshape(n, h, w), depth.reshape(n, h, w), obj.reshape(n, h, w))


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _c2w44(pose34) -> list:
    m = np.eye(4)
    m[:3] = pose34
    return m.tolist()


def write_nerfstudio(out: Path, n_views: int = 48, size: int = 64, fov_deg: float = 50.0, masks: bool = False,
                     depth: bool = True, distortion: list[float] | None = None, camera_model: str = "OPENCV") -> Path:
    """`transforms.json` + images/ (+ masks/, depth/ .npy z-depth in metres under 'gt_depth_path');
    `camera_model` OPENCV, OPENCV_FISHEYE or EQUIRECTANGULAR (see make_cameras)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    poses = hemisphere_poses(n_views)
    cams = make_cameras(poses, size, fov_deg, distortion, camera_model)
    r = render(cams)
    k = distortion or [0.0] * 6
    meta = {"camera_model": camera_model, "fl_x": float(cams.fx[0, 0]), "fl_y": float(cams.fy[0, 0]),
            "cx": float(cams.cx[0, 0]), "cy": float(cams.cy[0, 0]), "w": int(cams.width[0, 0]),
            "h": int(cams.height[0, 0]), "k1": k[0], "k2": k[1], "k3": k[2], "k4": k[3], "p1": k[4], "p2": k[5],
            "frames": []}
    for i in range(n_views):
        name = f"frame_{i + 1:05d}"
        _save_png(out / "images" / f"{name}.png", to_uint8(r.rgb[i]))
        frame = {"file_path": f"images/{name}.png", "transform_matrix": _c2w44(poses[i])}
        if masks:
            _save_png(out / "masks" / f"{name}.png", (r.alpha[i] * 255).astype(np.uint8))
            frame["mask_path"] = f"masks/{name}.png"
        if depth:
            (out / "depth").mkdir(exist_ok=True)
            np.save(out / "depth" / f"{name}.npy", r.depth[i])
            frame["gt_depth_path"] = f"depth/{name}.npy"
        meta["frames"].append(frame)
    (out / "transforms.json").write_text(json.dumps(meta, indent=2))
    return out


def write_blender(out: Path, n_views: int = 48, size: int = 64, fov_deg: float = 50.0, n_eval_views: int = 8,
                  depth: bool = True) -> Path:
    """transforms_{train,val,test}.json + {train,val,test}/r_<i>.png RGBA (transparent background)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"train": n_views, "val": n_eval_views, "test": n_eval_views}
    offsets = {"train": 0.0, "val": 0.9, "test": 2.1}
    for split, n in counts.items():
        poses = hemisphere_poses(n, offset=offsets[split])
        cams = make_cameras(poses, size, fov_deg)
        r = render(cams)
        meta = {"camera_angle_x": 2.0 * math.atan(0.5 * size / float(cams.fx[0, 0])), "frames": []}
        for i in range(n):
            rgba = np.concatenate([to_uint8(r.rgb[i] * r.alpha[i][..., None]),
                                   (r.alpha[i] * 255).astype(np.uint8)[..., None]], -1)
            _save_png(out / split / f"r_{i}.png", rgba)
            if depth:
                np.save(out / split / f"r_{i}_depth.npy", r.depth[i])
            meta["frames"].append({"file_path": f"./{split}/r_{i}", "rotation": 0.0,
                                   "transform_matrix": _c2w44(poses[i])})
        (out / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))
    return out


def generate(out, format: str = "nerfstudio", n_views: int = 48, size: int = 64, **kw) -> Path:
    out = Path(out)
    if format == "nerfstudio":
        return write_nerfstudio(out, n_views, size, **kw)
    blender_kw = {k: v for k, v in kw.items() if k in ("fov_deg", "n_eval_views", "depth")}
    if format == "blender":
        return write_blender(out, n_views, size, **blender_kw)
    if format == "both":
        write_nerfstudio(out / "nerfstudio", n_views, size, **{k: v for k, v in kw.items() if k != "n_eval_views"})
        write_blender(out / "blender", n_views, size, **blender_kw)
        return out
    raise ValueError(f"unknown format {format!r} (nerfstudio, blender, both)")


GENERATOR_FILE = "generator.json"  # the parameters a generated scene folder was written with


def check_generated_with(root: Path, params: dict, cached: bool) -> None:
    """A scene folder reused must hold the scene these parameters describe: a folder generated with
    another size or view count would silently train on other data. In the cache ($HYDRABOT_HOME, named
    by data.scene.name) a folder without the record predates it and is refused too; a folder given as
    data.data without one is the user's own scene and is read as it is. FileExistsError, which names the
    folder, what differs and the fix."""
    path = root / GENERATOR_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = None
    if saved == params or (saved is None and not cached):
        return
    if saved is None:
        what = f"it has no readable {GENERATOR_FILE} (generated by an older version)"
    else:
        what = ", ".join(f"{k} {saved.get(k)} there, {v} asked" for k, v in params.items() if saved.get(k) != v)
        what = f"it was generated with other parameters ({what})"
    other = "choose another data.scene.name" if cached else "point data.data at another folder"
    raise FileExistsError(f"{root} holds a scene, but {what}; remove that folder to regenerate it, or {other}")


def scene_root(root: Path | None, name: str, format: str) -> Path:
    """The scene folder: `root`, or for None the cache's $HYDRABOT_HOME/scenes/<name>[_<format>]."""
    if root is None:
        import os

        folder = name if format == "nerfstudio" else f"{name}_{format}"
        root = Path(os.environ.get("HYDRABOT_HOME", "~/.cache/hydrabot")).expanduser() / "scenes" / folder
    return Path(root).expanduser()


def scene_marker(format: str) -> str:
    """The file whose presence says a folder holds a scene of this format."""
    return "transforms.json" if format == "nerfstudio" else "transforms_train.json"


def folder_to_generate_in(root: Path | None, name: str, format: str) -> Path | None:
    """Where ensure_scene would write (the temporary folder beside the scene's), or None when the
    scene is there already and nothing is written."""
    root = scene_root(root, name, format)
    return None if (root / scene_marker(format)).is_file() else root.parent


def ensure_scene(root: Path | None, name: str = "synthetic", format: str = "nerfstudio", n_views: int = 48,
                 size: int = 64, fov_deg: float = 50.0, n_eval_views: int = 8) -> Path:
    """The scene folder, generated first when it holds no scene (like `dataset=pusht` records its demos).

    `root` None: $HYDRABOT_HOME/scenes/<name> for the nerfstudio format, .../scenes/<name>_<format> for
    another, so the two formats of one scene name never share a folder. Written to a temporary folder and
    renamed when complete, so an interrupted generation leaves nothing that looks like a scene."""
    import os
    import shutil

    cached = root is None
    root = scene_root(root, name, format)
    marker = scene_marker(format)
    params = {"format": format, "n_views": n_views, "size": size, "fov_deg": fov_deg}
    if format != "nerfstudio":
        params["n_eval_views"] = n_eval_views
    if (root / marker).is_file():
        check_generated_with(root, params, cached)
        return root
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists but holds no {marker} (the {format} format's file; a scene of the other "
                              "format?); remove it, or point data.data at a scene folder of this format")
    tmp = root.parent / f".tmp-{root.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    generate(tmp, format, n_views, size, **{k: v for k, v in params.items() if k in ("fov_deg", "n_eval_views")})
    (tmp / GENERATOR_FILE).write_text(json.dumps(params, indent=1))
    if root.exists():
        root.rmdir()
    tmp.rename(root)
    return root


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m data.nerf.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--format", choices=["nerfstudio", "blender", "both"], default="nerfstudio")
    ap.add_argument("--n-views", type=int, default=48)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--fov-deg", type=float, default=50.0)
    ap.add_argument("--masks", action="store_true", help="nerfstudio format: write masks (True on objects)")
    ap.add_argument("--camera-model", choices=["OPENCV", "OPENCV_FISHEYE", "EQUIRECTANGULAR"], default="OPENCV",
                    help="nerfstudio format: the cameras (fisheye: --fov-deg across the image, equidistant)")
    ap.add_argument("--no-depth", action="store_true")
    args = ap.parse_args(argv)
    kw = {"fov_deg": args.fov_deg, "depth": not args.no_depth}
    if args.masks:
        kw["masks"] = True
    if args.camera_model != "OPENCV":
        if args.format != "nerfstudio":
            ap.error("--camera-model is for --format nerfstudio (the Blender format has pinhole cameras only)")
        kw["camera_model"] = args.camera_model
    t0 = time.perf_counter()
    generate(args.out, args.format, args.n_views, args.size, **kw)
    print(f"wrote {args.format} scene ({args.n_views} views, {args.size}x{args.size}) to {args.out} "
          f"in {time.perf_counter() - t0:.2f}s")


if __name__ == "__main__":
    main()
