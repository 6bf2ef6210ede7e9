"""Input encodings: multiresolution hash grid (Instant-NGP), spherical harmonics, NeRF frequencies.

Hash grid (Müller et al. 2022, tiny-cuda-nn's HashGrid): level l has resolution
floor(base_res * b**l) with b = exp((ln max_res - ln base_res) / (num_levels - 1)); a point in
[0, 1]^3 is scaled by it, the 8 surrounding vertices are looked up in that level's table of
2**log2_hashmap_size feature vectors and blended trilinearly. A level whose vertex grid fits its table
is indexed densely (x + R*y + R^2*z); finer levels use the spatial hash
(x * 1) xor (y * 2654435761) xor (z * 805459861) mod T. Every level owns a full table of T rows
(nerfstudio's torch layout; tcnn trims dense levels, so its parameter count is smaller).
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from models.fields._tcnn import check_implementation, tcnn_hash_encoding, tcnn_sh_encoding

PRIMES = (1, 2654435761, 805459861)


def level_resolutions(num_levels: int, base_res: int, max_res: int) -> tuple[list[int], float]:
    """([floor(base_res * b**l) for each level], growth factor b)."""
    growth = math.exp((math.log(max_res) - math.log(base_res)) / (num_levels - 1)) if num_levels > 1 else 1.0
    return [int(math.floor(base_res * growth**level)) for level in range(num_levels)], growth


def grid_side(resolution: int) -> int:
    """Vertices per axis a level can touch: floor(x * res) + 1 <= res + 1 for x in [0, 1]."""
    return resolution + 2


class HashEncoding(nn.Module):
    """(..., 3) positions in [0, 1] -> (..., num_levels * features_per_level) features."""

    def __init__(self, num_levels: int = 16, base_res: int = 16, max_res: int = 2048,
                 log2_hashmap_size: int = 19, features_per_level: int = 2, hash_init_scale: float = 0.001,
                 implementation: str = "torch"):
        super().__init__()
        check_implementation(implementation)
        self.num_levels, self.features_per_level = num_levels, features_per_level
        self.log2_hashmap_size = log2_hashmap_size
        self.table_size = 2**log2_hashmap_size
        resolutions, self.growth_factor = level_resolutions(num_levels, base_res, max_res)
        self.resolutions = resolutions
        self.out_dim = num_levels * features_per_level
        self.tcnn = None
        if implementation == "tcnn":
            self.tcnn = tcnn_hash_encoding(num_levels, features_per_level, log2_hashmap_size, base_res,
                                           self.growth_factor)
            return
        # (L, T, F) uniform in [-s, s] like nerfstudio (tcnn uses U(-1e-4, 1e-4))
        self.table = nn.Parameter((torch.rand(num_levels, self.table_size, features_per_level) * 2 - 1)
                                  * hash_init_scale)
        sides = [grid_side(r) for r in resolutions]
        self.register_buffer("scales", torch.tensor(resolutions, dtype=torch.float32), persistent=False)
        # int32 index arithmetic (faster, half the memory) when no product can overflow: the primes are
        # reduced mod T first, which keeps the low log2(T) bits of every product, all the hash uses
        max_coord = max(resolutions) + 1
        small = max_coord * self.table_size < 2**31 and num_levels * self.table_size < 2**31
        self.index_dtype = torch.int32 if small else torch.long
        self.primes = tuple(p % self.table_size if small else p for p in PRIMES)
        grid = (1, -1, 1, 1, 1)  # broadcasts against (N, L, 2, 2, 2) corner tensors
        self.register_buffer("strides_y", torch.tensor(sides, dtype=self.index_dtype).view(grid), persistent=False)
        self.register_buffer("strides_z", torch.tensor([s * s for s in sides], dtype=self.index_dtype).view(grid),
                             persistent=False)
        self.register_buffer("dense", torch.tensor([s**3 <= self.table_size for s in sides]).view(grid),
                             persistent=False)
        self.register_buffer("level_offsets",
                             (torch.arange(num_levels, dtype=self.index_dtype) * self.table_size).view(1, -1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tcnn is not None:
            return self.tcnn(x)
        shape = x.shape[:-1]
        x = x.reshape(-1, 3)
        n = x.shape[0]
        scaled = x[:, None, :] * self.scales[None, :, None]  # (N, L, 3)
        lower = torch.floor(scaled)
        frac = scaled - lower
        lower = lower.to(self.index_dtype)
        # per axis the two vertex coordinates and their weights, laid out on the (2, 2, 2) corner cube
        # by broadcasting: axis x varies along dim 2, y along dim 3, z along dim 4 of (N, L, 2, 2, 2)
        nl = self.num_levels
        views = ((n, nl, 2, 1, 1), (n, nl, 1, 2, 1), (n, nl, 1, 1, 2))
        c = [torch.stack([lower[..., d], lower[..., d] + 1], dim=-1).view(views[d]) for d in range(3)]
        w = [torch.stack([1 - frac[..., d], frac[..., d]], dim=-1).view(views[d]) for d in range(3)]
        dense_index = c[0] + c[1] * self.strides_y + c[2] * self.strides_z
        p = self.primes
        hashed = (c[0] * p[0]) ^ (c[1] * p[1]) ^ (c[2] * p[2])
        index = torch.where(self.dense, dense_index, hashed) & (self.table_size - 1)
        index = index.view(n, nl, 8) + self.level_offsets  # into the flattened (L*T, F) table
        weights = (w[0] * w[1] * w[2]).view(n, nl, 8, 1)
        feats = F.embedding(index, self.table.view(-1, self.features_per_level))  # (N, L, 8, F): one gather
        out = (feats * weights).sum(dim=2)
        return out.reshape(*shape, self.out_dim)


def hash_encoding_reference(x: torch.Tensor, table: torch.Tensor, resolutions: list[int]) -> torch.Tensor:
    """The same encoding written for clarity (loops over levels and corners); tests compare against it.

    x: (N, 3) in [0, 1]; table: (L, T, F) -> (N, L * F).
    """
    num_levels, table_size, _ = table.shape
    outputs = []
    for level in range(num_levels):
        res = resolutions[level]
        side = res + 2
        dense = side**3 <= table_size
        pos = x * res
        lower = torch.floor(pos)
        frac = pos - lower
        lower = lower.long()
        level_out = 0.0
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    i, j, k = lower[:, 0] + dx, lower[:, 1] + dy, lower[:, 2] + dz
                    if dense:
                        index = i + j * side + k * side * side
                    else:
                        index = (i * PRIMES[0]) ^ (j * PRIMES[1]) ^ (k * PRIMES[2])
                    index = index % table_size
                    w = ((frac[:, 0] if dx else 1 - frac[:, 0])
                         * (frac[:, 1] if dy else 1 - frac[:, 1])
                         * (frac[:, 2] if dz else 1 - frac[:, 2]))
                    level_out = level_out + w[:, None] * table[level][index]
        outputs.append(level_out)
    return torch.cat(outputs, dim=-1)


# tcnn's SphericalHarmonics (degree 4): coefficients and signs of its generated code
_SH_C0 = 0.28209479177387814
_SH_C1 = 0.48860251190291987


def spherical_harmonics(d: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """(..., 3) unit directions -> (..., degree**2) real SH basis, tiny-cuda-nn's convention."""
    if not 1 <= degree <= 4:
        raise ValueError(f"spherical harmonics degree must be in 1..4, got {degree}")
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    out = [torch.full_like(x, _SH_C0)]
    if degree > 1:
        out += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
                0.94617469575755997 * zz - 0.31539156525251999, -1.0925484305920792 * x * z,
                0.54627421529603959 * xx - 0.54627421529603959 * yy]
    if degree > 3:
        out += [0.59004358992664352 * y * (-3.0 * xx + yy), 2.8906114426405538 * x * y * z,
                0.45704579946446572 * y * (1.0 - 5.0 * zz), 0.3731763325901154 * z * (5.0 * zz - 3.0),
                0.45704579946446572 * x * (1.0 - 5.0 * zz), 1.4453057213202769 * z * (xx - yy),
                0.59004358992664352 * x * (-xx + 3.0 * yy)]
    return torch.stack(out, dim=-1)


