"""Fused multiresolution hash-grid encoding in Triton: forward, backward to the table and to x.

Written by hand because no maintained library ships it for torch (tiny-cuda-nn needs nvcc at install
time and its own parameter layout). One program encodes BLOCK points at one level; the launch grid
is (point blocks, levels) with the point blocks fastest, so the programs in flight share one level's
table, which stays in L2 (a 2^19 x 2 fp32 level is 4 MiB). The output is stored feature-major,
(L*F, N), and returned as its (N, L*F) transpose: each program writes whole coalesced rows, and the
MLP's matrix product takes the transposed operand as it is. The backward adds each corner's share of
the output gradient into the table with atomic adds (float32, whatever the table is read as) and, when
x needs a gradient, adds the derivative of the trilinear weights into dL/dx, also atomically (the
16 levels of one point).

With 2 features per level (nerfacto's), a point's values stay in 1-D per-feature tensors: a corner's row
is one load (two float32s in a 64-bit word, two bfloat16s in a 32-bit one), with no shuffle of a
(points, 2) block through shared memory. The gradient does go through that shuffle, on purpose: its
atomic adds act on a (points, 2) block whose two features sit on adjacent lanes, so one warp
instruction updates 16 whole rows (16 L2 sectors) where two per-feature adds would touch 32 sectors
twice; the backward is bound by these atomics. It also issues fewer of them: a ray's consecutive
samples often fall in one cell of a level (coarse levels, the proposal grids), so a segmented scan
over the block sums each run of consecutive points in one cell and only the run's last point adds the
sum (one add per run and corner instead of one per point). On random points the runs are single
points and the scan costs nothing measurable; in a nerfacto step it halved the hash grids' backward
kernel time (docs/NEURAL_FIELDS.md). The F != 2 path adds per point.

Second derivatives (nerfacto's predicted normals train through d density / d x) are not fused: when
the backward itself is differentiated (create_graph=True) it recomputes the level through the torch
encoding, which has the same values and parameters.

The index arithmetic is unsigned 32-bit, as tcnn's: products wrap, then the level's rows reduce it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from models.fields.implementation import interpreting

INTERPRETED = interpreting()
BLOCK = 128          # points per program; one point per thread at 4 warps
NUM_WARPS = 4


@triton.jit
def _level(level, scale_ptr, side_ptr, size_ptr, offset_ptr, dense_ptr):
    """One level's scale, dense side (unsigned), rows (unsigned), first row and whether it is dense."""
    return (tl.load(scale_ptr + level), tl.load(side_ptr + level).to(tl.uint32),
            tl.load(size_ptr + level).to(tl.uint32), tl.load(offset_ptr + level), tl.load(dense_ptr + level) != 0)


@triton.jit
def _cell(x_ptr, rows, live, scale, SHIFT: tl.constexpr):
    """The point's lower cell corner (unsigned) and its position inside the cell, at one level."""
    px = tl.load(x_ptr + rows * 3, mask=live, other=0.0) * scale + SHIFT
    py = tl.load(x_ptr + rows * 3 + 1, mask=live, other=0.0) * scale + SHIFT
    pz = tl.load(x_ptr + rows * 3 + 2, mask=live, other=0.0) * scale + SHIFT
    fx, fy, fz = tl.floor(px), tl.floor(py), tl.floor(pz)
    return (fx.to(tl.int32).to(tl.uint32), fy.to(tl.int32).to(tl.uint32), fz.to(tl.int32).to(tl.uint32),
            px - fx, py - fy, pz - fz)


@triton.jit
def _corner_row(cx, cy, cz, corner: tl.constexpr, side, size, offset, dense):
    """The table row of one of the cell's 8 corners: a dense level's linear index, else the spatial hash."""
    ix = cx + (corner & 1)
    iy = cy + ((corner >> 1) & 1)
    iz = cz + ((corner >> 2) & 1)
    hashed = (ix * 1) ^ (iy * 2654435761) ^ (iz * 805459861)
    index = tl.where(dense, (ix + iy * side + iz * side * side) % size, hashed & (size - 1))
    return offset + index.to(tl.int64)


@triton.jit
def _pair(words_ptr, row, live, HALF: tl.constexpr):
    """Both features of a 2-feature row from one load: an int64 word of two float32s, or an int32 word of
    two bfloat16s (feature 0 in the low half: little-endian)."""
    word = tl.load(words_ptr + row, mask=live, other=0)
    if HALF:  # a bfloat16 is the high half of the float32 it rounds
        low, high = word << 16, word & -65536
    else:
        low, high = word.to(tl.int32), (word >> 32).to(tl.int32)
    return low.to(tl.float32, bitcast=True), high.to(tl.float32, bitcast=True)


@triton.jit
def _weights(wx, wy, wz, corner: tl.constexpr):
    """The trilinear weight's three factors for one corner."""
    ax = wx if corner & 1 else 1.0 - wx
    ay = wy if (corner >> 1) & 1 else 1.0 - wy
    az = wz if (corner >> 2) & 1 else 1.0 - wz
    return ax, ay, az


