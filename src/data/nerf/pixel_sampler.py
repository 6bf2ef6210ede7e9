"""Random pixel (and patch) sampling over a set of images, as nerfstudio's PixelSampler does.

Images of one set may differ in size: they are held padded to (K, Hmax, Wmax) and `sizes` gives
each one's (H, W). All draws come from the `torch.Generator` passed in (CPU), so a sampler run is
reproduced exactly from the generator's state.

Two of nerfstudio 1.1.5's sampling methods depend on the cameras (its datamanager sets them from
the dataset): `equirectangular` draws rows with density sin(colatitude) (row = floor(acos(1 - 2u) /
pi * H)), i.e. uniformly over the sphere; `fisheye_crop_radius` draws uniformly inside the circle of
that radius (in pixels of the images as loaded) about (W // 2, H // 2), by rejection of pixels
outside the image. As in nerfstudio, both give way to plain uniform sampling inside the masks when
the images have masks, and to plain patches when patch_size > 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class PixelSampler:
    """`sample(...) -> (N, 3) long [image, y, x]` with N = num_rays_per_batch (rounded down to a
    multiple of patch_size**2 when patch_size > 1; a patch's pixels are consecutive, row-major, so
    `.view(-1, patch_size, patch_size, 3)` gives the patches)."""

    def __init__(self, num_rays_per_batch: int = 4096, patch_size: int = 1, equirectangular: bool = False,
                 fisheye_crop_radius: float | None = None):
        self.equirectangular = bool(equirectangular)
        self.fisheye_crop_radius = fisheye_crop_radius
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        self.patch_size = int(patch_size)
        self.num_rays_per_batch = int(num_rays_per_batch)
        if self.patch_size > 1:
            self.num_rays_per_batch = (self.num_rays_per_batch // self.patch_size ** 2) * self.patch_size ** 2
        if self.num_rays_per_batch < 1:
            raise ValueError(f"num_rays_per_batch={num_rays_per_batch} is smaller than one patch "
                             f"({self.patch_size}x{self.patch_size})")
        self._valid_cache: tuple | None = None

    def clear_cache(self) -> None:
        """Forget the valid-pixel index of the last mask set (call when the image set changes)."""
        self._valid_cache = None

    def _valid_corners(self, sizes: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Flat indices (into K*Hmax*Wmax) of the patch corners whose whole patch is inside the mask."""
        key = (masks.data_ptr(), tuple(masks.shape), self.patch_size)
        if self._valid_cache is not None and self._valid_cache[0] == key:
            return self._valid_cache[1]
        m = masks.to("cpu", torch.bool)
        k, hmax, wmax = m.shape
        ys = torch.arange(hmax)[None, :, None]
        xs = torch.arange(wmax)[None, None, :]
        inside = (ys < sizes[:, 0, None, None]) & (xs < sizes[:, 1, None, None])
        m = m & inside
        ps = self.patch_size
        if ps > 1:  # erode: a corner is valid when its ps x ps patch lies in the mask
            inv = (~m).float()[:, None]
            inv = F.pad(inv, (0, ps - 1, 0, ps - 1), value=1.0)
            m = F.max_pool2d(inv, kernel_size=ps, stride=1)[:, 0] == 0
        valid = torch.nonzero(m.reshape(-1), as_tuple=False)[:, 0]
        if valid.numel() == 0:
            raise ValueError("no pixel (or patch) lies inside the masks: nothing to sample")
        self._valid_cache = (key, valid)
        return valid

    def sample(self, sizes: torch.Tensor, generator: torch.Generator, masks: torch.Tensor | None = None,
               image_ids: torch.Tensor | None = None) -> torch.Tensor:
        """sizes: (K, 2) long [H, W]; masks: (K, Hmax, Wmax) bool or None; image_ids: (K,) the global
        index of each image (default arange(K)). Returns (N, 3) long [image_id, y, x] on the CPU."""
        sizes = sizes.to("cpu", torch.long)
        k = sizes.shape[0]
        ps = self.patch_size
        n_patches = self.num_rays_per_batch // (ps * ps)
        if masks is None and ps == 1 and self.fisheye_crop_radius is not None and not self.equirectangular:
            img, y, x = self._in_circle(sizes, generator, n_patches)
        elif masks is None:
            img = torch.randint(0, k, (n_patches,), generator=generator)
            h = sizes[img, 0] - ps + 1
            w = sizes[img, 1] - ps + 1
            if ps == 1 and self.equirectangular:  # colatitude with density sin(phi) / 2
                u = torch.rand(n_patches, generator=generator, dtype=torch.float64)
                y = torch.minimum((torch.acos(1 - 2 * u) / torch.pi * h).long(), h - 1)
            else:
                y = (torch.rand(n_patches, generator=generator, dtype=torch.float64) * h).long()
            x = (torch.rand(n_patches, generator=generator, dtype=torch.float64) * w).long()
        else:
            valid = self._valid_corners(sizes, masks)
            pick = valid[torch.randint(0, valid.numel(), (n_patches,), generator=generator)]
            hmax, wmax = masks.shape[1], masks.shape[2]
            img = pick // (hmax * wmax)
            y = (pick // wmax) % hmax
            x = pick % wmax
        if ps > 1:
            dy, dx = torch.meshgrid(torch.arange(ps), torch.arange(ps), indexing="ij")
            y = (y[:, None] + dy.reshape(1, -1)).reshape(-1)
            x = (x[:, None] + dx.reshape(1, -1)).reshape(-1)
            img = img.repeat_interleave(ps * ps)
        if image_ids is not None:
            img = image_ids.to("cpu")[img]
        return torch.stack([img, y, x], -1)

    def _in_circle(self, sizes: torch.Tensor, generator: torch.Generator, n: int):
        """nerfstudio's sample_method_fisheye: radius R sqrt(u), angle 2 pi u', offsets truncated towards
        zero (.long()) from (W // 2, H // 2); draws outside the image are drawn again."""
        img = torch.empty(n, dtype=torch.long)
        y = torch.empty(n, dtype=torch.long)
        x = torch.empty(n, dtype=torch.long)
        todo = torch.arange(n)
        while todo.numel():
            m = todo.numel()
            r = self.fisheye_crop_radius * torch.sqrt(torch.rand(m, generator=generator, dtype=torch.float64))
            theta = 2.0 * torch.pi * torch.rand(m, generator=generator, dtype=torch.float64)
            i = torch.randint(0, sizes.shape[0], (m,), generator=generator)
            h, w = sizes[i, 0], sizes[i, 1]
            xs = (r * torch.cos(theta) + (w // 2)).long()
            ys = (r * torch.sin(theta) + (h // 2)).long()
            ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
            img[todo[ok]], y[todo[ok]], x[todo[ok]] = i[ok], ys[ok], xs[ok]
            todo = todo[~ok]
        return img, y, x
