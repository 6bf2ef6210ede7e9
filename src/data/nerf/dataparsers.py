"""Scene readers: nerfstudio's `transforms.json` format and the Blender synthetic format.

Both follow nerfstudio 1.1.5's dataparsers (`nerfstudio-data`, `blender-data`) convention by
convention; docs/NEURAL_FIELDS.md ("Reading real captures") lists each one with its status, and
where nerfstudio's behaviour looks wrong, whether it is matched (and said so) or refused.

nerfstudio format, in the order the parser applies them:
- Frames are sorted by their image path (after the `images_<d>/` mapping below).
- Downscaling: `downscale_factor`, or automatically the largest power of two d with the first
  frame's `images_<d>/<name>` present while the image is larger than 1600 px; at d > 1 images,
  masks and depths are read from `images_<d>/`, `masks_<d>/`, `depths_<d>/` (by file name).
- Intrinsics `fl_x fl_y cx cy w h`: a top-level value wins over the frames' own; a frame's value is
  read only when the top level lacks that key. Distortion likewise, as one block: any of `k1 k2 k3 p1
  p2 distortion_params` at the top level makes the top-level block (`distortion_params`, a list of
  6 `[k1, k2, k3, k4, p1, p2]`, else the `k`s and `p`s, missing ones 0) apply to every frame;
  otherwise each frame's own block is read (a top-level `k4` alone is then ignored).
- `camera_model` is read at the top level only (default: perspective); see CAMERA_MODELS.
  Distortion coefficients are applied to every model but EQUIRECTANGULAR, PINHOLE included.
- Poses: 4x4 OpenGL camera-to-world `transform_matrix`. Oriented (`orientation_method`, or the
  file's `orientation_override`) and centred over ALL frames, then scaled by `1 / max|t|` when
  `auto_scale_poses` and by `scale_factor`; then split.
- Splits: the file's `train_filenames` / `val_filenames` / `test_filenames`, one list per split (a
  file that has one of them must have the asked split's); else `eval_mode` (fraction, filename,
  interval, all), val and test being the same held-out frames.
- `mask_path`, `depth_file_path`: on every frame or on none.
- Recorded transform (`dataparser_transform`, `dataparser_scale`, written to the run's
  dataparser_transforms.json): from the data's original frame, i.e. the orientation transform times
  the file's `applied_transform` (or COLMAP's axis swap when `<data>/colmap/sparse/0` exists), and
  the scale times the file's `applied_scale`. `file_transform` / `file_scale` map transforms.json's
  own frame (render.py's camera paths).
Blender format: `transforms_{train,val,test}.json` with `camera_angle_x` and frames whose
`file_path` has no extension (".png" is added); RGBA images are composited on `alpha_color`.
nerfstudio applies no pose normalisation here (defaults none/none/no auto scale), only
`scale_factor`; the scene box is [-1.5, 1.5]^3.

A malformed scene raises `SceneError` (a ValueError) naming the file, the problem and the fix.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from config.ranges import ranged
from data.nerf.cameras import Cameras

MAX_AUTO_RESOLUTION = 1600
ALPHA_COLORS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
ORIENTATION_METHODS = ("pca", "up", "vertical", "none")
CENTER_METHODS = ("poses", "focus", "none")
# transforms.json's camera_model -> the Cameras type nerfstudio 1.1.5 maps it to
CAMERA_MODELS = {"SIMPLE_PINHOLE": "perspective", "PINHOLE": "perspective", "SIMPLE_RADIAL": "perspective",
                 "RADIAL": "perspective", "OPENCV": "perspective", "OPENCV_FISHEYE": "fisheye",
                 "EQUIRECTANGULAR": "equirectangular"}
# models nerfstudio 1.1.5 also names, refused here with the reason
UNSUPPORTED_MODELS = {
    **{m: "nerfstudio uses it to render stereo VR video (its ray origins follow the first camera of a batch); "
          "it is not a capture model" for m in ("OMNIDIRECTIONALSTEREO_L", "OMNIDIRECTIONALSTEREO_R",
                                                "VR180_L", "VR180_R")},
    "ORTHOPHOTO": "orthographic cameras are not implemented here",
    "FISHEYE624": "Project Aria's 16-parameter fisheye model is not implemented here",
}
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
# nerfstudio's test for a top-level distortion block: k4 is not in it
TOP_LEVEL_DISTORTION_KEYS = ("k1", "k2", "k3", "p1", "p2", "distortion_params")
# nerfstudio's applied_transform for a COLMAP scene written before transforms.json carried one
COLMAP_APPLIED_TRANSFORM = [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]]
SPLITS = ("train", "val", "test")
FRAME_KEYS = {"images_": "file_path", "masks_": "mask_path", "depths_": "depth_file_path"}  # by folder prefix


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
    # original data frame -> this frame (nerfstudio's dataparser_transforms.json: "transform", "scale")
    dataparser_transform: torch.Tensor = field(default_factory=lambda: torch.eye(4)[:3])  # (3, 4)
    dataparser_scale: float = 1.0
    # the frame of the scene file's own poses (transforms.json) -> this frame
    file_transform: torch.Tensor = field(default_factory=lambda: torch.eye(4)[:3])  # (3, 4)
    file_scale: float = 1.0
    alpha_color: tuple[float, float, float] | None = None  # RGBA images are composited on it (None: kept RGBA)
    downscale_factor: int = 1
    split: str = "train"
    depth_filenames: list[Path] | None = None
    depth_unit_scale_factor: float = 1e-3  # depth file units -> metres
    mask_color: tuple[float, float, float] | None = None  # pixels outside the mask get this colour
    fisheye_crop_radius: float | None = None  # pixels: training rays only within it (fisheye cameras)

    def __len__(self) -> int:
        return len(self.image_filenames)

    def save_dataparser_transform(self, path: Path) -> None:
        """nerfstudio's dataparser_transforms.json: {"transform": 3x4, "scale": float}."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"transform": self.dataparser_transform.tolist(),
                                    "scale": float(self.dataparser_scale)}, indent=4))

    def load_images(self, cameras: Cameras | None = None) -> list[torch.Tensor]:
        """uint8 `(H, W, 3)` tensors, or `(H, W, 4)` for RGBA images when `alpha_color` is None (the
        model composites them, as nerfstudio does); resized to the cameras' sizes where they differ.
        All images of a scene must then have the same channels."""
        cameras = cameras or self.cameras
        images = [load_image(p, (int(cameras.width[i, 0]), int(cameras.height[i, 0])), self.alpha_color)
                  for i, p in enumerate(self.image_filenames)]
        channels = {int(im.shape[-1]) for im in images}
        if len(channels) > 1:
            rgb = next(p for p, im in zip(self.image_filenames, images) if im.shape[-1] == 3)
            rgba = next(p for p, im in zip(self.image_filenames, images) if im.shape[-1] == 4)
            raise SceneError(rgba, f"this image has an alpha channel but {rgb.name} has none (nerfstudio "
                                   "cannot batch them either)",
                             "give every image an alpha channel or none, or composite them with "
                             "data.dataparser.alpha_color=white|black")
        return images

    def load_masks(self, cameras: Cameras | None = None) -> list[torch.Tensor] | None:
        """bool `(H, W)` tensors (True = use the pixel) or None when the scene has no masks."""
        if self.mask_filenames is None:
            return None
        cameras = cameras or self.cameras
        return [load_mask(p, (int(cameras.width[i, 0]), int(cameras.height[i, 0])))
                for i, p in enumerate(self.mask_filenames)]

    def load_depths(self, cameras: Cameras | None = None) -> list[torch.Tensor] | None:
        """float32 `(H, W)` depths in this frame's units (file units x depth_unit_scale_factor x
        dataparser_scale, as nerfstudio's DepthDataset), or None when the scene has no depth files."""
        if self.depth_filenames is None:
            return None
        cameras = cameras or self.cameras
        scale = self.depth_unit_scale_factor * self.dataparser_scale
        return [load_depth(p, (int(cameras.width[i, 0]), int(cameras.height[i, 0])), scale)
                for i, p in enumerate(self.depth_filenames)]


