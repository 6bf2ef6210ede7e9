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

With 2 features per level (nerfacto's), a row is one machine word (two float32s in an int64, two bfloat16s
in an int32). These kernels are bound by L2 sector requests (ncu on an H100 at 1M random points: the
forward at 93% of L2 throughput, the backward at 88%), so they pair corners to issue fewer: the hash
multiplies x by 1, so corners one step apart along x usually share an aligned 16-byte chunk. The
forward reads each such pair with one 16-byte vector load, the backward adds both rows' gradients with
one 4-float vector atomic (one sector request where two 2-float adds took two); chunks of a whole
32-byte sector measured slower. The backward also issues fewer adds: a ray's consecutive samples often
fall in one cell of a level (coarse levels, the proposal grids), so a segmented scan over the block
sums each run of consecutive points in one cell and only the run's last point adds the sum (one add
per run instead of one per point). On random points the runs are single points and the scan costs
nothing measurable; in a nerfacto step it halved the hash grids' backward kernel time
(docs/NEURAL_FIELDS.md gives both measurements). The F != 2 path reads and adds per corner and point.

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
def _unpack(word, HALF: tl.constexpr):
    """Both features of a 2-feature row from its machine word: two float32s in an int64, or two bfloat16s in
    an int32 (feature 0 in the low half: little-endian)."""
    if HALF:  # a bfloat16 is the high half of the float32 it rounds
        low, high = word << 16, word & -65536
    else:
        low, high = word.to(tl.int32), (word >> 32).to(tl.int32)
    return low.to(tl.float32, bitcast=True), high.to(tl.float32, bitcast=True)


