"""Convolutions of small, heavily padded maps, computed from the input's side (the
transposed formulation): for stride 1 and an output larger than the input (2*pad > k-1,
e.g. mnist-fitnet's h4: 4x4 maps, 3x3 kernel, pad 3 -> 8x8 outputs), im2col's columns are
mostly zeros from the padding and its GEMMs multiply them. Swapping the roles of x and the
output skips them: the multiply-adds fall from N*OH*OW*O*C*kh*kw to N*H*W*O*C*kh*kw
(h4: a quarter).

  forward   T = Wt @ X            Wt (O*kh*kw, C) = w as (o, i, j) x c;  X (C, H*W*m)
            z[o, n, h-i+ph, w-j+pw] += T[(o, i, j), (h, w, n)]   (scatter_k; + b)
  backward  G = gather(dz)        G[(o, i, j), (h, w, n)] = dz[o, n, h-i+ph, w-j+pw]
                                  (0 outside the output; gather_k)
            dW^T (O*kh*kw, C) += G @ X^T ;  dX (C, H*W*m) = Wt^T @ G ;  db = sum dz
(m samples per chunk, innermost in the columns: x_cols_k / dx_out_k move x and dx
between that order and CNHW.)

Per chunk of samples on the thread pool, as conv.py's GEMM paths; dw summed in a fixed
order (group g adds its contiguous run of chunks, then the groups in order), so two equal
runs give bitwise-equal weights. Which layers take it: use_small (the rule and its
measurements: tuning.SMALL_FWD_MIN_GROWTH). Held to kernels.reference by
tests/kernels/test_conv_small.py.
"""
from __future__ import annotations

import numpy as np

from . import runtime, tuning
from .layouts import U
from .patches import chunk
from .runtime import kern, parallel, single_blas


def use_small(h, w, kh, kw, stride, pad, backward=False):
    """The one rule: True where the transposed formulation runs (the forward, or with
    ``backward`` conv2d_backward): stride 1 and at least tuning.SMALL_FWD_MIN_GROWTH /
    SMALL_BWD_MIN_GROWTH times as many output positions as input positions (the
    multiply-adds of the two formulations are in the ratio OH*OW : H*W)."""
    (sh, sw), (ph, pw) = stride, pad
    if sh != 1 or sw != 1:
        return False
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    g = tuning.SMALL_BWD_MIN_GROWTH if backward else tuning.SMALL_FWD_MIN_GROWTH
    return oh * ow >= g * h * w


# The GEMMs' columns are in (h, w, n) order, samples innermost: the scatter / gather then
# copy runs of m samples (vectorised) instead of rows of W (4 values for a 4 x 4 map:
# 2 ns a value, 4x the GEMMs' time).
@kern
def x_cols_k(xb, n0, xt):
    """xt (C, H*W, m) = samples n0..n0+m-1 of the CNHW buffer xb (C, N, H*W), samples
    innermost."""
    C = xt.shape[0]
    HW = xt.shape[1]
    m = xt.shape[2]
    for c in range(C):
        for n in range(m):
            src = xb[c, n0 + n]
            for e in range(HW):
                xt[c, e, n] = src[e]


@kern
def dx_out_k(dt_, n0, dxb):
    """Samples n0..n0+m-1 of the CNHW buffer dxb (C, N, H*W) = dt_ (C, H*W, m) (the inverse
    of x_cols_k)."""
    C = dt_.shape[0]
    HW = dt_.shape[1]
    m = dt_.shape[2]
    for c in range(C):
        for n in range(m):
            dst = dxb[c, n0 + n]
            for e in range(HW):
                dst[e] = dt_[c, e, n]