def load_image(path: Path, size: tuple[int, int] | None = None,
               alpha_color: tuple[float, float, float] | None = None) -> torch.Tensor:
    """uint8 (H, W, 3), or (H, W, 4) for an image with alpha when `alpha_color` is None; with a colour,
    RGBA is composited on it."""
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as e:
        raise SceneError(path, f"cannot read the image ({e})", "replace it with a valid PNG/JPEG") from e
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
    if size is not None and img.size != tuple(size):
        img = img.resize(tuple(size), resample=Image.Resampling.BILINEAR)
    arr = np.asarray(img)
    if arr.shape[-1] == 4 and alpha_color is not None:
        a = arr[..., 3:4].astype(np.float32) / 255.0
        rgb = arr[..., :3].astype(np.float32) / 255.0 * a + np.asarray(alpha_color, np.float32) * (1 - a)
        arr = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    return torch.from_numpy(np.array(arr, copy=True))


def load_mask(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """bool (H, W): a single-channel image, nonzero = use the pixel (resized nearest, as nerfstudio)."""
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as e:
        raise SceneError(path, f"cannot read the mask ({e})", "write the mask as a single-channel PNG") from e
    if len(img.getbands()) != 1:
        raise SceneError(path, f"the mask has {len(img.getbands())} channels ({img.mode}); nerfstudio reads "
                               "single-channel masks only", "save it as a one-channel (L or 1) PNG")
    if size is not None and img.size != tuple(size):
        img = img.resize(tuple(size), resample=Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(img) > 0)


def load_depth(path: Path, size: tuple[int, int], scale: float) -> torch.Tensor:
    """float32 (H, W) = file values x `scale`, resized with OpenCV's nearest rule (nerfstudio's
    get_depth_image_from_path): `.npy` (np.load, no pickles) or an image read with IMREAD_ANYDEPTH
    (16-bit PNG in millimetres, 32-bit float TIFF/EXR)."""
    import cv2

    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            arr = cv2.imread(str(path.absolute()), cv2.IMREAD_ANYDEPTH)
            if arr is None:
                raise ValueError("OpenCV cannot decode it")
    except (OSError, ValueError) as e:
        raise SceneError(path, f"cannot read the depth file ({e})",
                         "write depths as .npy arrays or 16-bit PNG / 32-bit TIFF images") from e
    arr = np.asarray(arr)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise SceneError(path, f"the depth map has shape {arr.shape} and type {arr.dtype}, not (H, W) numbers",
                         "write one depth value per pixel")
    arr = cv2.resize(arr.astype(np.float32) * scale, tuple(size), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


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


class PcaFlipError(ValueError):
    """orientation_method=pca on poses whose mean camera up points down after PCA (see below)."""


def auto_orient_and_center_poses(poses: torch.Tensor, method: str = "up", center_method: str = "poses"):
    """nerfstudio 1.1.5's: returns (oriented poses (N, 3, 4), transform (3, 4)).

    pca: the principal axes of the camera centres (taken about their mean whatever `center_method`
    is, as nerfstudio does) become x, y, z. When the cameras' mean up vector then points down,
    nerfstudio 1.1.5 means to turn the world 180 degrees about x, but negates the whole pose of
    cameras 1 and 2 instead (it indexes cameras, not rows) while the recorded transform is turned:
    two corrupted cameras and a transform that no longer maps the others. That case raises
    PcaFlipError rather than reproduce it or differ silently.
    vertical: the direction most orthogonal to every camera's x axis (SVD), signed by the mean up;
    for near-degenerate configurations the mean up projected on the plane of the two best axes."""
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
        raise ValueError(f"unknown center_method {center_method!r} ({', '.join(CENTER_METHODS)})")

    if method == "pca":
        diff = origins - mean_origin
        _, eigvec = torch.linalg.eigh(diff.T @ diff)
        eigvec = torch.flip(eigvec, dims=(-1,))
        if torch.linalg.det(eigvec) < 0:
            eigvec[:, 2] = -eigvec[:, 2]
        transform = torch.cat([eigvec, eigvec @ -translation[..., None]], dim=-1)
        oriented = transform @ poses
        if oriented.mean(0)[2, 1] < 0:
            raise PcaFlipError("after PCA the cameras' mean up vector points down (world -z): nerfstudio 1.1.5 "
                               "then negates the whole pose of cameras 1 and 2 and records a transform that does "
                               "not match the other cameras (its auto_orient_and_center_poses indexes cameras "
                               "instead of rows)")
    elif method in ("up", "vertical"):
        up = torch.mean(poses[:, :3, 1], dim=0)
        up = up / torch.linalg.norm(up)
        if method == "vertical":
            _, sv, vh = torch.linalg.svd(poses[:, :3, 0], full_matrices=False)
            if sv[1] > 0.17 * math.sqrt(poses.shape[0]):  # regular configuration
                up_vertical = vh[2, :]
                up = up_vertical if torch.dot(up_vertical, up) > 0 else -up_vertical
            else:  # degenerate (all x axes nearly parallel): keep up, minus its part along the best axis
                up = up - vh[0, :] * torch.dot(up, vh[0, :])
                up = up / torch.linalg.norm(up)
        rotation = rotation_matrix_between(up, torch.tensor([0, 0, 1.0]))
        transform = torch.cat([rotation, rotation @ -translation[..., None]], dim=-1)
        oriented = transform @ poses
    elif method == "none":
        transform = torch.eye(4)[:3].clone()
        transform[:3, 3] = -translation
        oriented = transform @ poses
    else:
        raise ValueError(f"unknown orientation_method {method!r} ({', '.join(ORIENTATION_METHODS)})")
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


def _number(path: Path, where: str, key: str, value, integer: bool = False):
    """A finite JSON number (an integral one for `integer`); strings are refused, not converted."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            (integer and int(value) != value):
        kind = "a whole number" if integer else "a finite number"
        raise SceneError(path, f"{where}: '{key}' is {value!r}, not {kind}",
                         f"write '{key}' as {kind}" + (" of pixels" if key in INTRINSIC_KEYS else ""))
    return int(value) if integer else float(value)


def _distortion_block(path: Path, where: str, block: dict) -> list[float]:
    """[k1, k2, k3, k4, p1, p2] of a top-level or frame block: its `distortion_params` list, else its
    k/p keys (0 where missing), as nerfstudio reads them."""
    if "distortion_params" in block:
        d = block["distortion_params"]
        if not isinstance(d, list) or len(d) != 6:
            raise SceneError(path, f"{where}: distortion_params is {d!r}, not a list of 6 numbers",
                             "write distortion_params as [k1, k2, k3, k4, p1, p2]")
        return [_number(path, where, f"distortion_params[{i}]", v) for i, v in enumerate(d)]
    return [_number(path, where, k, block[k]) if k in block else 0.0 for k in DISTORTION_KEYS]


def split_indices(n: int, eval_mode: str, train_split_fraction: float, eval_interval: int,
                  filenames: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """nerfstudio's eval_mode splits (data/utils/dataparsers_utils.py): (train, eval) indices."""
    i_all = np.arange(n)
    if eval_mode == "fraction":
        n_train = math.ceil(n * train_split_fraction)
        i_train = np.linspace(0, n - 1, n_train, dtype=int)
        i_eval = np.setdiff1d(i_all, i_train)
    elif eval_mode == "interval":
        i_train = i_all[i_all % eval_interval != 0]
        i_eval = i_all[i_all % eval_interval == 0]
    elif eval_mode == "filename":  # "train" anywhere in the file name, else "eval"; anything else is an error
        i_train, i_eval = [], []
        for i, f in enumerate(filenames):
            name = Path(f).name
            if "train" in name:
                i_train.append(i)
            elif "eval" in name:
                i_eval.append(i)
            else:
                raise SceneError(f, "eval_mode=filename needs 'train' or 'eval' in every image's file name",
                                 "rename the image, or choose another data.dataparser.eval_mode")
        i_train, i_eval = np.array(i_train, dtype=int), np.array(i_eval, dtype=int)
    elif eval_mode == "all":
        i_train, i_eval = i_all, i_all
    else:
        raise ValueError(f"unknown eval_mode {eval_mode!r} (fraction, filename, interval, all)")
    return i_train, i_eval


# ---------------------------------------------------------------------- parsers

@dataclass
class NerfstudioDataParser:
    """nerfstudio's `nerfstudio-data` parser (options and defaults are nerfstudio 1.1.5's, but
    `load_3D_points`, which only splatfacto reads; `alpha_color` is this project's)."""

    data: str | None = None
    scale_factor: float = ranged(1.0, gt=0)
    downscale_factor: int | None = ranged(None, ge=1, why="null: automatic")
    scene_scale: float = ranged(1.0, gt=0)
    orientation_method: Literal["pca", "up", "vertical", "none"] = ranged("up", choices=ORIENTATION_METHODS)
    center_method: Literal["poses", "focus", "none"] = ranged("poses", choices=CENTER_METHODS)
    auto_scale_poses: bool = True
    eval_mode: Literal["fraction", "filename", "interval", "all"] = ranged(
        "fraction", choices=("fraction", "filename", "interval", "all"))
    train_split_fraction: float = ranged(0.9, gt=0, le=1, why="the share of frames that train")
    eval_interval: int = ranged(8, ge=1, why="every eval_interval-th frame is held out")
    depth_unit_scale_factor: float = ranged(1e-3, gt=0, why="depth file units to metres; 1e-3: millimetres")
    mask_color: Optional[list[float]] = ranged(None, ge=0, le=1, length=3,
                                               why="RGB in [0, 1] painted outside the masks; null: none")
    alpha_color: str | None = ranged(None, choices=tuple(ALPHA_COLORS), why="null: RGBA kept, the model composites")

    def _paths(self) -> tuple[Path, Path, Path]:
        """(folder the paths are relative to, transforms.json, the `data` path as given)."""
        if self.data is None:
            raise SceneError("<data>", "no scene path given", "set data=<scene folder or transforms.json>")
        p = Path(self.data)
        if p.suffix == ".json":
            return p.parent, p, p
        return p, p / "transforms.json", p

    def _downscale(self, base: Path, meta_path: Path, frames: list) -> int:
        """downscale_factor, or nerfstudio's automatic one: from the FIRST frame of the file, the largest
        power of two whose images_<d>/ holds that frame while the image is larger than 1600 px."""
        if self.downscale_factor is not None:
            return int(self.downscale_factor)
        first = Path(str(frames[0]["file_path"]))
        image = base / first
        if not image.is_file():
            raise SceneError(image, f"image of frames[0] in {meta_path} not found",
                             "restore the image or remove the frame from transforms.json")
        w, h = _image_size(image)
        exponent = 0
        while max(w, h) / 2 ** exponent > MAX_AUTO_RESOLUTION and \
                (base / f"images_{2 ** (exponent + 1)}" / first.name).exists():
            exponent += 1
        return 2 ** exponent

    def get_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} ({', '.join(SPLITS)})")
        base, meta_path, data_path = self._paths()
        meta = _read_json(meta_path)
        frames = meta.get("frames")
        if not isinstance(frames, list) or not frames:
            raise SceneError(meta_path, "no 'frames' list (or it is empty)",
                             "list the images under 'frames' with 'file_path' and 'transform_matrix'")
        for i, fr in enumerate(frames):
            if not isinstance(fr, dict) or "file_path" not in fr:
                raise SceneError(meta_path, f"frames[{i}] has no 'file_path'", "give each frame its image path")
        df = self._downscale(base, meta_path, frames)
        notes: dict[str, list[str]] = {}  # what is done differently from what the file seems to say -> where

        def note(what: str, where: str) -> None:
            notes.setdefault(what, []).append(where)

        def fname(rel, prefix: str = "images_") -> Path:
            """nerfstudio's _get_fname: <base>/<rel>, or <base>/<prefix><df>/<file name> when downscaled."""
            rel = Path(str(rel))
            return base / f"{prefix}{df}" / rel.name if df > 1 else base / rel

        def existing(rel, prefix: str, what: str, where: str) -> Path:
            path = fname(rel, prefix)
            if path.is_file():
                return path
            full = base / Path(str(rel))
            if df > 1 and full.is_file():  # nerfstudio would stop; the full-size file is resized instead
                note(f"files missing from {path.parent.name}/ are read at full size from their own path and "
                     f"resized (nerfstudio 1.1.5 would stop: it reads {path.parent.name}/ only)", path.name)
                return full
            raise SceneError(path, f"{what} of {where} in {meta_path} not found",
                             f"restore the file or remove the frame's '{FRAME_KEYS[prefix]}'")

        # --- per frame, in file order (so errors name the file's frames[i])
        top = {k: meta[k] for k in INTRINSIC_KEYS if k in meta}
        top_distortion = any(k in meta for k in TOP_LEVEL_DISTORTION_KEYS)
        model = meta.get("camera_model", "PINHOLE")
        camera_type = self._camera_type(meta_path, "the top level", model)
        rows = []
        for i, fr in enumerate(frames):
            where = f"frames[{i}] ({fr['file_path']})"
            if "camera_model" in fr and self._camera_type(meta_path, where, fr["camera_model"]) != camera_type:
                default = "" if "camera_model" in meta else ", the default"
                raise SceneError(meta_path, f"{where} has camera_model {fr['camera_model']!r}, but nerfstudio reads "
                                            f"camera_model only at the top level ({model!r}{default}) and would "
                                            "treat this frame as that",
                                 "give all frames one camera model, set at the top level (split the capture if "
                                 "it mixes models)")
            intr = {}
            for k in INTRINSIC_KEYS:
                if k in top:
                    intr[k] = top[k]
                    if k in fr and fr[k] != top[k]:
                        note(f"frames' own {k} are ignored, the top-level {k}={top[k]} applies (as nerfstudio "
                             "1.1.5 does)", f"{where}: {k}={fr[k]}")
                elif k in fr:
                    intr[k] = fr[k]
                else:
                    raise SceneError(meta_path, f"{where}: intrinsic '{k}' is set neither at the top level nor in "
                                                "the frame", f"set '{k}' at the top level or in every frame")
            for k in INTRINSIC_KEYS:
                intr[k] = _number(meta_path, where, k, intr[k], integer=k in ("w", "h"))
            _check_intrinsics(meta_path, where, intr["fl_x"], intr["fl_y"], intr["cx"], intr["cy"],
                              intr["w"], intr["h"])
            if top_distortion:
                dist = _distortion_block(meta_path, "the top level", meta)
                own = [k for k in (*DISTORTION_KEYS, "distortion_params") if k in fr]
                if own and _distortion_block(meta_path, where, fr) != dist:
                    note("frames' own distortion is ignored, the top-level one applies (as nerfstudio 1.1.5 does)",
                         f"{where}: {', '.join(own)}")
            else:
                dist = _distortion_block(meta_path, where, fr)
            pose = _check_pose(meta_path, i, fr)
            rows.append({"frame": fr, "where": where, "image": fname(fr["file_path"]), "intr": intr,
                         "dist": dist, "pose": pose})
        if not top_distortion and "k4" in meta:
            note(f"the top-level k4={meta['k4']} is ignored: nerfstudio reads a top-level distortion block only "
                 "when one of k1, k2, k3, p1, p2, distortion_params is there too (as nerfstudio 1.1.5 does)",
                 "the top level")
        for key, label in (("mask_path", "mask_path"), ("depth_file_path", "depth_file_path")):
            have = [r["where"] for r in rows if key in r["frame"]]
            if have and len(have) != len(rows):
                missing = next(r["where"] for r in rows if key not in r["frame"])
                raise SceneError(meta_path, f"only some frames have '{label}' ({len(have)} of {len(rows)}; "
                                            f"{missing} has none)", f"give every frame a '{label}' or none")

        # --- nerfstudio's order: by image path (split by '/', as pathlib compares them)
        order = sorted(range(len(rows)), key=lambda i: str(rows[i]["image"]).split("/"))
        rows = [rows[i] for i in order]
        image_names = [r["image"] for r in rows]
        i_split = self._split(meta, meta_path, split, image_names, fname)

        image_paths, mask_paths, depth_paths = [], [], []
        for r in rows:
            fr, where = r["frame"], r["where"]
            image_paths.append(existing(fr["file_path"], "images_", "image", where))
            w, h = r["intr"]["w"], r["intr"]["h"]
            iw, ih = _image_size(image_paths[-1])
            if image_paths[-1] == base / Path(str(fr["file_path"])):
                if (iw, ih) != (w, h):
                    raise SceneError(image_paths[-1], f"image is {iw}x{ih} but {meta_path.name} says w={w}, h={h}",
                                     "fix 'w'/'h' (or the frame's own) to the image size")
            elif abs(iw - w / df) > 1 or abs(ih - h / df) > 1:
                raise SceneError(image_paths[-1], f"image is {iw}x{ih}, not the {w}x{h} of {meta_path.name} "
                                                  f"downscaled {df} times", f"regenerate images_{df}/")
            if "mask_path" in fr:
                mask_paths.append(existing(fr["mask_path"], "masks_", "mask", where))
            if "depth_file_path" in fr:
                depth_paths.append(existing(fr["depth_file_path"], "depths_", "depth file", where))

        # --- poses: oriented, centred and scaled over all frames, then split
        orientation = meta.get("orientation_override", self.orientation_method)
        if orientation not in ORIENTATION_METHODS:
            raise SceneError(meta_path, f"orientation_override is {orientation!r}",
                             f"use one of {', '.join(ORIENTATION_METHODS)}")
        poses_t = torch.from_numpy(np.stack([r["pose"] for r in rows]))
        try:
            poses_t, transform = auto_orient_and_center_poses(poses_t, orientation, self.center_method)
        except PcaFlipError as e:
            source = "the file's orientation_override" if "orientation_override" in meta else \
                "data.dataparser.orientation_method"
            raise SceneError(meta_path, f"{source} is pca and {e}; this parser stops rather than reproduce that "
                                        "or differ from nerfstudio without saying so",
                             "use orientation_method=up (nerfstudio's default) or vertical") from None
        scale = 1.0
        if self.auto_scale_poses:
            extent = float(torch.max(torch.abs(poses_t[:, :3, 3])))
            if extent == 0:
                raise SceneError(meta_path, "all cameras sit at the centre after centring: auto_scale_poses "
                                            "cannot scale them (nerfstudio divides by zero)",
                                 "set data.dataparser.auto_scale_poses=false")
            scale /= extent
        scale *= self.scale_factor
        poses_t[:, :3, 3] *= scale

        applied = self._applied_transform(meta, meta_path, data_path)
        dataparser_transform = transform if applied is None else transform @ torch.cat(
            [applied, torch.tensor([[0.0, 0.0, 0.0, 1.0]])], 0)
        dataparser_scale = scale
        if "applied_scale" in meta:
            applied_scale = _number(meta_path, "the top level", "applied_scale", meta["applied_scale"])
            if applied_scale <= 0:
                raise SceneError(meta_path, f"applied_scale is {applied_scale}", "write the positive scale that "
                                                                                 "processing applied to the poses")
            dataparser_scale *= applied_scale

        crop = meta.get("fisheye_crop_radius")
        if crop is not None:
            crop = _number(meta_path, "the top level", "fisheye_crop_radius", crop)
            if crop <= 0:
                raise SceneError(meta_path, f"fisheye_crop_radius is {crop}", "give the radius in pixels (> 0)")
            crop = crop if camera_type == "fisheye" else None  # nerfstudio keeps it for fisheye cameras only

        for what, where in notes.items():
            warnings.warn(f"{meta_path}: {what}: {len(where)} case(s), e.g. {where[0]}", stacklevel=2)

        idx = torch.as_tensor(i_split, dtype=torch.long)
        intr_t = torch.tensor([[r["intr"][k] for k in INTRINSIC_KEYS] for r in rows], dtype=torch.float64)
        dist_t = torch.tensor([r["dist"] for r in rows], dtype=torch.float32)
        cams = Cameras(poses_t[idx], intr_t[idx, 0], intr_t[idx, 1], intr_t[idx, 2], intr_t[idx, 3],
                       intr_t[idx, 4].long(), intr_t[idx, 5].long(),
                       distortion_params=dist_t[idx] if bool(dist_t.abs().sum() > 0) else None,
                       camera_type=camera_type)
        if df != 1:
            cams = cams.rescale_output_resolution(1.0 / df)
        s = self.scene_scale
        pick = idx.tolist()
        return DataparserOutputs(
            image_filenames=[image_paths[i] for i in pick],
            cameras=cams,
            mask_filenames=[mask_paths[i] for i in pick] if mask_paths else None,
            scene_box=torch.tensor([[-s, -s, -s], [s, s, s]], dtype=torch.float32),
            dataparser_transform=dataparser_transform,
            dataparser_scale=dataparser_scale,
            file_transform=transform,
            file_scale=scale,
            alpha_color=ALPHA_COLORS.get(self.alpha_color) if self.alpha_color else None,
            downscale_factor=df,
            split=split,
            depth_filenames=[depth_paths[i] for i in pick] if depth_paths else None,
            depth_unit_scale_factor=self.depth_unit_scale_factor,
            mask_color=tuple(float(c) for c in self.mask_color) if self.mask_color is not None else None,
            fisheye_crop_radius=crop,
        )

    @staticmethod
    def _camera_type(meta_path: Path, where: str, model) -> str:
        if not isinstance(model, str):
            raise SceneError(meta_path, f"{where}: camera_model is {model!r}, not a name",
                             f"use one of {', '.join(CAMERA_MODELS)}")
        if model in CAMERA_MODELS:
            return CAMERA_MODELS[model]
        if model in UNSUPPORTED_MODELS:
            raise SceneError(meta_path, f"{where}: camera_model {model!r} is not supported: "
                                        f"{UNSUPPORTED_MODELS[model]}",
                             f"use one of {', '.join(CAMERA_MODELS)}")
        raise SceneError(meta_path, f"{where}: camera_model {model!r} is not a camera model nerfstudio knows",
                         f"use one of {', '.join(CAMERA_MODELS)} (upper case)")

    @staticmethod
    def _applied_transform(meta: dict, meta_path: Path, data_path: Path) -> torch.Tensor | None:
        """(3, 4) transform processing applied to the original poses, or None. As nerfstudio: the file's
        `applied_transform`, else COLMAP's axis swap when `<data>/colmap/sparse/0` exists (`data` as given:
        when it names the .json file, that folder is never found)."""
        if "applied_transform" in meta:
            try:
                m = np.asarray(meta["applied_transform"], dtype=np.float64)
            except (TypeError, ValueError):
                m = np.zeros(0)
            if m.shape != (3, 4) or not np.all(np.isfinite(m)):
                raise SceneError(meta_path, f"applied_transform is not 3 rows of 4 finite numbers (shape {m.shape})",
                                 "write the top three rows of the 4x4 transform processing applied")
            return torch.from_numpy(m).float()
        if (data_path / "colmap" / "sparse" / "0").exists():
            return torch.tensor(COLMAP_APPLIED_TRANSFORM)
        return None

    def _split(self, meta: dict, meta_path: Path, split: str, image_names: list[Path], fname) -> np.ndarray:
        """The frames of `split`: the file's `<split>_filenames`, else eval_mode's (val = test)."""
        key = f"{split}_filenames"
        listed = [s for s in SPLITS if f"{s}_filenames" in meta]
        if key in meta:
            names = meta[key]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise SceneError(meta_path, f"'{key}' is not a list of file paths", "list the frames' file_path values")
            wanted = {fname(n) for n in names}
            unknown = sorted(str(p) for p in wanted.difference(image_names))
            if unknown:
                raise SceneError(meta_path, f"'{key}' names {len(unknown)} file(s) that no frame has, e.g. "
                                            f"{unknown[0]}",
                                 "list only frames' file_path values")
            indices = np.array([i for i, p in enumerate(image_names) if p in wanted], dtype=int)
        elif listed:
            raise SceneError(meta_path, f"the file lists {', '.join(f'{s}_filenames' for s in listed)} but no '{key}' "
                                        f"(nerfstudio stops here too)", f"add '{key}' to the file")
        else:
            i_train, i_eval = split_indices(len(image_names), self.eval_mode, self.train_split_fraction,
                                           self.eval_interval, image_names)
            indices = i_train if split == "train" else i_eval
        if split == "train" and len(indices) == 0:
            how = key if key in meta else f"eval_mode={self.eval_mode}"
            raise SceneError(meta_path, f"the train split is empty ({how})",
                             "list training frames under train_filenames, or choose another eval_mode "
                             "(eval_mode=filename needs 'train' in training images' names)")
        return indices


@dataclass
class BlenderDataParser:
    """nerfstudio's `blender-data` parser: `transforms_{train,val,test}.json`."""

    data: str | None = None
    scale_factor: float = ranged(1.0, gt=0)
    alpha_color: str | None = ranged("white", choices=tuple(ALPHA_COLORS), why="null: RGBA kept, the model composites")
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
        try:
            all_poses, transform = auto_orient_and_center_poses(all_poses, self.orientation_method,
                                                                self.center_method)
        except PcaFlipError as e:
            raise SceneError(base, f"data.dataparser.orientation_method is pca and {e}",
                             "use orientation_method=up or none (nerfstudio's Blender default)") from None
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
            file_transform=transform,
            file_scale=scale,
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
