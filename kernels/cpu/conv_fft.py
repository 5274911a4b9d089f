"""Convolution by FFT, for large kernels over many input maps: the forward (fft_conv_rows;
when: use_fft; why, and the measurements: tuning.FFT_MIN_TAPS) and the backward, both
gradients (fft_conv_backward; when: use_fft_backward, tuning.FFT_BWD_MIN_TAPS).

For a stride-1 cross-correlation y[a, b] = sum_ij x[a+i, b+j] w[i, j], DFT(y) =
DFT(x) conj(DFT(w)) on a grid of at least H+2ph x W+2pw (no wrap-around reaches a valid
output), so the sum over input maps becomes one complex GEMM per frequency:
(N x C) @ (C x O). Used by conv.conv2d_maxout_forward, whose maxout / pool reduction then
reads the NHWC rows this returns.

The backward is the adjoint on the same grid: dx_pad = dy (*) w (a full convolution: DFT
DY W) and dw[i, j] = sum_ab x_pad[a+i, b+j] dy[a, b] (a correlation: DFT X conj(DY)), one
complex GEMM per frequency each. Both conjugations are avoided by transforming dy
flipped (dyr[s0 - a] = dy[a], s0 = (OH-1, OW-1)): DFT(dyr) = conj(DY) e^{-i theta.s0}, so
DYR conj(W) is the (shifted) transform of dx flipped and X DYR that of dw shifted by s0,
and the forward's conj(DFT(w)) serves as it is.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from . import runtime, tuning
from .layouts import as_cfirst
from .runtime import parallel, single_blas


def use_fft(c, kh, kw, stride, oh, ow, channels_last=False):
    """True when a conv of c input maps, kernel (kh, kw), output (oh, ow) goes by FFT
    (``channels_last``: an evaluation pass's conv2d_maxout_forward, whose other path, the
    rows GEMM, is faster on small outputs: tuning.FFT_MIN_P_NHWC)."""
    min_p = tuning.FFT_MIN_P_NHWC if channels_last else tuning.FFT_MIN_P
    return (tuple(stride) == (1, 1) and kh * kw >= tuning.FFT_MIN_TAPS and c >= tuning.FFT_MIN_C
            and oh * ow >= min_p)


def use_fft_backward(c, o, kh, kw, stride, oh, ow, need_dx):
    """True when conv2d_backward of a conv of c input maps, o output maps, kernel (kh, kw),
    output (oh, ow) goes by FFT (fft_conv_backward)."""
    # (the transforms cost ~ (C + O) per frequency, the GEMMs they replace ~ C*O*taps:
    # few maps on either side, and the transforms dominate)
    return (tuple(stride) == (1, 1) and kh * kw >= tuning.FFT_BWD_MIN_TAPS
            and min(c, o) >= tuning.FFT_BWD_MIN_C and oh * ow >= tuning.FFT_BWD_MIN_P)


def _grid(h, wd, ph, pw):
    """The transform grid of an (h, wd) input padded by (ph, pw): (fh, fw, fw//2+1, nf =
    fh*(fw//2+1) frequencies of the real-input transform)."""
    fh = scipy.fft.next_fast_len(h + 2 * ph, real=True)
    fw = scipy.fft.next_fast_len(wd + 2 * pw, real=True)
    f2 = fw // 2 + 1
    return fh, fw, f2, fh * f2


def _weight_spectra(w, fh, fw, axes):
    """conj(DFT(w)) on the (fh, fw) grid of w (O, C, kh, kw) transposed by ``axes`` (whose
    first two are the taps 2, 3) -> (nf, A, B) for the other two axes (A, B), C-ordered."""
    # the kernel's zero rows need no transform: rfft along kw (zero-padded to fw), then
    # fft along kh (zero-padded to fh)
    wt = np.ascontiguousarray(w.transpose(axes))
    Wf = scipy.fft.fft(scipy.fft.rfft(wt, n=fw, axis=1, workers=runtime.NT), n=fh, axis=0,
                       workers=runtime.NT)
    Wf = Wf.reshape(-1, wt.shape[2], wt.shape[3])
    np.conjugate(Wf, out=Wf)
    return Wf


def _spectra(a, fh, fw, block=None):
    """The real-input DFT on the (fh, fw) grid of a (r, s, m, k) (r <= fh, s <= fw, placed at
    the grid's origin, zeros elsewhere) along its first two axes -> (fh, fw//2+1, m, k).
    The zero rows need no transform: rfft along axis 1 (zero-padded to fw) over the r
    rows, then fft along axis 0 (zero-padded to fh). With ``block``, in blocks of that
    many along axis 2, so that the intermediates (the contiguous copy of a, the half
    transform, the padded input of the second stage) are a block's, not the whole's."""
    m, k = a.shape[2:]
    if block is None or block >= m:
        a = np.ascontiguousarray(a)
        return scipy.fft.fft(scipy.fft.rfft(a, n=fw, axis=1, workers=runtime.NT), n=fh, axis=0,
                             workers=runtime.NT)
    out = None
    for b0 in range(0, m, block):
        t = scipy.fft.rfft(np.ascontiguousarray(a[:, :, b0:b0 + block]), n=fw, axis=1, workers=runtime.NT)
        t = scipy.fft.fft(t, n=fh, axis=0, workers=runtime.NT, overwrite_x=True)
        if out is None:
            out = np.empty((fh, fw // 2 + 1, m, k), dtype=t.dtype)
        out[:, :, b0:b0 + block] = t
    return out


def _inverse_rows(S, idx):
    """The inverse DFT along axis 0 of S (fh, ...), only at the rows idx -> (len(idx), ...):
    one GEMM by the (len(idx), fh) rows of the inverse DFT matrix (a full ifft would
    write all fh rows: for dw's spectra, 3x the memory of the kh rows kept)."""
    fh = S.shape[0]
    # (the index products reduced mod fh first: the angles stay below 2 pi, so the
    # twiddles are exact to float64 rounding, whatever the grid)
    E = (np.exp(2j * np.pi * (np.outer(idx, np.arange(fh)) % fh) / fh) / fh).astype(S.dtype)
    S2 = S.reshape(fh, -1)
    out = np.empty((len(idx), S2.shape[1]), dtype=S.dtype)
    parts = runtime.GEMM_THREADS

    # column blocks over the pool, BLAS at one thread: a threaded OpenBLAS call here left
    # its threads spinning into the transforms and the maxout reduction that follow (as
    # dense.gemm's docstring says of every GEMM). Measured 2026-12-05 (Intel Xeon, 2 cores,
    # batch 128, medians, separate processes): mnist-teacher h1's evaluation forward (48 ->
    # 96 maps of 10x10, 8x8 pad 3) 20.2-20.6 -> 13.1-13.2 ms; whole mnist-teacher training
    # step 114.7 -> 73.0 ms, inference 37.9 -> 25.6; cifar-teacher 1174 -> 1084 / 454 -> 417.
    def task(i, _w):
        c0, c1 = S2.shape[1] * i // parts, S2.shape[1] * (i + 1) // parts
        np.matmul(E, S2[:, c0:c1], out=out[:, c0:c1])
    with single_blas():
        parallel(task, parts, runtime.GEMM_THREADS)
    return out.reshape((len(idx),) + S.shape[1:])


def fft_conv_rows(x, w, b, pad, oh, ow, consume):
    """conv2d_forward(x, w, b, 1, pad) by FFT, per chunk of up to tuning.FFT_CHUNK samples:
    consume(z, n0) gets the chunk's NHWC rows z (m*oh*ow, O). The transforms run along
    the two spatial axes of (H, W, N, C) / (kh, kw, C, O) arrays, so every frequency's
    (N, C) and (C, O) matrices are contiguous for the GEMMs; the chunks bound the spectra's
    memory (evaluation passes use batches of 500)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ph, pw = pad
    fh, fw, f2, nf = _grid(h, wd, ph, pw)
    Wf = _weight_spectra(w, fh, fw, (2, 3, 1, 0))   # (nf, C, O)
    parts = 4 * runtime.GEMM_THREADS
    for n0 in range(0, n, tuning.FFT_CHUNK):
        m = min(tuning.FFT_CHUNK, n - n0)
        xp = np.zeros((fh, fw, m, c), dtype=x.dtype)
        xp[ph:ph + h, pw:pw + wd] = x[n0:n0 + m].transpose(2, 3, 0, 1)
        X = scipy.fft.rfftn(xp, axes=(0, 1), workers=runtime.NT).reshape(nf, m, c)
        del xp
        Y = np.empty((nf, m, o), dtype=X.dtype)

        def task(i, _w, X=X, Y=Y):
            f0, f1 = nf * i // parts, nf * (i + 1) // parts
            np.matmul(X[f0:f1], Wf[f0:f1], out=Y[f0:f1])
        with single_blas():
            parallel(task, parts, runtime.GEMM_THREADS)
        del task, X   # (the spectra are large: free them before the inverse)
        # inverse: along fh only at the oh valid rows, then along fw
        Z = _inverse_rows(Y.reshape(fh, f2, m, o), np.arange(oh))
        del Y
        zz = scipy.fft.irfft(Z, n=fw, axis=1, workers=runtime.NT)[:, :ow]   # (oh, ow, m, o)
        del Z
        z = np.ascontiguousarray(zz.transpose(2, 0, 1, 3)).reshape(m * oh * ow, o)
        if b is not None:
            z += b
        consume(z, n0)


def fft_conv_backward(dy, x, w, pad, need_dx=True, untied_bias=False):
    """conv2d_backward(dy, x, w, 1, pad, need_dx, untied_bias) by FFT -> (dx | None, dw, db):
    dy (N, O, OH, OW), x (N, C, H, W) in any layout, w (O, C, kh, kw); dx (N, C, H, W) in
    CNHW layout. Per frequency f of the (fh, fw) grid and chunk of up to tuning.FFT_CHUNK
    samples (the module docstring for the flip of dy):
        DX[f] (m, C) = DYR[f] (m, O) @ conj(W)[f] (O, C)   -> inverse, flipped, cropped: dx
        DW[f] (C, O) += X[f]^T (C, m) @ DYR[f] (m, O)       -> inverse, taps s0 .. s0+k-1: dw
    The DW spectra add up over the chunks in chunk order (each frequency's sum is done by
    one thread: two equal calls give equal bits). db: dy summed over N, OH, OW (tied) or
    over N (untied, (O, OH, OW))."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    _, _, oh, ow = dy.shape
    ph, pw = pad
    dt = x.dtype
    fh, fw, f2, nf = _grid(h, wd, ph, pw)
    # x is transformed unpadded, at the grid's origin: its transform is the padded one
    # times e^{i theta.(ph, pw)}, so dw's taps start at s0 - (ph, pw) (mod the grid), and
    # dx_pad[t] = g[(s0 - t) mod fh] (g: the inverse of DYR conj(W)), cropped to t = ph ..
    # ph+H-1
    s0h, s0w = oh - 1, ow - 1
    taps_h, taps_w = (s0h - ph + np.arange(kh)) % fh, (s0w - pw + np.arange(kw)) % fw
    rows, cols = (s0h - ph - np.arange(h)) % fh, (s0w - pw - np.arange(wd)) % fw
    Wf = None
    dxb = np.empty((c, n, h, wd), dtype=dt) if need_dx else None
    DW = dw = None
    parts = 4 * runtime.GEMM_THREADS
    # the order bounds the spectra held at once (cifar-teacher h1: X 31 MB, DYR 123, DW and
    # conj(W) 92 each, DX 31): dW's GEMM, X freed, (after the last chunk) dw's inverse and
    # DW freed, then conj(W) and dx's GEMM
    for n0 in range(0, n, tuning.FFT_CHUNK):
        m = min(tuning.FFT_CHUNK, n - n0)
        X = _spectra(x[n0:n0 + m].transpose(2, 3, 0, 1), fh, fw, tuning.FFT_BLOCK).reshape(nf, m, c)
        DYR = _spectra(dy[n0:n0 + m, :, ::-1, ::-1].transpose(2, 3, 0, 1), fh, fw,
                       tuning.FFT_BLOCK).reshape(nf, m, o)
        first = DW is None
        if first:
            DW = np.empty((nf, c, o), dtype=X.dtype)
        else:
            tmp = np.empty_like(DW)

        def dw_task(i, _w, X=X, DYR=DYR, first=first):
            f0, f1 = nf * i // parts, nf * (i + 1) // parts
            xt = X[f0:f1].transpose(0, 2, 1)
            if first:
                np.matmul(xt, DYR[f0:f1], out=DW[f0:f1])
            else:
                np.matmul(xt, DYR[f0:f1], out=tmp[f0:f1])
                DW[f0:f1] += tmp[f0:f1]
        with single_blas():
            parallel(dw_task, parts, runtime.GEMM_THREADS)
        del dw_task, X
        if not first:
            del tmp
        if n0 + m == n:
            # inverse: along fh only at the kh rows of the taps, then along fw
            G = _inverse_rows(DW.reshape(fh, f2, c, o), taps_h)
            DW = None
            g = scipy.fft.irfft(G, n=fw, axis=1, workers=runtime.NT)[:, taps_w]   # (kh, kw, C, O)
            dw = np.ascontiguousarray(g.transpose(3, 2, 0, 1))
            del G, g
        if not need_dx:
            continue
        if Wf is None:
            Wf = _weight_spectra(w, fh, fw, (2, 3, 0, 1))   # (nf, O, C)
        DX = np.empty((nf, m, c), dtype=DYR.dtype)

        def dx_task(i, _w, DYR=DYR, DX=DX):
            f0, f1 = nf * i // parts, nf * (i + 1) // parts
            np.matmul(DYR[f0:f1], Wf[f0:f1], out=DX[f0:f1])
        with single_blas():
            parallel(dx_task, parts, runtime.GEMM_THREADS)
        del dx_task, DYR
        # inverse: along fh only at the H rows dx reads, then along fw
        G = _inverse_rows(DX.reshape(fh, f2, m, c), rows)
        del DX
        g = scipy.fft.irfft(G, n=fw, axis=1, workers=runtime.NT)   # (H, fw, m, C)
        del G
        dxb[:, n0:n0 + m] = g[:, cols].transpose(3, 2, 0, 1)
        del g
    dyc = as_cfirst(dy).reshape(o, n, oh * ow)
    db = dyc.sum(axis=1).reshape(o, oh, ow) if untied_bias else dyc.reshape(o, -1).sum(axis=1)
    return (dxb.swapaxes(0, 1) if need_dx else None), dw, db.astype(dt, copy=False)