@kern
def scatter_k(t, kh, kw, ph, pw, H, W, OH, OW, bias, z):
    """z (O, m, OH*OW) = the taps t (O*kh*kw, H*W, m) summed at their output positions:
    z[o, n, a*OW + b] = sum over i, j of t[(o*kh + i)*kw + j, (a+i-ph)*W + b+j-pw, n] (terms
    outside the input dropped) + bias[o]. Per map, in a fixed order, into a scratch
    (OH*OW, m) whose runs of m samples the adds vectorise along; then transposed out."""
    O = z.shape[0]
    m = z.shape[1]
    P = OH * OW
    zs = np.empty(P * m, dtype=z.dtype)
    tf = t.reshape(-1)
    HW = H * W
    um = U(m)
    for o in range(O):
        zs[:] = 0
        for i in range(kh):
            for j in range(kw):
                k = (o * kh + i) * kw + j
                for h in range(H):
                    a = h - i + ph
                    if a < 0 or a >= OH:
                        continue
                    for w in range(W):
                        b = w - j + pw
                        if b < 0 or b >= OW:
                            continue
                        s = U((k * HW + h * W + w) * m)
                        d = U((a * OW + b) * m)
                        for e in range(um):
                            zs[d + e] += tf[s + e]
        bo = bias[o]
        for n in range(m):
            zr = z[o, n]
            for q in range(P):
                zr[q] = zs[U(q) * um + U(n)] + bo


@kern
def gather_k(dzb, n0, kh, kw, ph, pw, H, W, OH, OW, g):
    """g (O*kh*kw, H*W, m): g[(o*kh + i)*kw + j, h*W + w, n] = dz[o, n0+n, h-i+ph, w-j+pw]
    (0 outside the output plane), dzb the CNHW buffer (O, N, OH*OW) of dz: the adjoint of
    scatter_k's placement. Each map's chunk is first transposed to (OH*OW, m), so the
    copies are runs of m samples."""
    O = dzb.shape[0]
    m = g.shape[2]
    P = OH * OW
    HW = H * W
    ds = np.empty(P * m, dtype=g.dtype)
    gf = g.reshape(-1)
    um = U(m)
    for o in range(O):
        for n in range(m):
            src = dzb[o, n0 + n]
            for q in range(P):
                ds[U(q) * um + U(n)] = src[q]
        for i in range(kh):
            for j in range(kw):
                k = (o * kh + i) * kw + j
                for h in range(H):
                    a = h - i + ph
                    for w in range(W):
                        b = w - j + pw
                        d = U((k * HW + h * W + w) * m)
                        if a < 0 or a >= OH or b < 0 or b >= OW:
                            for e in range(um):
                                gf[d + e] = 0
                        else:
                            s = U((a * OW + b) * m)
                            for e in range(um):
                                gf[d + e] = ds[s + e]


def _x_buf(x):
    """x (N, C, H, W) -> its CNHW buffer (C, N, H*W) (a view of a CNHW x, else a copy)."""
    n, c, h, w = x.shape
    t = x.swapaxes(0, 1)
    if not t.flags.c_contiguous:
        t = np.ascontiguousarray(t)
    return t.reshape(c, n, h * w)


def _wt(w):
    """w (O, C, kh, kw) -> Wt (O*kh*kw, C), rows in (o, i, j) order."""
    o, c, kh, kw = w.shape
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(o * kh * kw, c))


