"""Convolutions on the CPU: conv2d_forward and conv2d_backward (side by side), the GEMM
driver they share, and the fused forwards built on it.

Which path runs when (forward):

  call                               path                                   output layout
  conv2d_forward                     im2col, W @ cols per chunk              CNHW
    ... O <= tuning.ROWS_MAX_O,      im2row, rows @ W^T, transposed back     CNHW
        C >= ROWS_MIN_C, kh*kw > 1   in 16x16 tiles (thin layers; or x NHWC)
    ... K = C*kh*kw >= KSPLIT_MIN_K, im2col cut along the input maps,        CNHW
        few positions                products summed (long reductions)
  bn_relu_conv2d_forward (eval)      im2row reading relu(x*s + t), rows GEMM NHWC
    ... stride 1, 3x3,               Winograd in NHWC rows (wino_rows_chunks, NHWC
        use_winograd_rows            relu(x*s + t) read into its first copy)
  conv2d_maxout_forward              as conv2d_forward, each chunk reduced   CNHW
                                     at once (pool.maxout_into_k /
                                     mopool_into_k): no conv output stored
    ... channels_last, O <=          rows GEMM, weights piece-major,         NHWC
        NHWC_MAX_O, C >= ROWS_MIN_C  pool.mo_rows_k (vectorised selects)
    ... channels_last, stride 1,     Winograd in NHWC rows (wino_rows_chunks), NHWC
        3x3, use_winograd_rows       maxout (+ pool) in its output transform
                                     (output_transform_maxout_k: pool.mo_row)
    ... stride 1, kh*kw >= 25,       FFT (conv_fft), then mo_rows_k          CNHW, or NHWC
        C >= 32, OH*OW >= 36                                                 with channels_last
        (>= 64 with channels_last)
  conv2d_forward, conv2d_maxout_     small padded maps (conv_small.use_small: CNHW (also with
  forward: stride 1, OH*OW >=        stride 1, output >= 1.6x the input's    channels_last)
  1.6 H*W (first; no pre)            positions): Wt @ x over the input's
                                     positions, taps scattered to the output
  conv2d_forward, conv2d_maxout_     Winograd F(2x2, 3x3) in NHWC rows       CNHW
  forward (not channels_last)        (conv_winograd.wino_rows_chunks), each
    ... stride 1, 3x3, use_winograd  chunk transposed in 16x16 tiles to the
                                     store / the CNHW maxout reduction

A tied bias (O,) rides in the GEMM as one more weight column against a row of ones; an
untied bias (O, OH, OW) is added to each chunk's GEMM output before the reduction (to the
whole output in conv2d_forward).

Which path runs when (backward, conv2d_backward and conv2d_maxout_backward): the first
that _backward_path finds, in this order:

  small padded maps (use_small(..., backward=True): output >= 1.4x the   dx CNHW
  input's positions): gather dz, GEMMs over the input's positions (conv_small)
  stride 1, kh*kw >= 25, min(C, O) >= 32, OH*OW >= 36: FFT, one complex   dx CNHW
  GEMM per frequency for each of dx, dw (conv_fft.fft_conv_backward)
  stride-1 3x3, use_winograd (the forward's rule):                       dx CNHW
  Winograd F(2x2, 3x3) (conv_winograd.wino_backward: dx the exact adjoint,
  dw from the recomputed V)
  the rest: im2col and two GEMMs per chunk (conv2d_backward's docstring)  dx CNHW

conv2d_maxout_backward makes each chunk of dz from dy and the maxout (+ pool) arg
(pool.mo_bwd_chunk_k) right before that chunk's GEMMs (measured: tuning.py, beside
SMALL_MIN_M) on the small and im2col paths; the FFT and Winograd paths (which transform the
whole dz) and untied biases run the composition.
Every threshold is in tuning.py with its measurement; every path is held to
kernels.reference by tests/kernels (test_reference_vs_cpu.py, test_conv_maxout_fused.py,
test_conv_fft.py).
"""
from __future__ import annotations

