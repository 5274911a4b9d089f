"""Maxout, max pooling and the fused maxout + max pool, forward and backward.

Encodings and tie rules are the reference's (kernels/reference.py): maxout arg uint8 =
winning piece; maxpool arg int32 = h*W + w; maxout_pool arg int32 = (piece*H + h)*W + w
over the pre-maxout group. The first maximum wins (pieces in order, window positions in
row-major order: a strict ``>`` while scanning in that order). Pool windows in ceil mode are
clipped at the border; pooling never pads.

Forward: one thread per output element, consecutive threads on consecutive output columns.
Backward of maxout: one thread per input element (gather from its group's arg; no atomics).
Backward of the pools: one thread per output gradient adds it to its argmax with
``cuda.atomic.add`` (the backward signatures carry no window geometry to gather with;
overlapping windows may hit one pixel, so the additions must be atomic).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ..shapes import check_pieces, geometry, pool_out, shape4
from ._common import empty, kernel, launch1d, need, prod, zeros

_INT = (np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.uint8), np.dtype(np.int16),
        np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.int8))


# ------------------------------------------------------------------ maxout
@kernel
def _maxout_k(x, y, arg, pieces):
    """x (N, C*pieces, S), y / arg (N, C, S)."""
    C = y.shape[1]
    S = y.shape[2]
    total = y.shape[0] * C * S
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        s = idx % S
        t = idx // S
        c = t % C
        n = t // C
        best = x[n, c * pieces, s]
        k_best = 0
        for k in range(1, pieces):
            v = x[n, c * pieces + k, s]
            if v > best:
                best = v
                k_best = k
        y[n, c, s] = best
        arg[n, c, s] = k_best


@kernel
def _maxout_bwd_k(dy, arg, dx, pieces):
    """dx (N, C*pieces, S): dy where the piece won, else 0 (one thread per dx element)."""
    CP = dx.shape[1]
    S = dx.shape[2]
    total = dx.shape[0] * CP * S
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        s = idx % S
        t = idx // S
        cp = t % CP
        n = t // CP
        c = cp // pieces
        if arg[n, c, s] == cp - c * pieces:
            dx[n, cp, s] = dy[n, c, s]
        else:
            dx[n, cp, s] = 0


def maxout_forward(x, pieces):
    """x (N, C*pieces, ...) -> (y (N, C, ...), arg uint8 piece index; first max wins)."""
    need("maxout_forward", "x", x, ndim=(2, None))
    n, cp = int(x.shape[0]), int(x.shape[1])
    pieces = check_pieces("maxout_forward", pieces, cp)
    rest = tuple(int(s) for s in x.shape[2:])
    c, s = cp // pieces, prod(rest)
    y = empty((n, c, s), x.dtype)
    arg = empty((n, c, s), np.uint8)
    if y.size:
        launch1d(_maxout_k, y.size, x.reshape((n, cp, s)), y, arg, pieces)
    return y.reshape((n, c) + rest), arg.reshape((n, c) + rest)


def maxout_backward(dy, arg, pieces):
    """dy (N, C, ...) -> dx (N, C*pieces, ...): dy routed to the winning piece."""
    need("maxout_backward", "dy", dy, ndim=(2, None))
    need("maxout_backward", "arg", arg, dtypes=_INT)
    if tuple(arg.shape) != tuple(dy.shape):
        raise ValueError(f"maxout_backward: arg must have the shape of dy {tuple(dy.shape)}, got {tuple(arg.shape)}")
    pieces = int(pieces)
    n, c = int(dy.shape[0]), int(dy.shape[1])
    rest = tuple(int(s) for s in dy.shape[2:])
    s = prod(rest)
    dx = empty((n, c * pieces, s), dy.dtype)
    if dx.size:
        launch1d(_maxout_bwd_k, dx.size, dy.reshape((n, c, s)), arg.reshape((n, c, s)), dx, pieces)
    return dx.reshape((n, c * pieces) + rest)


# ------------------------------------------------------------------ max pool
@kernel
def _maxpool_k(x, y, arg, kh, kw, sh, sw):
    """x (N, C, H, W) -> y, arg (N, C, OH, OW); windows clipped at the border."""
    C = x.shape[1]
    H = x.shape[2]
    W = x.shape[3]
    OH = y.shape[2]
    OW = y.shape[3]
    total = y.shape[0] * C * OH * OW
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        b = idx % OW
        t = idx // OW
        a = t % OH
        t //= OH
        c = t % C
        n = t // C
        h0 = a * sh
        w0 = b * sw
        h1 = min(h0 + kh, H)
        w1 = min(w0 + kw, W)
        best = x[n, c, h0, w0]
        at = h0 * W + w0
        for h in range(h0, h1):
            for w in range(w0, w1):
                v = x[n, c, h, w]
                if v > best:
                    best = v
                    at = h * W + w
        y[n, c, a, b] = best
        arg[n, c, a, b] = at


@kernel
def _pool_scatter_k(dy, arg, dx):
    """dx[row, arg[row, j]] += dy[row, j] (atomic: windows may share a winner)."""
    J = dy.shape[1]
    total = dy.shape[0] * J
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = idx % J
        row = idx // J
        cuda.atomic.add(dx, (row, arg[row, j]), dy[row, j])


def maxpool2d_forward(x, kernel, stride, ceil_mode=True):
    """x (N, C, H, W) -> (y (N, C, OH, OW), arg int32 flat h*W+w)."""
    need("maxpool2d_forward", "x", x, ndim=4)
    kh, kw, sh, sw, _, _ = geometry("maxpool2d_forward", kernel, stride)
    n, c, h, w = (int(s) for s in x.shape)
    oh, ow = pool_out("maxpool2d_forward", h, w, kh, kw, sh, sw, ceil_mode)
    y = empty((n, c, oh, ow), x.dtype)
    arg = empty((n, c, oh, ow), np.int32)
    if y.size:
        launch1d(_maxpool_k, y.size, x, y, arg, kh, kw, sh, sw)
    return y, arg


def _check_pool_bwd(fname, dy, arg, rows_shape):
    need(fname, "dy", dy, ndim=4)
    need(fname, "arg", arg, ndim=4, dtypes=_INT)
    n, c = rows_shape
    if int(dy.shape[0]) != n or int(dy.shape[1]) != c:
        raise ValueError(f"{fname}: dy must have shape ({n}, {c}, OH, OW), got {tuple(dy.shape)}")
    if tuple(arg.shape) != tuple(dy.shape):
        raise ValueError(f"{fname}: arg must have the shape of dy {tuple(dy.shape)}, got {tuple(arg.shape)}")


def maxpool2d_backward(dy, arg, x_shape):
    """dy (N, C, OH, OW), arg int32 -> dx of x_shape; each dy goes to its argmax."""
    n, c, h, w = shape4("maxpool2d_backward", "x_shape", x_shape)
    _check_pool_bwd("maxpool2d_backward", dy, arg, (n, c))
    dx = zeros((n * c, h * w), dy.dtype)
    j = int(dy.shape[2]) * int(dy.shape[3])
    if n * c * j:
        launch1d(_pool_scatter_k, n * c * j, dy.reshape((n * c, j)), arg.reshape((n * c, j)), dx)
    return dx.reshape((n, c, h, w))


# ------------------------------------------------------------------ fused maxout + max pool
@kernel
def _maxout_pool_k(x, y, arg, pieces, kh, kw, sh, sw):
    """x (N, C*pieces, H, W) -> y, arg (N, C, OH, OW): per window position the maxout over
    the pieces (first piece wins), then the max over the window (first position wins)."""
    H = x.shape[2]
    W = x.shape[3]
    C = y.shape[1]
    OH = y.shape[2]
    OW = y.shape[3]
    total = y.shape[0] * C * OH * OW
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        b = idx % OW
        t = idx // OW
        a = t % OH
        t //= OH
        c = t % C
        n = t // C
        h0 = a * sh
        w0 = b * sw
        h1 = min(h0 + kh, H)
        w1 = min(w0 + kw, W)
        best = x[n, c * pieces, h0, w0]
        at = h0 * W + w0
        for h in range(h0, h1):
            for w in range(w0, w1):
                m = x[n, c * pieces, h, w]
                km = 0
                for k in range(1, pieces):
                    v = x[n, c * pieces + k, h, w]
                    if v > m:
                        m = v
                        km = k
                if m > best:
                    best = m
                    at = (km * H + h) * W + w
        y[n, c, a, b] = best
        arg[n, c, a, b] = at


def maxout_pool_forward(x, pieces, kernel, stride, ceil_mode=True):
    """Fused maxout then max pool (values equal maxpool2d_forward(maxout_forward(x)[0]));
    arg int32 = (piece * H + h) * W + w over the group's pre-maxout planes."""
    need("maxout_pool_forward", "x", x, ndim=4)
    n, cp, h, w = (int(s) for s in x.shape)
    pieces = check_pieces("maxout_pool_forward", pieces, cp)
    kh, kw, sh, sw, _, _ = geometry("maxout_pool_forward", kernel, stride)
    oh, ow = pool_out("maxout_pool_forward", h, w, kh, kw, sh, sw, ceil_mode)
    c = cp // pieces
    y = empty((n, c, oh, ow), x.dtype)
    arg = empty((n, c, oh, ow), np.int32)
    if y.size:
        launch1d(_maxout_pool_k, y.size, x, y, arg, pieces, kh, kw, sh, sw)
    return y, arg


def maxout_pool_backward(dy, arg, x_shape, pieces):
    """dy (N, C, OH, OW) -> dx of x_shape (N, C*pieces, H, W)."""
    n, cp, h, w = shape4("maxout_pool_backward", "x_shape", x_shape)
    pieces = check_pieces("maxout_pool_backward", pieces, cp)
    c = cp // pieces
    _check_pool_bwd("maxout_pool_backward", dy, arg, (n, c))
    dx = zeros((n * c, pieces * h * w), dy.dtype)
    j = int(dy.shape[2]) * int(dy.shape[3])
    if n * c * j:
        launch1d(_pool_scatter_k, n * c * j, dy.reshape((n * c, j)), arg.reshape((n * c, j)), dx)
    return dx.reshape((n, cp, h, w))
