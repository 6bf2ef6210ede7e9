"""nerfstudio 1.1.5's transforms.json conventions, one by one, on small scenes written here.

Each expected camera, pose, scale, split or image is computed in the test from the file it wrote (by
hand or with plain numpy), never by calling the parser; docs/NEURAL_FIELDS.md ("Reading real
captures") lists the conventions these tests cover.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.nerf.datamanager import NerfDataManager
from data.nerf.dataparsers import NerfstudioDataParser, SceneError

W, H = 8, 6


def pose(t=(0.0, 0.0, 0.0), rot=None) -> list:
    m = np.eye(4)
    if rot is not None:
        m[:3, :3] = rot
    m[:3, 3] = t
    return m.tolist()


def rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def write_image(path: Path, size=(W, H), value: int = 0, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = len(mode)
    arr = (np.arange(size[0] * size[1] * channels).reshape(size[1], size[0], channels) * 7 + value) % 256
    Image.fromarray(arr.astype(np.uint8).squeeze(-1) if channels == 1 else arr.astype(np.uint8), mode).save(path)


def scene(root: Path, meta: dict, frames: list[dict], sizes: dict | None = None) -> Path:
    """transforms.json = meta + frames; an image (and any mask) for every frame, W x H unless `sizes` says."""
    root.mkdir(parents=True, exist_ok=True)
    for i, fr in enumerate(frames):
        write_image(root / fr["file_path"], (sizes or {}).get(fr["file_path"], (W, H)), value=i)
        fr.setdefault("transform_matrix", pose((i, 0.5 * i, 0.0)))
    (root / "transforms.json").write_text(json.dumps({**meta, "frames": frames}))
    return root


PINHOLE = {"camera_model": "OPENCV", "fl_x": 10.0, "fl_y": 11.0, "cx": 4.0, "cy": 3.0, "w": W, "h": H}
RAW = dict(orientation_method="none", center_method="none", auto_scale_poses=False)  # poses as written


def outputs(root, split="train", **kw):
    return NerfstudioDataParser(data=str(root), **{"eval_mode": "all", **RAW, **kw}).get_dataparser_outputs(split)


# ---------------------------------------------------------------------- intrinsics and distortion

def test_top_level_intrinsics_win_and_frames_fill_in_what_the_top_level_lacks(tmp_path):
    meta = {k: PINHOLE[k] for k in ("camera_model", "fl_x", "cx", "cy", "w", "h")}  # no top-level fl_y
    frames = [{"file_path": f"images/{n}.png", "fl_y": fy, "fl_x": 99.0 if n == "b" else 10.0}
              for n, fy in (("c", 13.0), ("a", 11.0), ("b", 12.0))]
    with pytest.warns(UserWarning, match=r"frames' own fl_x are ignored, the top-level fl_x=10.0 applies .*1 "
                                         r"case\(s\), e\.g\. frames\[2\] \(images/b\.png\): fl_x=99\.0"):
        cams = outputs(scene(tmp_path, meta, frames)).cameras
    assert cams.fx[:, 0].tolist() == [10.0, 10.0, 10.0]  # b's own 99 loses to the top level
    assert cams.fy[:, 0].tolist() == [11.0, 12.0, 13.0]  # sorted by file name: a, b, c


def test_an_intrinsic_missing_from_top_level_and_frame_is_one_error(tmp_path):
    meta = {k: PINHOLE[k] for k in ("fl_x", "fl_y", "cx", "w", "h")}
    root = scene(tmp_path, meta, [{"file_path": "images/a.png", "cy": 3.0}, {"file_path": "images/b.png"}])
    with pytest.raises(SceneError, match=r"frames\[1\] \(images/b\.png\): intrinsic 'cy' is set neither at the "
                                         r"top level nor in the frame\. Fix: set 'cy' at the top level or in every"):
        outputs(root)


@pytest.mark.parametrize("top,frames,expected", [
    # any of k1 k2 k3 p1 p2 distortion_params at the top level: its block applies to every frame
    ({"k1": 0.1, "p2": 0.01}, [{"k2": 0.5}, {"distortion_params": [1, 1, 1, 1, 1, 1]}],
     [[0.1, 0, 0, 0, 0, 0.01]] * 2),
    ({"distortion_params": [0.1, 0.2, 0.3, 0.4, 0.01, 0.02], "k1": 9.0}, [{}, {"k1": 0.7}],
     [[0.1, 0.2, 0.3, 0.4, 0.01, 0.02]] * 2),
    # otherwise each frame's own block: its distortion_params list, else its k/p keys (0 where missing)
    ({}, [{"distortion_params": [0.1, 0.2, 0.3, 0.4, 0.01, 0.02]}, {"k1": 0.3, "k4": 0.04, "p1": 0.001}],
     [[0.1, 0.2, 0.3, 0.4, 0.01, 0.02], [0.3, 0, 0, 0.04, 0.001, 0]]),
    # a top-level k4 alone does not make a top-level block (nerfstudio's key list lacks it): frames' own
    ({"k4": 0.5}, [{"k1": 0.2}, {}], [[0.2, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]),
])
def test_distortion_blocks(tmp_path, top, frames, expected):
    frames = [{"file_path": f"images/{i}.png", **f} for i, f in enumerate(frames)]
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        cams = outputs(scene(tmp_path, {**PINHOLE, **top}, frames)).cameras
    torch.testing.assert_close(cams.distortion_params, torch.tensor(expected, dtype=torch.float32))
    text = " ".join(str(w.message) for w in said)
    if "k4" in top and len(top) == 1:
        assert "the top-level k4=0.5 is ignored" in text
    if top.keys() - {"k4"} and any(f.keys() - {"file_path", "transform_matrix"} for f in frames):
        assert "frames' own distortion is ignored, the top-level one applies" in text


@pytest.mark.parametrize("bad", [[0.1, 0.2, 0.3, 0.4], "0.1", [0.1, 0.2, 0.3, 0.4, 0.5, "x"]])
def test_a_malformed_distortion_params_list_is_one_error(tmp_path, bad):
    root = scene(tmp_path, {**PINHOLE, "distortion_params": bad}, [{"file_path": "images/a.png"}])
    with pytest.raises(SceneError, match=r"distortion_params.*Fix: write (distortion_params as|'distortion_params)"):
        outputs(root)


# ---------------------------------------------------------------------- camera models

@pytest.mark.parametrize("model,camera_type", [
    ("SIMPLE_PINHOLE", "perspective"), ("PINHOLE", "perspective"), ("SIMPLE_RADIAL", "perspective"),
    ("RADIAL", "perspective"), ("OPENCV", "perspective"), ("OPENCV_FISHEYE", "fisheye"),
    ("EQUIRECTANGULAR", "equirectangular"), (None, "perspective")])
def test_camera_models(tmp_path, model, camera_type):
    meta = {**PINHOLE, "k1": 0.05, "k2": 0.01}
    meta.pop("camera_model")
    if model is not None:
        meta["camera_model"] = model
    cams = outputs(scene(tmp_path, meta, [{"file_path": "images/a.png"}])).cameras
    assert cams.camera_type == camera_type
    # the coefficients are kept for every model (nerfstudio applies them to all but equirectangular rays)
    torch.testing.assert_close(cams.distortion_params, torch.tensor([[0.05, 0.01, 0, 0, 0, 0]]))


@pytest.mark.parametrize("model,words", [("ORTHOPHOTO", "not supported: orthographic"),
                                         ("VR180_L", "not supported: nerfstudio uses it to render stereo VR"),
                                         ("FISHEYE624", "not supported: Project Aria"),
                                         ("KANNALA", "not a camera model nerfstudio knows")])
def test_camera_models_not_supported_are_refused(tmp_path, model, words):
    root = scene(tmp_path, {**PINHOLE, "camera_model": model}, [{"file_path": "images/a.png"}])
    with pytest.raises(SceneError, match=f"camera_model '{model}' is {words}.*Fix: use one of SIMPLE_PINHOLE"):
        outputs(root)


def test_a_frame_whose_camera_model_differs_from_the_top_level_is_refused(tmp_path):
    """nerfstudio reads camera_model at the top level only and would silently treat the frame as that."""
    root = scene(tmp_path, PINHOLE, [{"file_path": "images/a.png", "camera_model": "OPENCV_FISHEYE"},
                                     {"file_path": "images/b.png", "camera_model": "PINHOLE"}])
    with pytest.raises(SceneError, match=r"frames\[0\] \(images/a\.png\) has camera_model 'OPENCV_FISHEYE', but "
                                         r"nerfstudio reads camera_model only at the top level \('OPENCV'\)"):
        outputs(root)
    meta = {k: v for k, v in PINHOLE.items() if k != "camera_model"}  # no top level: the default, perspective
    root = scene(tmp_path / "b", meta, [{"file_path": "images/a.png", "camera_model": "PINHOLE"}])
    assert outputs(root).cameras.camera_type == "perspective"


def test_per_frame_image_sizes_reach_the_batches(tmp_path):
    meta = {k: PINHOLE[k] for k in ("camera_model", "fl_x", "fl_y")}
    sizes = {"images/a.png": (8, 6), "images/b.png": (5, 9), "images/c.png": (7, 4)}
    frames = [{"file_path": p, "w": w, "h": h, "cx": w / 2, "cy": h / 2} for p, (w, h) in sizes.items()]
    root = scene(tmp_path, meta, frames, sizes)
    out = outputs(root)
    assert out.cameras.width[:, 0].tolist() == [8, 5, 7] and out.cameras.height[:, 0].tolist() == [6, 9, 4]
    assert out.cameras.cx[:, 0].tolist() == [4.0, 2.5, 3.5]
    dm = NerfDataManager(NerfstudioDataParser(eval_mode="all", **RAW), data=root, train_num_rays_per_batch=600)
    _, batch = dm.next_train(0)
    c, y, x = batch["indices"].T
    assert (y < torch.tensor([6, 9, 4])[c]).all() and (x < torch.tensor([8, 5, 7])[c]).all()
    assert set(c.tolist()) == {0, 1, 2}
    for i, p in enumerate(sizes):  # every sampled colour is its image's pixel
        image = torch.from_numpy(np.array(Image.open(root / p))).float() / 255
        sel = c == i
        torch.testing.assert_close(batch["rgb"][sel], image[y[sel], x[sel]])
    assert dm.eval_image(1)[1]["image"].shape == (9, 5, 3)


# ---------------------------------------------------------------------- poses, orientation, scale

def _frames(n, positions=None, rots=None):
    return [{"file_path": f"images/{i:02d}.png",
             "transform_matrix": pose(positions[i] if positions is not None else (0, 0, 0),
                                      None if rots is None else rots[i])} for i in range(n)]


def test_up_centring_and_auto_scale(tmp_path):
    """Cameras already upright (mean up = +z after a 90 degree turn about x): up orientation turns the world
    so that +z is the mean up; centred on the mean position; scaled so the farthest coordinate is 1."""
    lying = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # camera +y -> world +z: upright
    positions = np.array([[1.0, 2, 3], [3, 2, 1], [2, 5, 2], [2, -1, 2]])
    root = scene(tmp_path, PINHOLE, _frames(4, positions, [lying] * 4))
    out = NerfstudioDataParser(data=str(root), eval_mode="all").get_dataparser_outputs("train")
    centred = positions - positions.mean(0)
    expected = centred / np.abs(centred).max()  # rotation is the identity: up is already +z
    torch.testing.assert_close(out.cameras.camera_to_worlds[:, :, 3].double(), torch.from_numpy(expected),
                               atol=1e-5, rtol=0)
    assert out.dataparser_scale == pytest.approx(1 / np.abs(centred).max())


def test_orientation_override_in_the_file_wins_over_the_option(tmp_path):
    tilted = [rot_z(30) @ np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]) @ np.array(
        [[1, 0, 0], [0, math.cos(0.4), -math.sin(0.4)], [0, math.sin(0.4), math.cos(0.4)]])] * 3
    positions = np.array([[0.0, 0, 0], [1, 0, 0], [0, 2, 0]])
    root = scene(tmp_path, {**PINHOLE, "orientation_override": "none"}, _frames(3, positions, tilted))
    out = NerfstudioDataParser(data=str(root), eval_mode="all", orientation_method="up",
                               auto_scale_poses=False).get_dataparser_outputs("train")
    torch.testing.assert_close(out.cameras.camera_to_worlds[:, :, :3].double(),
                               torch.from_numpy(np.stack(tilted)), atol=1e-6, rtol=0)  # not rotated
    torch.testing.assert_close(out.cameras.camera_to_worlds[:, :, 3].double(),
                               torch.from_numpy(positions - positions.mean(0)), atol=1e-6, rtol=0)
    (root / "transforms.json").write_text(json.dumps({**json.loads((root / "transforms.json").read_text()),
                                                      "orientation_override": "sideways"}))
    with pytest.raises(SceneError, match="orientation_override is 'sideways'.*pca, up, vertical, none"):
        outputs(root)


def test_vertical_orientation_finds_the_axis_every_camera_sees_as_vertical(tmp_path):
    """Cameras turned about the world's true vertical v (a tilted axis) with their x axes orthogonal to it:
    vertical puts v on +z, whatever the cameras' own up vectors average to."""
    v = np.array([0.3, -0.2, 1.0])
    v /= np.linalg.norm(v)
    a = np.cross(v, [1.0, 0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(v, a)
    rots = []
    for k, pitch in enumerate([0.5, -0.4, 0.9, 0.2, -0.7]):  # looking up and down: mean up is not v
        yaw = 2 * math.pi * k / 5
        x = math.cos(yaw) * a + math.sin(yaw) * b
        fwd = np.cross(v, x) * math.cos(pitch) + v * math.sin(pitch)
        z = -fwd
        rots.append(np.stack([x, np.cross(z, x), z], -1))
    root = scene(tmp_path, PINHOLE, _frames(5, np.random.default_rng(0).normal(size=(5, 3)), rots))
    out = outputs(root, orientation_method="vertical")
    r = out.dataparser_transform[:, :3].double()
    torch.testing.assert_close(r @ torch.from_numpy(v), torch.tensor([0, 0, 1.0], dtype=torch.float64),
                               atol=1e-5, rtol=0)
    up_up = outputs(root, orientation_method="up").dataparser_transform[:, :3].double() @ torch.from_numpy(v)
    assert float(up_up[2]) < 0.999  # "up" (the mean camera up) would not have found it


def test_pca_orients_a_ring_of_cameras_or_refuses_nerfstudios_broken_flip(tmp_path):
    """A ring of cameras in a horizontal plane: pca's smallest axis is the vertical. When the cameras' mean up
    then points down, nerfstudio 1.1.5 corrupts two cameras (it negates poses 1 and 2): refused."""
    n = 8
    positions = np.array([[3 * math.cos(2 * math.pi * k / n), 2 * math.sin(2 * math.pi * k / n), 0.1 * k % 3]
                          for k in range(n)])
    upright = [rot_z(360 * k / n) @ np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]) for k in range(n)]
    results = {}
    for sign in (1, -1):  # the same ring, cameras upright and upside down (turned about their optical axis)
        rots = [r @ np.diag([sign, sign, 1.0]) for r in upright]
        root = scene(tmp_path / str(sign), PINHOLE, _frames(n, positions, rots))
        try:
            results[sign] = outputs(root, orientation_method="pca", center_method="poses")
        except SceneError as e:
            results[sign] = str(e)
    ok = [r for r in results.values() if not isinstance(r, str)]
    refused = [r for r in results.values() if isinstance(r, str)]
    assert len(ok) == 1 and len(refused) == 1, results  # the same PCA axes; the cameras' up differs
    assert "is pca and after PCA the cameras' mean up vector points down" in refused[0]
    assert "negates the whole pose of cameras 1 and 2" in refused[0] and "Fix: use orientation_method=up" in refused[0]
    c2w = ok[0].cameras.camera_to_worlds.double()
    assert float(c2w[:, 2, 1].mean()) > 0.99  # mean camera up is world +z
    assert float(c2w[:, 2, 3].abs().max()) < 0.5  # the ring lies in the xy plane
    torch.testing.assert_close(torch.linalg.det(c2w[:, :, :3]), torch.ones(n, dtype=torch.float64), atol=1e-5, rtol=0)


