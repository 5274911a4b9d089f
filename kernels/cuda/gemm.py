"""The tiled shared-memory GEMM and everything built on it: im2col / col2im, convolution
forward and both backward products, matmul, the dense layer.

GEMM (``_gemm``): C[z] = op(A[z]) @ op(B[z]) (+ bias), op = identity or transpose.
  * Block = TILE x TILE threads computing one TILE x TILE tile of C; grid = (ceil(N/TILE),
    ceil(M/TILE), batches). TILE is 16, or 8 when C has at most 8 rows or columns (a
    conv with few output maps, a small batch through a dense layer: fewer idle threads).
    For each TILE-wide slab of K the block stages one tile of A
    and one of B in shared memory (``syncthreads`` before and after use) and every thread
    accumulates its dot product from shared memory.
  * Coalesced loads in all four transpose cases: threads with consecutive ``threadIdx.x``
    always read consecutive addresses of the operand as stored; a transposed operand is
    written transposed into shared memory, whose rows are padded to TILE + 1 to avoid bank
    conflicts.
  * Out-of-range rows/columns/K are loaded as 0 and never stored (ragged sizes).
  * A batch axis of size 1 broadcasts (the conv weight is shared by every image);
    ``reduce_batch`` sums the products over the batch instead of storing one per batch
    (the weight gradient sum_n dY_n cols_n^T in one launch, no atomics).
  * Epilogue: bias per row of C (conv: per output map) or per column (dense layer).

Convolution = im2col (one thread per column element) + GEMM with W; dW = GEMM of dY and
the columns with the batch reduced; dX = col2im(GEMM of W^T and dY), col2im gathering
(one thread per input pixel, no atomics).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import cuda

from ..shapes import conv_out, geometry, shape4
from ._common import ceil_div, empty, kernel, launch, launch1d, need, same_dtype
from .reduce import reduce_sum

TILES = (8, 16)       # 16 x 16 blocks; 8 x 8 when one side of C is at most 8 (skinny products)
BIAS_NONE, BIAS_ROW, BIAS_COL, BIAS_FULL = 0, 1, 2, 3   # BIAS_FULL: bias[row * N + col]


def _make_gemm(nbt, TILE):
    TILE_PAD = TILE + 1   # shared-memory row length (no bank conflicts on transposed stores)

    def k(A, B, C, bias, bias_mode, trans_a, trans_b, reduce_batch):
        """A: (bA, M, K) or, trans_a, (bA, K, M); B: (bB, K, N) or, trans_b, (bB, N, K);
        C: (batches, M, N), or (1, M, N) with reduce_batch. bA, bB in {1, batches}."""
        sa = cuda.shared.array((TILE, TILE_PAD), nbt)
        sb = cuda.shared.array((TILE, TILE_PAD), nbt)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row0 = cuda.blockIdx.y * TILE
        col0 = cuda.blockIdx.x * TILE
        row = row0 + ty
        col = col0 + tx
        M = C.shape[1]
        N = C.shape[2]
        if trans_a:
            K = A.shape[1]
        else:
            K = A.shape[2]
        nbatch = max(A.shape[0], B.shape[0])
        if reduce_batch:
            b_start = 0
            b_stop = nbatch
        else:
            b_start = cuda.blockIdx.z
            b_stop = b_start + 1
        acc = nbt(0)
        for b in range(b_start, b_stop):
            ba = b if A.shape[0] > 1 else 0
            bb = b if B.shape[0] > 1 else 0
            for k0 in range(0, K, TILE):
                # sa[r, c] = op(A)[row0 + r, k0 + c]
                if trans_a:
                    kk = k0 + ty
                    mm = row0 + tx
                    if kk < K and mm < M:
                        sa[tx, ty] = A[ba, kk, mm]
                    else:
                        sa[tx, ty] = 0
                else:
                    kk = k0 + tx
                    if row < M and kk < K:
                        sa[ty, tx] = A[ba, row, kk]
                    else:
                        sa[ty, tx] = 0
                # sb[r, c] = op(B)[k0 + r, col0 + c]
                if trans_b:
                    nn = col0 + ty
                    kk = k0 + tx
                    if nn < N and kk < K:
                        sb[tx, ty] = B[bb, nn, kk]
                    else:
                        sb[tx, ty] = 0
                else:
                    kk = k0 + ty
                    if kk < K and col < N:
                        sb[ty, tx] = B[bb, kk, col]
                    else:
                        sb[ty, tx] = 0
                cuda.syncthreads()
                for t in range(TILE):
                    acc += sa[ty, t] * sb[t, tx]
                cuda.syncthreads()
        if row < M and col < N:
            if bias_mode == BIAS_ROW:
                acc += bias[row]
            elif bias_mode == BIAS_COL:
                acc += bias[col]
            elif bias_mode == BIAS_FULL:   # (an untied conv bias: one per map and position)
                acc += bias[row * N + col]
            if reduce_batch:
                C[0, row, col] = acc
            else:
                C[cuda.blockIdx.z, row, col] = acc
    return k


_gemm = {}
for _tile in TILES:
    for _np_dt, _nb_dt in ((np.float32, numba.float32), (np.float64, numba.float64)):
        _f = _make_gemm(_nb_dt, _tile)
        _f.__name__ = f"gemm{_tile}_{np.dtype(_np_dt).name}"
        _gemm[np.dtype(_np_dt), _tile] = kernel(_f, name=_f.__name__)

_dummy_bias = {}


def gemm(A, B, trans_a=False, trans_b=False, bias=None, bias_mode=BIAS_NONE, reduce_batch=False):
    """Batched C = op(A) @ op(B) on 3-D device arrays (see the module docstring)."""
    dt = np.dtype(A.dtype)
    ba, bb = int(A.shape[0]), int(B.shape[0])
    M = int(A.shape[2] if trans_a else A.shape[1])
    K = int(A.shape[1] if trans_a else A.shape[2])
    KB = int(B.shape[2] if trans_b else B.shape[1])
    N = int(B.shape[1] if trans_b else B.shape[2])
    if K != KB or (ba != bb and 1 not in (ba, bb)):
        raise ValueError(f"gemm: operands do not fit: A {tuple(A.shape)} (trans {trans_a}), "
                         f"B {tuple(B.shape)} (trans {trans_b})")
    nbatch = max(ba, bb)
    out_b = 1 if reduce_batch else nbatch
    C = empty((out_b, M, N), dt)
    if M * N == 0:
        return C
    if bias is None:
        if dt not in _dummy_bias:
            _dummy_bias[dt] = empty((1,), dt)
        bias, bias_mode = _dummy_bias[dt], BIAS_NONE
    if K == 0 or nbatch == 0:
        from ._common import full
        C = full((out_b, M, N), 0, dt)
        if bias_mode != BIAS_NONE:
            from .elementwise import add
            C = add(C, bias.reshape({BIAS_ROW: (1, M, 1), BIAS_COL: (1, 1, N), BIAS_FULL: (1, M, N)}[bias_mode]))
        return C
    tile = TILES[0] if min(M, N) <= TILES[0] else TILES[-1]
    grid = (ceil_div(N, tile), ceil_div(M, tile), out_b)
    launch(_gemm[dt, tile], grid, (tile, tile), A, B, C, bias, bias_mode, bool(trans_a), bool(trans_b),
           bool(reduce_batch))
    return C


# ------------------------------------------------------------------ im2col / col2im
@kernel
def _im2col_k(x, cols, kh, kw, sh, sw, ph, pw, ow):
    """cols[n, (c*kh + i)*kw + j, a*ow + b] = x[n, c, a*sh - ph + i, b*sw - pw + j] (0 outside)."""
    H = x.shape[2]
    W = x.shape[3]
    R = cols.shape[1]
    L = cols.shape[2]
    total = cols.shape[0] * R * L
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        l = idx % L
        t = idx // L
        r = t % R
        n = t // R
        j = r % kw
        t2 = r // kw
        i = t2 % kh
        c = t2 // kh
        h = (l // ow) * sh - ph + i
        w = (l % ow) * sw - pw + j
        if h >= 0 and h < H and w >= 0 and w < W:
            cols[n, r, l] = x[n, c, h, w]
        else:
            cols[n, r, l] = 0


@kernel
def _col2im_k(cols, x, kh, kw, sh, sw, ph, pw, oh, ow, zero):
    """x[n, c, h, w] = sum of the column entries im2col copied from (h, w): a gather, one
    thread per pixel (deterministic, no atomics)."""
    C = x.shape[1]
    H = x.shape[2]
    W = x.shape[3]
    total = x.shape[0] * C * H * W
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        w = idx % W
        t = idx // W
        h = t % H
        t //= H
        c = t % C
        n = t // C
        acc = zero
        for i in range(kh):
            hp = h + ph - i
            if hp < 0 or hp % sh != 0:
                continue
            a = hp // sh
            if a >= oh:
                continue
            for j in range(kw):
                wp = w + pw - j
                if wp < 0 or wp % sw != 0:
                    continue
                b = wp // sw
                if b >= ow:
                    continue
                acc += cols[n, (c * kh + i) * kw + j, a * ow + b]
        x[n, c, h, w] = acc


def _im2col(x, kh, kw, sh, sw, ph, pw, oh, ow):
    n, c = int(x.shape[0]), int(x.shape[1])
    cols = empty((n, c * kh * kw, oh * ow), x.dtype)
    launch1d(_im2col_k, cols.size, x, cols, kh, kw, sh, sw, ph, pw, ow)
    return cols


def _col2im(cols, x_shape, kh, kw, sh, sw, ph, pw, oh, ow):
    x = empty(x_shape, cols.dtype)
    launch1d(_col2im_k, x.size, cols, x, kh, kw, sh, sw, ph, pw, oh, ow,
           np.dtype(cols.dtype).type(0))
    return x


def im2col(x, kernel, stride=1, pad=0):
    """x (N, C, H, W) -> cols (N, C*kh*kw, OH*OW); row index c*kh*kw + i*kw + j."""
    need("im2col", "x", x, ndim=4)
    kh, kw, sh, sw, ph, pw = geometry("im2col", kernel, stride, pad)
    oh, ow = conv_out("im2col", int(x.shape[2]), int(x.shape[3]), kh, kw, sh, sw, ph, pw)
    return _im2col(x, kh, kw, sh, sw, ph, pw, oh, ow)


def col2im(cols, x_shape, kernel, stride=1, pad=0):
    """Adjoint of im2col: cols (N, C*kh*kw, OH*OW) -> x (N, C, H, W), overlaps summed."""
    n, c, h, w = shape4("col2im", "x_shape", x_shape)
    need("col2im", "cols", cols, ndim=3)
    kh, kw, sh, sw, ph, pw = geometry("col2im", kernel, stride, pad)
    oh, ow = conv_out("col2im", h, w, kh, kw, sh, sw, ph, pw)
    if tuple(cols.shape) != (n, c * kh * kw, oh * ow):
        raise ValueError(f"col2im: cols must have shape {(n, c * kh * kw, oh * ow)} for x_shape "
                         f"{(n, c, h, w)}, got {tuple(cols.shape)}")
    return _col2im(cols, (n, c, h, w), kh, kw, sh, sw, ph, pw, oh, ow)


# ------------------------------------------------------------------ convolution
def _conv_check(fname, x, w, b=None, dy=None):
    need(fname, "x", x, ndim=4)
    need(fname, "w", w, ndim=4)
    if b is not None:
        need(fname, "b", b, ndim=(1, 3))   # tied (O,) or untied (O, OH, OW)
    if dy is not None:
        need(fname, "dy", dy, ndim=4)
    same_dtype(fname, x=x, w=w, b=b, dy=dy)
    if int(w.shape[1]) != int(x.shape[1]):
        raise ValueError(f"{fname}: w must have shape (O, C={int(x.shape[1])}, kh, kw) for x "
                         f"{tuple(x.shape)}, got {tuple(w.shape)}")
    if b is not None and int(b.shape[0]) != int(w.shape[0]):
        raise ValueError(f"{fname}: b must have shape (O={int(w.shape[0])},) (tied) or (O, OH, OW) "
                         f"(untied), got {tuple(b.shape)}")


def conv2d_forward(x, w, b, stride=1, pad=0):
    """Cross-correlation. x (N, C, H, W), w (O, C, kh, kw) -> (N, O, OH, OW); b: None, (O,)
    (tied) or (O, OH, OW) (untied), added in the GEMM's epilogue."""
    _conv_check("conv2d_forward", x, w, b)
    n, c, h, wd = (int(s) for s in x.shape)
    o, _, kh, kw = (int(s) for s in w.shape)
    _, _, sh, sw, ph, pw = geometry("conv2d_forward", (kh, kw), stride, pad)
    oh, ow = conv_out("conv2d_forward", h, wd, kh, kw, sh, sw, ph, pw)
    if b is not None and len(b.shape) == 3 and tuple(b.shape) != (o, oh, ow):
        raise ValueError(f"conv2d_forward: an untied bias must have shape (O, OH, OW) = {(o, oh, ow)}, "
                         f"got {tuple(b.shape)}")
    cols = _im2col(x, kh, kw, sh, sw, ph, pw, oh, ow)
    untied = b is not None and len(b.shape) == 3
    y = gemm(w.reshape((1, o, c * kh * kw)), cols, bias=b.reshape((o * oh * ow,)) if untied else b,
             bias_mode=BIAS_FULL if untied else BIAS_ROW)
    return y.reshape((n, o, oh, ow))


