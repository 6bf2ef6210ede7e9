"""Input encodings: multiresolution hash grid (Instant-NGP), spherical harmonics, NeRF frequencies.

The hash grid's levels, indexing and table layout are in `hash_layout.py` (this project's torch
convention by default, tiny-cuda-nn's as an option). `implementation` picks who computes it:
`torch` (vectorised torch ops, every device), `triton` (fused CUDA kernels, `_triton_hash.py`; the
same parameters and values, so checkpoints move between the two), `auto` (triton for CUDA inputs
where Triton imports, torch otherwise) or `tcnn` (tinycudann's own module and parameters).
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from config.errors import ConfigError
from models.fields._tcnn import tcnn_hash_encoding, tcnn_sh_encoding
from models.fields.hash_layout import PRIMES, level_resolutions, make_layout
from models.fields.implementation import check_implementation, triton_kernels

TABLE_DTYPES = ("float32", "bfloat16")


class HashEncoding(nn.Module):
    """(..., 3) positions in [0, 1] -> (..., num_levels * features_per_level) features.

    `table_dtype="bfloat16"` reads the table as bf16 (half the gather bytes); the parameters, the
    optimizer state and the accumulated gradients stay float32 (tcnn's mixed-precision scheme).
    """

    def __init__(self, num_levels: int = 16, base_res: int = 16, max_res: int = 2048,
                 log2_hashmap_size: int = 19, features_per_level: int = 2, hash_init_scale: float = 0.001,
                 implementation: str = "torch", layout: str = "torch", table_dtype: str = "float32"):
        super().__init__()
        check_implementation(implementation)
        if table_dtype not in TABLE_DTYPES:
            raise ValueError(f"table_dtype={table_dtype!r} is not one of {', '.join(TABLE_DTYPES)}")
        self.implementation = implementation
        self.num_levels, self.features_per_level = num_levels, features_per_level
        self.log2_hashmap_size = log2_hashmap_size
        self.table_size = 2**log2_hashmap_size
        self.layout = make_layout(layout, num_levels, base_res, max_res, log2_hashmap_size)
        self.bf16_table = table_dtype == "bfloat16"
        self.out_dim = num_levels * features_per_level
        self.tcnn = None
        if implementation == "tcnn":  # tinycudann's own module: always its layout, its half precision
            if self.bf16_table:
                raise ConfigError("model.hash_table_dtype=bfloat16 is read by the torch and triton encodings; "
                                  "tinycudann keeps its own half-precision copy: use model.hash_table_dtype=float32")
            _, growth = level_resolutions(num_levels, base_res, max_res)
            self.tcnn = tcnn_hash_encoding(num_levels, features_per_level, log2_hashmap_size, base_res, growth)
            return
        # uniform in [-s, s] like nerfstudio (tcnn uses U(-1e-4, 1e-4))
        self.table = nn.Parameter((torch.rand(self.layout.table_shape(features_per_level)) * 2 - 1) * hash_init_scale)
        lay = self.layout
        self.register_buffer("scales", torch.tensor(lay.scales, dtype=torch.float32), persistent=False)
        # int32 index arithmetic (faster, half the memory) when no product can overflow: the primes are
        # reduced mod T first, which keeps the low log2(T) bits of every product, all the hash uses;
        # dense levels have sides**3 <= rows < 2**31
        max_coord = int(max(lay.scales) + lay.shift) + 2
        small = max_coord * self.table_size < 2**31 and lay.total_rows < 2**31
        self.index_dtype = torch.int32 if small else torch.long
        self.primes = tuple(p % self.table_size if small else p for p in PRIMES)
        self.pow2_sizes = all(s & (s - 1) == 0 for s in lay.sizes)
        # per-level values, broadcasting along the last dim of (2, 2, 2, N, L) corner tensors
        self.register_buffer("strides_y", torch.tensor(lay.sides, dtype=self.index_dtype), persistent=False)
        self.register_buffer("strides_z", torch.tensor([s * s if d else 0 for s, d in zip(lay.sides, lay.dense)],
                                                       dtype=self.index_dtype), persistent=False)
        self.register_buffer("dense", torch.tensor(lay.dense), persistent=False)
        self.register_buffer("sizes", torch.tensor(lay.sizes, dtype=self.index_dtype), persistent=False)
        self.register_buffer("level_offsets", torch.tensor(lay.offsets, dtype=self.index_dtype), persistent=False)
        if implementation == "triton":
            triton_kernels(required=True)

    @property
    def resolutions(self) -> list[int]:
        return [int(s) for s in self.layout.scales] if self.layout.kind == "torch" else list(self.layout.sides)

    def read_table(self, table: torch.Tensor) -> torch.Tensor:
        """The table as the encoding reads it: bf16-rounded values with an identity gradient when
        table_dtype is bfloat16 (so the gradient accumulates in float32)."""
        if not self.bf16_table:
            return table
        return table + (table.to(torch.bfloat16).to(table.dtype) - table).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tcnn is not None:
            return self.tcnn(x)
        shape = x.shape[:-1]
        x = x.reshape(-1, 3)
        kernels = self._kernels_for(x)
        out = kernels.encode(x, self) if kernels is not None else self.torch_forward(x, self.table)
        return out.reshape(*shape, self.out_dim)

    def _kernels_for(self, x: torch.Tensor):
        """The Triton kernels when they apply to this input, else None (the torch path)."""
        if self.implementation not in ("triton", "auto"):
            return None
        if not (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
            return None
        if torch.are_deterministic_algorithms_enabled():  # the kernels accumulate with atomics
            return None
        return triton_kernels(required=self.implementation == "triton")

    def torch_forward(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N, L * F) with torch ops; differentiable in x and table to any order."""
        n, nl = x.shape[0], self.num_levels
        scaled = x.t()[:, :, None] * self.scales  # (3, N, L)
        if self.layout.shift:
            scaled = scaled + self.layout.shift
        lower = torch.floor(scaled)
        frac = scaled - lower
        lower = lower.to(self.index_dtype)
        # per axis the two vertex coordinates and their weights, laid out on the (2, 2, 2) corner cube
        # by broadcasting: axis x varies along dim 0, y along dim 1, z along dim 2 of (2, 2, 2, N, L).
        # The corners lead so that every elementwise op runs over contiguous (N, L) slabs: trailing
        # dims of 2 made the CPU's loops 2 elements long.
        views = ((2, 1, 1, n, nl), (1, 2, 1, n, nl), (1, 1, 2, n, nl))
        c = [torch.stack([lower[d], lower[d] + 1]).view(views[d]) for d in range(3)]
        w = [torch.stack([1 - frac[d], frac[d]]).view(views[d]) for d in range(3)]
        dense_index = c[0] + c[1] * self.strides_y + c[2] * self.strides_z
        p = self.primes
        hashed = (c[0] * p[0]) ^ (c[1] * p[1]) ^ (c[2] * p[2])
        index = torch.where(self.dense, dense_index, hashed)
        if self.pow2_sizes:
            index = index & (self.sizes - 1)
        else:  # tcnn's dense levels: rows not a power of two (hashed levels always are)
            index = torch.where(self.dense, index.long() % self.sizes, index & (self.sizes - 1))
        index = index.view(8, n, nl) + self.level_offsets  # into the flattened (rows, F) table
        weights = (w[0] * w[1] * w[2]).view(8, n, nl, 1)
        flat = self.read_table(table).view(-1, self.features_per_level)
        # index_select's gradient is an index_add (atomic adds on CUDA); F.embedding's sorts the
        # indices and runs a warp per row, slow for rows of 2 features
        # on CPU, index_add with int32 indices (the gradient) is 10x slower than with int64
        rows = index.reshape(-1) if index.is_cuda else index.reshape(-1).long()
        feats = flat.index_select(0, rows).view(8, n, nl, self.features_per_level)
        out = (feats * weights).sum(dim=0)
        return out.reshape(n, self.out_dim)


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
        check_implementation(implementation)  # triton and auto compute it with torch ops: it is elementwise
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