def test_zero_extent_with_auto_scale_is_one_error(tmp_path):
    root = scene(tmp_path, PINHOLE, _frames(2))  # both at the origin
    with pytest.raises(SceneError, match="auto_scale_poses cannot scale them.*Fix: set data.dataparser.auto_scale"):
        NerfstudioDataParser(data=str(root), eval_mode="all").get_dataparser_outputs("train")


def test_applied_transform_and_scale_change_the_exported_transform_not_the_poses(tmp_path):
    positions = np.array([[0.0, 0, 0], [2, 0, 0], [0, 4, 0]])
    applied = [[0.0, 0, 1, 5], [1, 0, 0, 6], [0, 1, 0, 7]]
    root = scene(tmp_path, {**PINHOLE, "applied_transform": applied, "applied_scale": 0.5}, _frames(3, positions))
    out = NerfstudioDataParser(data=str(root), eval_mode="all", orientation_method="none").get_dataparser_outputs(
        "train")
    centred = positions - positions.mean(0)
    torch.testing.assert_close(out.cameras.camera_to_worlds[:, :, 3].double(),
                               torch.from_numpy(centred / np.abs(centred).max()), atol=1e-6, rtol=0)
    orient = np.eye(4)[:3]
    orient[:, 3] = -positions.mean(0)
    a44 = np.vstack([applied, [0, 0, 0, 1]])
    torch.testing.assert_close(out.dataparser_transform.double(), torch.from_numpy(orient @ a44), atol=1e-6, rtol=0)
    assert out.dataparser_scale == pytest.approx(0.5 / np.abs(centred).max())
    torch.testing.assert_close(out.file_transform.double(), torch.from_numpy(orient), atol=1e-6, rtol=0)
    assert out.file_scale == pytest.approx(1 / np.abs(centred).max())
    out.save_dataparser_transform(tmp_path / "run" / "dataparser_transforms.json")
    saved = json.loads((tmp_path / "run" / "dataparser_transforms.json").read_text())
    np.testing.assert_allclose(saved["transform"], orient @ a44, atol=1e-6)
    assert saved["scale"] == pytest.approx(0.5 / np.abs(centred).max())
    # a point of the original frame, through the export, lands where its saved-frame image does
    p_orig = np.array([1.0, 2.0, 3.0, 1.0])
    p_file = a44 @ p_orig
    via_export = np.asarray(saved["transform"]) @ p_orig
    via_file = out.file_transform.double().numpy() @ p_file
    np.testing.assert_allclose(via_export, via_file, atol=1e-5)