@triton.jit
def _run_sum(start_a, a0, a1, start_b, b0, b1):
    """Segmented sum: a run's values add up until an element that starts a new run."""
    return start_a | start_b, tl.where(start_b != 0, b0, a0 + b0), tl.where(start_b != 0, b1, a1 + b1)


@triton.jit
def _hash_grid_fwd(x_ptr, table_ptr, out_ptr, scale_ptr, side_ptr, size_ptr, offset_ptr, dense_ptr, n_points,
                   SHIFT: tl.constexpr, F: tl.constexpr, FP: tl.constexpr, BLOCK: tl.constexpr,
                   PAIRED: tl.constexpr, HALF: tl.constexpr):
    level = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = rows < n_points
    scale, side, size, offset, dense = _level(level, scale_ptr, side_ptr, size_ptr, offset_ptr, dense_ptr)
    cx, cy, cz, wx, wy, wz = _cell(x_ptr, rows, live, scale, SHIFT)
    if PAIRED:  # 2 features (nerfacto's): one load per corner, one coalesced row per feature
        acc0 = tl.zeros((BLOCK,), dtype=tl.float32)
        acc1 = tl.zeros((BLOCK,), dtype=tl.float32)
        for corner in tl.static_range(8):
            row = _corner_row(cx, cy, cz, corner, side, size, offset, dense)
            ax, ay, az = _weights(wx, wy, wz, corner)
            v0, v1 = _pair(table_ptr, row, live, HALF)
            acc0 += ax * ay * az * v0
            acc1 += ax * ay * az * v1
        tl.store(out_ptr + (level * 2).to(tl.int64) * n_points + rows, acc0, mask=live)
        tl.store(out_ptr + (level * 2 + 1).to(tl.int64) * n_points + rows, acc1, mask=live)
    else:
        feats = tl.arange(0, FP)
        live2 = live[:, None] & (feats < F)[None, :]
        acc = tl.zeros((BLOCK, FP), dtype=tl.float32)
        for corner in tl.static_range(8):
            row = _corner_row(cx, cy, cz, corner, side, size, offset, dense)
            ax, ay, az = _weights(wx, wy, wz, corner)
            value = tl.load(table_ptr + row[:, None] * F + feats[None, :], mask=live2, other=0.0)
            acc += (ax * ay * az)[:, None] * value.to(tl.float32)
        tl.store(out_ptr + (level * F + feats)[None, :].to(tl.int64) * n_points + rows[:, None], acc, mask=live2)


@triton.jit
def _hash_grid_bwd(x_ptr, table_ptr, gout_ptr, gout_sn, gout_sd, gtable_ptr, gx_ptr,
                   scale_ptr, side_ptr, size_ptr, offset_ptr, dense_ptr, n_points,
                   SHIFT: tl.constexpr, F: tl.constexpr, FP: tl.constexpr, BLOCK: tl.constexpr,
                   PAIRED: tl.constexpr, HALF: tl.constexpr,
                   TABLE_GRAD: tl.constexpr, X_GRAD: tl.constexpr):
    level = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = rows < n_points
    scale, side, size, offset, dense = _level(level, scale_ptr, side_ptr, size_ptr, offset_ptr, dense_ptr)
    cx, cy, cz, wx, wy, wz = _cell(x_ptr, rows, live, scale, SHIFT)
    gx = tl.zeros((BLOCK,), dtype=tl.float32)
    gy = tl.zeros((BLOCK,), dtype=tl.float32)
    gz = tl.zeros((BLOCK,), dtype=tl.float32)
    grow = gout_ptr + rows.to(tl.int64) * gout_sn
    if PAIRED:
        g0 = tl.load(grow + (level * 2).to(tl.int64) * gout_sd, mask=live, other=0.0).to(tl.float32)
        g1 = tl.load(grow + (level * 2 + 1).to(tl.int64) * gout_sd, mask=live, other=0.0).to(tl.float32)
        if TABLE_GRAD:  # where runs of consecutive points in one cell start and end (module docstring)
            lane = tl.arange(0, BLOCK)
            pcx, pcy, pcz, _, _, _ = _cell(x_ptr, rows - 1, live & (lane > 0), scale, SHIFT)
            ncx, ncy, ncz, _, _, _ = _cell(x_ptr, rows + 1, (rows + 1 < n_points) & (lane < BLOCK - 1), scale, SHIFT)
            start = ((lane == 0) | (pcx != cx) | (pcy != cy) | (pcz != cz)).to(tl.int32)
            last = (lane == BLOCK - 1) | (rows + 1 >= n_points) | (ncx != cx) | (ncy != cy) | (ncz != cz)
    else:
        feats = tl.arange(0, FP)
        live2 = live[:, None] & (feats < F)[None, :]
        g = tl.load(grow[:, None] + (level * F + feats)[None, :].to(tl.int64) * gout_sd,
                    mask=live2, other=0.0).to(tl.float32)
    for corner in tl.static_range(8):
        row = _corner_row(cx, cy, cz, corner, side, size, offset, dense)
        ax, ay, az = _weights(wx, wy, wz, corner)
        if TABLE_GRAD:
            if PAIRED:
                # each run's sum, added by its last point; a row's two features on adjacent lanes
                w = ax * ay * az
                _, s0, s1 = tl.associative_scan((start, w * g0, w * g1), 0, _run_sum)
                tl.atomic_add(gtable_ptr + row[:, None] * 2 + tl.arange(0, 2)[None, :], tl.join(s0, s1),
                              mask=(live & last)[:, None], sem="relaxed")
            else:
                tl.atomic_add(gtable_ptr + row[:, None] * F + feats[None, :], (ax * ay * az)[:, None] * g,
                              mask=live2, sem="relaxed")
        if X_GRAD:
            if PAIRED:
                v0, v1 = _pair(table_ptr, row, live, HALF)
                dot = v0 * g0 + v1 * g1
            else:
                value = tl.load(table_ptr + row[:, None] * F + feats[None, :], mask=live2, other=0.0)
                dot = tl.sum(value.to(tl.float32) * g, axis=1)
            sx = 1.0 if corner & 1 else -1.0
            sy = 1.0 if (corner >> 1) & 1 else -1.0
            sz = 1.0 if (corner >> 2) & 1 else -1.0
            gx += sx * ay * az * dot
            gy += sy * ax * az * dot
            gz += sz * ax * ay * dot
    if X_GRAD:
        tl.atomic_add(gx_ptr + rows * 3, gx * scale, mask=live, sem="relaxed")
        tl.atomic_add(gx_ptr + rows * 3 + 1, gy * scale, mask=live, sem="relaxed")
        tl.atomic_add(gx_ptr + rows * 3 + 2, gz * scale, mask=live, sem="relaxed")


