"""Camera trajectories for rendering, returned as `Cameras` in the frame the model was trained in.

The model lives in the dataparser's frame: the dataset's poses after the orientation, centring and
scaling that `data.nerf.dataparsers` applies and records (`file_transform`, a 3x4 rigid transform
from the scene file's frame, then `file_scale` on the translations; nerfstudio's
`dataparser_transform` also undoes the file's `applied_transform`, which is not wanted here).

- `orbit`: a circle around the vertical axis (the training cameras' mean up vector) through the point
  nearest to all training cameras' optical axes, every frame looking at that point; radius and height
  default to the training cameras' medians, the camera (model, intrinsics, distortion) to the first
  training camera's.
- `read_camera_path`: nerfstudio's camera_path.json (`camera_type`, `render_height`, `render_width`,
  `fps`, `seconds`, `camera_path: [{camera_to_world: 16 floats row-major, fov: vertical degrees,
  aspect}]`). Poses are OpenGL camera-to-world matrices. With `frame="original"` (the default) they
  are in the dataset's own world frame (that of transforms.json), and the dataparser's normalisation
  is applied to them; `frame="dataparser"` takes them as they are (paths exported by nerfstudio's
  viewer, which works in the normalised frame).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from config.errors import ConfigError
from data.nerf.cameras import Cameras

FRAMES = ("original", "dataparser")


def to_dataparser_frame(c2w: torch.Tensor, transform: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, 3|4, 4) poses of the dataset's frame -> (N, 3, 4) poses of the frame the model was trained in."""
    t = torch.eye(4, dtype=torch.float64)
    t[:3] = transform.to(torch.float64)
    poses = torch.eye(4, dtype=torch.float64).repeat(len(c2w), 1, 1)
    poses[:, :3] = c2w.to(torch.float64)[:, :3]
    out = (t @ poses)[:, :3]
    out[:, :, 3] *= scale
    return out.to(torch.float32)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.norm(v, dim=-1, keepdim=True).clamp_min(1e-12)


def orbit(cameras: Cameras, frames: int, radius: float | None = None, height: float | None = None) -> Cameras:
    if frames < 1:
        raise ConfigError(f"frames={frames}: an orbit needs at least one frame")
    c2w = cameras.camera_to_worlds.detach().cpu().to(torch.float64)
    pos, fwd = c2w[:, :, 3], -c2w[:, :, 2]
    up = _unit(c2w[:, :, 1].mean(0))
    # the point nearest to all optical axes: sum_i (I - d_i d_i^T) (c - p_i) = 0
    proj = torch.eye(3, dtype=torch.float64) - fwd[:, :, None] * fwd[:, None, :]
    centre = torch.linalg.lstsq(proj.sum(0), (proj @ pos[:, :, None]).sum(0)).solution[:, 0]
    rel = pos - centre
    heights = rel @ up
    horizontal = rel - heights[:, None] * up
    radii = torch.linalg.norm(horizontal, dim=-1)
    radius = float(radii.median()) if radius is None else float(radius)
    height = float(heights.median()) if height is None else float(height)
    if radius <= 0:
        raise ConfigError(f"radius={radius}: an orbit needs a positive radius")
    e1 = horizontal[int(radii.argmax())] / radii.max().clamp_min(1e-12)  # starts beside a training camera
    e2 = torch.linalg.cross(up, e1)
    theta = torch.arange(frames, dtype=torch.float64) * (2 * math.pi / frames)
    p = centre + height * up + radius * (torch.cos(theta)[:, None] * e1 + torch.sin(theta)[:, None] * e2)
    z = _unit(p - centre)  # OpenGL: the camera looks down -z, at the centre
    x = _unit(torch.linalg.cross(up.expand_as(z), z))
    y = torch.linalg.cross(z, x)
    poses = torch.stack([x, y, z, p], dim=-1).to(torch.float32)
    dist = None if cameras.distortion_params is None else cameras.distortion_params[0].detach().cpu()
    return Cameras(poses, cameras.fx[0, 0], cameras.fy[0, 0], cameras.cx[0, 0], cameras.cy[0, 0],
                   cameras.width[0, 0], cameras.height[0, 0], distortion_params=dist, camera_type=cameras.camera_type)


def read_camera_path(path: str | Path, transform: torch.Tensor, scale: float,
                     frame: str = "original") -> tuple[Cameras, float]:
    """(cameras, fps) of a nerfstudio camera_path.json; see the module docstring for the frame."""
    path = Path(path)
    if frame not in FRAMES:
        raise ConfigError(f"camera_path_frame={frame} is not one of {', '.join(FRAMES)}")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"camera_path={path}: no such file; give a camera_path.json or camera_path=orbit") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"camera_path={path}: not readable JSON ({e}); repair or re-export the file") from e

    def bad(problem: str):
        return ConfigError(f"camera_path={path}: {problem} (nerfstudio's camera_path.json format: render_height, "
                           "render_width, fps, camera_path: [{camera_to_world: 16 numbers, fov: degrees}])")

    if not isinstance(data, dict):
        raise bad("the top level is not an object")
    camera_type = str(data.get("camera_type", "perspective")).lower()
    if camera_type != "perspective":
        raise bad(f"camera_type {camera_type!r} is not supported, only 'perspective'")
    try:
        h, w, fps = int(data["render_height"]), int(data["render_width"]), float(data["fps"])
        entries = data["camera_path"]
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"missing or malformed {e}") from None
    if h < 1 or w < 1 or fps <= 0 or not isinstance(entries, list) or not entries:
        raise bad(f"render size {w}x{h}, fps {fps} and a non-empty camera_path list are needed")
    poses, focals = [], []
    for i, entry in enumerate(entries):
        try:
            m = torch.tensor(entry["camera_to_world"], dtype=torch.float64).reshape(4, 4)
            fov = float(entry["fov"])
        except (KeyError, TypeError, ValueError, RuntimeError):
            raise bad(f"camera_path[{i}] needs camera_to_world (16 numbers, row-major) and fov") from None
        if not 0 < fov < 180 or not torch.isfinite(m).all():
            raise bad(f"camera_path[{i}] has fov {fov} (vertical degrees, in (0, 180)) or non-finite numbers")
        poses.append(m)
        focals.append(0.5 * h / math.tan(math.radians(fov) / 2))  # three.js' perspective camera, as nerfstudio
    c2w = torch.stack(poses)
    c2w = to_dataparser_frame(c2w, transform, scale) if frame == "original" else c2w[:, :3].to(torch.float32)
    return Cameras(c2w, focals, focals, w / 2.0, h / 2.0, w, h), fps
