"""Maxout, max pooling, the fused maxout + max pool, global average pooling, and the
maxout / pool reductions that conv.conv2d_maxout_forward applies to each GEMM chunk.

Encodings (identical to the reference):
  maxout arg        uint8 piece index within the group, first max wins;
  maxpool arg       int32 flat ``h * W + w`` into the input plane;
  maxout_pool arg   int32 ``(piece * H + h) * W + w`` over the pre-maxout group planes.
NaNs are not propagated by the max kernels (a NaN never wins a comparison). Every
variant scans pieces in order and windows in row-major order, replacing the best only on
a strictly greater value, so all of them return the reference's arg.

Which path runs when:

  call / caller                        kernel             input -> output        loop
  maxout_forward                       _maxout_k          NCHW|CNHW planes       selects
  maxpool2d_forward                    _maxpool_k         NCHW|CNHW planes       _pool_scratch
  maxout_pool_forward                  _mopool_k          NCHW|CNHW planes       selects, then
                                                                                 _pool_scratch
  conv2d_maxout_forward, CNHW path:    maxout_into_k      GEMM chunk (C*P, m, M) selects
    pool None / pool                   mopool_into_k      -> CNHW y, arg         selects, then
                                                                                 _pool_scratch
  conv2d_maxout_forward, rows path     mo_rows_k          NHWC rows, maps        selects along
    (channels_last, FFT)                                  piece-major -> NHWC    the maps
    (channels_last, Winograd)          conv_winograd.output_transform_maxout_k: each output
                                       row reduced by mo_row as the transform makes it
  *_backward                           _maxout_bwd_k,     any -> CNHW dx         gather /
                                       _pool_scatter_k                           scatter-add
  conv2d_maxout_backward (conv.py)     mo_bwd_chunk_k     dy, arg -> a chunk     as the two
                                                          of dz (in cache)       above
  _pool_scratch: windows of <= tuning.POOL_SELECT_MAX_TAPS values by selects along an
  output row (_pool_small), larger ones one window at a time (_pool_windows).

Why three maxout(+pool) kernels for one job: the standalone ops read whole planes of a
stored map in its own layout; maxout_into_k / mopool_into_k read a GEMM chunk while it is
in cache (the conv output is never stored); mo_rows_k reads rows of positions x maps,
where the maps are the contiguous axis and the selects vectorise across them.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..shapes import Spec, check, check_pieces, geometry, pool_out, shape4
from .layouts import U, canon, flat3, nc, pl, uncanon
from .runtime import kern, split
from .tuning import POOL_SELECT_MAX_TAPS


# ------------------------------------------------------------------ maxout
@kern
def _maxout_k(xb, xcf, pieces, y, arg, t0, t1):
    """xb canonical (N, C*pieces, M) / (C*pieces, N, M); y, arg in the same layout;
    flat (n, c) output planes t0..t1-1."""
    C = y.shape[0] if xcf else y.shape[1]
    M = xb.shape[2]
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        yr = pl(y, xcf, n, c)
        ar = pl(arg, xcf, n, c)
        x0 = pl(xb, xcf, n, c * pieces)
        for m in range(M):
            yr[m] = x0[m]
            ar[m] = 0
        for q in range(1, pieces):
            xq = pl(xb, xcf, n, c * pieces + q)
            for m in range(M):
                v = xq[m]
                g = v > yr[m]
                yr[m] = v if g else yr[m]
                ar[m] = q if g else ar[m]


@kern
def _maxout_bwd_k(dyb, dycf, ab, acf, pieces, dx, dxcf, t0, t1):
    _, C = nc(dyb, dycf)
    M = dyb.shape[2]
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        g = pl(dyb, dycf, n, c)
        a = pl(ab, acf, n, c)
        for q in range(pieces):
            dq = pl(dx, dxcf, n, c * pieces + q)
            for m in range(M):
                dq[m] = g[m] if a[m] == q else 0


def maxout_forward(x, pieces):
    fn = "maxout_forward"
    d, dt = check(fn, [Spec("x", x, ("N", "CP", "..."))])
    pieces = check_pieces(fn, pieces, d["CP"])
    n, cp = x.shape[:2]
    c = cp // pieces
    xb, xcf = canon(flat3(x))
    m = xb.shape[2]
    shp = (c, n, m) if xcf else (n, c, m)
    y = np.empty(shp, dtype=dt)
    arg = np.empty(shp, dtype=np.uint8)
    split(lambda lo, hi: _maxout_k(xb, xcf, pieces, y, arg, lo, hi), n * c, x.size)
    out_shape = (n, c) + x.shape[2:]
    y, arg = uncanon(y, xcf), uncanon(arg, xcf)
    return y.reshape(out_shape), arg.reshape(out_shape)


def maxout_backward(dy, arg, pieces):
    fn = "maxout_backward"
    d, dt = check(fn, [Spec("dy", dy, ("N", "C", "...")), Spec("arg", arg, ("N", "C", "..."), "int")])
    if arg.shape != dy.shape:
        raise ValueError(f"{fn}: arg must have the shape of dy {dy.shape}, got {arg.shape}")
    n, c = dy.shape[:2]
    pieces = check_pieces(fn, pieces, c * int(pieces))
    if arg.dtype != np.uint8:
        arg = arg.astype(np.uint8)
    dyb, dycf = canon(flat3(dy))
    ab, acf = canon(flat3(arg))
    m = dyb.shape[2]
    dxcf = dy.ndim == 4 or dycf  # 4-D grads go out in CNHW layout (what conv consumes)
    dx = np.empty((c * pieces, n, m) if dxcf else (n, c * pieces, m), dtype=dt)
    split(lambda lo, hi: _maxout_bwd_k(dyb, dycf, ab, acf, pieces, dx, dxcf, lo, hi), n * c, dx.size)
    return uncanon(dx, dxcf).reshape((n, c * pieces) + dy.shape[2:])


# ------------------------------------------------------------------ max pool, fused maxout + max pool
@njit(inline="always")
def _pool_scratch(mv, mi, H, W, kh, kw, sh, sw, oh, ow, yf, af, yo):
    """Max pool of one flat H x W plane of values mv, whose entries carry the args mi, into
    yf[yo + a*ow + b] / af[...] (windows clipped at the border: ceil mode; first max wins:
    each window is scanned row by row and a value replaces the best only if greater).

    Two loop orders, one result: windows of up to POOL_SELECT_MAX_TAPS values with
    branch-free selects along an output row (_pool_small), larger ones one window at a time
    with a branch (_pool_windows); why, and the measurement: tuning.POOL_SELECT_MAX_TAPS."""
    if kh * kw <= POOL_SELECT_MAX_TAPS:
        _pool_small(mv, mi, H, W, kh, kw, sh, sw, oh, ow, yf, af, yo)
    else:
        _pool_windows(mv, mi, H, W, kh, kw, sh, sw, oh, ow, yf, af, yo, 0)


@njit(inline="always")
def _pool_windows(mv, mi, H, W, kh, kw, sh, sw, oh, ow, yf, af, yo, b0):
    """_pool_scratch for output columns b0..ow-1, one window at a time."""
    for a in range(oh):
        h0 = a * sh
        h1 = min(h0 + kh, H)
        for b in range(b0, ow):
            w0 = b * sw
            w1 = min(w0 + kw, W)
            bi = U(h0 * W + w0)
            best = mv[bi]
            for hh in range(h0, h1):
                r = U(hh * W)
                for ww in range(U(w0), U(w1)):
                    v = mv[r + ww]
                    if v > best:
                        best = v
                        bi = r + ww
            o = yo + U(a * ow + b)
            yf[o] = best
            af[o] = mi[bi]


@njit(inline="always")
def _pool_small(mv, mi, H, W, kh, kw, sh, sw, oh, ow, yf, af, yo):
    """_pool_scratch vectorised along output rows (selects); clipped windows by _pool_windows."""
    nf = max(0, min(ow, (W - kw) // sw + 1))   # outputs whose window is not clipped on the right
    usw = U(sw)
    for a in range(oh):
        h0 = a * sh
        h1 = min(h0 + kh, H)
        o = yo + U(a * ow)
        r0 = U(h0 * W)
        for b in range(U(nf)):
            yf[o + b] = mv[r0 + b * usw]
            af[o + b] = mi[r0 + b * usw]
        for hh in range(h0, h1):
            r = U(hh * W)
            for j in range(U(kw)):
                if hh == h0 and j == 0:
                    continue
                for b in range(U(nf)):
                    e = r + b * usw + j
                    v = mv[e]
                    g = v > yf[o + b]
                    yf[o + b] = v if g else yf[o + b]
                    af[o + b] = mi[e] if g else af[o + b]
    if nf < ow:
        _pool_windows(mv, mi, H, W, kh, kw, sh, sw, oh, ow, yf, af, yo, nf)


@kern
def _maxpool_k(xb, xcf, kh, kw, sh, sw, oh, ow, y, arg, t0, t1):
    N, C = nc(xb, xcf)
    H = xb.shape[2]
    W = xb.shape[3]
    HW = H * W
    OP = oh * ow
    xf = xb.reshape(-1)
    yf = y.reshape(-1)
    af = arg.reshape(-1)
    pos = np.arange(HW).astype(np.int32)   # the arg of a plain pool is the position itself
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        pb = (c * N + n) if xcf else (n * C + c)
        _pool_scratch(xf[pb * HW:(pb + 1) * HW], pos, H, W, kh, kw, sh, sw, oh, ow, yf, af, U(pb * OP))


@kern
def _pool_scatter_k(dyb, dycf, ab, acf, pieces, plane, dxb, t0, t1):
    """dx (C*pieces, N, plane) CNHW: zero group c's planes of sample n, then add dy at
    arg = piece * plane + position (pieces = 1: a plain max pool)."""
    _, C = nc(dyb, dycf)
    M = dyb.shape[2]
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        g = pl(dyb, dycf, n, c)
        a = pl(ab, acf, n, c)
        for q in range(pieces):
            dxb[c * pieces + q, n, :] = 0
        for m in range(M):
            idx = a[m]
            q = idx // plane
            dxb[c * pieces + q, n, idx - q * plane] += g[m]


@kern
def _mopool_k(xb, xcf, pieces, kh, kw, sh, sw, oh, ow, y, arg, t0, t1):
    """Fused maxout + max pool. y/arg canonical in x's layout with C = CP // pieces.
    Per plane: maxout into a scratch plane (value, encoded arg), then pool it."""
    N, CP = nc(xb, xcf)
    H = xb.shape[2]
    W = xb.shape[3]
    C = CP // pieces
    HW = H * W
    OP = oh * ow
    xf = xb.reshape(-1)
    yf = y.reshape(-1)
    af = arg.reshape(-1)
    mv = np.empty(HW, dtype=xb.dtype)
    mi = np.empty(HW, dtype=np.int32)
    uhw = U(HW)
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        b0 = U((c * pieces * N + n) * HW if xcf else (n * CP + c * pieces) * HW)
        for e in range(uhw):
            mv[e] = xf[b0 + e]
            mi[e] = e
        for q in range(1, pieces):
            bq = U(((c * pieces + q) * N + n) * HW if xcf else (n * CP + c * pieces + q) * HW)
            off = np.int64(q * HW)
            for e in range(uhw):
                v = xf[bq + e]
                g = v > mv[e]   # (selects, as in maxout_into_k and mo_rows_k)
                mv[e] = v if g else mv[e]
                mi[e] = off + np.int64(e) if g else mi[e]
        yo = U((c * N + n) * OP if xcf else (n * C + c) * OP)
        _pool_scratch(mv, mi, H, W, kh, kw, sh, sw, oh, ow, yf, af, yo)


def maxpool2d_forward(x, kernel, stride, ceil_mode=True):
    fn = "maxpool2d_forward"
    d, dt = check(fn, [Spec("x", x, ("N", "C", "H", "W"))])
    kh, kw, sh, sw, _, _ = geometry(fn, kernel, stride)
    oh, ow = pool_out(fn, d["H"], d["W"], kh, kw, sh, sw, ceil_mode)
    n, c = d["N"], d["C"]
    xb, xcf = canon(x)
    shp = (c, n, oh, ow) if xcf else (n, c, oh, ow)
    y = np.empty(shp, dtype=dt)
    arg = np.empty(shp, dtype=np.int32)
    split(lambda lo, hi: _maxpool_k(xb, xcf, kh, kw, sh, sw, oh, ow, y, arg, lo, hi), n * c, x.size)
    return uncanon(y, xcf), uncanon(arg, xcf)


def _pool_bwd(fn, dy, arg, x_shape, pieces):
    n, cx, h, w = x_shape
    _, dt = check(fn, [Spec("dy", dy, (n, cx // pieces, "OH", "OW")),
                        Spec("arg", arg, (n, cx // pieces, "OH", "OW"), "int")])
    if arg.dtype != np.int32:
        arg = arg.astype(np.int32)
    if arg.size and (arg.min() < 0 or arg.max() >= pieces * h * w):  # the scatter is unchecked
        raise ValueError(f"{fn}: arg holds indices outside [0, {pieces * h * w}) for x_shape "
                         f"{tuple(x_shape)}: not the arg of a forward on that shape")
    dyb, dycf = canon(flat3(dy))
    ab, acf = canon(flat3(arg))
    dx = np.empty((cx, n, h * w), dtype=dt)
    split(lambda lo, hi: _pool_scatter_k(dyb, dycf, ab, acf, pieces, h * w, dx, lo, hi),
           n * (cx // pieces), dx.size)
    return dx.reshape(cx, n, h, w).swapaxes(0, 1)


def maxpool2d_backward(dy, arg, x_shape):
    fn = "maxpool2d_backward"
    return _pool_bwd(fn, dy, arg, shape4(fn, "x_shape", x_shape), 1)


def maxout_pool_forward(x, pieces, kernel, stride, ceil_mode=True):
    fn = "maxout_pool_forward"
    d, dt = check(fn, [Spec("x", x, ("N", "CP", "H", "W"))])
    pieces = check_pieces(fn, pieces, d["CP"])
    kh, kw, sh, sw, _, _ = geometry(fn, kernel, stride)
    oh, ow = pool_out(fn, d["H"], d["W"], kh, kw, sh, sw, ceil_mode)
    n, c = d["N"], d["CP"] // pieces
    xb, xcf = canon(x)
    shp = (c, n, oh, ow) if xcf else (n, c, oh, ow)
    y = np.empty(shp, dtype=dt)
    arg = np.empty(shp, dtype=np.int32)
    split(lambda lo, hi: _mopool_k(xb, xcf, pieces, kh, kw, sh, sw, oh, ow, y, arg, lo, hi),
           n * c, x.size)
    return uncanon(y, xcf), uncanon(arg, xcf)


def maxout_pool_backward(dy, arg, x_shape, pieces):
    fn = "maxout_pool_backward"
    xs = shape4(fn, "x_shape", x_shape)
    return _pool_bwd(fn, dy, arg, xs, check_pieces(fn, pieces, xs[1]))


# ------------------------------------------------------------------ the backward of conv.conv2d_maxout_backward
@kern
def mo_bwd_chunk_k(gb, ab, pieces, pool, HW, n0, dz):
    """dz (C*pieces, m, HW) = the maxout backward (``pool`` False: arg the piece index) or
    the maxout + max pool backward (arg (piece * H + h) * W + w) of samples n0..n0+m-1 of
    the CNHW buffers gb, ab (C, N, M) of dy and arg: one chunk of what _maxout_bwd_k /
    _pool_scatter_k write for the whole batch, the same sums in the same order, into a
    buffer the conv backward's GEMMs then read while it is in cache."""
    C = gb.shape[0]
    M = gb.shape[2]
    m = dz.shape[1]
    for c in range(C):
        for n in range(m):
            g = gb[c, n0 + n]
            a = ab[c, n0 + n]
            if not pool:
                for q in range(pieces):
                    dq = dz[c * pieces + q, n]
                    for e in range(M):
                        dq[e] = g[e] if a[e] == q else 0
            else:
                for q in range(pieces):
                    dz[c * pieces + q, n, :] = 0
                for e in range(M):
                    idx = a[e]
                    q = idx // HW
                    dz[c * pieces + q, n, idx - q * HW] += g[e]


