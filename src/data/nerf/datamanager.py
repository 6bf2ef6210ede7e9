"""Training/eval ray batches from a parsed scene (nerfstudio's VanillaDataManager, option names kept).

- Images are read once, as uint8, and kept on the training `device` when `images_on_gpu` (masks:
  `masks_on_gpu`), else on the CPU; a batch's colours are gathered where the images live and sent to
  `device` as float in [0, 1] (RGBA when the scene's images have alpha and the dataparser keeps it:
  the model composites them). The dataparser's `mask_color` paints the pixels outside the masks.
- `next_train(step)` samples `train_num_rays_per_batch` pixels (square `patch_size` patches when
  > 1; only where masks are True) across `train_num_images_to_sample_from` images (-1: all), a
  subset re-drawn every `train_num_times_to_repeat_images` calls (-1: never).
- Eval: `next_eval(step)` is the same over the eval split with `eval_num_rays_per_batch`;
  `eval_image(i)` / `iter_eval_images()` / `next_eval_image(step)` give whole eval images
  (`eval_image_indices`, None = all) as flattened row-major rays plus ground truth. The eval split is
  the dataparser's "val" split, or its "test" split with `test_mode="test"` (nerfstudio's ns-eval).
- `pixel_sampler` (nerfstudio's --pipeline.datamanager.pixel-sampler.*): `keep_full_image` adds
  "full_image" to every train/eval ray batch: the split's images, float in [0, 1], (K, Hmax, Wmax, C)
  padded, where the images are stored, indexed by the batch's camera indices. `num_rays_per_batch` is
  not read: as in nerfstudio, the train/eval counts above set each sampler's size.
  `is_equirectangular`: nerfstudio's datamanager overrides this flag with "are all the split's cameras
  equirectangular?"; here null takes that answer and a value that contradicts it is refused. The
  scene's `fisheye_crop_radius` (fisheye cameras) restricts sampling to that circle the same way.
- Depth (`depth_file_path` in the scene): every batch carries "depth_image" (N, 1), in the frame's
  units (nerfstudio's DepthDataset), and its rays `directions_norm`; `has_depth` says whether it does.
- Every random draw comes from two CPU `torch.Generator`s (train: seed, eval: seed + 1);
  `state_dict()` / `load_state_dict()` carry them and the image-subset position, so a resumed
  run draws the same next batch.

Batches: `(RayBundle on device, {"rgb": (N, 3|4) float, "indices": (N, 3) long [camera, y, x]
[, "depth_image": (N, 1)]})`, camera indices being positions within the split's cameras.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from data.nerf.cameras import Cameras, to_device_nowait
from data.nerf.dataparsers import DataparserOutputs, SceneError
from data.nerf.pixel_sampler import PixelSampler
from data.nerf.rays import RayBundle


def _pad_stack(items: list[torch.Tensor], fill=0) -> torch.Tensor:
    hmax = max(t.shape[0] for t in items)
    wmax = max(t.shape[1] for t in items)
    out = torch.full((len(items), hmax, wmax, *items[0].shape[2:]), fill, dtype=items[0].dtype)
    for i, t in enumerate(items):
        out[i, : t.shape[0], : t.shape[1]] = t
    return out


class _Split:
    """One split's cameras (on device), padded uint8 images, bool masks (on their storage devices) and
    float depths (with the images)."""

    def __init__(self, outputs: DataparserOutputs, scale: float, device, image_device, mask_device):
        self.outputs = outputs
        self._full: torch.Tensor | None = None
        cams = outputs.cameras if scale == 1.0 else outputs.cameras.rescale_output_resolution(scale)
        self.n = len(outputs)
        self.cameras = cams.to(device)
        self.images = self.masks = self.depths = None
        if self.n == 0:
            self.sizes = torch.zeros(0, 2, dtype=torch.long)
            return
        images = outputs.load_images(cams)
        self.sizes = torch.tensor([[im.shape[0], im.shape[1]] for im in images], dtype=torch.long)
        masks = outputs.load_masks(cams)
        if outputs.mask_color is not None:
            if masks is None:
                raise SceneError(outputs.image_filenames[0], "data.dataparser.mask_color is set but the scene has no "
                                                             "masks", "give the frames a mask_path, or unset mask_color")
            if images[0].shape[-1] != 3:
                raise SceneError(outputs.image_filenames[0], "data.dataparser.mask_color needs RGB images, these "
                                                             "have alpha (nerfstudio fails on them too)",
                                 "composite them first with data.dataparser.alpha_color=white|black")
            color = torch.tensor([round(c * 255) for c in outputs.mask_color], dtype=torch.uint8)
            images = [torch.where(m[..., None], im, color) for im, m in zip(images, masks)]
        self.images = _pad_stack(images).to(image_device)
        self.masks = None if masks is None else _pad_stack(masks, False).to(mask_device)
        depths = outputs.load_depths(cams)
        self.depths = None if depths is None else _pad_stack(depths, 0.0).to(image_device)

    def full_images(self) -> torch.Tensor:
        """The images as float in [0, 1] (K, Hmax, Wmax, 3), made once, where the images are stored."""
        if self._full is None:
            self._full = self.images.float() / 255.0
        return self._full


class _Stream:
    """Random-ray stream over one split: its generator, image subset and repeat count."""

    def __init__(self, split: _Split, num_rays: int, num_images: int, times_to_repeat: int, patch_size: int,
                 seed: int, equirectangular: bool = False):
        self.split = split
        self.num_images = num_images
        self.times_to_repeat = times_to_repeat
        self.sampler = PixelSampler(num_rays, patch_size, equirectangular, split.outputs.fisheye_crop_radius)
        self.generator = torch.Generator().manual_seed(seed)
        self.subset: torch.Tensor | None = None
        self.count = 0
        self._subset_masks = split.masks

    def _use_all(self) -> bool:
        return self.num_images == -1 or self.num_images >= self.split.n

    def _set_subset(self, subset: torch.Tensor | None) -> None:
        self.subset = subset
        self.sampler.clear_cache()
        masks = self.split.masks
        if masks is None or subset is None:
            self._subset_masks = masks
        else:
            self._subset_masks = masks[subset.to(masks.device)]

    def indices(self) -> torch.Tensor:
        if self.split.n == 0:
            raise ValueError("this split has no images (check eval_mode / train_split_fraction)")
        if not self._use_all() and (self.subset is None or
                                    (self.times_to_repeat != -1 and self.count >= self.times_to_repeat)):
            perm = torch.randperm(self.split.n, generator=self.generator)[: self.num_images]
            self._set_subset(torch.sort(perm).values)
            self.count = 0
        if self.subset is None:
            sizes, ids = self.split.sizes, None
        else:
            sizes, ids = self.split.sizes[self.subset], self.subset
        self.count += 1
        return self.sampler.sample(sizes, self.generator, self._subset_masks, ids)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(),
                "subset": torch.empty(0, dtype=torch.long) if self.subset is None else self.subset.clone(),
                "has_subset": self.subset is not None,
                "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._set_subset(state["subset"].clone().long() if state["has_subset"] else None)
        self.count = int(state["count"])


class NerfDataManager:
    """nerfstudio's VanillaDataManager over a `NerfstudioDataParser` / `BlenderDataParser`."""

    def __init__(self, dataparser, data: str | Path | None = None, device: str | torch.device = "cpu",
                 train_num_rays_per_batch: int = 4096, train_num_images_to_sample_from: int = -1,
                 train_num_times_to_repeat_images: int = -1, eval_num_rays_per_batch: int = 4096,
                 eval_num_images_to_sample_from: int = -1, eval_num_times_to_repeat_images: int = -1,
                 eval_image_indices: list[int] | tuple[int, ...] | None = (0,),
                 camera_res_scale_factor: float = 1.0, patch_size: int = 1, images_on_gpu: bool = False,
                 masks_on_gpu: bool = False, pixel_sampler: dict | None = None, seed: int = 0,
                 test_mode: str = "val"):
        """test_mode: which dataparser split is the eval split, "val" (training) or "test" (ns-eval)."""
        sampler_opts = dict(pixel_sampler or {})
        valid = ("num_rays_per_batch", "keep_full_image", "is_equirectangular")
        unknown = sorted(set(sampler_opts) - set(valid))
        if unknown:
            raise ValueError(f"pixel_sampler: unknown option(s) {unknown}; valid: {', '.join(valid)}")
        if test_mode not in ("val", "test"):
            raise ValueError(f"test_mode={test_mode!r} is not val or test")
        self.keep_full_image = bool(sampler_opts.get("keep_full_image", False))
        if data is not None:
            dataparser.data = str(data)
        if camera_res_scale_factor <= 0:
            raise ValueError(f"camera_res_scale_factor must be > 0, got {camera_res_scale_factor}")
        self.device = torch.device(device)
        image_device = self.device if images_on_gpu else torch.device("cpu")
        mask_device = self.device if masks_on_gpu else torch.device("cpu")
        self.dataparser = dataparser
        self.train_outputs = dataparser.get_dataparser_outputs("train")
        self.eval_outputs = dataparser.get_dataparser_outputs(test_mode)
        self.train_split = _Split(self.train_outputs, camera_res_scale_factor, self.device, image_device, mask_device)
        self.eval_split = _Split(self.eval_outputs, camera_res_scale_factor, self.device, image_device, mask_device)
        flag = sampler_opts.get("is_equirectangular")
        self.train_stream = _Stream(self.train_split, train_num_rays_per_batch, train_num_images_to_sample_from,
                                    train_num_times_to_repeat_images, patch_size, seed,
                                    _equirectangular(self.train_split, flag, "train"))
        self.eval_stream = _Stream(self.eval_split, eval_num_rays_per_batch, eval_num_images_to_sample_from,
                                   eval_num_times_to_repeat_images, patch_size, seed + 1,
                                   _equirectangular(self.eval_split, flag, test_mode))
        if eval_image_indices is None:
            self.eval_image_indices = list(range(self.eval_split.n))
        elif self.eval_split.n == 0:
            warnings.warn("the eval split is empty (eval_mode / train_split_fraction leave no eval frames): "
                          "eval batches and images are unavailable", stacklevel=2)
            self.eval_image_indices = []
        else:
            self.eval_image_indices = [int(i) for i in eval_image_indices]
            bad = [i for i in self.eval_image_indices if not 0 <= i < self.eval_split.n]
            if bad:
                raise ValueError(f"eval_image_indices {bad} out of range: the eval split has "
                                 f"{self.eval_split.n} images")
        self.eval_cursor = 0

    # ------------------------------------------------------------------ info
    @property
    def train_cameras(self) -> Cameras:
        return self.train_split.cameras

    @property
    def eval_cameras(self) -> Cameras:
        return self.eval_split.cameras

    @property
    def num_train_images(self) -> int:
        return self.train_split.n

    @property
    def num_eval_images(self) -> int:
        return self.eval_split.n

    @property
    def scene_box(self) -> torch.Tensor:
        return self.train_outputs.scene_box

    @property
    def has_depth(self) -> bool:
        """Whether batches carry "depth_image" (the scene's frames have depth_file_path)."""
        return self.train_split.depths is not None

    # ------------------------------------------------------------------ batches
    def _batch(self, split: _Split, indices: torch.Tensor) -> tuple[RayBundle, dict]:
        idx_img = to_device_nowait(indices, split.images.device)
        rgb = split.images[idx_img[:, 0], idx_img[:, 1], idx_img[:, 2]]
        rgb = to_device_nowait(rgb, self.device).float() / 255.0
        idx_dev = to_device_nowait(indices, self.device)
        rays = split.cameras.generate_rays(idx_dev[:, 0], idx_dev[:, 1:])
        batch = {"rgb": rgb, "indices": idx_dev}
        if split.depths is not None:
            depth = split.depths[idx_img[:, 0], idx_img[:, 1], idx_img[:, 2]]
            batch["depth_image"] = to_device_nowait(depth, self.device)[:, None]
        return rays, batch

    def _ray_batch(self, split: _Split, stream: _Stream) -> tuple[RayBundle, dict]:
        rays, batch = self._batch(split, stream.indices())
        if self.keep_full_image:  # nerfstudio's pixel-sampler.keep-full-image
            batch["full_image"] = split.full_images()
        return rays, batch

    def next_train(self, step: int = 0) -> tuple[RayBundle, dict]:
        return self._ray_batch(self.train_split, self.train_stream)

    def next_eval(self, step: int = 0) -> tuple[RayBundle, dict]:
        return self._ray_batch(self.eval_split, self.eval_stream)

    def _image(self, split: _Split, i: int) -> tuple[RayBundle, dict]:
        h, w = (int(v) for v in split.sizes[i])
        coords = split.cameras.image_pixel_coords(i).cpu()
        indices = torch.cat([torch.full((coords.shape[0], 1), i, dtype=torch.long), coords], -1)
        rays, batch = self._batch(split, indices)
        batch["image"] = batch["rgb"].view(h, w, -1)
        batch["image_idx"] = i
        if split.masks is not None:
            batch["mask"] = split.masks[i, :h, :w].to(self.device)
        return rays, batch

    def eval_image(self, index: int) -> tuple[RayBundle, dict]:
        """All rays of eval image `index` (row-major, H*W) with "rgb", "image" (H, W, 3), "indices"."""
        if not 0 <= index < self.eval_split.n:
            raise IndexError(f"eval image {index} out of range ({self.eval_split.n} eval images)")
        return self._image(self.eval_split, index)

    def train_image(self, index: int) -> tuple[RayBundle, dict]:
        return self._image(self.train_split, index)

    def iter_eval_images(self):
        """Yields (index, RayBundle, batch) over `eval_image_indices`."""
        for i in self.eval_image_indices:
            rays, batch = self.eval_image(i)
            yield i, rays, batch

    def next_eval_image(self, step: int = 0) -> tuple[int, RayBundle, dict]:
        """The next of `eval_image_indices`, cycling (the cursor is part of the state)."""
        if not self.eval_image_indices:
            raise ValueError("no eval images (eval split empty or eval_image_indices=[])")
        i = self.eval_image_indices[self.eval_cursor % len(self.eval_image_indices)]
        self.eval_cursor += 1
        rays, batch = self.eval_image(i)
        return i, rays, batch

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        """Tensors and ints only (loadable with torch.load(weights_only=True))."""
        return {"train": self.train_stream.state_dict(), "eval": self.eval_stream.state_dict(),
                "eval_cursor": self.eval_cursor}

    def load_state_dict(self, state: dict) -> None:
        self.train_stream.load_state_dict(state["train"])
        self.eval_stream.load_state_dict(state["eval"])
        self.eval_cursor = int(state["eval_cursor"])


def _equirectangular(split: _Split, flag: bool | None, name: str) -> bool:
    """nerfstudio's is_equirectangular: all of the split's cameras are; a flag that says otherwise is refused."""
    if split.n == 0:  # nothing is sampled from an empty split
        return False
    actual = split.cameras.camera_type == "equirectangular"
    if flag is not None and bool(flag) != actual:
        raise ValueError(f"data.pixel_sampler.is_equirectangular={str(bool(flag)).lower()} but the {name} split's "
                         f"cameras are {'' if actual else 'not '}equirectangular; nerfstudio sets this flag from the "
                         "cameras (whatever is passed), so leave it unset (null)")
    return actual


__all__ = ["NerfDataManager", "SceneError"]
