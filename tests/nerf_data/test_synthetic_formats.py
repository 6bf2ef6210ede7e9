"""data=synthetic in both formats: the dataparser follows data.scene.format, and each format's scene has
its own folder, so `data=synthetic data.scene.format=blender` works beside the nerfstudio one."""

from __future__ import annotations

import pytest
import torch

from config.errors import ConfigError
from data.nerf.dataparsers import BlenderDataParser, NerfstudioDataParser
from pipelines.nerf import build_datamanager

NERFACTO = ["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto", "data=synthetic"]
SMALL = ["data.scene.name=fmt", "data.scene.n_views=10", "data.scene.size=16", "data.scene.n_eval_views=2",
         "data.train_num_rays_per_batch=32"]


def test_both_formats_build_their_datamanagers_from_the_generated_scene(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRABOT_HOME", str(tmp_path))
    cpu = torch.device("cpu")
    root, ns = build_datamanager(compose([*NERFACTO, *SMALL]).data, cpu, seed=0)
    assert root == tmp_path / "scenes" / "fmt" and (root / "transforms.json").is_file()
    assert type(ns.dataparser) is NerfstudioDataParser
    assert (ns.dataparser.orientation_method, ns.dataparser.auto_scale_poses) == ("up", True)  # its defaults
    assert (ns.num_train_images, ns.num_eval_images) == (9, 1)  # fraction 0.9 of 10 views

    cfg = compose([*NERFACTO, *SMALL, "data.scene.format=blender"])
    assert cfg.data.dataparser.format == "blender"
    root, bl = build_datamanager(cfg.data, cpu, seed=0)
    assert root == tmp_path / "scenes" / "fmt_blender" and (root / "transforms_train.json").is_file()
    assert type(bl.dataparser) is BlenderDataParser
    assert (bl.dataparser.alpha_color, bl.dataparser.orientation_method, bl.dataparser.eval_split) == (
        "white", "none", "val")  # nerfstudio's blender-data defaults
    assert (bl.num_train_images, bl.num_eval_images) == (10, 2)  # its train / val files
    assert torch.equal(bl.scene_box, torch.tensor([[-1.5] * 3, [1.5] * 3]))
    rays, batch = bl.next_train(0)
    assert len(rays) == 32 and batch["rgb"].shape == (32, 3)
    i, _, image = bl.next_eval_image(0)
    corner = image["image"][0, 0]  # transparent background composited on white
    torch.testing.assert_close(corner, torch.ones(3))
    # an option of the format's parser still applies; one of the other format's is refused by name
    _, bl = build_datamanager(compose([*NERFACTO, *SMALL, "data.scene.format=blender",
                                       "data.dataparser.alpha_color=black"]).data, cpu, seed=0)
    assert bl.dataparser.alpha_color == "black"
    with pytest.raises(ConfigError, match="data.dataparser.eval_mode='interval' is an option of the nerfstudio") as e:
        build_datamanager(compose([*NERFACTO, *SMALL, "data.scene.format=blender",
                                   "data.dataparser.eval_mode=interval"]).data, cpu, seed=0)
    assert "\n" not in str(e.value) and "data.scene.format=nerfstudio" in str(e.value)


def test_a_folder_of_the_other_format_is_one_config_error(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRABOT_HOME", str(tmp_path))
    build_datamanager(compose([*NERFACTO, *SMALL, "data.scene.format=blender"]).data, torch.device("cpu"), seed=0)
    cfg = compose([*NERFACTO, *SMALL, f"data.data={tmp_path / 'scenes' / 'fmt_blender'}"])
    with pytest.raises(ConfigError, match="holds no transforms.json .*a scene of the other format"):
        build_datamanager(cfg.data, torch.device("cpu"), seed=0)


def test_a_scene_generated_with_other_parameters_is_not_reused(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRABOT_HOME", str(tmp_path))
    cpu = torch.device("cpu")
    root, _ = build_datamanager(compose([*NERFACTO, *SMALL]).data, cpu, seed=0)
    before = sorted(p.name for p in (root / "images").iterdir())
    with pytest.raises(ConfigError, match=r"other parameters \(size 16 there, 24 asked\); remove that folder"):
        build_datamanager(compose([*NERFACTO, *SMALL, "data.scene.size=24"]).data, cpu, seed=0)
    assert sorted(p.name for p in (root / "images").iterdir()) == before  # nothing was overwritten
    (root / "generator.json").unlink()  # a cached folder from before the parameters were recorded
    with pytest.raises(ConfigError, match="has no readable generator.json .*choose another data.scene.name"):
        build_datamanager(compose([*NERFACTO, *SMALL]).data, cpu, seed=0)
    # the same folder given as data.data is the user's own scene: read as it is
    _, dm = build_datamanager(compose([*NERFACTO, *SMALL, f"data.data={root}"]).data, cpu, seed=0)
    assert dm.num_train_images == 9


def test_rendering_in_chunks_gives_the_same_images():
    from data.nerf.synthetic import hemisphere_poses, make_cameras, render

    cams = make_cameras(hemisphere_poses(5), 12)
    whole, chunked = render(cams), render(cams, max_rays=300)  # 2 cameras (288 rays) per chunk
    for a, b in zip((whole.rgb, whole.alpha, whole.depth, whole.object_id),
                    (chunked.rgb, chunked.alpha, chunked.depth, chunked.object_id)):
        assert a.shape == b.shape and (a == b).all()
    assert whole.alpha.any() and not whole.alpha.all()