import numpy as np

from ..shapes import Spec, check, check_pieces, conv_out, geometry, pool_out
from . import runtime, tuning
from .conv_fft import fft_conv_backward, fft_conv_rows, use_fft, use_fft_backward
from .conv_small import small_backward, small_chunks, use_small
from .conv_winograd import use_winograd, use_winograd_rows, wino_backward, wino_rows_chunks
from .layouts import as_cfirst, canon, from_rows, is_nhwc, nhwc_rows, rows_in, rows_to_cnhw_k, uncanon
from .norm import bn_affine
from .patches import chunk, col2im_k, im2col_k, im2row_k, no_pre
from .pool import maxout_backward, maxout_into_k, maxout_pool_backward, mo_bwd_chunk_k, mo_rows_k, mopool_into_k
from .runtime import parallel, single_blas


def conv2d_forward(x, w, b, stride=1, pad=0):
    """y[n, o] = sum_c x[n, c] (*) w[o, c] + b[o] (cross-correlation; x (N, C, H, W), w (O, C,
    kh, kw); b None, tied (O,) or untied (O, OH, OW): y[n, o, i, j] += b[o, i, j]) -> y (N, O,
    OH, OW) in CNHW layout. By GEMMs per chunk of
    samples (_conv_chunks): W @ im2col(x), or for thin layers (_use_rows) the rows
    orientation im2row(x) @ W^T transposed back."""
    return _conv_forward("conv2d_forward", x, w, b, stride, pad)


def conv2d_backward(dy, x, w, stride=1, pad=0, need_dx=True, untied_bias=False):
    """The adjoint of conv2d_forward -> (dx | None, dw, db): per chunk of samples,
    dW^T += cols @ dY^T (cols = im2col(x) with a row of ones under it, so the tied db (O,)
    comes out of the same GEMM as its last row; ``untied_bias``: db (O, OH, OW) = dY summed
    over the samples) and dx = col2im(W^T @ dY) (in CNHW layout). Each worker
    sums its chunks' dW, then the workers' sums are added. Small padded maps, large kernels
    over many maps and stride-1 3x3 convs take their own paths (_backward_path)."""
    fn = "conv2d_backward"
    d, dt = check(fn, [Spec("x", x, ("N", "C", "H", "W")), Spec("w", w, ("O", "C", "kh", "kw")),
                        Spec("dy", dy, ("N", "O", "OH", "OW"))])
    n, c, h, wd, o, kh, kw = d["N"], d["C"], d["H"], d["W"], d["O"], d["kh"], d["kw"]
    _, _, sh, sw, ph, pw = geometry(fn, (kh, kw), stride, pad)
    oh, ow = conv_out(fn, h, wd, kh, kw, sh, sw, ph, pw)
    if (d["OH"], d["OW"]) != (oh, ow):
        raise ValueError(f"{fn}: dy must have shape {(n, o, oh, ow)} for x {x.shape}, w {w.shape}, "
                         f"stride {(sh, sw)}, pad {(ph, pw)}; got {dy.shape}")
    path = _backward_path(c, o, h, wd, kh, kw, (sh, sw), (ph, pw), oh, ow, need_dx)
    if path == "fft":   # large kernels, many maps
        return fft_conv_backward(dy, x, w, (ph, pw), need_dx, untied_bias)
    dyc = as_cfirst(dy)
    if path == "winograd":   # stride-1 3x3
        dx, dw, db = wino_backward(dyc.reshape(o, n, oh, ow), x, w, (ph, pw), need_dx)
        # untied: db (O, OH, OW) = dy summed over the samples (the tied db is its sum over positions)
        return dx, dw, dyc.sum(axis=1).reshape(o, oh, ow) if untied_bias else db
    return _conv_backward(lambda n0, m, _buf: dyc[:, n0:n0 + m], dyc, x, w, (sh, sw), (ph, pw), oh, ow, need_dx,
                          untied_bias)


