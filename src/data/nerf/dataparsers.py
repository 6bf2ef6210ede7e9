"""Scene readers: nerfstudio's `transforms.json` format and the Blender synthetic format.

Both follow nerfstudio's dataparsers (`nerfstudio-data`, `blender-data`):
- nerfstudio format: one `transforms.json` with global intrinsics (`camera_model`, `fl_x`, `fl_y`,
  `cx`, `cy`, `w`, `h`, `k1`..`k4`, `p1`, `p2`) that frames may override, and `frames` with
  `file_path`, a 4x4 OpenGL camera-to-world `transform_matrix` and an optional `mask_path`.
  Frames are sorted by `file_path`. Poses are oriented/centred over ALL frames
  (`orientation_method` up|pca|none, `center_method` poses|focus|none), then scaled by
  `1 / max|t|` when `auto_scale_poses` and by `scale_factor`; then split (`eval_mode` fraction|
  filename|interval|all, or the file's own `train_filenames`/`val_filenames`/`test_filenames`).
- Blender format: `transforms_{train,val,test}.json` with `camera_angle_x` and frames whose
  `file_path` has no extension (".png" is added); RGBA images are composited on `alpha_color`.
  nerfstudio applies no pose normalisation here (defaults none/none/no auto scale), only
  `scale_factor`; the scene box is [-1.5, 1.5]^3.

A malformed scene raises `SceneError` (a ValueError) naming the file, the problem and the fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from config.ranges import ranged
from data.nerf.cameras import Cameras

MAX_AUTO_RESOLUTION = 1600
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPG", ".PNG", ".JPEG")
ALPHA_COLORS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


class SceneError(ValueError):
    """A scene on disk that cannot be read: `<file>: <problem>. Fix: <fix>`."""

    def __init__(self, path, problem: str, fix: str):
        self.path, self.problem, self.fix = str(path), problem, fix
        super().__init__(f"{path}: {problem}. Fix: {fix}")


# ---------------------------------------------------------------------- outputs

@dataclass
class DataparserOutputs:
    image_filenames: list[Path]
    cameras: Cameras
    mask_filenames: list[Path] | None = None
    scene_box: torch.Tensor = field(default_factory=lambda: torch.tensor([[-1.0] * 3, [1.0] * 3]))  # (2, 3) aabb
    dataparser_transform: torch.Tensor = field(default_factory=lambda: torch.eye(4)[:3])  # (3, 4)
    dataparser_scale: float = 1.0
    alpha_color: tuple[float, float, float] | None = None  # RGBA images are composited on it
    downscale_factor: int = 1
    split: str = "train"

    def __len__(self) -> int:
        return len(self.image_filenames)

    def load_images(self, cameras: Cameras | None = None) -> list[torch.Tensor]:
        """uint8 `(H, W, 3)` tensors, resized to the cameras' sizes where they differ."""
        cameras = cameras or self.cameras
        return [load_image(p, (int(cameras.width[i, 0]), int(cameras.height[i, 0])), self.alpha_color)
                for i, p in enumerate(self.image_filenames)]

    def load_masks(self, cameras: Cameras | None = None) -> list[torch.Tensor] | None:
        """bool `(H, W)` tensors (True = use the pixel) or None when the scene has no masks."""
        if self.mask_filenames is None:
            return None
        cameras = cameras or self.cameras
        return [load_mask(p, (int(cameras.width[i, 0]), int(cameras.height[i, 0])))
                for i, p in enumerate(self.mask_filenames)]


def load_image(path: Path, size: tuple[int, int] | None = None,
               alpha_color: tuple[float, float, float] | None = None) -> torch.Tensor:
    """uint8 (H, W, 3); RGBA is composited on `alpha_color` (alpha dropped when None)."""
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as e:
        raise SceneError(path, f"cannot read the image ({e})", "replace it with a valid PNG/JPEG") from e
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    if size is not None and img.size != tuple(size):
        img = img.resize(tuple(size), resample=Image.Resampling.BILINEAR)
    arr = np.asarray(img)
    if arr.shape[-1] == 4:
        if alpha_color is not None:
            a = arr[..., 3:4].astype(np.float32) / 255.0
            rgb = arr[..., :3].astype(np.float32) / 255.0 * a + np.asarray(alpha_color, np.float32) * (1 - a)
            arr = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
        else:
            arr = arr[..., :3]
    return torch.from_numpy(np.array(arr, copy=True))