def conv2d_backward(dy, x, w, stride=1, pad=0, need_dx=True, untied_bias=False):
    """-> (dx or None, dw (O, C, kh, kw), db): db (O,) = dy summed over N, OH, OW, or with
    ``untied_bias`` (O, OH, OW) = dy summed over N."""
    _conv_check("conv2d_backward", x, w, dy=dy)
    n, c, h, wd = (int(s) for s in x.shape)
    o, _, kh, kw = (int(s) for s in w.shape)
    _, _, sh, sw, ph, pw = geometry("conv2d_backward", (kh, kw), stride, pad)
    oh, ow = conv_out("conv2d_backward", h, wd, kh, kw, sh, sw, ph, pw)
    if tuple(dy.shape) != (n, o, oh, ow):
        raise ValueError(f"conv2d_backward: dy must have shape {(n, o, oh, ow)} (O={o} from w), "
                         f"got {tuple(dy.shape)}")
    dy3 = dy.reshape((n, o, oh * ow))
    cols = _im2col(x, kh, kw, sh, sw, ph, pw, oh, ow)
    dw = gemm(dy3, cols, trans_b=True, reduce_batch=True).reshape((o, c, kh, kw))
    db = reduce_sum(dy3, 0).reshape((o, oh, ow)) if untied_bias else reduce_sum(dy3, (0, 2))
    dx = None
    if need_dx:
        dcols = gemm(w.reshape((1, o, c * kh * kw)), dy3, trans_a=True)
        dx = _col2im(dcols, (n, c, h, wd), kh, kw, sh, sw, ph, pw, oh, ow)
    return dx, dw, db


