"""CPU kernels: Numba (``@njit(nogil=True, cache=True)``) + BLAS GEMMs, on a small thread pool.

Same API and semantics as ``kernels.reference`` (the tests hold this module to it). Every
public function validates its arguments with one shared helper (``_check``) and raises a
ValueError naming the function, the expected and the given shapes/dtypes, never a Numba
typing error. All float arrays of one call must share one dtype, float32 or float64.

Threads: ``MINIFIT_NUM_THREADS`` (default: ``NUMBA_NUM_THREADS``, i.e. the core count).
Work is split over batch chunks / (sample, channel) planes and run on one pool of Python
threads calling GIL-free Numba kernels and single-threaded BLAS GEMMs (numpy's OpenBLAS
is set to 1 thread for the duration of a conv call and restored afterwards). This avoids
the oversubscription seen with Numba ``parallel=True`` (OpenMP) next to multi-threaded
OpenBLAS: their idle threads spin and steal the cores from each other (8 ms -> 40 ms for
a pooling kernel run right after a GEMM on 2 cores).

Memory layout (values are always NCHW-indexed NumPy arrays, only the strides differ):
  * Kernels accept any strides. Internally each 4-D array is handled in one of two
    canonical layouts: plain C-contiguous NCHW, or "CNHW" = ``a.transpose(1, 0, 2, 3)``
    is C-contiguous (channel planes of the whole batch are adjacent). Anything else is
    copied to C order first.
  * conv2d_forward returns a CNHW-layout array (the GEMM ``W @ cols`` produces it with
    no transposing copy); conv2d_backward returns dx in CNHW layout and takes dy in any
    layout (CNHW avoids a copy). maxout / maxpool / maxout_pool forward keep the input's
    layout; their backward functions return 4-D dx in CNHW layout (what the conv below
    consumes). So a maxout-conv stack never transposes between layers.
  * bn_relu_conv2d_forward (evaluation only) and conv2d_maxout_forward(channels_last=True)
    (for callers that record no backward pass) return channels-last ("NHWC": an
    (N, C, H, W) view of a C-contiguous (N, H, W, C) buffer): their GEMM produces rows of
    positions x maps. im2row (the conv's patch copy), batch_norm_inference and relu read
    NHWC in place; other kernels copy it to NCHW first (correct, only slower).
  * conv2d_maxout_forward computes stride-1 convolutions with large kernels (>= 5x5) over
    many input maps by FFT (scipy.fft), see _FFT_MIN_TAPS.
  * Callers must therefore not assume C-contiguity of results: use ``np.ascontiguousarray``
    if you need it (``reshape`` already copies when it must).

Encodings (identical to the reference):
  maxout arg        uint8 piece index within the group, first max wins;
  maxpool arg       int32 flat ``h * W + w`` into the input plane;
  maxout_pool arg   int32 ``(piece * H + h) * W + w`` over the pre-maxout group planes.
NaNs are not propagated by the max kernels (a NaN never wins a comparison).
"""
from __future__ import annotations

import ctypes
import glob
import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import scipy.fft
from numba import njit

from . import reference as _ref
from .shapes import conv_output_size, pair, pool_output_size

__all__ = list(_ref.__all__)

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# im2col chunk: at most this many elements in one thread's (C*kh*kw, chunk*OH*OW) buffer.
# Forward passes use a quarter of it (1 MB of float32 columns: they stay in L2 between
# im2col and the GEMM; measured 5-8% faster inference), backward passes the whole.
_CHUNK_ELEMS = 1 << 20
# below this many elements an elementwise / pooling kernel runs on the calling thread only
_GRAIN = 1 << 16

_kern = njit(nogil=True, cache=True)


# =========================================================================== threads
def _num_threads():
    env = os.environ.get("MINIFIT_NUM_THREADS")
    if env:
        return max(1, int(env))
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


_NT = _num_threads()
_pool_state = {"pool": None, "pid": None}


def _executor():
    if _pool_state["pid"] != os.getpid():  # (re)create after a fork
        _pool_state["pool"] = ThreadPoolExecutor(max_workers=max(1, _NT - 1),
                                                 thread_name_prefix="minifit-kernels")
        _pool_state["pid"] = os.getpid()
    return _pool_state["pool"]


def _parallel(fn, ntasks, nthreads=None):
    """Run fn(task, worker) for task in range(ntasks), dynamically scheduled over up to
    ``nthreads`` workers (the calling thread is worker 0). fn must release the GIL in its
    heavy parts (Numba nogil kernels, BLAS)."""
    t = min(nthreads or _NT, ntasks)
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


