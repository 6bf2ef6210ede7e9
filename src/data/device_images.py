"""uint8 transport of camera frames: the loader hands over the frames as stored (uint8), and the
float conversion and the dataset's `image_transforms` run on the training device (`machine.uint8_transport`).

A float32 frame is 4 bytes a pixel channel, the stored one 1: the worker's copy into shared memory,
the pinned host buffer and the host->device copy all shrink fourfold, and the workers no longer run
the augmentations. Numerics do not change:

- `to_float` maps every uint8 value through a 256-entry table computed with the loader's own
  operation (`x.to(float32).div_(255)` on the CPU), so the device's float frame is bit for bit the
  loader's (PyTorch's CUDA division by a scalar multiplies by its reciprocal, which rounds 126 of
  the 256 values one ulp differently).
- The augmentations are replayed per item under the item's own seed (`SeededItems` tags the item
  with `sample_seed(seed, epoch, index)`), drawing in the order the loader draws (keys in item
  order, frames in window order), so every frame gets the parameters it would have got in a worker.
  torchvision's v2 transforms draw their parameters from torch's CPU generator whatever the input's
  device; one call per frame, since their parameters are per call, not per batch element.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

SAMPLE_SEED_KEY = "sample_seed"  # int64 per item: the seed its augmentations are drawn from

_TABLES: dict[torch.device, torch.Tensor] = {}


def _table(device: torch.device) -> torch.Tensor:
    table = _TABLES.get(device)
    if table is None:
        table = torch.arange(256, dtype=torch.uint8).to(torch.float32).div_(255)  # the loader's operation
        table = _TABLES[device] = table.to(device)
    return table


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 frames -> float32 in [0, 1], equal bit for bit to the loader's `x.float() / 255` on the CPU."""
    return _table(images.device)[images.long()]


def replay_transforms(images: dict[str, torch.Tensor], seeds: torch.Tensor,
                      transforms: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """`transforms` on every frame of `images` ({key: (B, [T,] C, H, W) float}), item b under seed `seeds[b]`.

    The global generators are put back afterwards (CUDA's too: a transform that draws noise on the
    input's device must not move the model's random stream)."""
    device = next(iter(images.values())).device
    out: dict[str, list[torch.Tensor]] = {key: [] for key in images}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for b, seed in enumerate(seeds.tolist()):
            torch.default_generator.manual_seed(int(seed))
            for key, value in images.items():
                item = value[b]
                if item.ndim == 4:  # a window of frames: one call per frame, as in the loader
                    out[key].append(torch.stack([transforms(frame) for frame in item]))
                else:
                    out[key].append(transforms(item))
    return {key: torch.stack(frames) for key, frames in out.items()}


class DeviceImages:
    """Moves a batch to the device (non-blocking from pinned memory); its uint8 frames of `image_keys`
    become float there and, if `transforms` is given, are augmented there (items tagged with their seed)."""

    def __init__(self, image_keys: Iterable[str], transforms: Callable[[torch.Tensor], torch.Tensor] | None):
        self.image_keys = set(image_keys)
        self.transforms = transforms

    def __call__(self, batch: dict, device: torch.device) -> dict:
        batch = dict(batch)
        seeds = batch.pop(SAMPLE_SEED_KEY, None)  # stays on the host: read there, no device sync
        out = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        stored = [k for k in out if k in self.image_keys and out[k].dtype == torch.uint8]  # in item order
        for key in stored:
            out[key] = to_float(out[key])
        if self.transforms is not None and stored:
            if seeds is None:
                raise RuntimeError(f"uint8 frames of {stored} came without their items' {SAMPLE_SEED_KEY!r}, so "
                                   "their augmentations cannot be drawn; build the batches with tag_seeds=True")
            out.update(replay_transforms({k: out[k] for k in stored}, seeds, self.transforms))
        return out