def test_colmap_folder_implies_colmaps_axis_swap_unless_the_file_says_otherwise(tmp_path):
    root = scene(tmp_path, PINHOLE, _frames(2, np.array([[0.0, 0, 0], [1, 0, 0]])))
    (root / "colmap" / "sparse" / "0").mkdir(parents=True)
    swap = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1.0]])
    out = outputs(root)
    torch.testing.assert_close(out.dataparser_transform.double(), torch.from_numpy(swap[:3]), atol=0, rtol=0)
    torch.testing.assert_close(out.file_transform, torch.eye(4)[:3])
    # nerfstudio looks for <data>/colmap/sparse/0 with `data` as given: naming the json file skips it
    by_file = NerfstudioDataParser(data=str(root / "transforms.json"), eval_mode="all", **RAW)
    torch.testing.assert_close(by_file.get_dataparser_outputs("train").dataparser_transform, torch.eye(4)[:3])
    (root / "transforms.json").write_text(json.dumps({**json.loads((root / "transforms.json").read_text()),
                                                      "applied_transform": np.eye(4)[:3].tolist()}))
    torch.testing.assert_close(outputs(root).dataparser_transform, torch.eye(4)[:3])


# ---------------------------------------------------------------------- splits

def test_split_lists_per_split_including_test(tmp_path):
    frames = [{"file_path": f"images/{n}.png"} for n in ("a", "b", "c", "d", "e")]
    meta = {**PINHOLE, "train_filenames": ["images/a.png", "./images/c.png", "images/e.png"],
            "val_filenames": ["images/b.png"], "test_filenames": ["images/d.png", "images/b.png"]}
    root = scene(tmp_path, meta, frames)
    names = {s: [p.name for p in outputs(root, s, eval_mode="fraction").image_filenames]
             for s in ("train", "val", "test")}
    assert names == {"train": ["a.png", "c.png", "e.png"], "val": ["b.png"], "test": ["b.png", "d.png"]}
    dm = NerfDataManager(NerfstudioDataParser(**RAW), data=root, test_mode="test")
    assert [p.name for p in dm.eval_outputs.image_filenames] == ["b.png", "d.png"]  # ns-eval's split