# ------------------------------------------------------------------ reductions of conv2d_maxout_forward
@kern
def maxout_into_k(z, pieces, n0, y, arg):
    """Maxout of a conv chunk z (C*pieces, m, M) into samples n0..n0+m-1 of the CNHW
    outputs y, arg (C, N, M): as _maxout_k (first max wins)."""
    C = y.shape[0]
    m = z.shape[1]
    M = z.shape[2]
    for c in range(C):
        for n in range(m):
            yr = y[c, n0 + n]
            ar = arg[c, n0 + n]
            x0 = z[c * pieces, n]
            for e in range(M):
                yr[e] = x0[e]
                ar[e] = 0
            for q in range(1, pieces):
                xq = z[c * pieces + q, n]
                for e in range(M):
                    v = xq[e]
                    g = v > yr[e]   # (selects: a branch here is mispredicted on real maps)
                    yr[e] = v if g else yr[e]
                    ar[e] = q if g else ar[e]


@kern
def mopool_into_k(z, pieces, H, W, kh, kw, sh, sw, oh, ow, n0, y, arg):
    """Fused maxout + max pool of a conv chunk z (C*pieces, m, H*W) into samples
    n0..n0+m-1 of the CNHW outputs y, arg (C, N, oh*ow): as _mopool_k."""
    C = y.shape[0]
    m = z.shape[1]
    HW = H * W
    mv = np.empty(HW, dtype=z.dtype)
    mi = np.empty(HW, dtype=np.int32)
    uhw = U(HW)
    for c in range(C):
        for n in range(m):
            x0 = z[c * pieces, n]
            for e in range(uhw):
                mv[e] = x0[e]
                mi[e] = e
            for q in range(1, pieces):
                xq = z[c * pieces + q, n]
                off = np.int64(q * HW)
                for e in range(uhw):
                    v = xq[e]
                    g = v > mv[e]
                    mv[e] = v if g else mv[e]
                    mi[e] = off + np.int64(e) if g else mi[e]
            _pool_scratch(mv, mi, H, W, kh, kw, sh, sw, oh, ow, y[c, n0 + n], arg[c, n0 + n], U(0))