@triton.jit
def _x_neighbours(words_ptr, r0, r1, live, HALF: tl.constexpr, BLOCK: tl.constexpr):
    """The words of two corners one step apart along x (rows r0, r1), mostly from one vector load. The hash
    multiplies x by 1, so x and x + 1 differ in the index's lowest bits and the two rows usually share an
    aligned 16-byte chunk (two float32 rows: half the cells; four bfloat16 rows: three quarters); dense
    levels index x + side * (...), the same. One 16-byte load reads the chunk of r0, a second load only
    the lanes whose r1 lies outside it."""
    CH: tl.constexpr = 4 if HALF else 2
    base = (r0 // CH) * CH  # written so that the alignment analysis sees a multiple of CH (a vector load)
    chunk = tl.load(words_ptr + base[:, None] + tl.arange(0, CH)[None, :], mask=live[:, None], other=0)
    if HALF:
        even, odd = tl.split(tl.reshape(chunk, (BLOCK, 2, 2)))  # rows (0, 2) and (1, 3) of the chunk
        e0, e2 = tl.split(even)
        e1, e3 = tl.split(odd)
        k0, k1 = r0 - base, r1 - base
        w0 = tl.where(k0 < 2, tl.where(k0 == 0, e0, e1), tl.where(k0 == 2, e2, e3))
        w1 = tl.where(k1 < 2, tl.where(k1 == 0, e0, e1), tl.where(k1 == 2, e2, e3))
    else:
        e0, e1 = tl.split(chunk)
        w0 = tl.where(r0 == base, e0, e1)
        w1 = tl.where(r1 == base, e0, e1)
    inside = (r1 >= base) & (r1 < base + CH)
    apart = tl.load(words_ptr + r1, mask=live & (inside == 0), other=0)
    return w0, tl.where(inside, w1, apart)


@triton.jit
def _weights(wx, wy, wz, corner: tl.constexpr):
    """The trilinear weight's three factors for one corner."""
    ax = wx if corner & 1 else 1.0 - wx
    ay = wy if (corner >> 1) & 1 else 1.0 - wy
    az = wz if (corner >> 2) & 1 else 1.0 - wz
    return ax, ay, az


@triton.jit
def _run_sums(start_a, a0, a1, a2, a3, start_b, b0, b1, b2, b3):
    """Segmented sums of four values: a run's values add up until an element that starts a new run."""
    new = start_b != 0
    return (start_a | start_b, tl.where(new, b0, a0 + b0), tl.where(new, b1, a1 + b1), tl.where(new, b2, a2 + b2),
            tl.where(new, b3, a3 + b3))


@triton.jit
def _add_x_neighbours(grad_ptr, r0, r1, a0, a1, b0, b1, add, BLOCK: tl.constexpr):
    """Adds (a0, a1) into float32 row r0 of the table gradient and (b0, b1) into row r1, r1 being r0's
    neighbour along x. Where the two rows are the two halves of an aligned 16-byte chunk (half the cells,
    see _x_neighbours), one (points, 4) add covers both: a 16-byte vector atomic, one L2 sector request
    instead of two. Elsewhere each row gets its own (points, 2) add."""
    paired = r1 == (r0 ^ 1)
    first = (r0 & 1) == 0  # r0 is the chunk's lower row
    low0, low1 = tl.where(first, a0, b0), tl.where(first, a1, b1)
    high0, high1 = tl.where(first, b0, a0), tl.where(first, b1, a1)
    chunk = tl.reshape(tl.join(tl.join(low0, high0), tl.join(low1, high1)), (BLOCK, 4))  # low0 low1 high0 high1
    tl.atomic_add(grad_ptr + (r0 // 2 * 2)[:, None] * 2 + tl.arange(0, 4)[None, :], chunk,
                  mask=(add & paired)[:, None], sem="relaxed")
    apart = (add & (paired == 0))[:, None]
    pair = tl.arange(0, 2)[None, :]
    tl.atomic_add(grad_ptr + r0[:, None] * 2 + pair, tl.join(a0, a1), mask=apart, sem="relaxed")
    tl.atomic_add(grad_ptr + r1[:, None] * 2 + pair, tl.join(b0, b1), mask=apart, sem="relaxed")


@triton.jit
def _dx_terms(corner: tl.constexpr, ax, ay, az, dot):
    """One corner's terms of d out / d (cell position) . g, per axis (dot = its features . g)."""
    sx = 1.0 if corner & 1 else -1.0
    sy = 1.0 if (corner >> 1) & 1 else -1.0
    sz = 1.0 if (corner >> 2) & 1 else -1.0
    return sx * ay * az * dot, sy * ax * az * dot, sz * ax * ay * dot


@triton.jit
def _hash_grid_fwd(x_ptr, table_ptr, out_ptr, scale_ptr, side_ptr, size_ptr, offset_ptr, dense_ptr, n_points,
                   SHIFT: tl.constexpr, F: tl.constexpr, FP: tl.constexpr, BLOCK: tl.constexpr,
                   PAIRED: tl.constexpr, HALF: tl.constexpr):
    level = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = rows < n_points
    scale, side, size, offset, dense = _level(level, scale_ptr, side_ptr, size_ptr, offset_ptr, dense_ptr)
    cx, cy, cz, wx, wy, wz = _cell(x_ptr, rows, live, scale, SHIFT)
    if PAIRED:  # 2 features (nerfacto's): one word a row, x-neighbour pairs, one coalesced row per feature
        acc0 = tl.zeros((BLOCK,), dtype=tl.float32)
        acc1 = tl.zeros((BLOCK,), dtype=tl.float32)
        for corner in tl.static_range(0, 8, 2):  # corner + 1 is corner's neighbour along x
            w = _x_neighbours(table_ptr, _corner_row(cx, cy, cz, corner, side, size, offset, dense),
                              _corner_row(cx, cy, cz, corner + 1, side, size, offset, dense), live, HALF, BLOCK)
            for j in tl.static_range(2):
                ax, ay, az = _weights(wx, wy, wz, corner + j)
                v0, v1 = _unpack(w[j], HALF)
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
    if PAIRED:
        for corner in tl.static_range(0, 8, 2):  # corner + 1 is corner's neighbour along x
            r0 = _corner_row(cx, cy, cz, corner, side, size, offset, dense)
            r1 = _corner_row(cx, cy, cz, corner + 1, side, size, offset, dense)
            ax0, ay, az = _weights(wx, wy, wz, corner)
            ax1, _, _ = _weights(wx, wy, wz, corner + 1)
            if TABLE_GRAD:  # each run's sums, added by its last point
                w0, w1 = ax0 * ay * az, ax1 * ay * az
                _, a0, a1, b0, b1 = tl.associative_scan((start, w0 * g0, w0 * g1, w1 * g0, w1 * g1), 0, _run_sums)
                _add_x_neighbours(gtable_ptr, r0, r1, a0, a1, b0, b1, live & last, BLOCK)
            if X_GRAD:
                w = _x_neighbours(table_ptr, r0, r1, live, HALF, BLOCK)
                for j in tl.static_range(2):
                    v0, v1 = _unpack(w[j], HALF)
                    tx, ty, tz = _dx_terms(corner + j, ax0 if j == 0 else ax1, ay, az, v0 * g0 + v1 * g1)
                    gx += tx
                    gy += ty
                    gz += tz
    else:
        for corner in tl.static_range(8):
            row = _corner_row(cx, cy, cz, corner, side, size, offset, dense)
            ax, ay, az = _weights(wx, wy, wz, corner)
            if TABLE_GRAD:
                tl.atomic_add(gtable_ptr + row[:, None] * F + feats[None, :], (ax * ay * az)[:, None] * g,
                              mask=live2, sem="relaxed")
            if X_GRAD:
                value = tl.load(table_ptr + row[:, None] * F + feats[None, :], mask=live2, other=0.0)
                tx, ty, tz = _dx_terms(corner, ax, ay, az, tl.sum(value.to(tl.float32) * g, axis=1))
                gx += tx
                gy += ty
                gz += tz
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
    by one load), else the values. _x_neighbours reads aligned 16-byte chunks (4 bfloat16 rows, 2
    float32 ones): a table of tiny levels whose rows are not a multiple of that (bf16 with 2 rows a level,
    fp32 with 1, and an odd number of levels) gets zero rows appended, so the last chunk stays inside it."""
    if enc.features_per_level != 2:
        return read
    words = read.reshape(-1).view(torch.int32 if enc.bf16_table else torch.int64)
    chunk = 4 if enc.bf16_table else 2
    if words.numel() % chunk:
        words = torch.cat([words, words.new_zeros(chunk - words.numel() % chunk)])
    return words


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
