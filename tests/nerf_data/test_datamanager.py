"""Pixel sampler and datamanager: counts, shapes, masks, patches, subsets, eval images, exact resume."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from data.nerf import synthetic as syn
from data.nerf.datamanager import NerfDataManager
from data.nerf.dataparsers import BlenderDataParser, NerfstudioDataParser
from data.nerf.pixel_sampler import PixelSampler


def _dm(scene, **kw):
    return NerfDataManager(NerfstudioDataParser(), data=scene, **kw)


def test_sampler_counts_and_bounds():
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor([[10, 20], [5, 7]])
    idx = PixelSampler(1000).sample(sizes, g)
    assert idx.shape == (1000, 3) and idx.dtype == torch.long
    assert (idx[:, 1] < sizes[idx[:, 0], 0]).all() and (idx[:, 2] < sizes[idx[:, 0], 1]).all()
    assert set(idx[:, 0].tolist()) == {0, 1}


def test_sampler_masks_and_patches():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 12, 12, dtype=torch.bool)
    masks[1, 2:8, 3:9] = True
    sizes = torch.tensor([[12, 12], [12, 12]])
    idx = PixelSampler(500).sample(sizes, g, masks, image_ids=torch.tensor([4, 7]))
    assert (idx[:, 0] == 7).all() and (idx[:, 1] >= 2).all() and (idx[:, 1] < 8).all()
    sampler = PixelSampler(50, patch_size=3)  # rounded down to 45 = 5 patches of 9
    assert sampler.num_rays_per_batch == 45
    idx = sampler.sample(sizes, g, masks)
    patches = idx.view(-1, 3, 3, 3)
    assert (patches[..., 0] == 1).all()
    assert (patches[:, :, :, 1] == patches[:, :1, :1, 1] + torch.arange(3).view(1, 3, 1)).all()
    assert (patches[:, :, :, 2] == patches[:, :1, :1, 2] + torch.arange(3).view(1, 1, 3)).all()
    assert masks[idx[:, 0], idx[:, 1], idx[:, 2]].all()  # whole patches inside the mask
    unmasked = PixelSampler(36, patch_size=6).sample(sizes, g).view(-1, 6, 6, 3)
    assert (unmasked[..., 1] < 12).all() and (unmasked[..., 2] < 12).all()


def test_train_batch_matches_images_and_rays(ns_scene):
    dm = _dm(ns_scene, train_num_rays_per_batch=256, patch_size=1)
    rays, batch = dm.next_train(0)
    assert len(rays) == 256 and batch["rgb"].shape == (256, 3) and batch["rgb"].dtype == torch.float32
    assert batch["indices"].shape == (256, 3) and 0.0 <= float(batch["rgb"].min()) <= float(batch["rgb"].max()) <= 1.0
    idx = batch["indices"]
    images = dm.train_outputs.load_images()
    expected = torch.stack([images[c][y, x] for c, y, x in idx.tolist()]).float() / 255
    torch.testing.assert_close(batch["rgb"], expected)
    torch.testing.assert_close(rays.camera_indices[:, 0], idx[:, 0])
    masks = dm.train_outputs.load_masks()
    assert all(masks[c][y, x] for c, y, x in idx.tolist())  # the scene has masks: only object pixels


@pytest.mark.parametrize("distorted", [False, True])
def test_rays_retrace_to_batch_colours(ns_scene, tmp_path, distorted):
    """Undo the pose normalisation and re-trace the batch's rays: the exact renderer gives its colours."""
    if distorted:
        ns_scene = syn.write_nerfstudio(tmp_path / "d", n_views=4, size=32, masks=True, depth=False,
                                        distortion=[-0.15, 0.02, 0.0, 0.0, 0.002, -0.001])
    parser = NerfstudioDataParser(eval_mode="interval")  # 4 views: 3 train, 1 eval
    dm = NerfDataManager(parser, data=ns_scene, train_num_rays_per_batch=300)
    assert dm.train_cameras.camera_type == "perspective"
    assert (dm.train_cameras.distortion_params is not None) == distorted
    rays, batch = dm.next_train(0)
    tr, scale = dm.train_outputs.dataparser_transform.double(), dm.train_outputs.dataparser_scale
    rot, t = tr[:, :3], tr[:, 3]
    origins = (rays.origins.double() / scale - t) @ rot  # R^T (o / s - t)
    dirs = rays.directions.double() @ rot
    rgb, hit, _, _ = syn.trace(origins.numpy(), dirs.numpy())
    assert hit.all()
    err = np.abs(syn.to_uint8(rgb).astype(int) - np.round(batch["rgb"].numpy() * 255).astype(int))
    assert (err <= 1).mean() > 0.97  # float32 rays may cross a texture edge for a handful of pixels


def test_image_subsets_resample(ns_scene):
    dm = _dm(ns_scene, train_num_rays_per_batch=64, train_num_images_to_sample_from=2,
             train_num_times_to_repeat_images=3)
    subsets = []
    for step in range(9):
        _, batch = dm.next_train(step)
        subset = dm.train_stream.subset.tolist()
        assert len(subset) == 2 and set(batch["indices"][:, 0].tolist()) <= set(subset)
        subsets.append(tuple(subset))
    for start in (0, 3, 6):  # kept for 3 steps, then re-drawn
        assert len(set(subsets[start:start + 3])) == 1
    assert len(set(subsets)) > 1
    all_images = _dm(ns_scene, train_num_rays_per_batch=2000)
    assert len(set(all_images.next_train(0)[1]["indices"][:, 0].tolist())) == all_images.num_train_images


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("kw", [{}, {"train_num_images_to_sample_from": 3, "train_num_times_to_repeat_images": 2,
                                      "patch_size": 2}])
