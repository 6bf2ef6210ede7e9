"""The seed's `dataset.image_transforms`: a random subset of torchvision v2 transforms per frame.

torchvision has no "apply k of these n, chosen by weight" container, so `RandomSubsetApply` is
written here; every individual transform is torchvision's own.

Augmentations are reproducible: `SeededItems` computes item `index` of epoch `epoch` with torch's
CPU generator seeded from `sample_seed(seed, epoch, index)` (and restored afterwards), so an
augmented item depends on neither the worker that loads it, nor the number of workers or ranks,
nor what was loaded before it; a run resumed mid-epoch sees the same augmentations. torchvision
v2 transforms draw their parameters from torch's global generator (they take no generator
argument), which is why the generator is forked per item rather than passed in.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from config.errors import ConfigError
from data.device_images import SAMPLE_SEED_KEY

class SharpnessJitter(v2.Transform):
    """Sharpness drawn uniformly from a range (torchvision's RandomAdjustSharpness has one fixed factor)."""

    def __init__(self, sharpness: Sequence[float]):
        super().__init__()
        lo, hi = float(sharpness[0]), float(sharpness[1])
        if not 0 <= lo <= hi:
            raise ValueError(f"sharpness range {sharpness} must satisfy 0 <= min <= max")
        self.lo, self.hi = lo, hi

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"factor": float(torch.empty(1).uniform_(self.lo, self.hi))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return v2.functional.adjust_sharpness(inpt, params["factor"])


class RandomSubsetApply(v2.Transform):
    """Applies `n_subset` of `transforms`, sampled without replacement by weight, in list order
    unless `random_order`."""

    def __init__(self, transforms: Sequence, p: Sequence[float] | None = None, n_subset: int | None = None,
                 random_order: bool = False):
        super().__init__()
        if not transforms:
            raise ValueError("image_transforms.tfs is empty")
        n = len(transforms)
        weights = torch.ones(n) if p is None else torch.as_tensor(p, dtype=torch.float)
        if len(weights) != n:
            raise ValueError(f"{len(weights)} weights for {n} transforms")
        n_subset = n if n_subset is None else n_subset
        if not 1 <= n_subset <= n:
            raise ConfigError(f"image_transforms.max_num_transforms={n_subset} must be in [1, {n}] (the transforms "
                              "with a weight above 0)")
        self.transforms = list(transforms)
        self.weights = weights / weights.sum()
        self.n_subset, self.random_order = n_subset, random_order

    def forward(self, *inputs: Any) -> Any:
        chosen = torch.multinomial(self.weights, self.n_subset).tolist()
        if not self.random_order:
            chosen = sorted(chosen)
        out = inputs if len(inputs) > 1 else inputs[0]
        for i in chosen:
            out = self.transforms[i](out)
        return out


def _make(type_name: str, kwargs: dict) -> v2.Transform:
    if type_name == "SharpnessJitter":
        return SharpnessJitter(**kwargs)
    if type_name == "Identity":
        return v2.Identity()
    cls = getattr(v2, type_name, None)
    if cls is None:
        raise ConfigError(f"image transform type {type_name!r} is not a torchvision.transforms.v2 class; use one such as "
                          "ColorJitter, RandomAffine, or SharpnessJitter")
    return cls(**kwargs)


def build_image_transforms(cfg) -> RandomSubsetApply | None:
    """From `dataset.image_transforms` (enable, max_num_transforms, random_order, tfs)."""
    if not cfg.enable:
        return None
    tfs = dict(cfg.tfs)
    if not tfs:
        raise ConfigError("dataset.image_transforms.enable=true but image_transforms.tfs is empty; name at least "
                          "one transform, or set enable=false")
    names = list(tfs)
    for name in names:
        entry = tfs[name]
        extra = set(entry or {}) - {"weight", "type", "kwargs"} if hasattr(entry, "keys") else None
        if extra is None or "type" not in entry or extra:
            raise ConfigError(f"dataset.image_transforms.tfs.{name}={entry} must be {{type: <torchvision v2 class>, "
                              "weight: <float>, kwargs: {...}}}" + (f" (unknown keys {sorted(extra)})" if extra else ""))
    transforms = [_make(tfs[n]["type"], dict(tfs[n].get("kwargs") or {})) for n in names]
    weights = [float(tfs[n].get("weight", 1.0)) for n in names]
    keep = [i for i, w in enumerate(weights) if w > 0]
    return RandomSubsetApply([transforms[i] for i in keep], p=[weights[i] for i in keep],
                             n_subset=min(cfg.max_num_transforms, len(keep)), random_order=cfg.random_order)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one item: a hash, so neighbouring indices or epochs get unrelated streams."""
    digest = hashlib.blake2b(struct.pack("<qqq", seed, epoch, index), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SeededItems(Dataset):
    """`dataset` indexed by `(epoch, index)`: each item is computed with torch's CPU generator
    seeded from `sample_seed(seed, epoch, index)`, then the generator's state is put back.

    Only the CPU generator is touched (`torch.manual_seed` would also reseed CUDA, the model's
    stream, when loading runs in the main process). A plain int index means epoch 0. With `tag_seeds`
    the item also carries that seed (`sample_seed`), for augmentations drawn after loading, on the
    training device (data/device_images.py).
    """

    def __init__(self, dataset: Dataset, seed: int, tag_seeds: bool = False):
        self.dataset, self.seed, self.tag_seeds = dataset, int(seed), tag_seeds

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, index = key if isinstance(key, (tuple, list)) else (0, key)
        seed = sample_seed(self.seed, int(epoch), int(index))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            item = self.dataset[int(index)]
        if self.tag_seeds:
            item[SAMPLE_SEED_KEY] = torch.tensor(seed, dtype=torch.int64)
        return item
