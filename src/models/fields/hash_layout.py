"""Where each level of a multiresolution hash grid lives: scale, indexing and rows in the table.

Two conventions, the same algorithm (Müller et al. 2022): a point in [0, 1]^3 is scaled per level,
the 8 vertices of its cell are looked up and blended trilinearly. A level whose vertex grid fits its
rows is indexed densely (x + side*y + side^2*z), a finer one by the spatial hash
(x * 1) xor (y * 2654435761) xor (z * 805459861) in 32-bit arithmetic, modulo the level's rows.

- `torch` (this project's torch encoding, nerfstudio's torch sizing): level l has resolution
  floor(base_res * b**l), b = exp((ln max_res - ln base_res) / (num_levels - 1)); position = x * res;
  every level owns a full table of 2**log2_hashmap_size rows (parameter shape (L, T, F)), dense when
  (res + 2)**3 <= T.
- `tcnn` (tiny-cuda-nn's HashGrid, include/tiny-cuda-nn/encodings/grid.h): scale =
  2**(l * log2 b) * base_res - 1 in float32, position = x * scale + 0.5, resolution = ceil(scale) + 1;
  a level has min(res**3 rounded up to a multiple of 8, T) rows, packed one after another (parameter
  shape (rows, F), tcnn's flat parameter vector), dense when res**3 fits them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

PRIMES = (1, 2654435761, 805459861)
LAYOUTS = ("torch", "tcnn")
_TCNN_MAX_DENSE_BASE = 0x659  # tcnn's MAX_BASES[3]: coarser grids never overflow 32 bits when indexed densely


def level_resolutions(num_levels: int, base_res: int, max_res: int) -> tuple[list[int], float]:
    """([floor(base_res * b**l) for each level], growth factor b)."""
    growth = math.exp((math.log(max_res) - math.log(base_res)) / (num_levels - 1)) if num_levels > 1 else 1.0
    return [int(math.floor(base_res * growth**level)) for level in range(num_levels)], growth


@dataclass(frozen=True)
class HashGridLayout:
    kind: str
    scales: tuple[float, ...]   # position multiplier per level
    shift: float                # added after scaling (tcnn: 0.5, vertices sit at cell centres)
    sides: tuple[int, ...]      # vertices per axis of the dense index
    dense: tuple[bool, ...]
    sizes: tuple[int, ...]      # rows of each level
    offsets: tuple[int, ...]    # first row of each level in the flat (rows, F) table
    table_size: int             # 2**log2_hashmap_size

    @property
    def num_levels(self) -> int:
        return len(self.scales)

    @property
    def total_rows(self) -> int:
        return self.offsets[-1] + self.sizes[-1]

    def table_shape(self, features: int) -> tuple[int, ...]:
        if self.kind == "torch":
            return (self.num_levels, self.table_size, features)
        return (self.total_rows, features)


def make_layout(kind: str, num_levels: int, base_res: int, max_res: int, log2_hashmap_size: int) -> HashGridLayout:
    if kind not in LAYOUTS:
        raise ValueError(f"hash grid layout {kind!r} is not one of {', '.join(LAYOUTS)}")
    table = 2**log2_hashmap_size
    resolutions, growth = level_resolutions(num_levels, base_res, max_res)
    if kind == "torch":
        sides = [r + 2 for r in resolutions]  # floor(x * res) + 1 <= res + 1 for x in [0, 1]
        return HashGridLayout(kind, tuple(float(r) for r in resolutions), 0.0, tuple(sides),
                              tuple(s**3 <= table for s in sides), (table,) * num_levels,
                              tuple(level * table for level in range(num_levels)), table)
    log2_scale = np.float32(np.log2(np.float32(growth)))
    scales, sides, dense, sizes, offsets = [], [], [], [], []
    offset = 0
    for level in range(num_levels):
        scale = np.exp2(np.float32(level) * log2_scale) * np.float32(base_res) - np.float32(1.0)
        res = int(math.ceil(scale)) + 1
        rows = min(-(-res**3 // 8) * 8, table)
        scales.append(float(scale))
        sides.append(res)
        dense.append(res <= _TCNN_MAX_DENSE_BASE and res**3 <= rows)
        sizes.append(rows)
        offsets.append(offset)
        offset += rows
    return HashGridLayout(kind, tuple(scales), 0.5, tuple(sides), tuple(dense), tuple(sizes), tuple(offsets), table)


def hash_encoding_reference(x: torch.Tensor, table: torch.Tensor, layout: HashGridLayout) -> torch.Tensor:
    """The encoding written for clarity (loops over levels and corners, 64-bit indices wrapped to 32 bits
    as tcnn and the kernels compute them); tests compare the fast paths against it.

    x: (N, 3) in [0, 1]; table: `layout.table_shape(F)` -> (N, L * F).
    """
    flat = table.reshape(-1, table.shape[-1])
    outputs = []
    for level in range(layout.num_levels):
        side, size = layout.sides[level], layout.sizes[level]
        pos = x * layout.scales[level] + layout.shift
        lower = torch.floor(pos)
        frac = pos - lower
        lower = lower.long()
        level_out = 0.0
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    i, j, k = lower[:, 0] + dx, lower[:, 1] + dy, lower[:, 2] + dz
                    if layout.dense[level]:
                        index = i + j * side + k * side * side
                    else:
                        index = (i * PRIMES[0]) ^ (j * PRIMES[1]) ^ (k * PRIMES[2])
                    index = (index & 0xFFFFFFFF) % size + layout.offsets[level]
                    w = ((frac[:, 0] if dx else 1 - frac[:, 0])
                         * (frac[:, 1] if dy else 1 - frac[:, 1])
                         * (frac[:, 2] if dz else 1 - frac[:, 2]))
                    level_out = level_out + w[:, None] * flat[index]
        outputs.append(level_out)
    return torch.cat(outputs, dim=-1)