def _split(kernel, total, work):
    """kernel(lo, hi) over [0, total) in up to _NT contiguous parts (one part when the
    whole job, ``work`` elements, is small)."""
    parts = max(1, min(_NT, total, work // _GRAIN))
    if parts == 1:
        kernel(0, total)
        return
    bounds = [total * i // parts for i in range(parts + 1)]
    _parallel(lambda i, _w: kernel(bounds[i], bounds[i + 1]), parts)


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


# glibc hands every freed block above its mmap threshold (adaptive, 128 KB .. 32 MB) back
# to the OS and trims the heap top beyond twice that, so a network's activations (MBs
# each) are mapped and zero-filled afresh on every step. Keeping freed memory in the heap
# lets the next step reuse it. Measured (2026-11-22, batch 128, 2 threads, separate
# processes, two rounds): wrn-10-2 inference 68-72 -> 57-63 ms, training 327-355 ->
# 256-292 ms; fitnet-1 inference 60-62 -> 48-51 ms; peak RSS unchanged (498 / 501 MB).
# Setting only one of the two thresholds did not help (trim alone was slower). One epoch
# of the MNIST teacher / backprop student through the Runner was unchanged (53-57 / 17-19 s
# both ways, peak RSS 285 MB both ways).
# MINIFIT_MALLOC=system keeps glibc's defaults.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _tune_malloc():
    """Set glibc's mmap and trim thresholds to 1 GiB; True if it was done."""
    if os.environ.get("MINIFIT_MALLOC", "").lower() == "system":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt   # glibc only (absent on macOS / musl)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


MALLOC_TUNED = _tune_malloc()

# GEMMs run on the pool (one single-threaded GEMM per thread) only if we can pin BLAS to 1
# thread; otherwise chunks run one after the other and BLAS threads itself.
_GEMM_THREADS = _NT if _BLAS is not None else 1


class _single_blas:
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


# =========================================================================== dense GEMM
# Below this many multiply-adds a product runs as one single-threaded GEMM on the caller.
_GEMM_SPLIT = 1 << 22


def gemm(a, b):
    """a @ b for 2-D float arrays (any strides), with numpy's OpenBLAS held at 1 thread:
    large products are split by rows of ``a`` over the kernel thread pool (each output
    element is the same single-threaded dot product either way). Letting OpenBLAS thread
    itself next to the pool costs far more than it gains: its threads are re-woken after
    every conv call (which pins BLAS to 1 thread) and spin against the pool's (a 128x64 @
    64x2500 product took ~10 ms of CPU instead of 0.2 ms)."""
    m, k = a.shape
    n = b.shape[1]
    out = np.empty((m, n), dtype=np.result_type(a, b))
    parts = min(_GEMM_THREADS, m, max(1, m * n * k // _GEMM_SPLIT))
    with _single_blas():
        if parts <= 1:
            np.matmul(a, b, out=out)
        else:
            bounds = [m * i // parts for i in range(parts + 1)]
            _parallel(lambda i, _w: np.matmul(a[bounds[i]:bounds[i + 1]], b,
                                              out=out[bounds[i]:bounds[i + 1]]), parts)
    return out


# =========================================================================== validation
class _Spec:
    """One argument to check: name, value, shape pattern, required dtype kind.

    pattern: tuple of dimension names (str: bound on first sight, must agree after),
    ints (exact) or None (any); a trailing "..." allows any further dims. kind "float"
    (float32/float64, one dtype per call) or "int" (any integer dtype)."""
    __slots__ = ("name", "value", "pattern", "kind")

    def __init__(self, name, value, pattern, kind="float"):
        self.name, self.value, self.pattern, self.kind = name, value, pattern, kind


def _fmt_pattern(pattern, bound):
    out = []
    for p in pattern:
        if p == "...":
            out.append("...")
        elif isinstance(p, str):
            out.append(f"{p}={bound[p][0]}" if p in bound else p)
        else:
            out.append(str(p))
    return "(" + ", ".join(out) + (",)" if len(out) == 1 else ")")


def _check(fname, specs, bound=None):
    """Validate arrays against shape patterns and dtypes. Returns (bound dims dict
    name -> int, float dtype). Raises ValueError naming ``fname``, the expected and the
    given shapes. ``bound``: pre-bound dims {name: (value, source description)}."""
    bound = dict(bound or {})
    fdtype, fsrc = None, None
    for s in specs:
        a = s.value
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{fname}: {s.name} must be a NumPy array, got {type(a).__name__}")
        if s.kind == "float":
            if a.dtype not in _FLOATS:
                raise ValueError(f"{fname}: {s.name} must be float32 or float64, got {a.dtype}")
            if fdtype is None:
                fdtype, fsrc = a.dtype, s.name
            elif a.dtype != fdtype:
                raise ValueError(f"{fname}: mixed dtypes: {fsrc} is {fdtype} but {s.name} is "
                                 f"{a.dtype} (all float arrays must share one dtype)")
        elif s.kind == "int":
            if a.dtype.kind not in "iu":
                raise ValueError(f"{fname}: {s.name} must be an integer array, got {a.dtype}")
        pat = s.pattern
        varargs = len(pat) > 0 and pat[-1] == "..."
        fixed = pat[:-1] if varargs else pat
        if (a.ndim < len(fixed)) if varargs else (a.ndim != len(fixed)):
            raise ValueError(f"{fname}: {s.name} must have shape {_fmt_pattern(pat, bound)}, "
                             f"got {a.shape} ({a.ndim}-d)")
        for d, p in enumerate(fixed):
            size = a.shape[d]
            if p is None:
                continue
            if isinstance(p, str):
                if p in bound:
                    if bound[p][0] != size:
                        raise ValueError(
                            f"{fname}: {s.name} must have shape {_fmt_pattern(pat, bound)} "
                            f"({p}={bound[p][0]} from {bound[p][1]}), got {a.shape}")
                else:
                    bound[p] = (size, f"{s.name} {a.shape}")
            elif p != size:
                raise ValueError(f"{fname}: {s.name} must have shape {_fmt_pattern(pat, bound)}, "
                                 f"got {a.shape}")
    return {k: v[0] for k, v in bound.items()}, fdtype


def _shape4(fname, name, shape):
    try:
        t = tuple(int(v) for v in shape)
    except TypeError:
        raise ValueError(f"{fname}: {name} must be a shape (N, C, H, W), got {shape!r}") from None
    if len(t) != 4 or min(t) <= 0:
        raise ValueError(f"{fname}: {name} must be a shape (N, C, H, W) of positive ints, got {shape!r}")
    return t


def _geom(fname, kernel, stride, pad=(0, 0)):
    try:
        kh, kw = pair(kernel, "kernel")
        sh, sw = pair(stride, "stride")
        ph, pw = pair(pad, "pad")
    except (TypeError, ValueError) as e:
        raise ValueError(f"{fname}: {e}") from None
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"{fname}: need kernel >= 1, stride >= 1, pad >= 0; got kernel "
                         f"{(kh, kw)}, stride {(sh, sw)}, pad {(ph, pw)}")
    return kh, kw, sh, sw, ph, pw


def _conv_out(fname, h, w, kh, kw, sh, sw, ph, pw):
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"{fname}: kernel {(kh, kw)} with pad {(ph, pw)} does not fit the "
                         f"input plane {(h, w)}")
    return oh, ow


def _pool_out(fname, h, w, kh, kw, sh, sw, ceil_mode):
    try:
        return pool_output_size(h, kh, sh, ceil_mode), pool_output_size(w, kw, sw, ceil_mode)
    except ValueError as e:
        raise ValueError(f"{fname}: {e} (input plane {(h, w)}, kernel {(kh, kw)})") from None


def _pieces(fname, pieces, channels):
    pieces = int(pieces)
    if pieces < 1 or pieces > 255:
        raise ValueError(f"{fname}: pieces must be in 1..255, got {pieces}")
    if channels % pieces:
        raise ValueError(f"{fname}: channels {channels} not divisible by pieces {pieces}")
    return pieces


# =========================================================================== layouts
def _canon(a):
    """-> (buf, cfirst): buf is C-contiguous and equals ``a`` (cfirst False) or
    ``a.swapaxes(0, 1)`` (cfirst True)."""
    if a.flags.c_contiguous:
        return a, False
    t = a.swapaxes(0, 1)
    if t.flags.c_contiguous:
        return t, True
    return np.ascontiguousarray(a), False


def _uncanon(buf, cfirst):
    return buf.swapaxes(0, 1) if cfirst else buf


# im2row also reads channels-last maps: an (N, C, H, W) view of a C-contiguous (N, H, W, C)
# buffer, the layout bn_relu_conv2d_forward returns (its GEMM writes positions x maps).
_NCHW, _CNHW, _NHWC = 0, 1, 2


def _is_nhwc(a):
    return a.ndim == 4 and not a.flags.c_contiguous and a.transpose(0, 2, 3, 1).flags.c_contiguous


def _rows_in(a):
    """4-D a -> (buf, layout): a's own C-contiguous buffer, as (N, C, H, W) (_NCHW),
    (C, N, H, W) (_CNHW) or (N, H, W, C) (_NHWC); other layouts are copied to _NCHW."""
    if _is_nhwc(a):
        return a.transpose(0, 2, 3, 1), _NHWC
    buf, cf = _canon(a)
    return buf, (_CNHW if cf else _NCHW)


def _nhwc_rows(a):
    """4-D a (N, C, H, W) -> (N*H*W, C) rows holding a.transpose(0, 2, 3, 1): a view when
    a is channels-last, else a copy."""
    n, c, h, w = a.shape
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).reshape(n * h * w, c)


def _from_rows(r, n, h, w):
    """(N*H*W, C) rows -> the channels-last (N, C, H, W) view of them."""
    return r.reshape(n, h, w, -1).transpose(0, 3, 1, 2)


@njit(inline="always")
def _pl(buf, cf, n, c):
    """Plane (n, c) of a canonical buffer."""
    return buf[c, n] if cf else buf[n, c]


@njit(inline="always")
def _nc(buf, cf):
    """(N, C) of a canonical buffer."""
    if cf:
        return buf.shape[1], buf.shape[0]
    return buf.shape[0], buf.shape[1]


# =========================================================================== im2col / col2im
# Hot loops index flat arrays with unsigned (np.uint64) offsets: Numba then drops its
# negative-index wraparound code and LLVM vectorises the copies (about 9x faster im2col).
_U = np.uint64


@_kern
def _im2col_k(xb, xcf, n0, nb, c0, c1, kh, kw, sh, sw, ph, pw, oh, ow, out, okf, pre, scale, shift):
    """Columns of samples n0..n0+nb-1 and input maps c0..c1-1 into out: (K, nb', P) if
    okf else (nb', K, P) (rows k = (c-c0)*kh*kw + i*kw + j, position p = a*ow + b). Only
    rows k < (c1-c0)*kh*kw are written. Each input plane is first copied into a zero-bordered scratch plane, so the
    row copies need no bounds logic (2-3x faster on small padded planes). With ``pre``
    the copy reads relu(x * scale[c] + shift[c]) instead of x (an evaluation-mode batch
    norm and ReLU folded into the read; the border stays 0: padding comes after them)."""
    N, C = _nc(xb, xcf)
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
    uow = _U(ow)
    usw = _U(sw)
    uW = _U(W)
    for n in range(nb):
        for c in range(c0, c1):
            xoff = ((c * N + n0 + n) if xcf else ((n0 + n) * C + c)) * HW
            if pre:
                sc = scale[c]
                sf = shift[c]
                for h in range(H):
                    d = _U((h + ph) * Wp + pw)
                    s = _U(xoff + h * W)
                    for t in range(uW):
                        v = xf[s + t] * sc + sf
                        xp[d + t] = v if v > 0 else 0
            else:
                for h in range(H):
                    d = _U((h + ph) * Wp + pw)
                    s = _U(xoff + h * W)
                    for t in range(uW):
                        xp[d + t] = xf[s + t]
            for i in range(kh):
                for j in range(kw):
                    k = (c - c0) * khw + i * kw + j
                    o = _U(((k * nbo + n) if okf else (n * K + k)) * P)
                    for a in range(oh):
                        src = _U((a * sh + i) * Wp + j)
                        if sw == 1:
                            for t in range(uow):
                                of[o + t] = xp[src + t]
                        else:
                            for t in range(uow):
                                of[o + t] = xp[src + t * usw]
                        o += uow


@_kern
def _col2im_k(cols, ckf, n0, nb, kh, kw, sh, sw, ph, pw, oh, ow, dxb, dcf):
    """Sum columns (K, nb', P) if ckf else (nb', K, P) into the planes of samples
    n0..n0+nb-1 of dx (overwriting them), through a zero-bordered scratch plane."""
    N, C = _nc(dxb, dcf)
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
    uow = _U(ow)
    usw = _U(sw)
    uW = _U(W)
    for n in range(nb):
        for c in range(C):
            xp[:] = 0
            for i in range(kh):
                for j in range(kw):
                    k = c * khw + i * kw + j
                    o = _U(((k * nbo + n) if ckf else (n * K + k)) * P)
                    for a in range(oh):
                        dst = _U((a * sh + i) * Wp + j)
                        if sw == 1:
                            for t in range(uow):
                                xp[dst + t] += cf[o + t]
                        else:
                            for t in range(uow):
                                xp[dst + t * usw] += cf[o + t]
                        o += uow
            doff = ((c * N + n0 + n) if dcf else ((n0 + n) * C + c)) * HW
            for h in range(H):
                s = _U((h + ph) * Wp + pw)
                d = _U(doff + h * W)
                for t in range(uW):
                    df[d + t] = xp[s + t]


@_kern
def _im2row_k(xb, lay, n0, nb, kh, kw, sh, sw, ph, pw, oh, ow, out, pre, scale, shift):
    """Patch-major columns of samples n0..n0+nb-1: out (nb*P, K'), row n*P + a*ow + b holds
    the patch of output position (a, b) in (i, j, c) order (k = (i*kw + j)*C + c), so it
    pairs with the weights laid out (kh, kw, C, O). Only columns k < C*kh*kw are written.
    xb is the input's buffer in layout ``lay`` (_NCHW, _CNHW or _NHWC). Each sample is
    first copied as (H+2ph, W+2pw, C) into a zero-bordered scratch (from _NHWC a straight
    copy of rows, else a transposing one); a patch is then kh*kw contiguous runs of C
    values. ``pre`` as in _im2col_k."""
    if lay == _NHWC:
        N = xb.shape[0]
        H = xb.shape[1]
        W = xb.shape[2]
        C = xb.shape[3]
    else:
        N, C = _nc(xb, lay == _CNHW)
        H = xb.shape[2]
        W = xb.shape[3]
    P = oh * ow
    Wp = W + 2 * pw
    xp = np.zeros((H + 2 * ph) * Wp * C, dtype=xb.dtype)
    xf = xb.reshape(-1)
    of = out.reshape(-1)
    R = out.shape[1]
    uC = _U(C)
    for n in range(nb):
        if lay == _NHWC:
            for h in range(H):
                s = _U(((n0 + n) * H + h) * W * C)
                d = _U(((h + ph) * Wp + pw) * C)
                for t in range(_U(W)):
                    st = s + t * uC
                    dr = d + t * uC
                    if pre:
                        for c in range(uC):
                            v = xf[st + c] * scale[c] + shift[c]
                            xp[dr + c] = v if v > 0 else 0
                    else:
                        for c in range(uC):
                            xp[dr + c] = xf[st + c]
        else:
            for c in range(C):
                plane = _pl(xb, lay == _CNHW, n0 + n, c)
                sc = scale[c] if pre else 1.0
                sf = shift[c] if pre else 0.0
                for h in range(H):
                    d = _U(((h + ph) * Wp + pw) * C + c)
                    for t in range(W):
                        v = plane[h, t]
                        if pre:
                            v = v * sc + sf
                            v = v if v > 0 else 0
                        xp[d + _U(t) * uC] = v
        for a in range(oh):
            for b in range(ow):
                o = _U((n * P + a * ow + b) * R)
                for i in range(kh):
                    src = _U(((a * sh + i) * Wp + b * sw) * C)
                    for t in range(_U(kw) * uC):
                        of[o + t] = xp[src + t]
                    o += _U(kw) * uC


def im2col(x, kernel, stride=1, pad=0):
    fn = "im2col"
    d, dt = _check(fn, [_Spec("x", x, ("N", "C", "H", "W"))])
    kh, kw, sh, sw, ph, pw = _geom(fn, kernel, stride, pad)
    oh, ow = _conv_out(fn, d["H"], d["W"], kh, kw, sh, sw, ph, pw)
    n, c = d["N"], d["C"]
    xb, xcf = _canon(x)
    out = np.empty((n, c * kh * kw, oh * ow), dtype=dt)
    _split(lambda lo, hi: _im2col_k(xb, xcf, lo, hi - lo, 0, c, kh, kw, sh, sw, ph, pw, oh, ow,
                                    out[lo:hi], False, *_no_pre(dt)), n, out.size)
    return out


def col2im(cols, x_shape, kernel, stride=1, pad=0):
    fn = "col2im"
    n, c, h, w = _shape4(fn, "x_shape", x_shape)
    kh, kw, sh, sw, ph, pw = _geom(fn, kernel, stride, pad)
    oh, ow = _conv_out(fn, h, w, kh, kw, sh, sw, ph, pw)
    _, dt = _check(fn, [_Spec("cols", cols, (n, c * kh * kw, oh * ow))])
    cb = np.ascontiguousarray(cols)
    dx = np.empty((n, c, h, w), dtype=dt)
    _split(lambda lo, hi: _col2im_k(cb[lo:hi], False, lo, hi - lo, kh, kw,
                                    sh, sw, ph, pw, oh, ow, dx, False), n, cols.size)
    return dx


# =========================================================================== conv
def _chunk(n, k, p, threads, elems=None):
    """Samples per im2col chunk: the buffer stays under ``elems`` (default _CHUNK_ELEMS),
    and every thread gets at least one chunk."""
    elems = _CHUNK_ELEMS if elems is None else elems
    nb = max(1, min(n, elems // max(1, k * p)))
    return max(1, min(nb, -(-n // threads)))


def _no_pre(dt):
    """The (pre, scale, shift) arguments of _im2col_k for a plain read of x."""
    return False, np.empty(0, dt), np.empty(0, dt)


def conv2d_forward(x, w, b, stride=1, pad=0):
    return _conv_forward("conv2d_forward", x, w, b, stride, pad)


def bn_relu_conv2d_forward(x, gamma, beta, running_mean, running_var, eps, w, b, stride=1, pad=0,
                           residual=None):
    """conv2d_forward(relu(batch_norm_inference(x, ...)), w, b) (+ residual): the affine map
    and the ReLU are applied while im2row reads x, so the activated map is never stored; the
    residual is added to each chunk of the output while it is in cache. The output is
    channels-last (an (N, O, OH, OW) view of an (N, OH, OW, O) buffer): the GEMM writes it
    as it comes, and the next bn_relu_conv2d_forward reads it without a transpose."""
    fn = "bn_relu_conv2d_forward"
    scale, shift = _bn_affine(fn, _Spec("x", x, ("N", "C", "H", "W")), gamma, beta, running_mean, running_var, eps)
    return _conv_forward(fn, x, w, b, stride, pad, (True, scale, shift), residual, channels_last=True)


def _conv_geometry(fn, x, w, b, stride, pad):
    """Checked conv arguments -> (dims d, dtype, (sh, sw), (ph, pw), oh, ow). The bias b is
    None, tied (O,) or untied (O, OH, OW)."""
    specs = [_Spec("x", x, ("N", "C", "H", "W")), _Spec("w", w, ("O", "C", "kh", "kw"))]
    d, dt = _check(fn, specs)
    _, _, sh, sw, ph, pw = _geom(fn, (d["kh"], d["kw"]), stride, pad)
    oh, ow = _conv_out(fn, d["H"], d["W"], d["kh"], d["kw"], sh, sw, ph, pw)
    if b is not None:
        pat = ("O",) if getattr(b, "ndim", 1) == 1 else ("O", oh, ow)
        _check(fn, specs + [_Spec("b (tied (O,) or untied (O, OH, OW))", b, pat)])
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
        _check(fn, [_Spec("residual", residual, (n, o, oh, ow)), _Spec("x", x, ("N", "C", "H", "W"))])
    if channels_last:   # the rows GEMM writes y's rows; the residual is added in place
        yr = np.empty((n * p, o), dtype=dt)
        res = None if residual is None else _nhwc_rows(residual)

        def add_residual(z, n0):
            if res is not None:
                r0, r1 = n0 * p, (n0 + z.shape[1]) * p
                np.add(yr[r0:r1], res[r0:r1], out=yr[r0:r1])
        _conv_chunks(x, w, b, stride, pad, oh, ow, dt, add_residual, pre, True, rows_out=yr)
        return _from_rows(yr, n, oh, ow)
    y = np.empty((o, n * p), dtype=dt)
    rows = _use_rows(d["C"], o, d["kh"], d["kw"]) or _is_nhwc(x)
    res = y[:, :0] if residual is None else _as_cfirst(residual).reshape(o, n * p)

    def store(z, n0):  # z (O, m, P), a view of the chunk's GEMM output
        c0, c1 = n0 * p, (n0 + z.shape[1]) * p
        if rows:   # z = zt.T: transpose back in 16x16 tiles
            _rows_to_cnhw_k(z.reshape(o, -1).T, c0, y, res)
        elif residual is None:
            y[:, c0:c1] = z.reshape(o, -1)
        else:
            np.add(z.reshape(o, -1), res[:, c0:c1], out=y[:, c0:c1])
    _conv_chunks(x, w, b, stride, pad, oh, ow, dt, store, pre, rows)
    return y.reshape(o, n, oh, ow).swapaxes(0, 1)


# Thin layers (few output maps) run their GEMM as rows @ W^T (positions x patch times patch
# x maps): OpenBLAS sgemm is up to 2.4x faster in that orientation when O is small (one
# core, N=1024: O=32, K=288 179 against 93 GFLOP/s; O=16, K=144 151 against 62). With
# im2row and the transpose back, 3x3 layers with O <= 32 gained 10-20%; wider ones, 1x1
# convs and C = 1..3 inputs lost.
_ROWS_MAX_O, _ROWS_MIN_C = 32, 8


# Evaluation-mode maxout convs (conv2d_maxout_forward with channels_last) take the rows
# orientation and return NHWC up to this many conv maps. Measured (2 threads, batch 128,
# whole inference passes A/B in one process): fitnet-1 0.86x, fitnet-4 0.91x, mnist-teacher
# and mnist-fitnet 0.91x the CNHW path's time; cifar-teacher's 384-map layers (K = 4800 and
# 6144) were 3-9% slower in that orientation, so they keep CNHW.
_NHWC_MAX_O = 256


# Forward GEMMs with a long reduction (K = C*kh*kw >= _KSPLIT_MIN_K) over few positions
# ran at 113-160 GFLOP/s per core with one sample per chunk (N = OH*OW = 81 .. 225 columns)
# and at 175-181 with ~900 columns (cifar-teacher's 8x8 / 5x5 layers, one core). So
# such layers take chunks of about _KSPLIT_COLS columns, and their im2col is cut along
# the input maps into blocks of at most _KSPLIT_ELEMS elements (K = 1536, N = 900:
# 181 GFLOP/s) whose products are summed.
_KSPLIT_MIN_K, _KSPLIT_COLS, _KSPLIT_ELEMS = 2048, 1024, 1 << 21
# The same in the rows orientation ((M x K) @ (K x O), one core, O = 96): K = 3073 ran at
# 143 GFLOP/s with M = 81 rows (one 9 x 9 sample) and 163 with 324; K = 1201 at 150 with
# 81 and 191 with 576. Layers with K >= _ROWS_LONG_K take chunks of >= _ROWS_MIN_M rows
# (buffers up to _KSPLIT_ELEMS).
_ROWS_LONG_K, _ROWS_MIN_M = 1024, 512


def _use_rows(c, o, kh, kw):
    # not for 1x1 convs (the rows would cost a transposing copy of x) nor for few input maps
    # (a patch is kh*kw runs of C values: C = 1 made the copy 5x slower than im2col's)
    return o <= _ROWS_MAX_O and kh * kw > 1 and c >= _ROWS_MIN_C


@_kern
def _rows_to_cnhw_k(zt, c0, y, res):
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


def _conv_chunks(x, w, b, stride, pad, oh, ow, dt, consume, pre=None, rows=False, contiguous=False,
                 rows_out=None):
    """The forward GEMMs of a convolution, per chunk of samples sized to stay in L2, over
    the thread pool: consume(z, n0) gets each chunk's output z (O, m, OH*OW) (a view, valid
    only during the call) while it is in cache. Either z = W2 @ cols (im2col, k order
    (c, i, j)) or, with ``rows``, z = (rows @ W2^T).T (im2row, k order (i, j, c): then z is
    a transposed view, or with ``contiguous`` a C-ordered copy made in 16x16 tiles; with
    ``rows_out``, an (N*OH*OW, O) array, the GEMM writes the chunk's rows of it and z views
    them). The bias rides in the GEMM as one more weight column against ones."""
    pre = _no_pre(dt) if pre is None else pre
    n, c = x.shape[0], x.shape[1]
    o, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, pad
    p = oh * ow
    k = c * kh * kw
    xb, lay = _rows_in(x) if rows else _canon(x)
    w2 = (w.transpose(0, 2, 3, 1) if rows else w).reshape(o, k)
    kb = k
    if b is not None:
        w2 = np.concatenate([w2, b.reshape(o, 1)], axis=1)
        kb = k + 1
    w2 = np.ascontiguousarray(w2.T if rows else w2)
    nb = _chunk(n, kb, p, _GEMM_THREADS, _CHUNK_ELEMS // 4)
    if rows and k >= _ROWS_LONG_K and nb * p < _ROWS_MIN_M:
        nb = max(nb, min(-(-_ROWS_MIN_M // p), -(-n // _GEMM_THREADS), _KSPLIT_ELEMS // (kb * p)))
    blocks = [(0, c)]   # im2col: input-map ranges whose columns meet one GEMM each
    if not rows and k >= _KSPLIT_MIN_K and nb * p < _KSPLIT_COLS:
        nb = min(-(-_KSPLIT_COLS // p), -(-n // _GEMM_THREADS))
        kc = max(1, _KSPLIT_ELEMS // (kh * kw * nb * p))
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
            _im2row_k(xb, lay, n0, m, kh, kw, sh, sw, ph, pw, oh, ow, cols, *pre)
            zt = zf[:m * p * o].reshape(m * p, o) if rows_out is None else rows_out[n0 * p:(n0 + m) * p]
            np.matmul(cols[:m * p], w2, out=zt)
            if contiguous:
                z = zc[:o * m * p].reshape(o, m * p)
                _rows_to_cnhw_k(zt, 0, z, z[:, :0])
                z = z.reshape(o, m, p)
            else:
                z = zt.T.reshape(o, m, p)
        else:
            z = zf[:o * m * p].reshape(o, m * p)
            for j, (c0, c1) in enumerate(blocks):
                r = (c1 - c0) * kh * kw
                _im2col_k(xb, lay, n0, m, c0, c1, kh, kw, sh, sw, ph, pw, oh, ow, cols, True, *pre)
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

    with _single_blas():
        _parallel(task, -(-n // nb), _GEMM_THREADS)


@_kern
def _maxout_into_k(z, pieces, n0, y, arg):
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


@njit(inline="always")
def _pool_scratch(mv, mi, H, W, kh, kw, sh, sw, oh, ow, yf, af, yo):
    """Max pool of one flat H x W plane of values mv, whose entries carry the args mi, into
    yf[yo + a*ow + b] / af[...] (windows clipped at the border: ceil mode; first max wins:
    each window is scanned row by row and a value replaces the best only if greater).

    Two loop orders, one result. Windows of up to 4 values (_pool_small): branch-free
    selects, vectorised along an output row; a per-window ``if v > best`` is mispredicted
    on about half the comparisons of real maps there. Larger windows (_pool_windows): one
    window at a time with the branch, which is then mostly predictable (a later value is
    rarely a new maximum). Each order lost 1.2-1.4x on the other's shapes (2 threads,
    128 x 96 maps: 2/2 pool of 32 x 32 13.9 vs 14.9 ms, maxout + 2/2 pool 7.9 vs 9.5;
    4/2 of 10 x 10 2.2 vs 1.6, maxout + 8/1 of 8 x 8 1.3 vs 0.95)."""
    if kh * kw <= 4:
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
            bi = _U(h0 * W + w0)
            best = mv[bi]
            for hh in range(h0, h1):
                r = _U(hh * W)
                for ww in range(_U(w0), _U(w1)):
                    v = mv[r + ww]
                    if v > best:
                        best = v
                        bi = r + ww
            o = yo + _U(a * ow + b)
            yf[o] = best
            af[o] = mi[bi]


@njit(inline="always")
def _pool_small(mv, mi, H, W, kh, kw, sh, sw, oh, ow, yf, af, yo):
    """_pool_scratch vectorised along output rows (selects); clipped windows by _pool_windows."""
    nf = max(0, min(ow, (W - kw) // sw + 1))   # outputs whose window is not clipped on the right
    usw = _U(sw)
    for a in range(oh):
        h0 = a * sh
        h1 = min(h0 + kh, H)
        o = yo + _U(a * ow)
        r0 = _U(h0 * W)
        for b in range(_U(nf)):
            yf[o + b] = mv[r0 + b * usw]
            af[o + b] = mi[r0 + b * usw]
        for hh in range(h0, h1):
            r = _U(hh * W)
            for j in range(_U(kw)):
                if hh == h0 and j == 0:
                    continue
                for b in range(_U(nf)):
                    e = r + b * usw + j
                    v = mv[e]
                    g = v > yf[o + b]
                    yf[o + b] = v if g else yf[o + b]
                    af[o + b] = mi[e] if g else af[o + b]
    if nf < ow:
        _pool_windows(mv, mi, H, W, kh, kw, sh, sw, oh, ow, yf, af, yo, nf)


@_kern
def _mopool_into_k(z, pieces, H, W, kh, kw, sh, sw, oh, ow, n0, y, arg):
    """Fused maxout + max pool of a conv chunk z (C*pieces, m, H*W) into samples
    n0..n0+m-1 of the CNHW outputs y, arg (C, N, oh*ow): as _mopool_k."""
    C = y.shape[0]
    m = z.shape[1]
    HW = H * W
    mv = np.empty(HW, dtype=z.dtype)
    mi = np.empty(HW, dtype=np.int32)
    uhw = _U(HW)
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
            _pool_scratch(mv, mi, H, W, kh, kw, sh, sw, oh, ow, y[c, n0 + n], arg[c, n0 + n], _U(0))


def conv2d_maxout_forward(x, w, b, stride, pad, pieces, pool=None, pool_stride=None, ceil_mode=True,
                          channels_last=False):
    """conv2d_forward followed by maxout_forward (``pool`` None) or maxout_pool_forward,
    fused per batch chunk: each chunk's GEMM output is reduced while it is in cache, so the
    whole conv output is never stored. Returns exactly what the composition returns:
    (y, arg), with the same arg encodings, in CNHW layout; with ``channels_last`` (for
    callers that will not run the backward pass, whose kernels expect CNHW) in NHWC
    layout when the rows orientation applies (C >= 8 input maps, or an NHWC x, and at most
    _NHWC_MAX_O conv maps). Large kernels over many maps (_use_fft) take the FFT
    convolution, then the same NHWC reduction."""
    fn = "conv2d_maxout_forward"
    d, dt, stride, pad, oh, ow = _conv_geometry(fn, x, w, b, stride, pad)
    n, o, kh, kw = d["N"], d["O"], d["kh"], d["kw"]
    pieces = _pieces(fn, pieces, o)
    cy = o // pieces
    if pool is not None:
        pkh, pkw, psh, psw, _, _ = _geom(fn, pool, pool if pool_stride is None else pool_stride)
        yh, yw = _pool_out(fn, oh, ow, pkh, pkw, psh, psw, ceil_mode)
        arg_dt = np.int32
    else:
        pkh = pkw = psh = psw = 1
        yh, yw = oh, ow
        arg_dt = np.uint8
    fft = _use_fft(d["C"], kh, kw, stride, oh, ow)
    if fft or (channels_last and o <= _NHWC_MAX_O and (d["C"] >= _ROWS_MIN_C or _is_nhwc(x))):
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
            part = -(-m // _NT) if fft else m   # an FFT chunk's rows are split over the threads
            _parallel(lambda i, _w: _mo_rows_k(z[i * part * oh * ow:(i + 1) * part * oh * ow], pieces, oh, ow,
                                               pkh, pkw, psh, psw, yh, yw, pool is not None, n0 + i * part,
                                               y, arg), -(-m // part))
        if fft:
            _fft_conv_rows(x, wp, bp, pad, oh, ow, reduce_rows)
        else:
            _conv_chunks(x, wp, bp, stride, pad, oh, ow, dt, reduce_rows, rows=True)
        y, arg = _from_rows(y, n, yh, yw), _from_rows(arg, n, yh, yw)
        if channels_last:
            return y, arg
        return tuple(_uncanon(np.ascontiguousarray(a.swapaxes(0, 1)), True) for a in (y, arg))
    y = np.empty((cy, n, yh * yw), dtype=dt)
    arg = np.empty((cy, n, yh * yw), dtype=arg_dt)

    # (the maxout reductions read z along positions: in the rows orientation z is first
    # transposed in cache; on the transposed view they ran 1.5-5x slower)
    bu = b.reshape(o, 1, oh * ow) if _untied(b) else None

    def reduce(z, n0):
        if bu is not None:
            z += bu
        if pool is None:
            _maxout_into_k(z, pieces, n0, y, arg)
        else:
            _mopool_into_k(z, pieces, oh, ow, pkh, pkw, psh, psw, yh, yw, n0, y, arg)
    _conv_chunks(x, w, None if bu is not None else b, stride, pad, oh, ow, dt, reduce,
                 rows=_use_rows(d["C"], o, kh, kw), contiguous=True)
    return (y.reshape(cy, n, yh, yw).swapaxes(0, 1), arg.reshape(cy, n, yh, yw).swapaxes(0, 1))


# Large kernels (>= 5x5) over many input maps: convolution by FFT. For a stride-1
# cross-correlation y[a, b] = sum_ij x[a+i, b+j] w[i, j], DFT(y) = DFT(x) conj(DFT(w))
# on a grid of at least H+2ph x W+2pw (no wrap-around reaches a valid output), so the
# sum over input maps becomes one complex GEMM per frequency: (N x C) @ (C x O).
# Measured (batch 128, 2 threads, maxout + pool fused, im2col vs FFT in one process):
# cifar-teacher's 8x8 layer (96 -> 384 maps, 16x16) 453 -> 173 ms, its 5x5 layer
# 135 -> 118, mnist-teacher's 8x8 layer 28 -> 18; whole networks: cifar-teacher inference
# 0.49x, training step 0.87x; mnist-teacher 0.71x / 0.86x. Max error 4-5e-7 of the
# largest output in float32 (the rounding level of the GEMM's sums), no arg changed on
# these layers. With few input maps or few output positions the transforms cost more
# than they save (mnist-teacher's 5x5 layer, 48 maps, 6x6 outputs, prototype: 5.8 ms by
# im2col vs 7.2 by FFT).
_FFT_MIN_TAPS, _FFT_MIN_C, _FFT_MIN_P = 25, 32, 64
_FFT_CHUNK = 128   # samples per transform chunk (the benchmarks' batch: one chunk there)


def _use_fft(c, kh, kw, stride, oh, ow):
    return (tuple(stride) == (1, 1) and kh * kw >= _FFT_MIN_TAPS and c >= _FFT_MIN_C
            and oh * ow >= _FFT_MIN_P)


def _fft_conv_rows(x, w, b, pad, oh, ow, consume):
    """conv2d_forward(x, w, b, 1, pad) by FFT, per chunk of up to _FFT_CHUNK samples:
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
    Wf = scipy.fft.fft(scipy.fft.rfft(wt, n=fw, axis=1, workers=_NT), n=fh, axis=0, workers=_NT).reshape(nf, c, o)
    np.conjugate(Wf, out=Wf)
    parts = 4 * _GEMM_THREADS
    for n0 in range(0, n, _FFT_CHUNK):
        m = min(_FFT_CHUNK, n - n0)
        xp = np.zeros((fh, fw, m, c), dtype=x.dtype)
        xp[ph:ph + h, pw:pw + wd] = x[n0:n0 + m].transpose(2, 3, 0, 1)
        X = scipy.fft.rfftn(xp, axes=(0, 1), workers=_NT).reshape(nf, m, c)
        del xp
        Y = np.empty((nf, m, o), dtype=X.dtype)

        def task(i, _w, X=X, Y=Y):
            f0, f1 = nf * i // parts, nf * (i + 1) // parts
            np.matmul(X[f0:f1], Wf[f0:f1], out=Y[f0:f1])
        with _single_blas():
            _parallel(task, parts, _GEMM_THREADS)
        del task, X   # (the spectra are large: free them before the inverse)
        # inverse: along fh keeping the oh valid rows, then along fw
        Z = scipy.fft.ifft(Y.reshape(fh, f2, m, o), axis=0, workers=_NT)[:oh]
        del Y
        zz = scipy.fft.irfft(Z, n=fw, axis=1, workers=_NT)[:, :ow]   # (oh, ow, m, o)
        del Z
        z = np.ascontiguousarray(zz.transpose(2, 0, 1, 3)).reshape(m * oh * ow, o)
        if b is not None:
            z += b
        consume(z, n0)


@_kern
def _mo_rows_k(zt, pieces, H, W, kh, kw, sh, sw, oh, ow, pool, n0, y, arg):
    """Maxout (and with ``pool`` max pool) of a rows-GEMM chunk zt (m*H*W, pieces*C), its
    columns piece-major (q*C + c), into the NHWC rows of samples n0..n0+m-1 of y, arg
    (N*oh*ow, C): the encodings, tie rules and window order of _maxout_k / _mopool_k.
    Selects throughout, vectorised along the C maps (a data-dependent ``if`` here was
    mispredicted on about half the comparisons: 26 against 4.3 ms for one layer)."""
    C = y.shape[1]
    HW = H * W
    m = zt.shape[0] // HW
    uC = _U(C)
    if not pool:
        for r in range(m * HW):
            row = zt[r]
            yr = y[n0 * HW + r]
            ar = arg[n0 * HW + r]
            for c in range(uC):
                yr[c] = row[c]
                ar[c] = 0
            for q in range(1, pieces):
                qo = _U(q) * uC
                for c in range(uC):
                    v = row[qo + c]
                    g = v > yr[c]
                    yr[c] = v if g else yr[c]
                    ar[c] = q if g else ar[c]
        return
    mv = np.empty((HW, C), dtype=zt.dtype)
    mi = np.empty((HW, C), dtype=np.int32)
    for n in range(m):
        for e in range(HW):
            row = zt[n * HW + e]
            mvr = mv[e]
            mir = mi[e]
            for c in range(uC):
                mvr[c] = row[c]
                mir[c] = e
            for q in range(1, pieces):
                qo = _U(q) * uC
                code = q * HW + e
                for c in range(uC):
                    v = row[qo + c]
                    g = v > mvr[c]
                    mvr[c] = v if g else mvr[c]
                    mir[c] = code if g else mir[c]
        for a in range(oh):
            h0 = a * sh
            h1 = min(h0 + kh, H)
            for b in range(ow):
                w0 = b * sw
                w1 = min(w0 + kw, W)
                yr = y[(n0 + n) * oh * ow + a * ow + b]
                ar = arg[(n0 + n) * oh * ow + a * ow + b]
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


@_kern
def _to_cfirst_k(src, dst, t0, t1):
    """dst (C, N, M) = src (N, C, M) transposed, for flat (n, c) indices t0..t1-1."""
    C = src.shape[1]
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        dst[c, n, :] = src[n, c, :]


def _as_cfirst(a):
    """4-D a -> C-contiguous (C, N, H*W) buffer holding a.swapaxes(0, 1)."""
    n, c, h, w = a.shape
    t = a.swapaxes(0, 1)
    if t.flags.c_contiguous:
        return t.reshape(c, n, h * w)
    src = np.ascontiguousarray(a).reshape(n, c, h * w)
    dst = np.empty((c, n, h * w), dtype=a.dtype)
    _split(lambda lo, hi: _to_cfirst_k(src, dst, lo, hi), n * c, src.size)
    return dst


def conv2d_backward(dy, x, w, stride=1, pad=0, need_dx=True, untied_bias=False):
    fn = "conv2d_backward"
    d, dt = _check(fn, [_Spec("x", x, ("N", "C", "H", "W")), _Spec("w", w, ("O", "C", "kh", "kw")),
                        _Spec("dy", dy, ("N", "O", "OH", "OW"))])
    n, c, h, wd, o, kh, kw = d["N"], d["C"], d["H"], d["W"], d["O"], d["kh"], d["kw"]
    _, _, sh, sw, ph, pw = _geom(fn, (kh, kw), stride, pad)
    oh, ow = _conv_out(fn, h, wd, kh, kw, sh, sw, ph, pw)
    if (d["OH"], d["OW"]) != (oh, ow):
        raise ValueError(f"{fn}: dy must have shape {(n, o, oh, ow)} for x {x.shape}, w {w.shape}, "
                         f"stride {(sh, sw)}, pad {(ph, pw)}; got {dy.shape}")
    p = oh * ow
    k = c * kh * kw
    kb = k + 1  # a row of ones under the columns: the dw GEMM also yields db
    dyc = _as_cfirst(dy).reshape(o, n * p)
    xb, xcf = _canon(x)
    w2t = np.ascontiguousarray(w.reshape(o, k)).T
    nb = _chunk(n, kb, p, _GEMM_THREADS)
    dxb = np.empty((c, n, h, wd), dtype=dt) if need_dx else None
    bufs, acc, tmp = {}, {}, {}

    def task(i, wid):
        cols = bufs.get(wid)
        if cols is None:
            cols = bufs[wid] = np.empty((kb, nb, p), dtype=dt)
            cols[k] = 1
        n0 = i * nb
        m = min(nb, n - n0)
        _im2col_k(xb, xcf, n0, m, 0, c, kh, kw, sh, sw, ph, pw, oh, ow, cols, True, *_no_pre(dt))
        c2 = cols.reshape(kb, nb * p)[:, :m * p]
        dyk = dyc[:, n0 * p:(n0 + m) * p]
        # dw^T (kb, O) = cols @ dy^T: faster than dy @ cols^T for the small O of thin nets
        if wid in acc:
            np.matmul(c2, dyk.T, out=tmp[wid])
            acc[wid] += tmp[wid]
        else:
            acc[wid] = np.matmul(c2, dyk.T)
            tmp[wid] = np.empty_like(acc[wid])
        if need_dx:
            np.matmul(w2t, dyk, out=c2[:k])  # the columns are dead: reuse the buffer
            _col2im_k(cols, True, n0, m, kh, kw, sh, sw, ph, pw, oh, ow, dxb, True)

    with _single_blas():
        _parallel(task, -(-n // nb), _GEMM_THREADS)
    total = None
    for a in acc.values():
        total = a if total is None else total + a
    dx = dxb.swapaxes(0, 1) if need_dx else None
    # untied: db (O, OH, OW) = dy summed over the samples (the tied db is its sum over positions)
    db = dyc.reshape(o, n, p).sum(axis=1).reshape(o, oh, ow) if untied_bias else total[k].copy()
    return dx, np.ascontiguousarray(total[:k].T).reshape(w.shape), db


# =========================================================================== maxout
@_kern
def _maxout_k(xb, xcf, pieces, y, arg, t0, t1):
    """xb canonical (N, C*pieces, M) / (C*pieces, N, M); y, arg in the same layout;
    flat (n, c) output planes t0..t1-1."""
    C = y.shape[0] if xcf else y.shape[1]
    M = xb.shape[2]
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        yr = _pl(y, xcf, n, c)
        ar = _pl(arg, xcf, n, c)
        x0 = _pl(xb, xcf, n, c * pieces)
        for m in range(M):
            yr[m] = x0[m]
            ar[m] = 0
        for q in range(1, pieces):
            xq = _pl(xb, xcf, n, c * pieces + q)
            for m in range(M):
                v = xq[m]
                g = v > yr[m]
                yr[m] = v if g else yr[m]
                ar[m] = q if g else ar[m]


@_kern
def _maxout_bwd_k(dyb, dycf, ab, acf, pieces, dx, dxcf, t0, t1):
    _, C = _nc(dyb, dycf)
    M = dyb.shape[2]
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        g = _pl(dyb, dycf, n, c)
        a = _pl(ab, acf, n, c)
        for q in range(pieces):
            dq = _pl(dx, dxcf, n, c * pieces + q)
            for m in range(M):
                dq[m] = g[m] if a[m] == q else 0


def _flat3(a):
    """(N, C, ...) -> (N, C, M) view when possible (copy otherwise)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def maxout_forward(x, pieces):
    fn = "maxout_forward"
    d, dt = _check(fn, [_Spec("x", x, ("N", "CP", "..."))])
    pieces = _pieces(fn, pieces, d["CP"])
    n, cp = x.shape[:2]
    c = cp // pieces
    xb, xcf = _canon(_flat3(x))
    m = xb.shape[2]
    shp = (c, n, m) if xcf else (n, c, m)
    y = np.empty(shp, dtype=dt)
    arg = np.empty(shp, dtype=np.uint8)
    _split(lambda lo, hi: _maxout_k(xb, xcf, pieces, y, arg, lo, hi), n * c, x.size)
    out_shape = (n, c) + x.shape[2:]
    y, arg = _uncanon(y, xcf), _uncanon(arg, xcf)
    return y.reshape(out_shape), arg.reshape(out_shape)


def maxout_backward(dy, arg, pieces):
    fn = "maxout_backward"
    d, dt = _check(fn, [_Spec("dy", dy, ("N", "C", "...")), _Spec("arg", arg, ("N", "C", "..."), "int")])
    if arg.shape != dy.shape:
        raise ValueError(f"{fn}: arg must have the shape of dy {dy.shape}, got {arg.shape}")
    n, c = dy.shape[:2]
    pieces = _pieces(fn, pieces, c * int(pieces))
    if arg.dtype != np.uint8:
        arg = arg.astype(np.uint8)
    dyb, dycf = _canon(_flat3(dy))
    ab, acf = _canon(_flat3(arg))
    m = dyb.shape[2]
    dxcf = dy.ndim == 4 or dycf  # 4-D grads go out in CNHW layout (what conv consumes)
    dx = np.empty((c * pieces, n, m) if dxcf else (n, c * pieces, m), dtype=dt)
    _split(lambda lo, hi: _maxout_bwd_k(dyb, dycf, ab, acf, pieces, dx, dxcf, lo, hi), n * c, dx.size)
    return _uncanon(dx, dxcf).reshape((n, c * pieces) + dy.shape[2:])


# =========================================================================== max pool
@_kern
def _maxpool_k(xb, xcf, kh, kw, sh, sw, oh, ow, y, arg, t0, t1):
    N, C = _nc(xb, xcf)
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
        _pool_scratch(xf[pb * HW:(pb + 1) * HW], pos, H, W, kh, kw, sh, sw, oh, ow, yf, af, _U(pb * OP))


@_kern
def _pool_scatter_k(dyb, dycf, ab, acf, pieces, plane, dxb, t0, t1):
    """dx (C*pieces, N, plane) CNHW: zero group c's planes of sample n, then add dy at
    arg = piece * plane + position (pieces = 1: a plain max pool)."""
    _, C = _nc(dyb, dycf)
    M = dyb.shape[2]
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        g = _pl(dyb, dycf, n, c)
        a = _pl(ab, acf, n, c)
        for q in range(pieces):
            dxb[c * pieces + q, n, :] = 0
        for m in range(M):
            idx = a[m]
            q = idx // plane
            dxb[c * pieces + q, n, idx - q * plane] += g[m]


@_kern
def _mopool_k(xb, xcf, pieces, kh, kw, sh, sw, oh, ow, y, arg, t0, t1):
    """Fused maxout + max pool. y/arg canonical in x's layout with C = CP // pieces.
    Per plane: maxout into a scratch plane (value, encoded arg), then pool it."""
    N, CP = _nc(xb, xcf)
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
    uhw = _U(HW)
    for t in range(t0, t1):
        n = t // C
        c = t - n * C
        b0 = _U((c * pieces * N + n) * HW if xcf else (n * CP + c * pieces) * HW)
        for e in range(uhw):
            mv[e] = xf[b0 + e]
            mi[e] = e
        for q in range(1, pieces):
            bq = _U(((c * pieces + q) * N + n) * HW if xcf else (n * CP + c * pieces + q) * HW)
            off = np.int64(q * HW)
            for e in range(uhw):
                v = xf[bq + e]
                if v > mv[e]:
                    mv[e] = v
                    mi[e] = off + e
        yo = _U((c * N + n) * OP if xcf else (n * C + c) * OP)
        _pool_scratch(mv, mi, H, W, kh, kw, sh, sw, oh, ow, yf, af, yo)


def maxpool2d_forward(x, kernel, stride, ceil_mode=True):
    fn = "maxpool2d_forward"
    d, dt = _check(fn, [_Spec("x", x, ("N", "C", "H", "W"))])
    kh, kw, sh, sw, _, _ = _geom(fn, kernel, stride)
    oh, ow = _pool_out(fn, d["H"], d["W"], kh, kw, sh, sw, ceil_mode)
    n, c = d["N"], d["C"]
    xb, xcf = _canon(x)
    shp = (c, n, oh, ow) if xcf else (n, c, oh, ow)
    y = np.empty(shp, dtype=dt)
    arg = np.empty(shp, dtype=np.int32)
    _split(lambda lo, hi: _maxpool_k(xb, xcf, kh, kw, sh, sw, oh, ow, y, arg, lo, hi), n * c, x.size)
    return _uncanon(y, xcf), _uncanon(arg, xcf)


def _pool_bwd(fn, dy, arg, x_shape, pieces):
    n, cx, h, w = x_shape
    _, dt = _check(fn, [_Spec("dy", dy, (n, cx // pieces, "OH", "OW")),
                        _Spec("arg", arg, (n, cx // pieces, "OH", "OW"), "int")])
    if arg.dtype != np.int32:
        arg = arg.astype(np.int32)
    if arg.size and (arg.min() < 0 or arg.max() >= pieces * h * w):  # the scatter is unchecked
        raise ValueError(f"{fn}: arg holds indices outside [0, {pieces * h * w}) for x_shape "
                         f"{tuple(x_shape)}: not the arg of a forward on that shape")
    dyb, dycf = _canon(_flat3(dy))
    ab, acf = _canon(_flat3(arg))
    dx = np.empty((cx, n, h * w), dtype=dt)
    _split(lambda lo, hi: _pool_scatter_k(dyb, dycf, ab, acf, pieces, h * w, dx, lo, hi),
           n * (cx // pieces), dx.size)
    return dx.reshape(cx, n, h, w).swapaxes(0, 1)


def maxpool2d_backward(dy, arg, x_shape):
    fn = "maxpool2d_backward"
    return _pool_bwd(fn, dy, arg, _shape4(fn, "x_shape", x_shape), 1)


def maxout_pool_forward(x, pieces, kernel, stride, ceil_mode=True):
    fn = "maxout_pool_forward"
    d, dt = _check(fn, [_Spec("x", x, ("N", "CP", "H", "W"))])
    pieces = _pieces(fn, pieces, d["CP"])
    kh, kw, sh, sw, _, _ = _geom(fn, kernel, stride)
    oh, ow = _pool_out(fn, d["H"], d["W"], kh, kw, sh, sw, ceil_mode)
    n, c = d["N"], d["CP"] // pieces
    xb, xcf = _canon(x)
    shp = (c, n, oh, ow) if xcf else (n, c, oh, ow)
    y = np.empty(shp, dtype=dt)
    arg = np.empty(shp, dtype=np.int32)
    _split(lambda lo, hi: _mopool_k(xb, xcf, pieces, kh, kw, sh, sw, oh, ow, y, arg, lo, hi),
           n * c, x.size)
    return _uncanon(y, xcf), _uncanon(arg, xcf)


def maxout_pool_backward(dy, arg, x_shape, pieces):
    fn = "maxout_pool_backward"
    xs = _shape4(fn, "x_shape", x_shape)
    return _pool_bwd(fn, dy, arg, xs, _pieces(fn, pieces, xs[1]))


# =========================================================================== global avg pool
def global_avg_pool_forward(x):
    fn = "global_avg_pool_forward"
    d, dt = _check(fn, [_Spec("x", x, ("N", "C", "H", "W"))])
    return x.mean(axis=(2, 3), dtype=dt)


def global_avg_pool_backward(dy, x_shape):
    fn = "global_avg_pool_backward"
    n, c, h, w = _shape4(fn, "x_shape", x_shape)
    _check(fn, [_Spec("dy", dy, (n, c))])
    g = dy / dy.dtype.type(h * w)
    out = np.empty((c, n, h, w), dtype=dy.dtype)
    out[...] = g.T[:, :, None, None]
    return out.swapaxes(0, 1)


# =========================================================================== batch norm
@_kern
def _bn_fwd_k(xb, xcf, gamma, beta, eps, y, mean, invstd, c0, c1, relu):
    """Batch statistics and y = x * sc + sh per channel (and max(y, 0) with ``relu``)."""
    N, _ = _nc(xb, xcf)
    M = xb.shape[2]
    cnt = N * M
    for c in range(c0, c1):
        s = 0.0
        for n in range(N):
            r = _pl(xb, xcf, n, c)
            for m in range(M):
                s += r[m]
        mu = s / cnt
        v = 0.0
        for n in range(N):
            r = _pl(xb, xcf, n, c)
            for m in range(M):
                e = r[m] - mu
                v += e * e
        v /= cnt
        inv = 1.0 / np.sqrt(v + eps)
        mean[c] = mu
        invstd[c] = inv
        sc = gamma[c] * inv
        sh = beta[c] - mu * sc
        for n in range(N):
            r = _pl(xb, xcf, n, c)
            o = _pl(y, xcf, n, c)
            if relu:
                for m in range(M):
                    v = r[m] * sc + sh
                    o[m] = v if v > 0 else 0
            else:
                for m in range(M):
                    o[m] = r[m] * sc + sh


@_kern
def _bn_bwd_k(dyb, dycf, xb, xcf, gamma, mean, invstd, dx, dgamma, dbeta, c0, c1):
    N, _ = _nc(xb, xcf)
    M = xb.shape[2]
    cnt = N * M
    for c in range(c0, c1):
        mu = mean[c]
        inv = invstd[c]
        sb = 0.0
        sg = 0.0
        for n in range(N):
            g = _pl(dyb, dycf, n, c)
            r = _pl(xb, xcf, n, c)
            for m in range(M):
                sb += g[m]
                sg += g[m] * (r[m] - mu) * inv
        dbeta[c] = sb
        dgamma[c] = sg
        k = gamma[c] * inv / cnt
        for n in range(N):
            g = _pl(dyb, dycf, n, c)
            r = _pl(xb, xcf, n, c)
            o = _pl(dx, xcf, n, c)
            for m in range(M):
                o[m] = k * (cnt * g[m] - sb - (r[m] - mu) * inv * sg)


def _bn_specs(x):
    return _Spec("x", x, ("N", "C", "...")) if x.ndim in (2, 4) else _Spec("x", x, ("N", "C", "H", "W"))


def batch_norm_forward(x, gamma, beta, eps=1e-5):
    return _bn_forward("batch_norm_forward", x, gamma, beta, eps, False)


def batch_norm_relu_forward(x, gamma, beta, eps=1e-5):
    """relu_forward(batch_norm_forward(x, ...)[0]) and its statistics, in one pass of output
    (the backward stays the composition: a fused one was slower, 6.5 against 4.0 ms on
    128x32x32x32, as the reductions do not vectorise)."""
    return _bn_forward("batch_norm_relu_forward", x, gamma, beta, eps, True)


def _bn_forward(fn, x, gamma, beta, eps, relu):
    d, dt = _check(fn, [_bn_specs(x), _Spec("gamma", gamma, ("C",)), _Spec("beta", beta, ("C",))])
    xb, xcf = _canon(_flat3(x))
    y = np.empty(xb.shape, dtype=dt)
    mean = np.empty(d["C"], dtype=dt)
    invstd = np.empty(d["C"], dtype=dt)
    _split(lambda lo, hi: _bn_fwd_k(xb, xcf, gamma, beta, float(eps), y, mean, invstd, lo, hi, relu),
           d["C"], x.size)
    return _uncanon(y, xcf).reshape(x.shape), mean, invstd


def batch_norm_backward(dy, x, gamma, mean, invstd):
    fn = "batch_norm_backward"
    d, dt = _check(fn, [_bn_specs(x), _Spec("dy", dy, x.shape if isinstance(x, np.ndarray) else ()),
                        _Spec("gamma", gamma, ("C",)), _Spec("mean", mean, ("C",)),
                        _Spec("invstd", invstd, ("C",))])
    xb, xcf = _canon(_flat3(x))
    dyb, dycf = _canon(_flat3(dy))   # any layout: the kernel reads planes (no transposing copy)
    dx = np.empty(xb.shape, dtype=dt)
    dgamma = np.empty(d["C"], dtype=dt)
    dbeta = np.empty(d["C"], dtype=dt)
    _split(lambda lo, hi: _bn_bwd_k(dyb, dycf, xb, xcf, gamma, mean, invstd, dx, dgamma, dbeta, lo, hi),
           d["C"], x.size)
    return _uncanon(dx, xcf).reshape(x.shape), dgamma, dbeta


@_kern
def _bn_inf_k(xb, xcf, scale, shift, y, c0, c1):
    N, _ = _nc(xb, xcf)
    M = xb.shape[2]
    for c in range(c0, c1):
        sc = scale[c]
        sh = shift[c]
        for n in range(N):
            r = _pl(xb, xcf, n, c)
            o = _pl(y, xcf, n, c)
            for m in range(M):
                o[m] = r[m] * sc + sh


def _bn_affine(fn, x_spec, gamma, beta, running_mean, running_var, eps):
    """Checked evaluation-mode batch norm as per-channel (scale, shift), computed as the
    reference does: scale = gamma / sqrt(running_var + eps), shift = beta - running_mean * scale."""
    d, dt = _check(fn, [x_spec, _Spec("gamma", gamma, ("C",)), _Spec("beta", beta, ("C",))])
    _check(fn, [_Spec("running_mean", running_mean, (d["C"],)), _Spec("running_var", running_var, (d["C"],))])
    scale = gamma.astype(dt) / np.sqrt(running_var.astype(dt) + dt.type(eps))
    return scale, beta.astype(dt) - running_mean.astype(dt) * scale


def batch_norm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """x * scale + shift per channel (scale and shift as the reference computes them), one
    pass over x in its own layout."""
    scale, shift = _bn_affine("batch_norm_inference", _bn_specs(x), gamma, beta, running_mean, running_var, eps)
    if _is_nhwc(x):   # channels innermost: the affine map broadcasts along the rows
        r = _nhwc_rows(x)
        y = np.multiply(r, scale)
        y += shift
        return _from_rows(y, x.shape[0], x.shape[2], x.shape[3])
    xb, xcf = _canon(_flat3(x))
    y = np.empty(xb.shape, dtype=scale.dtype)
    _split(lambda lo, hi: _bn_inf_k(xb, xcf, scale, shift, y, lo, hi), len(scale), x.size)
    return _uncanon(y, xcf).reshape(x.shape)


# =========================================================================== relu / dropout
@_kern
def _relu_k(x, y, i0, i1):
    for i in range(i0, i1):
        v = x[i]
        y[i] = v if v > 0 else 0


@_kern
def _relu_bwd_k(dy, y, dx, i0, i1):
    for i in range(i0, i1):
        dx[i] = dy[i] if y[i] > 0 else 0


def relu_forward(x):
    fn = "relu_forward"
    _check(fn, [_Spec("x", x, ("...",))])
    if _is_nhwc(x):
        xb, back = _nhwc_rows(x), lambda y: _from_rows(y, x.shape[0], x.shape[2], x.shape[3])
    else:
        xb, cf = _canon(x) if x.ndim >= 2 else (np.ascontiguousarray(x), False)
        back = lambda y: _uncanon(y, cf)  # noqa: E731
    y = np.empty(xb.shape, dtype=x.dtype)
    xf, yf = xb.reshape(-1), y.reshape(-1)
    _split(lambda lo, hi: _relu_k(xf, yf, lo, hi), xf.size, xf.size)
    return back(y)


@_kern
def _relu_bwd_planes_k(dyb, dcf, yb, ycf, dx, t0, t1):
    """dx = dy where y > 0, plane by plane, for dy and y in different canonical layouts
    (planes t0..t1-1 in dy's order; dx in dy's layout)."""
    N, C = _nc(dyb, dcf)
    for t in range(t0, t1):
        n, c = (t % N, t // N) if dcf else (t // C, t % C)
        d = _pl(dyb, dcf, n, c)
        v = _pl(yb, ycf, n, c)
        o = _pl(dx, dcf, n, c)
        for m in range(d.shape[0]):
            o[m] = d[m] if v[m] > 0 else 0


def relu_backward(dy, y):
    fn = "relu_backward"
    _check(fn, [_Spec("dy", dy, ("...",)), _Spec("y", y, ("...",))])
    if dy.shape != y.shape:
        raise ValueError(f"{fn}: dy and y must have one shape, got dy {dy.shape}, y {y.shape}")
    if dy.ndim == 4:
        db, dcf = _canon(_flat3(dy))
        yb, ycf = _canon(_flat3(y))
        if dcf != ycf:  # (e.g. dy from a NCHW product, y CNHW): no transposing copy of y
            dx = np.empty(db.shape, dtype=dy.dtype)
            planes = db.shape[0] * db.shape[1]
            _split(lambda lo, hi: _relu_bwd_planes_k(db, dcf, yb, ycf, dx, lo, hi), planes, dy.size)
            return _uncanon(dx, dcf).reshape(dy.shape)
    db, cf = _canon(dy) if dy.ndim >= 2 else (np.ascontiguousarray(dy), False)
    yb = _uncanon(y, cf) if dy.ndim >= 2 else y
    yb = np.ascontiguousarray(yb)
    dx = np.empty(db.shape, dtype=dy.dtype)
    df, yf, xf = db.reshape(-1), yb.reshape(-1), dx.reshape(-1)
    _split(lambda lo, hi: _relu_bwd_k(df, yf, xf, lo, hi), df.size, df.size)
    return _uncanon(dx, cf)


def dropout_mask(shape, p, seed=None, dtype=np.float32):
    """Same stream as the reference: equal masks for equal seeds."""
    if np.dtype(dtype) not in _FLOATS:
        raise ValueError(f"dropout_mask: dtype must be float32 or float64, got {np.dtype(dtype)}")
    return _ref.dropout_mask(shape, p, seed, dtype)
