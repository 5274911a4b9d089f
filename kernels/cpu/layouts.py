"""Memory layouts of the CPU kernels, and the helpers that move between them.

Values are always NCHW-indexed NumPy arrays; only the strides differ:
  * Kernels accept any strides. Internally each 4-D array is handled in one of two
    canonical layouts: plain C-contiguous NCHW, or "CNHW" = ``a.transpose(1, 0, 2, 3)``
    is C-contiguous (channel planes of the whole batch are adjacent). Anything else is
    copied to C order first (``canon``).
  * conv2d_forward returns a CNHW-layout array (the GEMM ``W @ cols`` produces it with
    no transposing copy); conv2d_backward returns dx in CNHW layout and takes dy in any
    layout (CNHW avoids a copy). maxout / maxpool / maxout_pool forward keep the input's
    layout; their backward functions return 4-D dx in CNHW layout (what the conv below
    consumes). So a maxout-conv stack never transposes between layers.
  * bn_relu_conv2d_forward (evaluation only) and conv2d_maxout_forward(channels_last=True)
    (for callers that record no backward pass) return channels-last ("NHWC": an
    (N, C, H, W) view of a C-contiguous (N, H, W, C) buffer): their GEMMs produce rows of
    positions x maps. im2row (the conv's patch copy), batch_norm_inference and relu read
    NHWC in place; other kernels copy it to NCHW first (correct, only slower).
  * Callers must therefore not assume C-contiguity of results: use ``np.ascontiguousarray``
    if you need it (``reshape`` already copies when it must).

Why two layouts for one job: the CNHW layout is what the training path's GEMMs (W @ cols,
and the backward's dW / dx products) produce and consume without a transpose, and what
the backward kernels expect; NHWC is what the rows orientation (rows @ W^T, faster for thin
layers and for evaluation) produces. Each path keeps its GEMM's natural output.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .runtime import kern, split


def canon(a):
    """-> (buf, cfirst): buf is C-contiguous and equals ``a`` (cfirst False) or
    ``a.swapaxes(0, 1)`` (cfirst True)."""
    if a.flags.c_contiguous:
        return a, False
    t = a.swapaxes(0, 1)
    if t.flags.c_contiguous:
        return t, True
    return np.ascontiguousarray(a), False


def uncanon(buf, cfirst):
    """The NCHW-indexed view of a canonical buffer (the inverse of canon)."""
    return buf.swapaxes(0, 1) if cfirst else buf


# the layout codes of rows_in (im2row reads all three)
NCHW, CNHW, NHWC = 0, 1, 2


def is_nhwc(a):
    """True for a channels-last 4-D view (not C-contiguous, its NHWC transpose is)."""
    return a.ndim == 4 and not a.flags.c_contiguous and a.transpose(0, 2, 3, 1).flags.c_contiguous


def rows_in(a):
    """4-D a -> (buf, layout): a's own C-contiguous buffer, as (N, C, H, W) (NCHW),
    (C, N, H, W) (CNHW) or (N, H, W, C) (NHWC); other layouts are copied to NCHW."""
    if is_nhwc(a):
        return a.transpose(0, 2, 3, 1), NHWC
    buf, cf = canon(a)
    return buf, (CNHW if cf else NCHW)


def nhwc_rows(a):
    """4-D a (N, C, H, W) -> (N*H*W, C) rows holding a.transpose(0, 2, 3, 1): a view when
    a is channels-last, else a copy."""
    n, c, h, w = a.shape
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).reshape(n * h * w, c)


def from_rows(r, n, h, w):
    """(N*H*W, C) rows -> the channels-last (N, C, H, W) view of them."""
    return r.reshape(n, h, w, -1).transpose(0, 3, 1, 2)


@njit(inline="always")
def pl(buf, cf, n, c):
    """Plane (n, c) of a canonical buffer."""
    return buf[c, n] if cf else buf[n, c]


@njit(inline="always")
def nc(buf, cf):
    """(N, C) of a canonical buffer."""
    if cf:
        return buf.shape[1], buf.shape[0]
    return buf.shape[0], buf.shape[1]


# Hot loops index flat arrays with unsigned (np.uint64) offsets: Numba then drops its
# negative-index wraparound code and LLVM vectorises the copies (about 9x faster im2col).
U = np.uint64


@kern
def rows_to_cnhw_k(zt, c0, y, res):
    """y[:, c0 : c0 + R] = zt.T (+ res[:, c0 : c0 + R] unless res is empty) for zt (R, O),
    y and res (O, L): 16x16 tiles (2.4x faster than a row-at-a-time transpose), then the
    ragged edges."""
    R = zt.shape[0]
    O = zt.shape[1]
    B = 16
    RB = R - R % B
    OB = O - O % B
    add = res.shape[1] > 0
    for r0 in range(0, RB, B):
        for o0 in range(0, OB, B):
            for oo in range(B):
                if add:
                    for rr in range(B):
                        y[o0 + oo, c0 + r0 + rr] = zt[r0 + rr, o0 + oo] + res[o0 + oo, c0 + r0 + rr]
                else:
                    for rr in range(B):
                        y[o0 + oo, c0 + r0 + rr] = zt[r0 + rr, o0 + oo]
        for oo in range(OB, O):
            for rr in range(B):
                y[oo, c0 + r0 + rr] = zt[r0 + rr, oo] + (res[oo, c0 + r0 + rr] if add else 0)
    for oo in range(O):
        for r in range(RB, R):
            y[oo, c0 + r] = zt[r, oo] + (res[oo, c0 + r] if add else 0)


@kern
def _to_cfirst_k(src, dst, t0, t1):
    """dst (C, N, M) = src (N, C, M) transposed, for flat (n, c) indices t0..t1-1."""
    C = src.shape[1]
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        dst[c, n, :] = src[n, c, :]


def as_cfirst(a):
    """4-D a -> C-contiguous (C, N, H*W) buffer holding a.swapaxes(0, 1)."""
    n, c, h, w = a.shape
    t = a.swapaxes(0, 1)
    if t.flags.c_contiguous:
        return t.reshape(c, n, h * w)
    src = np.ascontiguousarray(a).reshape(n, c, h * w)
    dst = np.empty((c, n, h * w), dtype=a.dtype)
    split(lambda lo, hi: _to_cfirst_k(src, dst, lo, hi), n * c, src.size)
    return dst


def flat3(a):
    """(N, C, ...) -> (N, C, M) view when possible (copy otherwise)."""
    return a.reshape(a.shape[0], a.shape[1], -1)



# ------------------------------------------------------------------ host arrays
def to_device(a):
    """On the CPU target: the array itself (as a NumPy array)."""
    return np.asarray(a)


def to_host(a):
    """A new host copy of ``a``."""
    return np.array(a, copy=True)
