"""Patch copies of the convolutions: im2col (patches as columns, (C*kh*kw, positions)),
its adjoint col2im, and im2row (patches as rows, (positions, kh*kw*C)) for the rows
orientation of the forward GEMM. The public im2col / col2im are the reference's; the
``*_k`` kernels work on chunks of samples for conv.py.

Each input plane is first copied into a zero-bordered scratch plane, so the row copies
need no bounds logic (2-3x faster on small padded planes); flat indices are unsigned
(layouts.U: about 9x faster im2col).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..shapes import Spec, check, conv_out, geometry, shape4
from . import tuning
from .layouts import CNHW, NHWC, U, canon, nc, pl
from .runtime import kern, split


@kern
def im2col_k(xb, xcf, n0, nb, c0, c1, kh, kw, sh, sw, ph, pw, oh, ow, out, okf, pre, scale, shift):
    """Columns of samples n0..n0+nb-1 and input maps c0..c1-1 into out: (K, nb', P) if
    okf else (nb', K, P) (rows k = (c-c0)*kh*kw + i*kw + j, position p = a*ow + b). Only
    rows k < (c1-c0)*kh*kw are written. Each input plane is first copied into a zero-bordered scratch plane, so the
    row copies need no bounds logic (2-3x faster on small padded planes). With ``pre``
    the copy reads relu(x * scale[c] + shift[c]) instead of x (an evaluation-mode batch
    norm and ReLU folded into the read; the border stays 0: padding comes after them)."""
    N, C = nc(xb, xcf)
    H = xb.shape[2]
    W = xb.shape[3]
    HW = H * W
    P = oh * ow
    Wp = W + 2 * pw
    xp = np.zeros((H + 2 * ph) * Wp, dtype=xb.dtype)
    xf = xb.reshape(-1)
    of = out.reshape(-1)
    nbo = out.shape[1] if okf else out.shape[0]
    K = out.shape[0] if okf else out.shape[1]
    khw = kh * kw
    uow = U(ow)
    usw = U(sw)
    uW = U(W)
    for n in range(nb):
        for c in range(c0, c1):
            xoff = ((c * N + n0 + n) if xcf else ((n0 + n) * C + c)) * HW
            if pre:
                sc = scale[c]
                sf = shift[c]
                for h in range(H):
                    d = U((h + ph) * Wp + pw)
                    s = U(xoff + h * W)
                    for t in range(uW):
                        v = xf[s + t] * sc + sf
                        xp[d + t] = v if v > 0 else 0
            else:
                for h in range(H):
                    d = U((h + ph) * Wp + pw)
                    s = U(xoff + h * W)
                    for t in range(uW):
                        xp[d + t] = xf[s + t]
            for i in range(kh):
                for j in range(kw):
                    k = (c - c0) * khw + i * kw + j
                    o = U(((k * nbo + n) if okf else (n * K + k)) * P)
                    for a in range(oh):
                        src = U((a * sh + i) * Wp + j)
                        if sw == 1:
                            for t in range(uow):
                                of[o + t] = xp[src + t]
                        else:
                            for t in range(uow):
                                of[o + t] = xp[src + t * usw]
                        o += uow


@kern
def col2im_k(cols, ckf, n0, nb, kh, kw, sh, sw, ph, pw, oh, ow, dxb, dcf):
    """Sum columns (K, nb', P) if ckf else (nb', K, P) into the planes of samples
    n0..n0+nb-1 of dx (overwriting them), through a zero-bordered scratch plane."""
    N, C = nc(dxb, dcf)
    H = dxb.shape[2]
    W = dxb.shape[3]
    HW = H * W
    P = oh * ow
    Wp = W + 2 * pw
    xp = np.empty((H + 2 * ph) * Wp, dtype=dxb.dtype)
    cf = cols.reshape(-1)
    df = dxb.reshape(-1)
    nbo = cols.shape[1] if ckf else cols.shape[0]
    K = cols.shape[0] if ckf else cols.shape[1]
    khw = kh * kw
    uow = U(ow)
    usw = U(sw)
    uW = U(W)
    for n in range(nb):
        for c in range(C):
            xp[:] = 0
            for i in range(kh):
                for j in range(kw):
                    k = c * khw + i * kw + j
                    o = U(((k * nbo + n) if ckf else (n * K + k)) * P)
                    for a in range(oh):
                        dst = U((a * sh + i) * Wp + j)
                        if sw == 1:
                            for t in range(uow):
                                xp[dst + t] += cf[o + t]
                        else:
                            for t in range(uow):
                                xp[dst + t * usw] += cf[o + t]
                        o += uow
            doff = ((c * N + n0 + n) if dcf else ((n0 + n) * C + c)) * HW
            for h in range(H):
                s = U((h + ph) * Wp + pw)
                d = U(doff + h * W)
                for t in range(uW):
                    df[d + t] = xp[s + t]


@njit(inline="always")
def copy_run(src, s, dst, d, n, pre, scale, shift):
    """dst[d + c] = src[s + c] for c < n (a position's n maps, NHWC), or with ``pre``
    relu(src[s + c] * scale[c] + shift[c]) (an evaluation-mode batch norm and ReLU folded
    into the copy)."""
    if pre:
        for c in range(n):
            v = src[s + c] * scale[c] + shift[c]
            dst[d + c] = v if v > 0 else 0
    else:
        for c in range(n):
            dst[d + c] = src[s + c]


@kern
def im2row_k(xb, lay, n0, nb, kh, kw, sh, sw, ph, pw, oh, ow, out, pre, scale, shift):
    """Patch-major columns of samples n0..n0+nb-1: out (nb*P, K'), row n*P + a*ow + b holds
    the patch of output position (a, b) in (i, j, c) order (k = (i*kw + j)*C + c), so it
    pairs with the weights laid out (kh, kw, C, O). Only columns k < C*kh*kw are written.
    xb is the input's buffer in layout ``lay`` (NCHW, CNHW or NHWC). Each sample is
    first copied as (H+2ph, W+2pw, C) into a zero-bordered scratch (from NHWC a straight
    copy of rows, else a transposing one); a patch is then kh*kw contiguous runs of C
    values. ``pre`` as in im2col_k."""
    if lay == NHWC:
        N = xb.shape[0]
        H = xb.shape[1]
        W = xb.shape[2]
        C = xb.shape[3]
    else:
        N, C = nc(xb, lay == CNHW)
        H = xb.shape[2]
        W = xb.shape[3]
    P = oh * ow
    Wp = W + 2 * pw
    xp = np.zeros((H + 2 * ph) * Wp * C, dtype=xb.dtype)
    xf = xb.reshape(-1)
    of = out.reshape(-1)
    R = out.shape[1]
    uC = U(C)
    for n in range(nb):
        if lay == NHWC:
            for h in range(H):
                s = U(((n0 + n) * H + h) * W * C)
                d = U(((h + ph) * Wp + pw) * C)
                for t in range(U(W)):
                    copy_run(xf, s + t * uC, xp, d + t * uC, uC, pre, scale, shift)
        else:
            for c in range(C):
                plane = pl(xb, lay == CNHW, n0 + n, c)
                sc = scale[c] if pre else 1.0
                sf = shift[c] if pre else 0.0
                for h in range(H):
                    d = U(((h + ph) * Wp + pw) * C + c)
                    for t in range(W):
                        v = plane[h, t]
                        if pre:
                            v = v * sc + sf
                            v = v if v > 0 else 0
                        xp[d + U(t) * uC] = v
        for a in range(oh):
            for b in range(ow):
                o = U((n * P + a * ow + b) * R)
                for i in range(kh):
                    src = U(((a * sh + i) * Wp + b * sw) * C)
                    for t in range(U(kw) * uC):
                        of[o + t] = xp[src + t]
                    o += U(kw) * uC


def im2col(x, kernel, stride=1, pad=0):
    fn = "im2col"
    d, dt = check(fn, [Spec("x", x, ("N", "C", "H", "W"))])
    kh, kw, sh, sw, ph, pw = geometry(fn, kernel, stride, pad)
    oh, ow = conv_out(fn, d["H"], d["W"], kh, kw, sh, sw, ph, pw)
    n, c = d["N"], d["C"]
    xb, xcf = canon(x)
    out = np.empty((n, c * kh * kw, oh * ow), dtype=dt)
    split(lambda lo, hi: im2col_k(xb, xcf, lo, hi - lo, 0, c, kh, kw, sh, sw, ph, pw, oh, ow,
                                    out[lo:hi], False, *no_pre(dt)), n, out.size)
    return out


def col2im(cols, x_shape, kernel, stride=1, pad=0):
    fn = "col2im"
    n, c, h, w = shape4(fn, "x_shape", x_shape)
    kh, kw, sh, sw, ph, pw = geometry(fn, kernel, stride, pad)
    oh, ow = conv_out(fn, h, w, kh, kw, sh, sw, ph, pw)
    _, dt = check(fn, [Spec("cols", cols, (n, c * kh * kw, oh * ow))])
    cb = np.ascontiguousarray(cols)
    dx = np.empty((n, c, h, w), dtype=dt)
    split(lambda lo, hi: col2im_k(cb[lo:hi], False, lo, hi - lo, kh, kw,
                                    sh, sw, ph, pw, oh, ow, dx, False), n, cols.size)
    return dx


def chunk(n, k, p, threads, elems=None):
    """Samples per im2col chunk: the buffer stays under ``elems`` (default tuning.CHUNK_ELEMS),
    and every thread gets at least one chunk."""
    elems = tuning.CHUNK_ELEMS if elems is None else elems
    nb = max(1, min(n, elems // max(1, k * p)))
    return max(1, min(nb, -(-n // threads)))


def no_pre(dt):
    """The (pre, scale, shift) arguments of im2col_k for a plain read of x."""
    return False, np.empty(0, dt), np.empty(0, dt)