# ------------------------------------------------------------------ dense
def matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) for 2-D device arrays (op = transpose when the flag is set)."""
    need("matmul", "a", a, ndim=2)
    need("matmul", "b", b, ndim=2)
    same_dtype("matmul", a=a, b=b)
    m = int(a.shape[1] if trans_a else a.shape[0])
    ka = int(a.shape[0] if trans_a else a.shape[1])
    kb = int(b.shape[1] if trans_b else b.shape[0])
    if ka != kb:
        raise ValueError(f"matmul: inner dimensions differ: {tuple(a.shape)}{'.T' if trans_a else ''} @ "
                         f"{tuple(b.shape)}{'.T' if trans_b else ''}")
    c = gemm(a.reshape((1,) + tuple(a.shape)), b.reshape((1,) + tuple(b.shape)), trans_a, trans_b)
    return c.reshape((m, int(c.shape[2])))


def linear_forward(x, w, b=None):
    """y = x @ w.T + b: x (N, in), w (out, in), b (out,) or None; bias fused in the GEMM."""
    need("linear_forward", "x", x, ndim=2)
    need("linear_forward", "w", w, ndim=2)
    if b is not None:
        need("linear_forward", "b", b, ndim=1)
    same_dtype("linear_forward", x=x, w=w, b=b)
    if int(x.shape[1]) != int(w.shape[1]) or (b is not None and int(b.shape[0]) != int(w.shape[0])):
        raise ValueError(f"linear_forward: x {tuple(x.shape)}, w {tuple(w.shape)} (out, in) and b "
                         f"{None if b is None else tuple(b.shape)} do not fit")
    y = gemm(x.reshape((1,) + tuple(x.shape)), w.reshape((1,) + tuple(w.shape)), trans_b=True,
             bias=b, bias_mode=BIAS_COL)
    return y.reshape((int(x.shape[0]), int(w.shape[0])))