@njit(inline="always")
def mo_row(row, pieces, uC, yr, ar, code0, step):
    """Maxout of one row of positions x maps (row: pieces*C values, piece-major q*C + c)
    into yr, ar (C,): first max wins, ar = code0 + q * step for the winning piece q."""
    for c in range(uC):
        yr[c] = row[c]
        ar[c] = code0
    for q in range(1, pieces):
        qo = U(q) * uC
        code = code0 + q * step
        for c in range(uC):
            v = row[qo + c]
            g = v > yr[c]
            yr[c] = v if g else yr[c]
            ar[c] = code if g else ar[c]


@njit(inline="always")
def pool_rows(mv, mi, H, W, kh, kw, sh, sw, oh, ow, y, arg, r0):
    """Max pool of one sample's maxout rows mv (H*W, C), args mi, into the NHWC rows
    r0..r0+oh*ow-1 of y, arg (ceil-mode windows clipped at the border, scanned row by
    row; first max wins), vectorised along the C maps."""
    uC = U(y.shape[1])
    for a in range(oh):
        h0 = a * sh
        h1 = min(h0 + kh, H)
        for b in range(ow):
            w0 = b * sw
            w1 = min(w0 + kw, W)
            yr = y[r0 + a * ow + b]
            ar = arg[r0 + a * ow + b]
            first = mv[h0 * W + w0]
            firsti = mi[h0 * W + w0]
            for c in range(uC):
                yr[c] = first[c]
                ar[c] = firsti[c]
            for hh in range(h0, h1):
                for ww in range(w0, w1):
                    if hh == h0 and ww == w0:
                        continue
                    vr = mv[hh * W + ww]
                    ir = mi[hh * W + ww]
                    for c in range(uC):
                        v = vr[c]
                        g = v > yr[c]
                        yr[c] = v if g else yr[c]
                        ar[c] = ir[c] if g else ar[c]