def test_resume_gives_the_same_next_batch(ns_scene, kw):
    a = _dm(ns_scene, train_num_rays_per_batch=128, seed=3, **kw)
    for step in range(5):
        a.next_train(step)
    a.next_eval(0)
    a.next_eval_image(0)
    state = _roundtrip(a.state_dict())
    expected = [a.next_train(5 + i)[1]["indices"] for i in range(4)]
    expected_eval = a.next_eval(1)[1]["indices"]
    b = _dm(ns_scene, train_num_rays_per_batch=128, seed=3, **kw)
    b.load_state_dict(state)
    got = [b.next_train(5 + i)[1]["indices"] for i in range(4)]
    for e, g in zip(expected, got):
        torch.testing.assert_close(e, g)
    torch.testing.assert_close(expected_eval, b.next_eval(1)[1]["indices"])
    assert b.eval_cursor == 1


def test_eval_images_blender(blender_scene):
    dm = NerfDataManager(BlenderDataParser(data=str(blender_scene)), eval_image_indices=None,
                         eval_num_rays_per_batch=100, camera_res_scale_factor=0.5)
    assert dm.num_train_images == 10 and dm.num_eval_images == 3
    items = list(dm.iter_eval_images())
    assert [i for i, _, _ in items] == [0, 1, 2]
    i, rays, batch = items[1]
    assert batch["image"].shape == (16, 16, 3) and len(rays) == 256
    assert float(dm.eval_cameras.fx[0]) == pytest.approx(float(dm.eval_outputs.cameras.fx[0]) / 2)
    rays, batch = dm.next_eval(0)
    assert len(rays) == 100 and batch["rgb"].shape == (100, 3)
    assert [dm.next_eval_image(s)[0] for s in range(4)] == [0, 1, 2, 0]
    assert dm.train_split.images.device.type == "cpu"
    with pytest.raises(ValueError, match="eval_image_indices"):
        NerfDataManager(BlenderDataParser(data=str(blender_scene)), eval_image_indices=[7])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_images_on_gpu(ns_scene):
    dm = _dm(ns_scene, device="cuda", images_on_gpu=True, masks_on_gpu=False)
    assert dm.train_split.images.is_cuda and not dm.train_split.masks.is_cuda
    rays, batch = dm.next_train(0)
    assert rays.origins.is_cuda and batch["rgb"].is_cuda
    cpu = _dm(ns_scene, device="cuda")
    assert not cpu.train_split.images.is_cuda and cpu.next_train(0)[1]["rgb"].is_cuda


def test_pixel_sampler_keep_full_image_adds_the_splits_images(ns_scene):
    """nerfstudio's --pipeline.datamanager.pixel-sampler.keep-full-image: every ray batch carries the images."""
    dm = _dm(ns_scene, train_num_rays_per_batch=64, pixel_sampler={"keep_full_image": True})
    rays, batch = dm.next_train(0)
    full = batch["full_image"]
    assert full.dtype == torch.float32 and full.shape == (dm.num_train_images, 32, 32, 3)
    c, y, x = batch["indices"].T
    torch.testing.assert_close(full[c, y, x], batch["rgb"])  # indexed by the batch's camera indices
    assert dm.next_eval(0)[1]["full_image"].shape[0] == dm.num_eval_images
    assert "full_image" not in _dm(ns_scene, train_num_rays_per_batch=64).next_train(0)[1]


def test_pixel_sampler_batch_size_follows_the_datamanagers_counts(ns_scene):
    """As in nerfstudio, train/eval_num_rays_per_batch size the samplers; pixel_sampler.num_rays_per_batch is
    accepted (a translated command stays valid) and not read."""
    dm = _dm(ns_scene, train_num_rays_per_batch=64, eval_num_rays_per_batch=32,
             pixel_sampler={"num_rays_per_batch": 7, "keep_full_image": False})
    assert len(dm.next_train(0)[0]) == 64 and len(dm.next_eval(0)[0]) == 32
    with pytest.raises(ValueError, match="is_equirectangular"):
        _dm(ns_scene, pixel_sampler={"is_equirectangular": True})


def test_pixel_sampler_keys_reach_the_datamanager_from_the_config(compose, ns_scene):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose(["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto",
                   "data=nerfstudio", f"data.data={ns_scene}", "data.train_num_rays_per_batch=16",
                   "data.pixel_sampler.keep_full_image=true", "data.pixel_sampler.num_rays_per_batch=8"])
    assert OmegaConf.to_container(cfg.data.pixel_sampler) == {"num_rays_per_batch": 8, "keep_full_image": True,
                                                              "is_equirectangular": None}
    kwargs = OmegaConf.to_container(cfg.data, resolve=True)
    kwargs.pop("scene")  # as NerfPipeline builds it
    dm = instantiate(kwargs, _convert_="all")
    rays, batch = dm.next_train(0)
    assert len(rays) == 16 and "full_image" in batch
