"""How the CPU kernels run: one pool of Python threads, numpy's OpenBLAS held at one thread
while the pool runs GEMMs, the Numba compile options, and glibc's malloc setting.

Threads: ``MINIFIT_NUM_THREADS`` (default: ``NUMBA_NUM_THREADS``, i.e. the core count).
Work is split over batch chunks / (sample, channel) planes and run on one pool of Python
threads calling GIL-free Numba kernels and single-threaded BLAS GEMMs (numpy's OpenBLAS
is set to 1 thread for the duration of a conv call and restored afterwards). This avoids
the oversubscription seen with Numba ``parallel=True`` (OpenMP) next to multi-threaded
OpenBLAS: their idle threads spin and steal the cores from each other (8 ms -> 40 ms for
a pooling kernel run right after a GEMM on 2 cores).

Importing this module (any CPU kernel does) sets glibc's malloc thresholds once for the
process (MALLOC_TUNED says whether it did; MINIFIT_MALLOC=system keeps glibc's defaults).
"""
from __future__ import annotations

import ctypes
import glob
import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

from . import tuning

# every Numba kernel: GIL released (the pool's threads run them side by side), compiled
# code cached on disk
kern = njit(nogil=True, cache=True)
# kernels whose float sums may be reassociated, so that LLVM vectorises them (partial sums
# per vector lane, added at the end): batch norm's per-channel statistics, summed in
# float64. On 128x32x32x32 .. 128x128x8x8 CNHW inputs the float32 mean, invstd, dx and
# dgamma were bitwise the plain kernels', y within 1.8e-12 absolute; forward 2.4-2.8x,
# backward 1.5-1.7x faster (one thread, Intel Xeon, 2026-12-07: 9.6 -> 4.0 ms and 10.1 ->
# 6.9 ms at 32 maps of 32x32, batch 128).
kern_sum = njit(nogil=True, cache=True, fastmath={"reassoc"})


# ------------------------------------------------------------------ threads
def _num_threads():
    env = os.environ.get("MINIFIT_NUM_THREADS")
    if env:
        return max(1, int(env))
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


NT = _num_threads()
_pool_state = {"pool": None, "pid": None}


def _executor():
    if _pool_state["pid"] != os.getpid():  # (re)create after a fork
        _pool_state["pool"] = ThreadPoolExecutor(max_workers=max(1, NT - 1),
                                                 thread_name_prefix="minifit-kernels")
        _pool_state["pid"] = os.getpid()
    return _pool_state["pool"]


def parallel(fn, ntasks, nthreads=None):
    """Run fn(task, worker) for task in range(ntasks), dynamically scheduled over up to
    ``nthreads`` workers (the calling thread is worker 0). fn must release the GIL in its
    heavy parts (Numba nogil kernels, BLAS)."""
    t = min(nthreads or NT, ntasks)
    if t <= 1:
        for i in range(ntasks):
            fn(i, 0)
        return
    counter = itertools.count()

    def worker(wid):
        while True:
            i = next(counter)
            if i >= ntasks:
                return
            fn(i, wid)

    futs = [_executor().submit(worker, w) for w in range(1, t)]
    try:
        worker(0)
    finally:
        for f in futs:
            f.result()


def split(kernel, total, work):
    """kernel(lo, hi) over [0, total) in up to NT contiguous parts (one part when the
    whole job, ``work`` elements, is small)."""
    parts = max(1, min(NT, total, work // tuning.GRAIN))
    if parts == 1:
        kernel(0, total)
        return
    bounds = [total * i // parts for i in range(parts + 1)]
    parallel(lambda i, _w: kernel(bounds[i], bounds[i + 1]), parts)


def _find_blas_threads():
    """(set, get) num-threads functions of the OpenBLAS numpy uses, or None."""
    names = [("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
             ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
             ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
             ("openblas_set_num_threads", "openblas_get_num_threads")]
    base = os.path.dirname(np.__file__)
    paths = glob.glob(base + ".libs/*openblas*") + glob.glob(os.path.join(base, ".dylibs", "*openblas*"))
    try:
        with open("/proc/self/maps") as f:
            paths += sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln})
    except OSError:
        pass
    for p in paths:
        try:
            lib = ctypes.CDLL(p)
        except OSError:
            continue
        for s, g in names:
            if hasattr(lib, s) and hasattr(lib, g):
                return getattr(lib, s), getattr(lib, g)
    return None


_BLAS = _find_blas_threads()


# ------------------------------------------------------------------ malloc
# (why, and the measurement: tuning.MALLOC_THRESHOLD)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _tune_malloc():
    """Set glibc's mmap and trim thresholds to tuning.MALLOC_THRESHOLD (1 GiB); True if it
    was done."""
    if os.environ.get("MINIFIT_MALLOC", "").lower() == "system":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt   # glibc only (absent on macOS / musl)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return (bool(mallopt(_M_MMAP_THRESHOLD, tuning.MALLOC_THRESHOLD))
            and bool(mallopt(_M_TRIM_THRESHOLD, tuning.MALLOC_THRESHOLD)))


MALLOC_TUNED = _tune_malloc()

# GEMMs run on the pool (one single-threaded GEMM per thread) only if we can pin BLAS to 1
# thread; otherwise chunks run one after the other and BLAS threads itself.
GEMM_THREADS = NT if _BLAS is not None else 1


class single_blas:
    """``with single_blas():`` numpy's OpenBLAS at 1 thread inside, its old count restored
    after (the pool's threads each run one single-threaded GEMM)."""

    def __enter__(self):
        self.old = None
        if _BLAS is not None:
            self.old = _BLAS[1]()
            if self.old != 1:
                _BLAS[0](1)
        return self

    def __exit__(self, *exc):
        if self.old is not None and self.old != 1:
            _BLAS[0](self.old)
        return False