def load_mask(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as e:
        raise SceneError(path, f"cannot read the mask ({e})", "write the mask as a single-channel PNG") from e
    if size is not None and img.size != tuple(size):
        img = img.resize(tuple(size), resample=Image.Resampling.NEAREST)
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return torch.from_numpy(arr > 0)


# ---------------------------------------------------------------------- pose normalisation

def rotation_matrix_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The rotation taking direction `a` onto direction `b` (nerfstudio's)."""
    a = a / torch.linalg.norm(a)
    b = b / torch.linalg.norm(b)
    v = torch.linalg.cross(a, b)
    eps = 1e-6
    if torch.sum(torch.abs(v)) < eps:
        x = torch.tensor([1.0, 0, 0]) if abs(a[0]) < eps else torch.tensor([0, 1.0, 0])
        v = torch.linalg.cross(a, x)
    v = v / torch.linalg.norm(v)
    skew = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    theta = torch.acos(torch.clip(torch.dot(a, b), -1, 1))
    return torch.eye(3) + torch.sin(theta) * skew + (1 - torch.cos(theta)) * (skew @ skew)


def focus_of_attention(poses: torch.Tensor, initial_focus: torch.Tensor) -> torch.Tensor:
    """The point closest to all (forward-facing) optical axes (nerfstudio's)."""
    dirs = -poses[:, :3, 2:3]
    origins = poses[:, :3, 3:4]
    focus = initial_focus
    active = torch.sum(dirs.squeeze(-1) * (focus - origins.squeeze(-1)), dim=-1) > 0
    done = False
    while int(active.sum()) > 1 and not done:
        dirs, origins = dirs[active], origins[active]
        m = torch.eye(3) - dirs * torch.transpose(dirs, -2, -1)
        mt_m = torch.transpose(m, -2, -1) @ m
        focus = torch.linalg.inv(mt_m.mean(0)) @ (mt_m @ origins).mean(0)[:, 0]
        active = torch.sum(dirs.squeeze(-1) * (focus - origins.squeeze(-1)), dim=-1) > 0
        if bool(active.all()):
            done = True
    return focus


def auto_orient_and_center_poses(poses: torch.Tensor, method: str = "up", center_method: str = "poses"):
    """nerfstudio's: returns (oriented poses (N, 3, 4), transform (3, 4))."""
    poses = torch.as_tensor(poses, dtype=torch.float32)
    if poses.shape[-2] == 3:
        bottom = torch.tensor([0, 0, 0, 1.0]).expand(poses.shape[0], 1, 4)
        poses = torch.cat([poses, bottom], -2)
    origins = poses[..., :3, 3]
    mean_origin = origins.mean(0)
    if center_method == "poses":
        translation = mean_origin
    elif center_method == "focus":
        translation = focus_of_attention(poses, mean_origin)
    elif center_method == "none":
        translation = torch.zeros_like(mean_origin)
    else:
        raise ValueError(f"unknown center_method {center_method!r} (poses, focus, none)")

    if method == "pca":
        t_cent = origins - translation
        _, eigvec = torch.linalg.eigh(t_cent.T @ t_cent)
        eigvec = torch.flip(eigvec, dims=(-1,))
        if torch.linalg.det(eigvec) < 0:
            eigvec[:, 2] = -eigvec[:, 2]
        transform = torch.cat([eigvec, eigvec @ -translation[..., None]], dim=-1)
        oriented = transform @ poses
        if oriented.mean(0)[2, 1] < 0:
            oriented[:, 1:3] = -1 * oriented[:, 1:3]
            transform[1:3, :] = -1 * transform[1:3, :]
    elif method == "up":
        up = torch.mean(poses[:, :3, 1], dim=0)
        up = up / torch.linalg.norm(up)
        rotation = rotation_matrix_between(up, torch.tensor([0, 0, 1.0]))
        transform = torch.cat([rotation, rotation @ -translation[..., None]], dim=-1)
        oriented = transform @ poses
    elif method == "none":
        transform = torch.eye(4)[:3].clone()
        transform[:3, 3] = -translation
        oriented = transform @ poses
    else:
        raise ValueError(f"unknown orientation_method {method!r} (up, pca, none)")
    return oriented, transform


# ---------------------------------------------------------------------- checks

def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise SceneError(path, "file not found", "point `data` at the scene folder that holds it")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SceneError(path, f"not valid JSON ({e})", "repair or regenerate the file") from e
    if not isinstance(data, dict):
        raise SceneError(path, "top level is not a JSON object", "write {\"frames\": [...], ...}")
    return data


def _check_pose(path: Path, i: int, frame: dict) -> np.ndarray:
    where = f"frames[{i}]"
    if "transform_matrix" not in frame:
        raise SceneError(path, f"{where} has no 'transform_matrix'",
                         "give every frame a 4x4 camera-to-world 'transform_matrix'")
    try:
        m = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneError(path, f"{where}.transform_matrix is not a numeric matrix",
                         "write it as 4 rows of 4 numbers") from None
    if m.shape not in ((4, 4), (3, 4)):
        raise SceneError(path, f"{where}.transform_matrix has shape {m.shape}, not 4x4",
                         "write it as 4 rows of 4 numbers (camera-to-world, OpenGL convention)")
    if not np.all(np.isfinite(m)):
        raise SceneError(path, f"{where}.transform_matrix has non-finite values", "replace NaN/inf entries")
    if m.shape == (4, 4) and not np.allclose(m[3], [0, 0, 0, 1], atol=1e-5):
        raise SceneError(path, f"{where}.transform_matrix last row is {m[3].tolist()}, not [0, 0, 0, 1]",
                         "store a rigid camera-to-world matrix")
    rot = m[:3, :3]
    if abs(np.linalg.det(rot)) < 1e-6:
        raise SceneError(path, f"{where}.transform_matrix is not invertible (rotation determinant ~ 0)",
                         "store a rigid camera-to-world matrix")
    if np.abs(rot.T @ rot - np.eye(3)).max() > 1e-2:
        raise SceneError(path, f"{where}.transform_matrix rotation part is not orthonormal",
                         "store a rotation (no scale or shear) in the upper-left 3x3 block")
    return m[:3].astype(np.float32)


def _check_intrinsics(path: Path, where: str, fx, fy, cx, cy, w, h):
    for name, v in (("fl_x", fx), ("fl_y", fy), ("cx", cx), ("cy", cy), ("w", w), ("h", h)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise SceneError(path, f"{where}: '{name}' is {v!r}, not a finite number", f"set '{name}' in pixels")
    if w <= 0 or h <= 0 or int(w) != w or int(h) != h:
        raise SceneError(path, f"{where}: image size w={w}, h={h} is not a positive integer size",
                         "set 'w' and 'h' to the image width and height in pixels")
    if fx <= 0 or fy <= 0:
        raise SceneError(path, f"{where}: focal length fl_x={fx}, fl_y={fy} must be positive",
                         "set fl_x/fl_y to the focal length in pixels (> 0)")
    if not (0 <= cx <= w) or not (0 <= cy <= h):
        raise SceneError(path, f"{where}: principal point cx={cx}, cy={cy} lies outside the {w}x{h} image",
                         "set cx/cy in pixels within the image (about w/2, h/2)")


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError) as e:
        raise SceneError(path, f"cannot read the image ({e})", "replace it with a valid PNG/JPEG") from e


def _resolve(base: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else (base / p)


def _auto_downscale(w: int, h: int) -> int:
    df = 1
    while max(w, h) / df > MAX_AUTO_RESOLUTION:
        df *= 2
    return df


def _downscaled_path(base: Path, path: Path, df: int) -> Path:
    """`images_<df>/name` next to `images/` when it exists (nerfstudio's layout), else `path`."""
    if df == 1:
        return path
    try:
        rel = path.relative_to(base)
    except ValueError:
        return path
    if len(rel.parts) < 2:
        return path
    candidate = base / f"{rel.parts[0]}_{df}" / Path(*rel.parts[1:])
    return candidate if candidate.is_file() else path


def split_indices(n: int, eval_mode: str, train_split_fraction: float, eval_interval: int,
                  filenames: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    i_all = np.arange(n)
    if eval_mode == "fraction":
        n_train = math.ceil(n * train_split_fraction)
        i_train = np.linspace(0, n - 1, n_train, dtype=int)
        i_eval = np.setdiff1d(i_all, i_train)
    elif eval_mode == "interval":
        i_train = i_all[i_all % eval_interval != 0]
        i_eval = i_all[i_all % eval_interval == 0]
    elif eval_mode == "filename":
        names = [Path(f).name for f in filenames]
        i_train = np.array([i for i, f in enumerate(names) if f.startswith("train_")], dtype=int)
        i_eval = np.array([i for i, f in enumerate(names) if f.startswith("eval_")], dtype=int)
    elif eval_mode == "all":
        i_train, i_eval = i_all, i_all
    else:
        raise ValueError(f"unknown eval_mode {eval_mode!r} (fraction, filename, interval, all)")
    return i_train, i_eval


# ---------------------------------------------------------------------- parsers

@dataclass
class NerfstudioDataParser:
    """nerfstudio's `nerfstudio-data` parser (defaults are nerfstudio's)."""

    data: str | None = None
    scale_factor: float = ranged(1.0, gt=0)
    downscale_factor: int | None = ranged(None, ge=1, why="null: automatic")
    scene_scale: float = ranged(1.0, gt=0)
    orientation_method: Literal["pca", "up", "none"] = ranged("up", choices=("pca", "up", "none"))
    center_method: Literal["poses", "focus", "none"] = ranged("poses", choices=("poses", "focus", "none"))
    auto_scale_poses: bool = True
    eval_mode: Literal["fraction", "filename", "interval", "all"] = ranged(
        "fraction", choices=("fraction", "filename", "interval", "all"))
    train_split_fraction: float = ranged(0.9, gt=0, le=1, why="the share of frames that train")
    eval_interval: int = ranged(8, ge=1, why="every eval_interval-th frame is held out")
    alpha_color: str | None = ranged(None, choices=tuple(ALPHA_COLORS), why="null: RGBA alpha dropped")

    def _paths(self) -> tuple[Path, Path]:
        if self.data is None:
            raise SceneError("<data>", "no scene path given", "set data=<scene folder or transforms.json>")
        p = Path(self.data)
        if p.suffix == ".json":
            return p.parent, p
        return p, p / "transforms.json"

    def get_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        base, meta_path = self._paths()
        meta = _read_json(meta_path)
        frames = meta.get("frames")
        if not isinstance(frames, list) or not frames:
            raise SceneError(meta_path, "no 'frames' list (or it is empty)",
                             "list the images under 'frames' with 'file_path' and 'transform_matrix'")
        for i, fr in enumerate(frames):
            if not isinstance(fr, dict) or "file_path" not in fr:
                raise SceneError(meta_path, f"frames[{i}] has no 'file_path'", "give each frame its image path")
        order = np.argsort([str(fr["file_path"]) for fr in frames], kind="stable")
        frames = [frames[i] for i in order]

        camera_model = str(meta.get("camera_model", "OPENCV")).upper()
        intr, poses, image_paths, mask_paths, dist = [], [], [], [], []
        df = self.downscale_factor
        for i, fr in enumerate(frames):
            where = f"frames[{i}] ({fr['file_path']})"
            model = str(fr.get("camera_model", camera_model)).upper()
            if model not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
                raise SceneError(meta_path, f"{where}: camera_model {model!r} is not supported",
                                 "use OPENCV or PINHOLE (fisheye/equirectangular are not implemented)")
            vals = {}
            for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
                v = fr.get(key, meta.get(key))
                if v is None:
                    raise SceneError(meta_path, f"{where}: intrinsic '{key}' missing",
                                     f"set '{key}' at the top level or in the frame")
                vals[key] = v
            _check_intrinsics(meta_path, where, vals["fl_x"], vals["fl_y"], vals["cx"], vals["cy"],
                              vals["w"], vals["h"])
            d = [float(fr.get(k, meta.get(k, 0.0))) for k in ("k1", "k2", "k3", "k4", "p1", "p2")]
            if model != "OPENCV":
                d = [0.0] * 6
            if not all(math.isfinite(x) for x in d):
                raise SceneError(meta_path, f"{where}: distortion coefficients are not finite", "fix k1..k4, p1, p2")
            pose = _check_pose(meta_path, i, fr)
            img = _resolve(base, str(fr["file_path"]))
            if not img.is_file():
                raise SceneError(img, f"image of {where} in {meta_path} not found",
                                 "restore the image or remove the frame from transforms.json")
            w, h = int(vals["w"]), int(vals["h"])
            if df is None:
                df = _auto_downscale(w, h)
            iw, ih = _image_size(img)
            if (iw, ih) != (w, h):
                raise SceneError(img, f"image is {iw}x{ih} but {meta_path.name} says w={w}, h={h}",
                                 "fix 'w'/'h' (or the frame's overrides) to the image size")
            image_paths.append(_downscaled_path(base, img, df))
            if "mask_path" in fr:
                mp = _resolve(base, str(fr["mask_path"]))
                if not mp.is_file():
                    raise SceneError(mp, f"mask of {where} in {meta_path} not found",
                                     "restore the mask or remove 'mask_path' from the frame")
                mask_paths.append(_downscaled_path(base, mp, df))
            intr.append([vals["fl_x"], vals["fl_y"], vals["cx"], vals["cy"], w, h])
            poses.append(pose)
            dist.append(d)
        if mask_paths and len(mask_paths) != len(frames):
            raise SceneError(meta_path, "only some frames have 'mask_path'", "give every frame a mask or none")

        poses_t = torch.from_numpy(np.stack(poses))
        poses_t, transform = auto_orient_and_center_poses(poses_t, self.orientation_method, self.center_method)
        scale = 1.0
        if self.auto_scale_poses:
            m = float(torch.max(torch.abs(poses_t[:, :3, 3])))
            scale /= m if m > 0 else 1.0
        scale *= self.scale_factor
        poses_t[:, :3, 3] *= scale

        i_train, i_eval = self._split(meta, meta_path, base, frames, image_paths)
        idx = torch.as_tensor(i_train if split == "train" else i_eval, dtype=torch.long)
        intr_t = torch.tensor(intr, dtype=torch.float64)
        dist_t = torch.tensor(dist, dtype=torch.float32)
        is_opencv = camera_model == "OPENCV" and bool(dist_t.abs().sum() > 0)
        cams = Cameras(poses_t[idx], intr_t[idx, 0], intr_t[idx, 1], intr_t[idx, 2], intr_t[idx, 3],
                       intr_t[idx, 4].long(), intr_t[idx, 5].long(),
                       distortion_params=dist_t[idx] if is_opencv else None,
                       camera_type="opencv" if is_opencv else "pinhole")
        if df != 1:
            cams = cams.rescale_output_resolution(1.0 / df)
        s = self.scene_scale
        return DataparserOutputs(
            image_filenames=[image_paths[i] for i in idx.tolist()],
            cameras=cams,
            mask_filenames=[mask_paths[i] for i in idx.tolist()] if mask_paths else None,
            scene_box=torch.tensor([[-s, -s, -s], [s, s, s]], dtype=torch.float32),
            dataparser_transform=transform,
            dataparser_scale=scale,
            alpha_color=ALPHA_COLORS.get(self.alpha_color) if self.alpha_color else None,
            downscale_factor=df,
            split=split,
        )

    def _split(self, meta, meta_path, base, frames, image_paths):
        if "train_filenames" in meta:
            index = {str(_resolve(base, str(fr["file_path"]))): i for i, fr in enumerate(frames)}

            def pick(key):
                out = []
                for name in meta.get(key, []):
                    p = str(_resolve(base, name))
                    if p not in index:
                        raise SceneError(meta_path, f"'{key}' names {name!r}, which is not a frame",
                                         "list only frames' file_path values")
                    out.append(index[p])
                return np.array(sorted(out), dtype=int)

            i_train = pick("train_filenames")
            i_eval = pick("val_filenames") if "val_filenames" in meta else pick("test_filenames")
            return i_train, i_eval
        i_train, i_eval = split_indices(len(frames), self.eval_mode, self.train_split_fraction,
                                       self.eval_interval, image_paths)
        if len(i_train) == 0:
            raise SceneError(meta_path, f"eval_mode={self.eval_mode} leaves no training frames",
                             "choose another eval_mode or name files train_*/eval_* for eval_mode=filename")
        return i_train, i_eval


@dataclass
class BlenderDataParser:
    """nerfstudio's `blender-data` parser: `transforms_{train,val,test}.json`."""

    data: str | None = None
    scale_factor: float = ranged(1.0, gt=0)
    alpha_color: str | None = ranged("white", choices=tuple(ALPHA_COLORS), why="null: RGBA alpha dropped")
    scene_scale: float = ranged(1.5, gt=0)
    # nerfstudio's Blender parser does no normalisation; these allow it (computed over all splits)
    orientation_method: Literal["pca", "up", "none"] = ranged("none", choices=("pca", "up", "none"))
    center_method: Literal["poses", "focus", "none"] = ranged("none", choices=("poses", "focus", "none"))
    auto_scale_poses: bool = False
    eval_split: Literal["val", "test"] = ranged("val", choices=("val", "test"))

    def _read_split(self, base: Path, split: str):
        path = base / f"transforms_{split}.json"
        meta = _read_json(path)
        if "camera_angle_x" not in meta:
            raise SceneError(path, "no 'camera_angle_x'", "set the horizontal field of view in radians")
        fov = meta["camera_angle_x"]
        if not isinstance(fov, (int, float)) or not (0 < fov < math.pi):
            raise SceneError(path, f"camera_angle_x={fov!r} is not an angle in (0, pi) radians",
                             "set the horizontal field of view in radians")
        frames = meta.get("frames")
        if not isinstance(frames, list) or not frames:
            raise SceneError(path, "no 'frames' list (or it is empty)", "list the frames")
        poses, images, sizes = [], [], []
        for i, fr in enumerate(frames):
            if not isinstance(fr, dict) or "file_path" not in fr:
                raise SceneError(path, f"frames[{i}] has no 'file_path'", "give each frame its image path")
            img = _resolve(base, str(fr["file_path"]))
            if img.suffix.lower() not in (".png", ".jpg", ".jpeg"):
                img = img.with_name(img.name + ".png")
            if not img.is_file():
                raise SceneError(img, f"image of frames[{i}] in {path} not found",
                                 "restore the image or remove the frame")
            poses.append(_check_pose(path, i, fr))
            images.append(img)
            sizes.append(_image_size(img))
        return path, float(fov), poses, images, sizes

    def get_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        if self.data is None:
            raise SceneError("<data>", "no scene path given", "set data=<Blender scene folder>")
        base = Path(self.data)
        wanted = "train" if split == "train" else (self.eval_split if split in ("val", "eval") else split)
        splits = ["train", "val", "test"]
        parsed = {}
        for s in splits:
            if s == wanted or (base / f"transforms_{s}.json").is_file():
                parsed[s] = self._read_split(base, s)
        all_poses = torch.from_numpy(np.stack([p for s in parsed for p in parsed[s][2]]))
        all_poses, transform = auto_orient_and_center_poses(all_poses, self.orientation_method, self.center_method)
        scale = 1.0
        if self.auto_scale_poses:
            m = float(torch.max(torch.abs(all_poses[:, :3, 3])))
            scale /= m if m > 0 else 1.0
        scale *= self.scale_factor
        all_poses[:, :3, 3] *= scale
        start = 0
        for s in parsed:
            if s == wanted:
                break
            start += len(parsed[s][2])
        path, fov, poses, images, sizes = parsed[wanted]
        poses_t = all_poses[start:start + len(poses)]
        if len(set(sizes)) != 1:
            raise SceneError(path, f"images have different sizes {sorted(set(sizes))}",
                             "render all frames of a split at one resolution")
        w, h = sizes[0]
        focal = 0.5 * w / math.tan(0.5 * fov)
        cams = Cameras(poses_t, focal, focal, w / 2.0, h / 2.0, w, h)
        s = self.scene_scale
        return DataparserOutputs(
            image_filenames=images,
            cameras=cams,
            scene_box=torch.tensor([[-s, -s, -s], [s, s, s]], dtype=torch.float32),
            dataparser_transform=transform,
            dataparser_scale=scale,
            alpha_color=ALPHA_COLORS.get(self.alpha_color) if self.alpha_color else None,
            split=wanted,
        )


DATAPARSERS = {"nerfstudio": NerfstudioDataParser, "blender": BlenderDataParser}


def dataparser_class(node) -> type | None:
    """The parser class a `data.dataparser` node builds (by its `_target_`; for dataparser_for_format, by
    its `format`), or None for a parser of the user's own."""
    target = str(node.get("_target_", "")).rsplit(".", 1)[-1]
    if target == "dataparser_for_format":
        return DATAPARSERS.get(node.get("format", "nerfstudio"))
    return next((cls for cls in DATAPARSERS.values() if cls.__name__ == target), None)


def dataparser_for_format(format: str = "nerfstudio", **options):
    """The dataparser of a scene written in `format` (data=synthetic: `data.scene.format`, nerfstudio or
    blender): NerfstudioDataParser or BlenderDataParser. An option left None takes that parser's own
    default (the values of conf/data/nerfstudio.yaml or conf/data/blender.yaml); an option that only the
    other format's parser has must stay None."""
    from dataclasses import fields

    if format not in DATAPARSERS:
        raise ValueError(f"data.scene.format={format!r} is not one of {', '.join(DATAPARSERS)}")
    cls = DATAPARSERS[format]
    names = {f.name for f in fields(cls)}
    given = {k: v for k, v in options.items() if v is not None}
    foreign = sorted(set(given) - names)
    if foreign:
        other = next(f for f in DATAPARSERS if f != format)
        raise ValueError(f"data.dataparser.{foreign[0]}={given[foreign[0]]!r} is an option of the {other} format's "
                         f"parser, not of the {format} format's ({', '.join(sorted(names - {'data'}))}); drop it "
                         f"or pick data.scene.format={other}")
    return cls(**given)