def _backward_path(c, o, h, w, kh, kw, stride, pad, oh, ow, need_dx):
    """The backward's one rule: "small", "fft", "winograd" or "im2col" (the module
    docstring's table). Small padded maps first: that path beat the FFT on mnist-teacher h2
    (tuning.SMALL_BWD_MIN_GROWTH) and Winograd on mnist-fitnet h4 (tuning.WINO_MIN_C)."""
    if use_small(h, w, kh, kw, stride, pad, backward=True):
        return "small"
    if use_fft_backward(c, o, kh, kw, stride, oh, ow, need_dx):
        return "fft"
    if use_winograd(c, o, kh, kw, stride, oh, ow):
        return "winograd"
    return "im2col"


def _conv_backward(dz_of, dyc, x, w, stride, pad, oh, ow, need_dx, untied_bias, dz_buf=False):
    """conv2d_backward on checked arguments; chunk n0..n0+m-1 of dz (O, m, OH*OW) is
    dz_of(n0, m, buf): a view of dy's CNHW buffer dyc, or (``dz_buf``) written into a
    per-thread buffer buf (O, nb, OH*OW) by the fused maxout backward (dyc then None:
    untied biases need the whole dz). The small-maps and im2col paths."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, pad
    dt = x.dtype
    p = oh * ow
    k = c * kh * kw
    kb = k + 1  # a row of ones under the columns: the dw GEMM also yields db
    if use_small(h, wd, kh, kw, (sh, sw), (ph, pw), backward=True):   # small padded maps
        return small_backward(dz_of, x, w, (ph, pw), oh, ow, need_dx, untied_bias, dyc, dz_buf)
    xb, xcf = canon(x)
    w2t = np.ascontiguousarray(w.reshape(o, k)).T
    nb = chunk(n, kb, p, runtime.GEMM_THREADS)
    dxb = np.empty((c, n, h, wd), dtype=dt) if need_dx else None
    # dw sums over every chunk of samples. A fixed order, whatever the thread scheduling:
    # group g (one per GEMM thread) adds its contiguous run of chunks in order into acc[g],
    # then the groups are added in order (per-worker accumulators fed by dynamically
    # scheduled chunks made the weights of two equal runs differ).
    chunks = -(-n // nb)
    groups = min(runtime.GEMM_THREADS, chunks)
    acc = [None] * groups

    def task(g, _w):
        cols = np.empty((kb, nb, p), dtype=dt)
        cols[k] = 1
        buf = np.empty((o, nb, p), dtype=dt) if dz_buf else None
        tmp = None
        for i in range(chunks * g // groups, chunks * (g + 1) // groups):
            n0 = i * nb
            m = min(nb, n - n0)
            im2col_k(xb, xcf, n0, m, 0, c, kh, kw, sh, sw, ph, pw, oh, ow, cols, True, *no_pre(dt))
            c2 = cols.reshape(kb, nb * p)[:, :m * p]
            dyk = dz_of(n0, m, buf).reshape(o, m * p)
            # dw^T (kb, O) = cols @ dy^T: faster than dy @ cols^T for the small O of thin nets
            if acc[g] is None:
                acc[g] = np.matmul(c2, dyk.T)
                tmp = np.empty_like(acc[g])
            else:
                np.matmul(c2, dyk.T, out=tmp)
                acc[g] += tmp
            if need_dx:
                np.matmul(w2t, dyk, out=c2[:k])  # the columns are dead: reuse the buffer
                col2im_k(cols, True, n0, m, kh, kw, sh, sw, ph, pw, oh, ow, dxb, True)

    with single_blas():
        parallel(task, groups, runtime.GEMM_THREADS)
    total = acc[0]
    for a in acc[1:]:
        total = total + a
    dx = dxb.swapaxes(0, 1) if need_dx else None
    # untied: db (O, OH, OW) = dy summed over the samples (the tied db is its sum over positions)
    db = dyc.sum(axis=1).reshape(o, oh, ow) if untied_bias else total[k].copy()
    return dx, np.ascontiguousarray(total[:k].T).reshape(w.shape), db


def conv2d_maxout_backward(dy, arg, x, w, stride, pad, pieces, pool=None, pool_stride=None, ceil_mode=True,
                           need_dx=True, untied_bias=False):
    """The backward of conv2d_maxout_forward: conv2d_backward(dz, x, w, ...) of dz =
    maxout_backward(dy, arg, pieces) (``pool`` None) or maxout_pool_backward(dy, arg,
    z_shape, pieces), fused: each chunk of dz is written where the conv backward's GEMMs
    read it, in cache (dz is never stored whole). dy, arg (N, O/pieces, YH, YW) -> (dx |
    None, dw, db) as conv2d_backward's. Untied biases (whose db sums the whole dz) run the
    composition."""
    fn = "conv2d_maxout_backward"
    d, dt, stride, pad, oh, ow = _conv_geometry(fn, x, w, None, stride, pad)
    n, o = d["N"], d["O"]
    pieces = check_pieces(fn, pieces, o)
    if pool is not None:
        pkh, pkw, psh, psw, _, _ = geometry(fn, pool, pool if pool_stride is None else pool_stride)
        yh, yw = pool_out(fn, oh, ow, pkh, pkw, psh, psw, ceil_mode)
    else:
        yh, yw = oh, ow
    d2, _ = check(fn, [Spec("dy", dy, (n, o // pieces, yh, yw)), Spec("x", x, ("N", "C", "H", "W")),
                       Spec("arg", arg, (n, o // pieces, yh, yw), "int")])
    if untied_bias or _backward_path(d["C"], o, d["H"], d["W"], d["kh"], d["kw"], stride, pad, oh, ow,
                                     need_dx) in ("fft", "winograd"):   # (these transform the whole dz)
        dz = maxout_backward(dy, arg, pieces) if pool is None else \
            maxout_pool_backward(dy, arg, (n, o, oh, ow), pieces)
        return conv2d_backward(dz, x, w, stride, pad, need_dx, untied_bias)
    arg = arg.astype(np.int32 if pool is not None else np.uint8, copy=False)
    if pool is not None and arg.size and (arg.min() < 0 or arg.max() >= pieces * oh * ow):  # unchecked scatter
        raise ValueError(f"{fn}: arg holds indices outside [0, {pieces * oh * ow}) for the conv output "
                         f"{(n, o, oh, ow)}: not the arg of a forward on that shape")
    gb, ab = as_cfirst(dy), as_cfirst(arg)
    usepool = pool is not None

    def dz_of(n0, m, buf):
        z = buf[:, :m]
        mo_bwd_chunk_k(gb, ab, pieces, usepool, oh * ow, n0, z)
        return z
    return _conv_backward(dz_of, None, x, w, stride, pad, oh, ow, need_dx, False, dz_buf=True)


# ------------------------------------------------------------------ the forward GEMMs
def _conv_geometry(fn, x, w, b, stride, pad):
    """Checked conv arguments -> (dims d, dtype, (sh, sw), (ph, pw), oh, ow). The bias b is
    None, tied (O,) or untied (O, OH, OW)."""
    specs = [Spec("x", x, ("N", "C", "H", "W")), Spec("w", w, ("O", "C", "kh", "kw"))]
    d, dt = check(fn, specs)
    _, _, sh, sw, ph, pw = geometry(fn, (d["kh"], d["kw"]), stride, pad)
    oh, ow = conv_out(fn, d["H"], d["W"], d["kh"], d["kw"], sh, sw, ph, pw)
    if b is not None:
        pat = ("O",) if getattr(b, "ndim", 1) == 1 else ("O", oh, ow)
        check(fn, specs + [Spec("b (tied (O,) or untied (O, OH, OW))", b, pat)])
    return d, dt, (sh, sw), (ph, pw), oh, ow


def _untied(b):
    """True for an untied bias (O, OH, OW): one bias per output position, added to the GEMM
    output (the tied bias rides in the GEMM as a column against ones)."""
    return b is not None and b.ndim == 3


def _conv_forward(fn, x, w, b, stride, pad, pre=None, residual=None, channels_last=False):
    d, dt, stride, pad, oh, ow = _conv_geometry(fn, x, w, b, stride, pad)
    n, o = d["N"], d["O"]
    p = oh * ow
    if _untied(b):   # y = conv(x, w) + b[None]: rare (pieces = 1, no pool), so not fused
        y = _conv_forward(fn, x, w, None, stride, pad, pre, residual, channels_last)
        y += b[None]
        return y
    if residual is not None:  # (x beside it: the check also holds residual to x's dtype)
        check(fn, [Spec("residual", residual, (n, o, oh, ow)), Spec("x", x, ("N", "C", "H", "W"))])
    if channels_last:   # (bn_relu_conv2d_forward: evaluation, pre set) NHWC rows out
        yr = np.empty((n * p, o), dtype=dt)
        res = None if residual is None else nhwc_rows(residual)

        def add_residual(z, n0):   # the residual is added to each chunk's rows in place
            if res is not None:
                r0, r1 = n0 * p, (n0 + z.shape[1]) * p
                np.add(yr[r0:r1], res[r0:r1], out=yr[r0:r1])
        if use_winograd_rows(d["C"], o, d["kh"], d["kw"], stride, oh, ow):
            wino_rows_chunks(x, w, b, pad, oh, ow, add_residual, pre, rows_out=yr)
        else:
            _conv_chunks(x, w, b, stride, pad, oh, ow, dt, add_residual, pre, True, rows_out=yr)
        return from_rows(yr, n, oh, ow)
    assert pre is None and residual is None   # (only the channels_last caller passes them)
    # small padded maps first; then Winograd where the rule says
    small = use_small(d["H"], d["W"], d["kh"], d["kw"], stride, pad)
    wino = not small and use_winograd(d["C"], o, d["kh"], d["kw"], stride, oh, ow)
    y = np.empty((o, n * p), dtype=dt)
    # (Winograd hands over NHWC rows too)
    rows = wino or (not small and (_use_rows(d["C"], o, d["kh"], d["kw"]) or is_nhwc(x)))

    def store(z, n0):  # z (O, m, P), a view of the chunk's GEMM output
        if rows:   # z = zt.T: transpose back in 16x16 tiles
            rows_to_cnhw_k(z.reshape(o, -1).T, n0 * p, y, y[:, :0])
        else:
            y[:, n0 * p:(n0 + z.shape[1]) * p] = z.reshape(o, -1)
    if small:
        small_chunks(x, w, b, pad, oh, ow, dt, store)
    elif wino:
        wino_rows_chunks(x, w, b, pad, oh, ow, store)
    else:
        _conv_chunks(x, w, b, stride, pad, oh, ow, dt, store, None, rows)
    return y.reshape(o, n, oh, ow).swapaxes(0, 1)


def _use_rows(c, o, kh, kw):
    # not for 1x1 convs (the rows would cost a transposing copy of x) nor for few input maps
    # (a patch is kh*kw runs of C values: C = 1 made the copy 5x slower than im2col's)
    return o <= tuning.ROWS_MAX_O and kh * kw > 1 and c >= tuning.ROWS_MIN_C


def _conv_chunks(x, w, b, stride, pad, oh, ow, dt, consume, pre=None, rows=False, contiguous=False,
                 rows_out=None):
    """The forward GEMMs of a convolution, per chunk of samples sized to stay in L2, over
    the thread pool: consume(z, n0) gets each chunk's output z (O, m, OH*OW) (a view, valid
    only during the call) while it is in cache. Either z = W2 @ cols (im2col, k order
    (c, i, j)) or, with ``rows``, z = (rows @ W2^T).T (im2row, k order (i, j, c): then z is
    a transposed view, or with ``contiguous`` a C-ordered copy made in 16x16 tiles; with
    ``rows_out``, an (N*OH*OW, O) array, the GEMM writes the chunk's rows of it and z views
    them). The bias rides in the GEMM as one more weight column against ones."""
    pre = no_pre(dt) if pre is None else pre
    n, c = x.shape[0], x.shape[1]
    o, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, pad
    p = oh * ow
    k = c * kh * kw
    xb, lay = rows_in(x) if rows else canon(x)
    w2 = (w.transpose(0, 2, 3, 1) if rows else w).reshape(o, k)
    kb = k
    if b is not None:
        w2 = np.concatenate([w2, b.reshape(o, 1)], axis=1)
        kb = k + 1
    w2 = np.ascontiguousarray(w2.T if rows else w2)
    nb = chunk(n, kb, p, runtime.GEMM_THREADS, tuning.CHUNK_ELEMS // 4)
    if rows and k >= tuning.ROWS_LONG_K and nb * p < tuning.ROWS_MIN_M:
        nb = max(nb, min(-(-tuning.ROWS_MIN_M // p), -(-n // runtime.GEMM_THREADS), tuning.KSPLIT_ELEMS // (kb * p)))
    blocks = [(0, c)]   # im2col: input-map ranges whose columns meet one GEMM each
    if not rows and k >= tuning.KSPLIT_MIN_K and nb * p < tuning.KSPLIT_COLS:
        nb = min(-(-tuning.KSPLIT_COLS // p), -(-n // runtime.GEMM_THREADS))
        kc = max(1, tuning.KSPLIT_ELEMS // (kh * kw * nb * p))
        blocks = [(c0, min(c, c0 + kc)) for c0 in range(0, c, kc)]
        # each block's weights (the bias column rides with the last block), contiguous
        wblk = [np.ascontiguousarray(np.concatenate([w2[:, c0 * kh * kw:c1 * kh * kw], w2[:, k:]], axis=1)
                                     if c1 == c else w2[:, c0 * kh * kw:c1 * kh * kw]) for c0, c1 in blocks]
    rb = (blocks[0][1] - blocks[0][0]) * kh * kw + (kb - k)   # rows of one column buffer
    bufs = {}

    def task(i, wid):
        got = bufs.get(wid)
        if got is None:
            cols = np.empty((nb * p, kb) if rows else (rb, nb, p), dtype=dt)
            if kb > k and rows:  # the ones beside (under) the patches that meet the bias
                cols[:, k] = 1
            got = bufs[wid] = (cols, np.empty(o * nb * p, dtype=dt) if rows_out is None else None,
                               np.empty(o * nb * p, dtype=dt) if (rows and contiguous) or len(blocks) > 1 else None)
        cols, zf, zc = got
        n0 = i * nb
        m = min(nb, n - n0)
        if rows:
            im2row_k(xb, lay, n0, m, kh, kw, sh, sw, ph, pw, oh, ow, cols, *pre)
            zt = zf[:m * p * o].reshape(m * p, o) if rows_out is None else rows_out[n0 * p:(n0 + m) * p]
            np.matmul(cols[:m * p], w2, out=zt)
            if contiguous:
                z = zc[:o * m * p].reshape(o, m * p)
                rows_to_cnhw_k(zt, 0, z, z[:, :0])
                z = z.reshape(o, m, p)
            else:
                z = zt.T.reshape(o, m, p)
        else:
            z = zf[:o * m * p].reshape(o, m * p)
            for j, (c0, c1) in enumerate(blocks):
                r = (c1 - c0) * kh * kw
                im2col_k(xb, lay, n0, m, c0, c1, kh, kw, sh, sw, ph, pw, oh, ow, cols, True, *pre)
                if c1 == c and kb > k:
                    cols[r] = 1
                    r += 1
                cb = cols.reshape(rb, nb * p)[:r, :m * p]
                if len(blocks) == 1:
                    np.matmul(w2, cb, out=z)
                elif j == 0:
                    np.matmul(wblk[0], cb, out=z)
                else:   # accumulate the block's product (numpy's matmul has no beta = 1)
                    t = zc[:o * m * p].reshape(o, m * p)
                    np.matmul(wblk[j], cb, out=t)
                    z += t
            z = z.reshape(o, m, p)
        consume(z, n0)

    with single_blas():
        parallel(task, -(-n // nb), runtime.GEMM_THREADS)


# ------------------------------------------------------------------ fused forwards
def bn_relu_conv2d_forward(x, gamma, beta, running_mean, running_var, eps, w, b, stride=1, pad=0,
                           residual=None):
    """conv2d_forward(relu(batch_norm_inference(x, ...)), w, b) (+ residual): the affine map
    and the ReLU are applied while im2row reads x, so the activated map is never stored; the
    residual is added to each chunk of the output while it is in cache. The output is
    channels-last (an (N, O, OH, OW) view of an (N, OH, OW, O) buffer): the GEMM writes it
    as it comes, and the next bn_relu_conv2d_forward reads it without a transpose."""
    fn = "bn_relu_conv2d_forward"
    scale, shift = bn_affine(fn, Spec("x", x, ("N", "C", "H", "W")), gamma, beta, running_mean, running_var, eps)
    return _conv_forward(fn, x, w, b, stride, pad, (True, scale, shift), residual, channels_last=True)


def conv2d_maxout_forward(x, w, b, stride, pad, pieces, pool=None, pool_stride=None, ceil_mode=True,
                          channels_last=False):
    """conv2d_forward followed by maxout_forward (``pool`` None) or maxout_pool_forward,
    fused per batch chunk: each chunk's GEMM output is reduced while it is in cache, so the
    whole conv output is never stored. Returns exactly what the composition returns:
    (y, arg), with the same arg encodings, in CNHW layout; with ``channels_last`` (for
    callers that will not run the backward pass, whose kernels expect CNHW) in NHWC
    layout when the rows orientation applies (C >= 8 input maps, or an NHWC x, and at most
    tuning.NHWC_MAX_O conv maps) or the NHWC-rows Winograd does (use_winograd_rows). Large
    kernels over many maps (use_fft) take the FFT convolution, then the same NHWC
    reduction; stride-1 3x3 kernels Winograd F(2x2, 3x3) (use_winograd), its NHWC rows
    reduced as they are (channels_last) or transposed per chunk for the CNHW reduction."""
    fn = "conv2d_maxout_forward"
    d, dt, stride, pad, oh, ow = _conv_geometry(fn, x, w, b, stride, pad)
    n, o, kh, kw = d["N"], d["O"], d["kh"], d["kw"]
    pieces = check_pieces(fn, pieces, o)
    cy = o // pieces
    if pool is not None:
        pkh, pkw, psh, psw, _, _ = geometry(fn, pool, pool if pool_stride is None else pool_stride)
        yh, yw = pool_out(fn, oh, ow, pkh, pkw, psh, psw, ceil_mode)
        arg_dt = np.int32
    else:
        pkh = pkw = psh = psw = 1
        yh, yw = oh, ow
        arg_dt = np.uint8
    # small padded maps first: their path beat the FFT's on mnist-teacher h2 (tuning.SMALL_*)
    small = use_small(d["H"], d["W"], kh, kw, stride, pad)   # (CNHW reduction below)
    fft = not small and use_fft(d["C"], kh, kw, stride, oh, ow, channels_last)
    wino = not small and use_winograd(d["C"], o, kh, kw, stride, oh, ow)
    wino_rows = channels_last and not small and use_winograd_rows(d["C"], o, kh, kw, stride, oh, ow)
    if fft or wino_rows or (channels_last and not small and o <= tuning.NHWC_MAX_O
                            and (d["C"] >= tuning.ROWS_MIN_C or is_nhwc(x))):
        # NHWC rows of conv output, their columns in piece-major order (q*cy + c), so that
        # a position's pieces of all maps are contiguous runs: the maxout is then a
        # vectorised select
        perm = np.arange(o).reshape(cy, pieces).T.reshape(-1)
        wp, bp = w[perm], None if b is None else b[perm]
        y = np.empty((n * yh * yw, cy), dtype=dt)
        arg = np.empty((n * yh * yw, cy), dtype=arg_dt)
        # an untied bias is added to each chunk's rows: (OH*OW, O) in the rows' column order
        bu = np.ascontiguousarray(bp.reshape(o, oh * ow).T) if _untied(b) else None
        bp = None if _untied(b) else bp

        def reduce_rows(z, n0):   # z: the NHWC rows of samples n0..n0+m-1
            if not fft:   # (a transposed view of a GEMM chunk, on a pool thread)
                z = z.reshape(o, -1).T
            if bu is not None:
                z3 = z.reshape(-1, oh * ow, o)   # (a view: z's rows are whole samples)
                z3 += bu
            m = z.shape[0] // (oh * ow)
            part = -(-m // runtime.NT) if fft else m   # an FFT chunk's rows are split over the threads
            parallel(lambda i, _w: mo_rows_k(z[i * part * oh * ow:(i + 1) * part * oh * ow], pieces, oh, ow,
                                               pkh, pkw, psh, psw, yh, yw, pool is not None, n0 + i * part,
                                               y, arg), -(-m // part))
        if fft:
            fft_conv_rows(x, wp, bp, pad, oh, ow, reduce_rows)
        elif wino_rows:
            # the maxout (+ pool) made by the output transform, one output row at a time
            # in L1, instead of whole rows z reduced by mo_rows_k: inference against that
            # (benchmarks/ab_paths.py --kinds infer, medians of 21, a temporary flag,
            # 2026-12-07, Intel Xeon 2 cores), wall / CPU clock: fitnet-1 1.03 / 1.02,
            # fitnet-4 1.04 / 1.03, mnist-fitnet 0.99 / 1.00 faster
            bmo = bu if bu is not None else (np.zeros(o, dt) if bp is None else bp).reshape(1, o)
            wino_rows_chunks(x, wp, None, pad, oh, ow, None,
                             maxout=(pieces, None if pool is None else (pkh, pkw, psh, psw, yh, yw), y, arg,
                                     np.ascontiguousarray(bmo), int(bu is not None)))
        else:
            _conv_chunks(x, wp, bp, stride, pad, oh, ow, dt, reduce_rows, rows=True)
        y, arg = from_rows(y, n, yh, yw), from_rows(arg, n, yh, yw)
        if channels_last:
            return y, arg
        return tuple(uncanon(np.ascontiguousarray(a.swapaxes(0, 1)), True) for a in (y, arg))
    y = np.empty((cy, n, yh * yw), dtype=dt)
    arg = np.empty((cy, n, yh * yw), dtype=arg_dt)

    # (the maxout reductions read z along positions: in the rows orientation z is first
    # transposed in cache; on the transposed view they ran 1.5-5x slower)
    bu = b.reshape(o, 1, oh * ow) if _untied(b) else None

    def reduce(z, n0):
        if bu is not None:
            z += bu
        if pool is None:
            maxout_into_k(z, pieces, n0, y, arg)
        else:
            mopool_into_k(z, pieces, oh, ow, pkh, pkw, psh, psw, yh, yw, n0, y, arg)
    if small:
        small_chunks(x, w, None if bu is not None else b, pad, oh, ow, dt, reduce)
    elif wino:   # (an untied bias is added by reduce)
        wino_rows_chunks(x, w, None if bu is not None else b, pad, oh, ow, reduce, contiguous=True)
    else:
        _conv_chunks(x, w, None if bu is not None else b, stride, pad, oh, ow, dt, reduce,
                     rows=_use_rows(d["C"], o, kh, kw), contiguous=True)
    return (y.reshape(cy, n, yh, yw).swapaxes(0, 1), arg.reshape(cy, n, yh, yw).swapaxes(0, 1))
