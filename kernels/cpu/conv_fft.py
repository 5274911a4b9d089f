"""Convolution by FFT, for large kernels over many input maps (when: use_fft; why, and the
measurements: tuning.FFT_MIN_TAPS).

For a stride-1 cross-correlation y[a, b] = sum_ij x[a+i, b+j] w[i, j], DFT(y) =
DFT(x) conj(DFT(w)) on a grid of at least H+2ph x W+2pw (no wrap-around reaches a valid
output), so the sum over input maps becomes one complex GEMM per frequency:
(N x C) @ (C x O). Used by conv.conv2d_maxout_forward, whose maxout / pool reduction then
reads the NHWC rows this returns.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from . import runtime, tuning
from .runtime import parallel, single_blas


def use_fft(c, kh, kw, stride, oh, ow):
    """True when a conv of c input maps, kernel (kh, kw), output (oh, ow) goes by FFT."""
    return (tuple(stride) == (1, 1) and kh * kw >= tuning.FFT_MIN_TAPS and c >= tuning.FFT_MIN_C
            and oh * ow >= tuning.FFT_MIN_P)


def fft_conv_rows(x, w, b, pad, oh, ow, consume):
    """conv2d_forward(x, w, b, 1, pad) by FFT, per chunk of up to tuning.FFT_CHUNK samples:
    consume(z, n0) gets the chunk's NHWC rows z (m*oh*ow, O). The transforms run along
    the two spatial axes of (H, W, N, C) / (kh, kw, C, O) arrays, so every frequency's
    (N, C) and (C, O) matrices are contiguous for the GEMMs; the chunks bound the spectra's
    memory (evaluation passes use batches of 500)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ph, pw = pad
    fh = scipy.fft.next_fast_len(h + 2 * ph, real=True)
    fw = scipy.fft.next_fast_len(wd + 2 * pw, real=True)
    f2 = fw // 2 + 1
    nf = fh * f2
    # the kernel's zero rows need no transform: rfft along kw (zero-padded to fw), then
    # fft along kh (zero-padded to fh)
    wt = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    Wf = scipy.fft.fft(scipy.fft.rfft(wt, n=fw, axis=1, workers=runtime.NT), n=fh, axis=0,
                       workers=runtime.NT).reshape(nf, c, o)
    np.conjugate(Wf, out=Wf)
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
        # inverse: along fh keeping the oh valid rows, then along fw
        Z = scipy.fft.ifft(Y.reshape(fh, f2, m, o), axis=0, workers=runtime.NT)[:oh]
        del Y
        zz = scipy.fft.irfft(Z, n=fw, axis=1, workers=runtime.NT)[:, :ow]   # (oh, ow, m, o)
        del Z
        z = np.ascontiguousarray(zz.transpose(2, 0, 1, 3)).reshape(m * oh * ow, o)
        if b is not None:
            z += b
        consume(z, n0)

