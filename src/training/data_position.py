"""An endless, resumable stream of training batches.

The order of epoch ``e`` is a permutation drawn from its own generator seeded with
``seed + e``, so the position (epoch, batches taken) is all a checkpoint needs to continue the
same stream, and data loading never draws from the global RNGs that the model uses.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class _EpochSampler(Sampler[int]):
    def __init__(self, indices: Sequence[int], seed: int, shuffle: bool):
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return len(self.indices) - self.start

    def __iter__(self) -> Iterator[int]:
        order = self.indices
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = order[torch.randperm(len(order), generator=g)]
        return iter(order[self.start:].tolist())


class BatchStream:
    """Yields batches forever; `state_dict()` is the position after the last batch yielded."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, indices: Sequence[int] | None = None,
                 num_workers: int = 0, shuffle: bool = True, pin_memory: bool = False):
        indices = range(len(dataset)) if indices is None else indices
        if len(indices) < batch_size:
            raise ValueError(f"the dataset has {len(indices)} usable frames, fewer than batch_size={batch_size}; "
                             "lower batch_size or record more episodes")
        self.sampler = _EpochSampler(indices, seed, shuffle)
        self.batches_per_epoch = len(indices) // batch_size
        self.batch_size = batch_size
        self.epoch, self.batch_in_epoch = 0, 0
        self.seed = seed
        # Its own generator: DataLoader draws the workers' base seed at every iter(), which would
        # otherwise consume the global torch RNG and change the model's random stream on resume.
        self.generator = torch.Generator()
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, drop_last=True,
                                 generator=self.generator,
                                 num_workers=num_workers, pin_memory=pin_memory,
                                 persistent_workers=num_workers > 0,
                                 prefetch_factor=2 if num_workers > 0 else None)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])

    def __iter__(self) -> Iterator[dict]:
        while True:
            self.sampler.epoch = self.epoch
            self.sampler.start = self.batch_in_epoch * self.batch_size
            self.generator.manual_seed(self.seed + self.epoch)
            for batch in self.loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