def test_split_lists_that_lack_the_asked_split_or_name_unknown_files_are_refused(tmp_path):
    frames = [{"file_path": f"images/{n}.png"} for n in ("a", "b", "c")]
    root = scene(tmp_path, {**PINHOLE, "train_filenames": ["images/a.png"], "test_filenames": ["images/b.png"]},
                 frames)
    assert len(outputs(root, "test")) == 1
    with pytest.raises(SceneError, match="lists train_filenames, test_filenames but no 'val_filenames' "
                                         r"\(nerfstudio stops here too\)"):
        outputs(root, "val")
    root = scene(tmp_path / "u", {**PINHOLE, "train_filenames": ["images/a.png", "images/zz.png"],
                                  "val_filenames": []}, frames)
    with pytest.raises(SceneError, match=r"'train_filenames' names 1 file\(s\) that no frame has, e.g. .*zz\.png"):
        outputs(root)


def test_eval_mode_filename_reads_train_and_eval_anywhere_in_the_name(tmp_path):
    frames = [{"file_path": f"images/{n}.png"} for n in ("0_train", "pretrain_1", "x_eval", "evaluation")]
    root = scene(tmp_path, PINHOLE, frames)
    assert [p.name for p in outputs(root, eval_mode="filename").image_filenames] == ["0_train.png", "pretrain_1.png"]
    assert [p.name for p in outputs(root, "val", eval_mode="filename").image_filenames] == ["evaluation.png",
                                                                                           "x_eval.png"]
    root = scene(tmp_path / "b", PINHOLE, [*frames, {"file_path": "images/other.png"}])
    with pytest.raises(SceneError, match=r"other\.png: eval_mode=filename needs 'train' or 'eval'"):
        outputs(root, eval_mode="filename")