@kern
def mo_rows_k(zt, pieces, H, W, kh, kw, sh, sw, oh, ow, pool, n0, y, arg):
    """Maxout (and with ``pool`` max pool) of a rows-GEMM chunk zt (m*H*W, pieces*C), its
    columns piece-major (q*C + c), into the NHWC rows of samples n0..n0+m-1 of y, arg
    (N*oh*ow, C): the encodings, tie rules and window order of _maxout_k / _mopool_k.
    Selects throughout, vectorised along the C maps (a data-dependent ``if`` here was
    mispredicted on about half the comparisons: 26 against 4.3 ms for one layer)."""
    C = y.shape[1]
    HW = H * W
    m = zt.shape[0] // HW
    uC = U(C)
    if not pool:
        for r in range(m * HW):
            mo_row(zt[r], pieces, uC, y[n0 * HW + r], arg[n0 * HW + r], 0, 1)
        return
    mv = np.empty((HW, C), dtype=zt.dtype)
    mi = np.empty((HW, C), dtype=np.int32)
    for n in range(m):
        for e in range(HW):
            mo_row(zt[n * HW + e], pieces, uC, mv[e], mi[e], e, HW)
        pool_rows(mv, mi, H, W, kh, kw, sh, sw, oh, ow, y, arg, (n0 + n) * oh * ow)


# ------------------------------------------------------------------ global average pool
def global_avg_pool_forward(x):
    fn = "global_avg_pool_forward"
    d, dt = check(fn, [Spec("x", x, ("N", "C", "H", "W"))])
    return x.mean(axis=(2, 3), dtype=dt)


def global_avg_pool_backward(dy, x_shape):
    fn = "global_avg_pool_backward"
    n, c, h, w = shape4(fn, "x_shape", x_shape)
    check(fn, [Spec("dy", dy, (n, c))])
    g = dy / dy.dtype.type(h * w)
    out = np.empty((c, n, h, w), dtype=dy.dtype)
    out[...] = g.T[:, :, None, None]
    return out.swapaxes(0, 1)
