"""Dense products on the CPU: gemm (numpy's OpenBLAS at one thread, large products split by
rows over the kernel pool) and the engine's matmul / linear_forward built on it."""
from __future__ import annotations

import numpy as np

from . import runtime, tuning
from .runtime import parallel, single_blas


def gemm(a, b):
    """a @ b for 2-D float arrays (any strides), with numpy's OpenBLAS held at 1 thread:
    products above tuning.GEMM_SPLIT multiply-adds are split by rows of ``a`` over the
    kernel thread pool (each output element is the same single-threaded dot product either
    way). Letting OpenBLAS thread
    itself next to the pool costs far more than it gains: its threads are re-woken after
    every conv call (which pins BLAS to 1 thread) and spin against the pool's (a 128x64 @
    64x2500 product took ~10 ms of CPU instead of 0.2 ms)."""
    m, k = a.shape
    n = b.shape[1]
    out = np.empty((m, n), dtype=np.result_type(a, b))
    parts = min(runtime.GEMM_THREADS, m, max(1, m * n * k // tuning.GEMM_SPLIT))
    with single_blas():
        if parts <= 1:
            np.matmul(a, b, out=out)
        else:
            bounds = [m * i // parts for i in range(parts + 1)]
            parallel(lambda i, _w: np.matmul(a[bounds[i]:bounds[i + 1]], b,
                                              out=out[bounds[i]:bounds[i + 1]]), parts)
    return out


def _gemm(a, b):
    """a @ b; 2-D float32/float64 products go through gemm (BLAS held at one thread, large
    products split over the kernel pool: the same dot products, faster)."""
    if (a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype and a.dtype in (np.float32, np.float64)
            and isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return gemm(a, b)
    return a @ b


def matmul(a, b, trans_a=False, trans_b=False):
    return _gemm(a.T if trans_a else a, b.T if trans_b else b)


def linear_forward(x, w, b=None):
    y = _gemm(x, w.T)
    if b is not None:
        y += b
    return y