def test_fraction_and_interval_splits(tmp_path):
    root = scene(tmp_path, PINHOLE, [{"file_path": f"images/{i}.png"} for i in range(10)])
    train = [p.stem for p in outputs(root, eval_mode="fraction", train_split_fraction=0.75).image_filenames]
    assert train == [str(i) for i in np.linspace(0, 9, math.ceil(10 * 0.75), dtype=int)]  # 0 1 2 3 5 6 7 9
    val = [p.stem for p in outputs(root, "val", eval_mode="fraction", train_split_fraction=0.75).image_filenames]
    assert val == ["4", "8"]
    assert [p.stem for p in outputs(root, "test", eval_mode="interval", eval_interval=4).image_filenames] == \
        ["0", "4", "8"]


def test_frames_are_sorted_by_path(tmp_path):
    frames = [{"file_path": p} for p in ("b/x.png", "a-b/y.png", "a/z.png")]
    out = outputs(scene(tmp_path, PINHOLE, frames))
    # as pathlib compares paths (component by component): "a" < "a-b" < "b"
    assert [str(p.relative_to(tmp_path)) for p in out.image_filenames] == ["a/z.png", "a-b/y.png", "b/x.png"]



def test_file_paths_are_relative_to_the_file_or_absolute_poses_may_be_3x4_and_scene_scale_sizes_the_box(tmp_path):
    """nerfstudio joins `file_path` to the folder of transforms.json (an absolute path stays as it is), takes the
    top three rows of `transform_matrix`, and makes the scene box [-scene_scale, scene_scale]^3."""
    elsewhere = tmp_path / "elsewhere" / "b.png"
    write_image(elsewhere)
    root = tmp_path / "capture"
    rot = rot_z(30.0)
    frames = [{"file_path": "images/a.png"},
              {"file_path": str(elsewhere), "transform_matrix": pose((1.0, 2.0, 3.0), rot)[:3]}]
    scene(root, PINHOLE, [frames[0]])
    meta = json.loads((root / "transforms.json").read_text())
    (root / "transforms.json").write_text(json.dumps({**meta, "frames": [*meta["frames"], frames[1]]}))
    out = outputs(root / "transforms.json", scene_scale=2.5)
    assert out.image_filenames == [root / "images" / "a.png", elsewhere]  # sorted by full path
    c2w = out.cameras.camera_to_worlds.double()
    torch.testing.assert_close(c2w[1], torch.tensor(np.concatenate([rot, [[1.0], [2.0], [3.0]]], axis=1)))
    torch.testing.assert_close(c2w[0], torch.tensor(np.asarray(pose((0.0, 0.0, 0.0)))[:3]))
    assert out.scene_box.tolist() == [[-2.5] * 3, [2.5] * 3]