class SHEncoding(nn.Module):
    """(..., 3) unit directions in [-1, 1] -> (..., degree**2)."""

    def __init__(self, degree: int = 4, implementation: str = "torch"):
        super().__init__()
        check_implementation(implementation)
        self.degree, self.out_dim = degree, degree**2
        self.tcnn = tcnn_sh_encoding(degree) if implementation == "tcnn" else None

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        if self.tcnn is not None:
            return self.tcnn(d)
        return spherical_harmonics(d, self.degree)


class NeRFEncoding(nn.Module):
    """Frequency encoding sin(2π 2^k x), cos(...) for k in linspace(min_freq_exp, max_freq_exp, n)."""

    def __init__(self, in_dim: int = 3, num_frequencies: int = 2, min_freq_exp: float = 0.0,
                 max_freq_exp: float = 1.0, include_input: bool = False):
        super().__init__()
        self.include_input = include_input
        self.register_buffer("freqs", 2.0 ** torch.linspace(min_freq_exp, max_freq_exp, num_frequencies),
                             persistent=False)
        self.out_dim = in_dim * num_frequencies * 2 + (in_dim if include_input else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = (2 * math.pi * x)[..., None] * self.freqs  # (..., D, K)
        scaled = scaled.reshape(*x.shape[:-1], -1)
        out = torch.sin(torch.cat([scaled, scaled + math.pi / 2.0], dim=-1))
        return torch.cat([out, x], dim=-1) if self.include_input else out
