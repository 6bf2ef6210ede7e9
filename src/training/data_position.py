"""An endless, resumable stream of training batches, sharded across data-parallel ranks.

The order of epoch ``e`` is a permutation drawn from its own generator seeded with
``seed + e``; rank ``r`` of ``w`` takes every ``w``-th sample of it. The position is (epoch,
samples taken by all ranks), so a checkpoint continues the same stream, also with another number
of ranks, and data loading never draws from the global RNGs that the model uses. The sampler
yields ``(epoch, index)`` and items are computed under a generator seeded from (seed, epoch,
index) (`data.transforms.SeededItems`), so image augmentations resume and do not depend on the
number of workers.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data.transforms import SeededItems


class _EpochSampler(Sampler[tuple[int, int]]):
    def __init__(self, indices: Sequence[int], seed: int, shuffle: bool, rank: int, world_size: int):
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)
        self.seed, self.shuffle = seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def _mine(self) -> torch.Tensor:
        order = self.indices
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = order[torch.randperm(len(order), generator=g)]
        rest = order[self.start:]
        per_rank = len(rest) // self.world_size  # every rank gets as many samples as the others
        return rest[self.rank::self.world_size][:per_rank]

    def __len__(self) -> int:
        return len(self._mine())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, i) for i in self._mine().tolist())


class BatchStream:
    """Yields this rank's batches forever; `state_dict()` is the position after the last one."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, indices: Sequence[int] | None = None,
                 num_workers: int = 0, shuffle: bool = True, pin_memory: bool = False, rank: int = 0,
                 world_size: int = 1, tag_seeds: bool = False):
        indices = range(len(dataset)) if indices is None else indices
        global_batch = batch_size * world_size
        if len(indices) < global_batch:
            raise ValueError(f"the dataset has {len(indices)} usable frames, fewer than one global batch "
                             f"(batch_size={batch_size} x {world_size} ranks); lower batch_size or record more episodes")
        self.sampler = _EpochSampler(indices, seed, shuffle, rank, world_size)
        self.global_batch = global_batch
        self.seed = seed
        self.epoch, self.samples_in_epoch = 0, 0
        # Its own generator: DataLoader draws the workers' base seed at every iter(), which would
        # otherwise consume the global torch RNG and change the model's random stream on resume.
        self.generator = torch.Generator()
        self.loader = DataLoader(SeededItems(dataset, seed, tag_seeds), batch_size=batch_size, sampler=self.sampler,
                                 drop_last=True, generator=self.generator, num_workers=num_workers,
                                 pin_memory=pin_memory, persistent_workers=num_workers > 0,
                                 prefetch_factor=2 if num_workers > 0 else None)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "samples_in_epoch": self.samples_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.samples_in_epoch = int(state["epoch"]), int(state["samples_in_epoch"])

    def __iter__(self) -> Iterator[dict]:
        while True:
            self.sampler.epoch = self.epoch
            self.sampler.start = self.samples_in_epoch
            self.generator.manual_seed(self.seed + self.epoch)
            for batch in self.loader:
                self.samples_in_epoch += self.global_batch
                yield batch
            self.epoch, self.samples_in_epoch = self.epoch + 1, 0