# ---------------------------------------------------------------------- downscaling, masks, depth, images

def test_automatic_downscale_uses_the_folders_that_exist(tmp_path):
    big = (3400, 4)  # larger than 1600 px: nerfstudio looks for images_2/, images_4/, ... of the first frame
    meta = {**PINHOLE, "w": big[0], "h": big[1], "cx": big[0] / 2, "cy": 2.0}
    root = scene(tmp_path, meta, [{"file_path": "images/a.png"}], {"images/a.png": big})
    assert outputs(root).downscale_factor == 1  # no images_2/: full resolution, as nerfstudio
    write_image(root / "images_2" / "a.png", (1700, 2))
    out = outputs(root)
    assert out.downscale_factor == 2 and out.image_filenames == [root / "images_2" / "a.png"]
    write_image(root / "images_4" / "a.png", (850, 1))
    write_image(root / "images_8" / "a.png", (425, 1))  # not needed: 850 px is below 1600
    out = outputs(root)
    assert out.downscale_factor == 4 and int(out.cameras.width[0]) == 850 and float(out.cameras.fx[0]) == 2.5


def test_masks_all_or_none_single_channel_and_from_masks_d(tmp_path):
    frames = [{"file_path": f"images/{n}.png", "mask_path": f"masks/{n}.png"} for n in ("a", "b")]
    root = scene(tmp_path, PINHOLE, frames)
    (root / "masks").mkdir()
    mask = np.zeros((H, W), np.uint8)
    mask[1:4, 2:6] = 255
    for n in ("a", "b"):
        Image.fromarray(mask).save(root / "masks" / f"{n}.png")
    out = outputs(root)
    masks = out.load_masks()
    assert masks[0].dtype == torch.bool and int(masks[0].sum()) == 12 and bool(masks[0][1, 2])
    # downscaled: masks_2/<name>
    for d in ("images_2", "masks_2"):
        for n in ("a", "b"):
            write_image(root / d / f"{n}.png", (W // 2, H // 2), mode="L" if d == "masks_2" else "RGB")
    assert outputs(root, downscale_factor=2).mask_filenames == [root / "masks_2" / "a.png", root / "masks_2" / "b.png"]
    write_image(root / "masks" / "a.png", mode="RGB")
    with pytest.raises(SceneError, match=r"masks/a\.png: the mask has 3 channels \(RGB\); nerfstudio reads "
                                         "single-channel masks only"):
        outputs(root).load_masks()
    frames[1].pop("mask_path")
    with pytest.raises(SceneError, match=r"only some frames have 'mask_path' \(1 of 2; frames\[1\]"):
        outputs(scene(tmp_path / "some", PINHOLE, frames))


def test_depth_files_are_read_scaled_resized_and_reach_the_batches(tmp_path):
    """npy and 16-bit PNG depths, x depth_unit_scale_factor x the pose scale, nearest-resized like OpenCV
    (source index floor(dst * src / dst_size)), and in every batch as depth_image."""
    positions = np.array([[0.0, 0, 0], [4, 0, 0]])
    frames = [{"file_path": "images/a.png", "depth_file_path": "depth/a.npy"},
              {"file_path": "images/b.png", "depth_file_path": "depth/b.png"}]
    for fr, p in zip(frames, positions):
        fr["transform_matrix"] = pose(p)
    root = scene(tmp_path, PINHOLE, frames)
    (root / "depth").mkdir()
    a = np.arange(H * W, dtype=np.float32).reshape(H, W) + 100  # millimetres
    b = (np.arange(2 * H * 2 * W).reshape(2 * H, 2 * W) * 3 + 1000).astype(np.uint16)  # twice the image size
    np.save(root / "depth" / "a.npy", a)
    Image.fromarray(b).save(root / "depth" / "b.png")
    parser = NerfstudioDataParser(data=str(root), eval_mode="all", orientation_method="none")
    out = parser.get_dataparser_outputs("train")
    scale = 1e-3 * out.dataparser_scale  # mm -> m, then the poses' auto scale (1 / 2 here)
    assert out.dataparser_scale == pytest.approx(0.5)
    depths = out.load_depths()
    torch.testing.assert_close(depths[0], torch.from_numpy(a * scale))
    rows, cols = np.arange(H) * (2 * H) // H, np.arange(W) * (2 * W) // W  # OpenCV's INTER_NEAREST
    torch.testing.assert_close(depths[1], torch.from_numpy(b[rows][:, cols].astype(np.float32) * scale))
    dm = NerfDataManager(parser, train_num_rays_per_batch=64)
    assert dm.has_depth
    rays, batch = dm.next_train(0)
    c, y, x = batch["indices"].T
    expected = torch.stack([depths[i][yy, xx] for i, yy, xx in zip(c.tolist(), y.tolist(), x.tolist())])
    torch.testing.assert_close(batch["depth_image"][:, 0], expected)
    u, v = (x + 0.5 - 4.0) / 10.0, (y + 0.5 - 3.0) / 11.0
    torch.testing.assert_close(rays.directions_norm[:, 0], torch.sqrt(u * u + v * v + 1), atol=1e-6, rtol=0)
    frames[1].pop("depth_file_path")
    with pytest.raises(SceneError, match="only some frames have 'depth_file_path'"):
        outputs(scene(tmp_path / "some", PINHOLE, frames))


def test_rgba_images_stay_rgba_and_mask_color_paints_outside_the_masks(tmp_path):
    root = scene(tmp_path, PINHOLE, [{"file_path": "images/a.png"}])
    write_image(root / "images" / "a.png", mode="RGBA")
    rgba = torch.from_numpy(np.asarray(Image.open(root / "images" / "a.png")).copy())
    assert torch.equal(outputs(root).load_images()[0], rgba)  # nerfstudio keeps the alpha channel
    dm = NerfDataManager(NerfstudioDataParser(eval_mode="all", **RAW), data=root, train_num_rays_per_batch=32)
    _, batch = dm.next_train(0)
    c, y, x = batch["indices"].T
    torch.testing.assert_close(batch["rgb"], rgba[y, x].float() / 255)  # (N, 4): the model composites

    frames = [{"file_path": "images/a.png", "mask_path": "masks/a.png"}]
    root = scene(tmp_path / "m", PINHOLE, frames)
    mask = np.zeros((H, W), np.uint8)
    mask[:, :3] = 1
    (root / "masks").mkdir()
    Image.fromarray(mask).save(root / "masks" / "a.png")
    dm = NerfDataManager(NerfstudioDataParser(eval_mode="all", mask_color=[1.0, 0.0, 0.2], **RAW), data=root)
    image = dm.eval_image(0)[1]["image"]
    original = torch.from_numpy(np.array(Image.open(root / "images" / "a.png"))).float() / 255
    torch.testing.assert_close(image[:, :3], original[:, :3])
    torch.testing.assert_close(image[:, 3:], torch.tensor([1.0, 0.0, 51 / 255]).expand(H, W - 3, 3))


# ---------------------------------------------------------------------- sampling that follows the cameras

def test_equirectangular_scenes_sample_rows_uniformly_over_the_sphere(tmp_path):
    meta = {"camera_model": "EQUIRECTANGULAR", "fl_x": 40.0, "fl_y": 40.0, "cx": 40.0, "cy": 20.0, "w": 80, "h": 40}
    root = scene(tmp_path, meta, [{"file_path": "images/a.png"}], {"images/a.png": (80, 40)})
    dm = NerfDataManager(NerfstudioDataParser(eval_mode="all", **RAW), data=root, train_num_rays_per_batch=40000)
    rows = dm.next_train(0)[1]["indices"][:, 1].double()
    colat = (rows + 0.5) / 40 * math.pi
    # uniform on the sphere: cos(colatitude) is uniform on [-1, 1], so its mean is 0 and its variance 1/3
    assert abs(float(torch.cos(colat).mean())) < 0.02 and abs(float(torch.cos(colat).var()) - 1 / 3) < 0.02
    assert float((rows < 4).float().mean()) < 0.03  # uniform rows would put 10% in the top 4 rows
    with pytest.raises(ValueError, match="is_equirectangular=false but the train split's cameras are "
                                         "equirectangular; nerfstudio sets this flag from the cameras"):
        NerfDataManager(NerfstudioDataParser(eval_mode="all", **RAW), data=root,
                        pixel_sampler={"is_equirectangular": False})


def test_fisheye_crop_radius_keeps_training_rays_in_the_circle(tmp_path):
    meta = {**PINHOLE, "camera_model": "OPENCV_FISHEYE", "w": 20, "h": 16, "cx": 10.0, "cy": 8.0,
            "fisheye_crop_radius": 5.0}
    root = scene(tmp_path, meta, [{"file_path": "images/a.png"}], {"images/a.png": (20, 16)})
    out = outputs(root)
    assert out.fisheye_crop_radius == 5.0
    dm = NerfDataManager(NerfstudioDataParser(eval_mode="all", **RAW), data=root, train_num_rays_per_batch=4000)
    _, y, x = dm.next_train(0)[1]["indices"].T.double()
    r = torch.hypot(x - 10, y - 8)  # about (W // 2, H // 2), offsets truncated towards zero
    assert float(r.max()) <= 5.0 * math.sqrt(2) and float((r <= 5.0).float().mean()) > 0.9
    assert len(set(zip(y.tolist(), x.tolist()))) > 60  # the whole disc, not a few pixels
    pinhole = scene(tmp_path / "p", {**meta, "camera_model": "OPENCV"}, [{"file_path": "images/a.png"}],
                    {"images/a.png": (20, 16)})
    assert outputs(pinhole).fisheye_crop_radius is None  # nerfstudio keeps it for fisheye cameras only