def _chunk(n, k, hw, elems):
    """Samples per chunk: patches.chunk's L2-sized buffer, but at least tuning.SMALL_MIN_M
    samples (the scatter / gather copy runs of that many values) where every thread still
    gets a chunk."""
    nb = chunk(n, k, hw, runtime.GEMM_THREADS, elems)
    return max(nb, min(tuning.SMALL_MIN_M, -(-n // runtime.GEMM_THREADS)))


def small_chunks(x, w, b, pad, oh, ow, dt, consume):
    """The forward of a stride-1 convolution by the transposed formulation, per chunk of
    samples over the pool: consume(z, n0) gets each chunk's output z (O, m, OH*OW) (C order;
    a buffer valid only during the call), b None or tied (O,), as conv._conv_chunks."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ph, pw = pad
    hw, p = h * wd, oh * ow
    ok = o * kh * kw
    xb = _x_buf(x)
    wt = _wt(w)
    bias = np.zeros(o, dt) if b is None else np.ascontiguousarray(b, dtype=dt)   # (+ 0: exact)
    nb = _chunk(n, ok + o * p // max(1, hw), hw, tuning.CHUNK_ELEMS // 4)
    bufs = {}

    def task(i, wid):
        got = bufs.get(wid)
        if got is None:
            got = bufs[wid] = (np.empty(c * hw * nb, dt), np.empty(ok * hw * nb, dt), np.empty(o * nb * p, dt))
        xtb, tb, zb = got
        n0 = i * nb
        m = min(nb, n - n0)
        xt = xtb[:c * hw * m].reshape(c, hw, m)
        x_cols_k(xb, n0, xt)
        t = tb[:ok * hw * m].reshape(ok, hw * m)
        np.matmul(wt, xt.reshape(c, hw * m), out=t)
        z = zb[:o * m * p].reshape(o, m, p)
        scatter_k(t.reshape(ok, hw, m), kh, kw, ph, pw, h, wd, oh, ow, bias, z)
        consume(z, n0)

    with single_blas():
        parallel(task, -(-n // nb), runtime.GEMM_THREADS)


def small_backward(dz_of, x, w, pad, oh, ow, need_dx, untied_bias, dyc, dz_buf=False):
    """conv2d_backward by the transposed formulation -> (dx (CNHW layout) | None, dw, db):
    db (O,) = dy summed over samples and positions, or with ``untied_bias`` (O, OH, OW) =
    dy summed over the samples. Chunk n0..n0+m-1 of dy (O, m, OH*OW) is dz_of(n0, m, buf)
    (as conv._conv_backward's); dyc, dy's CNHW buffer (O, N, OH*OW), or None (then db is
    summed chunk by chunk, in the dw order)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ph, pw = pad
    dt = x.dtype
    hw, p = h * wd, oh * ow
    ok = o * kh * kw
    xb = _x_buf(x)
    wtt = np.ascontiguousarray(_wt(w).T)   # (C, O*kh*kw)
    nb = _chunk(n, ok, hw, tuning.CHUNK_ELEMS)
    dxb = np.empty((c, n, hw), dtype=dt) if need_dx else None
    # dw: a fixed order whatever the scheduling (as conv2d_backward): group g adds its
    # contiguous run of chunks in order, then the groups are added in order
    chunks = -(-n // nb)
    groups = min(runtime.GEMM_THREADS, chunks)
    acc = [None] * groups
    dbs = [None] * groups

    def task(gi, _w):
        gb = np.empty(ok * hw * nb, dtype=dt)
        buf = np.empty((o, nb, p), dtype=dt) if dz_buf else None
        xtb = np.empty(c * hw * nb, dtype=dt)
        dtb = np.empty(c * hw * nb, dtype=dt) if need_dx else None
        tmp = None
        for i in range(chunks * gi // groups, chunks * (gi + 1) // groups):
            n0 = i * nb
            m = min(nb, n - n0)
            g = gb[:ok * hw * m].reshape(ok, hw * m)
            dz = dz_of(n0, m, buf)
            gather_k(dz, 0, kh, kw, ph, pw, h, wd, oh, ow, g.reshape(ok, hw, m))
            if dyc is None:   # the tied db, summed per chunk (in the fixed order of dw)
                s = dz.reshape(o, m * p).sum(axis=1)
                dbs[gi] = s if dbs[gi] is None else dbs[gi] + s
            xt = xtb[:c * hw * m].reshape(c, hw, m)
            x_cols_k(xb, n0, xt)
            xk = xt.reshape(c, hw * m)
            if acc[gi] is None:
                acc[gi] = np.matmul(g, xk.T)
                tmp = np.empty_like(acc[gi])
            else:
                np.matmul(g, xk.T, out=tmp)
                acc[gi] += tmp
            if need_dx:
                d = dtb[:c * hw * m].reshape(c, hw * m)
                np.matmul(wtt, g, out=d)
                dx_out_k(d.reshape(c, hw, m), n0, dxb)

    with single_blas():
        parallel(task, groups, runtime.GEMM_THREADS)
    total = acc[0]
    for a in acc[1:]:
        total = total + a
    dw = np.ascontiguousarray(total.reshape(o, kh, kw, c).transpose(0, 3, 1, 2))
    if dyc is None:
        db = dbs[0]
        for s in dbs[1:]:
            db = db + s
    else:
        db = dyc.sum(axis=1).reshape(o, oh, ow) if untied_bias else dyc.reshape(o, n * p).sum(axis=1)
    dx = dxb.reshape(c, n, h, wd).swapaxes(0, 1) if need_dx else None
    return dx, dw, db