def _meta(enc, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Per-level scale, side, rows, first row and dense flag, on the device (cached per device)."""
    cache = enc.__dict__.setdefault("_triton_meta", {})
    if device not in cache:
        lay = enc.layout
        cache[device] = (torch.tensor(lay.scales, dtype=torch.float32, device=device),
                         torch.tensor(lay.sides, dtype=torch.int64, device=device),
                         torch.tensor(lay.sizes, dtype=torch.int64, device=device),
                         torch.tensor(lay.offsets, dtype=torch.int64, device=device),
                         torch.tensor(lay.dense, dtype=torch.int32, device=device))
    return cache[device]


def _constants(enc) -> dict:
    f = enc.features_per_level
    return {"SHIFT": float(enc.layout.shift), "F": f, "FP": triton.next_power_of_2(f), "BLOCK": BLOCK,
            "PAIRED": f == 2, "HALF": bool(enc.bf16_table)}


def _words(read: torch.Tensor, enc) -> torch.Tensor:
    """The table as the kernels address it: for 2 features, one machine word per row (the pair read
    by one load), else the values."""
    if enc.features_per_level != 2:
        return read
    return read.reshape(-1).view(torch.int32 if enc.bf16_table else torch.int64)


class _HashGrid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, enc):
        read = table.detach().to(torch.bfloat16) if enc.bf16_table else table.detach()
        n, levels = x.shape[0], enc.num_levels
        out = torch.empty(levels * enc.features_per_level, n, device=x.device, dtype=torch.float32)
        if n:
            _hash_grid_fwd[(triton.cdiv(n, BLOCK), levels)](x, _words(read, enc), out, *_meta(enc, x.device), n,
                                                            num_warps=NUM_WARPS, **_constants(enc))
        ctx.save_for_backward(x, table, read)
        ctx.enc = enc
        return out.t()

    @staticmethod
    def backward(ctx, grad):
        x, table, read = ctx.saved_tensors
        enc = ctx.enc
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward, through torch ops
            inputs = [t for t, need in ((x, need_x), (table, need_table)) if need]
            grads = iter(torch.autograd.grad(enc.torch_forward(x, table), inputs, grad, create_graph=True))
            return (next(grads) if need_x else None), (next(grads) if need_table else None), None
        n, levels = x.shape[0], enc.num_levels
        gtable = torch.zeros(table.shape, device=table.device, dtype=torch.float32) if need_table else None
        gx = torch.zeros_like(x) if need_x else None
        if n and (need_x or need_table):
            _hash_grid_bwd[(triton.cdiv(n, BLOCK), levels)](
                x, _words(read, enc), grad, grad.stride(0), grad.stride(1), gtable if need_table else x,
                gx if need_x else x, *_meta(enc, x.device), n, TABLE_GRAD=need_table, X_GRAD=need_x,
                num_warps=NUM_WARPS, **_constants(enc))
        return gx, (gtable.to(table.dtype) if need_table else None), None


def encode(x: torch.Tensor, enc) -> torch.Tensor:
    """(N, 3) positions -> (N, L * F) float32 features (a transposed view of feature-major storage)."""
    return _HashGrid.apply(x.float().contiguous(), enc.table, enc)
