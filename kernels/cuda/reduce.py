"""Reductions: sums over any set of axes, the gradient of broadcasting, global average
pooling, the max-norm constraint.

A sum over a contiguous run of axes is a reduction of a (outer, r, inner) view:
  * inner == 1 (reducing trailing axes, e.g. a row sum or H*W of a plane): one block of up to RB
    threads per row; the threads stride along the row (coalesced) and combine in shared
    memory (``block_sum``). A single huge row is split over many blocks first.
  * inner > 1 (e.g. summing over the batch axis): one thread per output element loops over
    r; neighbouring threads read neighbouring addresses (coalesced).
Several non-adjacent axes are reduced run by run, first run first.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from ..shapes import shape4
from ._common import RB, block_sum, empty, flat, kernel, launch, launch1d, need, per_dtype, prod, row_block

_SPLIT = 1 << 15       # a single row longer than this is first reduced by many blocks
_PARTIAL_BLOCKS = 256


@per_dtype("reduce_rows")
def _rows_k(nbt):
    def k(x, out, nrows, r, div):
        """out[row] = sum(x[row*r:(row+1)*r]) / div, one block per row."""
        sh = cuda.shared.array(RB, nbt)
        tid = cuda.threadIdx.x
        for row in range(cuda.blockIdx.x, nrows, cuda.gridDim.x):
            acc = nbt(0)
            base = row * r
            for t in range(tid, r, cuda.blockDim.x):
                acc += x[base + t]
            total = block_sum(sh, tid, acc)
            if tid == 0:
                out[row] = total / div
    return k


@per_dtype("reduce_partial")
def _partial_k(nbt):
    def k(x, partial, n):
        """partial[b] = sum of x[i] for the i block b visits in a grid-stride loop."""
        sh = cuda.shared.array(RB, nbt)
        tid = cuda.threadIdx.x
        acc = nbt(0)
        for i in range(cuda.blockIdx.x * cuda.blockDim.x + tid, n, cuda.gridDim.x * cuda.blockDim.x):
            acc += x[i]
        total = block_sum(sh, tid, acc)
        if tid == 0:
            partial[cuda.blockIdx.x] = total
    return k


@kernel
def _mid_k(x, out, r, inner, div, zero):
    """x viewed as (outer, r, inner): out[o*inner + i] = sum_t x[(o*r + t)*inner + i] / div."""
    for j in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        o = j // inner
        i = j - o * inner
        acc = zero
        base = o * r * inner + i
        for t in range(r):
            acc += x[base + t * inner]
        out[j] = acc / div


def _reduce3(x1, outer, r, inner, div=1):
    """Sum a flat C-contiguous array viewed as (outer, r, inner) over r -> flat (outer*inner,)."""
    dt = np.dtype(x1.dtype)
    out = empty((max(outer * inner, 0),), dt)
    if outer * inner == 0:
        return out
    d = dt.type(div)
    if inner == 1:
        if outer == 1 and r > _SPLIT:
            nb = min(_PARTIAL_BLOCKS, (r + RB - 1) // RB)
            partial = empty((nb,), dt)
            launch(_partial_k[dt], nb, RB, x1, partial, r)
            launch(_rows_k[dt], 1, row_block(nb), partial, out, 1, nb, d)
        else:
            launch(_rows_k[dt], min(outer, 65535), row_block(r), x1, out, outer, r, d)
    else:
        launch1d(_mid_k, outer * inner, x1, out, r, inner, d, dt.type(0))
    return out


def _axes(fname, axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"{fname}: axis {a} is out of bounds for an array of dimension {ndim}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{fname}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def reduce_sum(x, axis=None, keepdims=False):
    """np.sum(x, axis, keepdims) as a device array (0-d for a full sum without keepdims)."""
    need("reduce_sum", "x", x)
    shape = tuple(int(s) for s in x.shape)
    axes = _axes("reduce_sum", axis, len(shape))
    out_shape = tuple(1 if d in axes else n for d, n in enumerate(shape)) if keepdims else \
        tuple(n for d, n in enumerate(shape) if d not in axes)
    if not axes:
        from .elementwise import broadcast_to
        return broadcast_to(x, shape)
    runs, start = [], axes[0]           # maximal runs of adjacent axes
    for prev, a in zip(axes, axes[1:] + (None,)):
        if a != prev + 1:
            runs.append((start, prev + 1))
            start = a
    cur, cur_shape, removed = flat(x), list(shape), 0
    for s, e in runs:   # first run first: e.g. (N, C, H, W) over (0, 2, 3) = batch, then planes
        s, e = s - removed, e - removed
        cur = _reduce3(cur, prod(cur_shape[:s]), prod(cur_shape[s:e]), prod(cur_shape[e:]))
        cur_shape = cur_shape[:s] + cur_shape[e:]
        removed += e - s
    return cur.reshape(out_shape)


def unbroadcast(g, shape):
    """The adjoint of broadcasting ``shape`` up to ``g.shape``: sum ``g`` over the leading
    extra axes and over the axes where ``shape`` has 1 (NumPy twin: minifit's _unbroadcast)."""
    need("unbroadcast", "g", g)
    shape = tuple(int(s) for s in shape)
    gs = tuple(int(s) for s in g.shape)
    if gs == shape:
        return g
    extra = len(gs) - len(shape)
    if extra < 0:
        raise ValueError(f"unbroadcast: gradient {gs} has fewer dims than the shape {shape}")
    axes = tuple(range(extra)) + tuple(extra + i for i, n in enumerate(shape) if n == 1 and gs[extra + i] != 1)
    return reduce_sum(g, axes).reshape(shape)


# ------------------------------------------------------------------ global average pooling
def global_avg_pool_forward(x):
    """(N, C, H, W) -> (N, C) means over H, W (one block per plane)."""
    need("global_avg_pool_forward", "x", x, ndim=4)
    n, c, h, w = (int(s) for s in x.shape)
    return _reduce3(flat(x), n * c, h * w, 1, h * w).reshape((n, c))


@kernel
def _gap_bwd_k(dy, dx, hw, div):
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        dx[i] = dy[i // hw] / div


def global_avg_pool_backward(dy, x_shape):
    n, c, h, w = shape4("global_avg_pool_backward", "x_shape", x_shape)
    need("global_avg_pool_backward", "dy", dy, ndim=2)
    if tuple(dy.shape) != (n, c):
        raise ValueError(f"global_avg_pool_backward: dy must have shape {(n, c)} for x_shape "
                         f"{(n, c, h, w)}, got {tuple(dy.shape)}")
    dx = empty((n, c, h, w), dy.dtype)
    launch1d(_gap_bwd_k, dx.size, flat(dy), flat(dx), h * w, np.dtype(dy.dtype).type(h * w))
    return dx


# ------------------------------------------------------------------ max-norm constraint
@per_dtype("max_norm")
def _max_norm_k(nbt):
    def k(w, nrows, r, max_norm):
        """Row ``row`` of w (length r) *= min(1, max_norm / max(||row||, 1e-12)), the norm
        accumulated in float64 (as the CPU path) and the scale rounded to w's dtype before
        multiplying; one block per row."""
        sh = cuda.shared.array(RB, float64)
        tid = cuda.threadIdx.x
        for row in range(cuda.blockIdx.x, nrows, cuda.gridDim.x):
            acc = 0.0
            base = row * r
            for t in range(tid, r, cuda.blockDim.x):
                v = float64(w[base + t])
                acc += v * v
            total = block_sum(sh, tid, acc)
            scale = max_norm / max(math.sqrt(total), 1e-12)
            if scale > 1.0:
                scale = 1.0
            s = nbt(scale)
            for t in range(tid, r, cuda.blockDim.x):
                w[base + t] = w[base + t] * s
    return k


def max_norm_(w, max_norm):
    """In place: every slice ``w[i]`` (all axes but 0) rescaled to L2 norm <= max_norm.
    Returns ``w``."""
    need("max_norm_", "w", w, ndim=(1, None))
    rows = int(w.shape[0])
    r = prod(w.shape[1:])
    if rows and r:
        launch(_max_norm_k[np.dtype(w.dtype)], min(rows, 65535), row_block(r), flat(w), rows, r, float(max_norm))
    return w
