"""Dataparsers on generated scenes of both formats, and malformed scenes raising SceneError."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from data.nerf.dataparsers import (BlenderDataParser, NerfstudioDataParser, SceneError,
                                   auto_orient_and_center_poses)
from data.nerf.synthetic import write_blender, write_nerfstudio


def test_nerfstudio_scene(ns_scene):
    meta = json.loads((ns_scene / "transforms.json").read_text())
    parser = NerfstudioDataParser(data=str(ns_scene))
    train, val = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("val")
    assert len(train) == math.ceil(12 * 0.9) == 11 and len(val) == 1
    cams = train.cameras
    assert cams.camera_type == "perspective" and cams.distortion_params is None  # OPENCV, all-zero coefficients
    assert torch.allclose(cams.fx, torch.tensor(meta["fl_x"])) and float(cams.cx[0]) == 16.0
    assert int(cams.width[0]) == 32 and int(cams.height[0]) == 32
    images = train.load_images()
    assert images[0].shape == (32, 32, 3) and images[0].dtype == torch.uint8
    masks = train.load_masks()
    assert masks[0].dtype == torch.bool and masks[0].any() and not masks[0].all()
    # auto-scaled poses lie in the unit cube and touch it
    t = torch.cat([train.cameras.camera_to_worlds[:, :, 3], val.cameras.camera_to_worlds[:, :, 3]])
    assert float(t.abs().max()) == pytest.approx(1.0, abs=1e-5)
    assert train.dataparser_transform.shape == (3, 4) and 0 < train.dataparser_scale < 1
    assert train.scene_box.tolist() == [[-1.0] * 3, [1.0] * 3]


@pytest.mark.parametrize("orientation,center", [("up", "poses"), ("vertical", "focus"), ("none", "none")])
def test_pose_normalisation_bounds(ns_scene, orientation, center):
    out = NerfstudioDataParser(data=str(ns_scene), orientation_method=orientation, center_method=center,
                               eval_mode="all").get_dataparser_outputs("train")
    c2w = out.cameras.camera_to_worlds
    assert float(c2w[:, :, 3].abs().max()) == pytest.approx(1.0, abs=1e-5)
    rot = c2w[:, :, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3).expand(len(c2w), 3, 3), atol=1e-5, rtol=0)
    if orientation == "up":  # the mean camera up is world +z afterwards
        up = c2w[:, :, 1].mean(0)
        torch.testing.assert_close(up / up.norm(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-5, rtol=0)


def test_orientation_and_scale_options(ns_scene):
    raw = NerfstudioDataParser(data=str(ns_scene), orientation_method="none", center_method="none",
                               auto_scale_poses=False, scale_factor=2.0, eval_mode="all")
    out = raw.get_dataparser_outputs("train")
    meta = json.loads((ns_scene / "transforms.json").read_text())
    first = torch.tensor(meta["frames"][0]["transform_matrix"])[:3, 3]
    torch.testing.assert_close(out.cameras.camera_to_worlds[0, :, 3], 2 * first, atol=1e-5, rtol=0)
    poses = torch.eye(4).repeat(3, 1, 1)
    poses[:, :3, 3] = torch.tensor([[1.0, 2, 3], [3, 2, 1], [2, 2, 2]])
    oriented, transform = auto_orient_and_center_poses(poses, "none", "poses")
    torch.testing.assert_close(oriented[:, :3, 3].mean(0), torch.zeros(3))


@pytest.mark.parametrize("mode,n_train,n_eval", [("fraction", 11, 1), ("interval", 10, 2), ("all", 12, 12)])
def test_split_modes(ns_scene, mode, n_train, n_eval):
    p = NerfstudioDataParser(data=str(ns_scene), eval_mode=mode)
    assert len(p.get_dataparser_outputs("train")) == n_train
    assert len(p.get_dataparser_outputs("val")) == n_eval


def test_filename_split_and_downscale(tmp_path):
    scene = write_nerfstudio(tmp_path / "s", n_views=4, size=32, depth=False)
    meta = json.loads((scene / "transforms.json").read_text())
    for i, fr in enumerate(meta["frames"]):
        new = f"images/{'eval' if i == 0 else 'train'}_{i}.png"
        (scene / fr["file_path"]).rename(scene / new)
        fr["file_path"] = new
    (scene / "transforms.json").write_text(json.dumps(meta))
    p = NerfstudioDataParser(data=str(scene), eval_mode="filename", downscale_factor=2)
    with pytest.warns(UserWarning, match=r"files missing from images_2/ are read at full size .* resized "
                                         r"\(nerfstudio 1\.1\.5 would stop: it reads images_2/ only\): 4 case\(s\), "
                                         r"e\.g\. eval_0\.png"):
        train, val = p.get_dataparser_outputs("train"), p.get_dataparser_outputs("val")
    assert len(train) == 3 and len(val) == 1 and val.image_filenames[0].name == "eval_0.png"
    assert int(train.cameras.width[0]) == 16 and float(train.cameras.fx[0]) == pytest.approx(meta["fl_x"] / 2)
    assert train.load_images()[0].shape == (16, 16, 3)


def test_blender_scene(blender_scene):
    p = BlenderDataParser(data=str(blender_scene))
    train, val = p.get_dataparser_outputs("train"), p.get_dataparser_outputs("val")
    test = BlenderDataParser(data=str(blender_scene), eval_split="test").get_dataparser_outputs("test")
    assert (len(train), len(val), len(test)) == (10, 3, 3)
    meta = json.loads((blender_scene / "transforms_train.json").read_text())
    assert float(train.cameras.fx[0]) == pytest.approx(0.5 * 32 / math.tan(0.5 * meta["camera_angle_x"]), rel=1e-6)
    assert float(train.cameras.cx[0]) == 16.0
    img = train.load_images()[0]
    assert img.shape == (32, 32, 3)
    assert (img == 255).all(-1).any()  # transparent background composited on white
    torch.testing.assert_close(train.cameras.camera_to_worlds[0],
                               torch.tensor(meta["frames"][0]["transform_matrix"])[:3])  # no normalisation
    scaled = BlenderDataParser(data=str(blender_scene), auto_scale_poses=True, center_method="poses",
                               orientation_method="up").get_dataparser_outputs("train")
    assert float(scaled.cameras.camera_to_worlds[:, :, 3].abs().max()) <= 1.0 + 1e-5


# ---------------------------------------------------------------------- malformed scenes

@pytest.fixture
def small_scene(tmp_path):
    return write_nerfstudio(tmp_path / "bad", n_views=3, size=16, depth=False)


def _edit(scene, fn):
    path = scene / "transforms.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _set_pose(i, m):
    return lambda meta: meta["frames"][i].__setitem__("transform_matrix", m)


BAD = {
    "missing key fl_x": (lambda meta: meta.pop("fl_x"), "fl_x"),
    "negative focal": (lambda meta: meta.__setitem__("fl_x", -10.0), "focal"),
    "cx outside": (lambda meta: meta.__setitem__("cx", 40.0), "principal point"),
    "zero width": (lambda meta: meta.__setitem__("w", 0), "image size"),
    "no frames": (lambda meta: meta.pop("frames"), "frames"),
    "no transform": (lambda meta: meta["frames"][1].pop("transform_matrix"), "transform_matrix"),
    "singular": (_set_pose(0, [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1]]), "not invertible"),
    "3x3": (_set_pose(0, [[1, 0, 0], [0, 1, 0], [0, 0, 1]]), "shape"),
    "bottom row": (_set_pose(0, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "last row"),
    "sheared": (_set_pose(0, [[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "orthonormal"),
    "nan": (_set_pose(0, [[float("nan"), 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "non-finite"),
    "orthophoto": (lambda meta: meta.__setitem__("camera_model", "ORTHOPHOTO"), "not supported"),
    "unknown model": (lambda meta: meta.__setitem__("camera_model", "opencv"), "not a camera model"),
    "size mismatch": (lambda meta: meta.__setitem__("w", 20), "image is 16x16"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_malformed_transforms_raise_scene_error(small_scene, name):
    edit, words = BAD[name]
    _edit(small_scene, edit)
    with pytest.raises(SceneError) as err:
        NerfstudioDataParser(data=str(small_scene)).get_dataparser_outputs("train")
    msg = str(err.value)
    assert "transforms.json" in msg and words in msg and "Fix:" in msg, msg
    assert isinstance(err.value, ValueError)


def test_missing_image_and_mask_name_the_file(small_scene):
    (small_scene / "images" / "frame_00002.png").unlink()
    with pytest.raises(SceneError, match=r"frame_00002\.png.*not found.*Fix:"):
        NerfstudioDataParser(data=str(small_scene)).get_dataparser_outputs("train")


def test_missing_mask_and_transforms(tmp_path):
    scene = write_nerfstudio(tmp_path / "m", n_views=2, size=16, masks=True, depth=False)
    (scene / "masks" / "frame_00001.png").unlink()
    with pytest.raises(SceneError, match=r"masks.frame_00001\.png"):
        NerfstudioDataParser(data=str(scene)).get_dataparser_outputs("train")
    with pytest.raises(SceneError, match=r"transforms\.json: file not found"):
        NerfstudioDataParser(data=str(tmp_path / "nowhere")).get_dataparser_outputs("train")
    (scene / "transforms.json").write_text("{not json")
    with pytest.raises(SceneError, match="not valid JSON"):
        NerfstudioDataParser(data=str(scene)).get_dataparser_outputs("train")


def test_malformed_blender(tmp_path):
    scene = write_blender(tmp_path / "b", n_views=2, size=8, n_eval_views=1, depth=False)
    path = scene / "transforms_train.json"
    meta = json.loads(path.read_text())
    bad = dict(meta)
    bad.pop("camera_angle_x")
    path.write_text(json.dumps(bad))
    with pytest.raises(SceneError, match=r"transforms_train\.json: no 'camera_angle_x'"):
        BlenderDataParser(data=str(scene)).get_dataparser_outputs("train")
    path.write_text(json.dumps({**meta, "camera_angle_x": -1.0}))
    with pytest.raises(SceneError, match="camera_angle_x"):
        BlenderDataParser(data=str(scene)).get_dataparser_outputs("train")
    path.write_text(json.dumps(meta))
    (scene / "train" / "r_1.png").unlink()
    with pytest.raises(SceneError, match=r"r_1\.png"):
        BlenderDataParser(data=str(scene)).get_dataparser_outputs("train")
    scene2 = write_blender(tmp_path / "b2", n_views=2, size=8, n_eval_views=1, depth=False)
    shutil.rmtree(scene2 / "val")
    with pytest.raises(SceneError, match=r"val.r_0\.png.*transforms_val\.json"):
        BlenderDataParser(data=str(scene2)).get_dataparser_outputs("val")


def test_per_frame_values_apply_only_where_the_top_level_lacks_them(tmp_path):
    """nerfstudio 1.1.5: a top-level intrinsic or distortion block wins over a frame's own values."""
    k = [-0.05, 0.01, 0.0, 0.0, 0.001, -0.002]
    scene = write_nerfstudio(tmp_path / "d", n_views=3, size=16, depth=False, distortion=k)
    meta = json.loads((scene / "transforms.json").read_text())
    meta["frames"][2]["fl_x"] = 30.0
    meta["frames"][2]["k1"] = -0.07
    (scene / "transforms.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning) as record:
        cams = NerfstudioDataParser(data=str(scene), eval_mode="all").get_dataparser_outputs("train").cameras
    said = " | ".join(str(w.message) for w in record)
    assert "frames' own fl_x are ignored, the top-level fl_x=" in said and "e.g. frames[2] (images/frame_00003.png): " \
        "fl_x=30.0" in said and "frames' own distortion is ignored" in said
    assert cams.fx[:, 0].tolist() == pytest.approx([meta["fl_x"]] * 3)
    torch.testing.assert_close(cams.distortion_params, torch.tensor(k).expand(3, 6))
