"""Batches of the online phase: `sampling_ratio` of each batch from the online buffer, the rest offline.

Batch `j` of the online phase takes `floor((j + 1) r B) - floor(j r B)` items from the buffer (r the
ratio, B the batch size), so over any run of batches the share is r to within one item, and each
count is a function of `j` alone. Offline rows come from the run's `BatchStream` in its order, a
batch being split across two mixed batches where the counts require; buffer items are drawn uniformly
among the frames a sample may start at, with a generator seeded from (seed, j), and their image
augmentations under a generator seeded from (seed, j, item). The position is `(offline position before
the offline batch in use, rows of it taken, j)`: a resume recomputes the same batches.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import default_collate

from data.device_images import SAMPLE_SEED_KEY
from data.online_buffer import OnlineBuffer
from data.transforms import sample_seed
from training.data_position import BatchStream


class MixedBatches:
    """The run's batch stream when it has an online phase. `online` is switched on by the phase from
    its first online step; before that the offline batches pass through unchanged."""

    def __init__(self, offline: BatchStream | None, buffer: OnlineBuffer, batch_size: int, sampling_ratio: float,
                 seed: int, tag_seeds: bool = False):
        self.offline, self.buffer = offline, buffer
        self.tag_seeds = tag_seeds  # online items carry their augmentation seed, as offline ones (SeededItems)
        self.batch_size, self.ratio, self.seed = batch_size, float(sampling_ratio), int(seed)
        self.online = False
        self.online_batches = 0  # batches drawn in the online phase (j)
        self._position: dict | None = None  # offline position before the offline batch in use
        self._taken = batch_size  # rows of that batch already used (all: none in use)
        self._restore = False
        self.counts = [0, 0]  # items drawn online / in all, since the last `take_share`

    def n_online(self, j: int) -> int:
        rb = self.ratio * self.batch_size
        return math.floor((j + 1) * rb + 1e-9) - math.floor(j * rb + 1e-9)

    # ------------------------------------------------------------------ position
    def state_dict(self) -> dict:
        return {"offline": self._position, "taken": self._taken, "online_batches": self.online_batches}

    def load_state_dict(self, state: dict) -> None:
        """A mixed position, or a plain `BatchStream` one (an offline run continued online)."""
        if "online_batches" not in state:
            self.offline.load_state_dict(state)
            self._position, self._taken, self.online_batches = None, self.batch_size, 0
            return
        self._position, self._taken = state["offline"], int(state["taken"])
        self.online_batches = int(state["online_batches"])
        self._restore = self._position is not None

    def take_share(self) -> float | None:
        """The share of online items among the items drawn since the last call (None: none drawn)."""
        online, total = self.counts
        self.counts = [0, 0]
        return online / total if total else None

    # ------------------------------------------------------------------ batches
    def __iter__(self) -> Iterator[dict]:
        offline, current = None, None
        if self._restore:  # the offline batch that was in use, recomputed
            self.offline.load_state_dict(self._position)
            offline = iter(self.offline)
            current = next(offline)
            self._restore = False
        while True:
            k = self.n_online(self.online_batches) if self.online else 0
            parts, need = [], self.batch_size - k
            while need > 0:
                if current is None or self._taken >= self.batch_size:
                    if offline is None:
                        offline = iter(self.offline)
                    self._position = self.offline.state_dict()
                    current, self._taken = next(offline), 0
                take = min(need, self.batch_size - self._taken)
                parts.append(_rows(current, self._taken, self._taken + take))
                self._taken += take
                need -= take
            if k:
                parts.append(self._online_items(self.online_batches, k))
            if self.online:
                self.online_batches += 1
            self.counts[0] += k
            self.counts[1] += self.batch_size
            yield parts[0] if len(parts) == 1 else _concat(parts)

    def _online_items(self, j: int, k: int) -> dict:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, -1 - j, -1))
        items = []
        for i, index in enumerate(self.buffer.sample(k, generator).tolist()):
            seed = sample_seed(self.seed, -1 - j, i)
            with torch.random.fork_rng(devices=[]):  # augmentations: the item's own stream
                torch.default_generator.manual_seed(seed)
                items.append(self.buffer.item(index))
            if self.tag_seeds:
                items[-1][SAMPLE_SEED_KEY] = torch.tensor(seed, dtype=torch.int64)
        return default_collate(items)


def _rows(batch: dict, start: int, stop: int) -> dict:
    if start == 0 and stop == len(next(iter(batch.values()))):
        return batch
    return {k: v[start:stop] for k, v in batch.items()}


def _concat(parts: list[dict]) -> dict:
    """Rows of several batches as one; keys that not every part has are left out (the buffer stores only
    what the env gives), and the buffer's values take the offline batch's dtypes."""
    keys = [k for k in parts[0] if all(k in p for p in parts)]
    out = {}
    for key in keys:
        values = [p[key] for p in parts]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.cat([v.to(values[0].dtype) for v in values])
        else:
            out[key] = [x for v in values for x in v]
    return out
