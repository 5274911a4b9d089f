"""Shared machinery of the CUDA kernels: the kernel registry and launcher, allocation,
host <-> device copies and the device-array checks (``need``: a C-contiguous device array of
a float dtype; ValueErrors that name the function, what it expected and what it got).
Shapes and geometry are checked by kernels.shapes, as on the CPU.

Launch conventions used by every module:
  * 1-D kernels use grid-stride loops (``for i in range(cuda.grid(1), n, cuda.gridsize(1))``)
    with ``TPB`` threads per block (fewer, a multiple of the warp size 32, when n is
    smaller) and at most ``MAX_BLOCKS`` blocks, so any size is covered and the last,
    partial block is bounds-checked by the loop condition.
  * Row kernels (reductions, softmax, batch-norm statistics) use one block per row, of
    ``row_block(row length)`` threads: a power of two from 32 (one warp) to ``RB``. The
    threads stride along the row by ``blockDim.x`` (coalesced), then reduce in shared
    memory (RB elements) with a tree over ``blockDim.x``.
  * Every array handed to a kernel is a device array; nothing is copied implicitly.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

TPB = 256          # threads per block, 1-D kernels
MAX_BLOCKS = 2048  # grid cap for grid-stride kernels
RB = 128           # max threads per block of the one-block-per-row kernels (power of two)
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

# ------------------------------------------------------------------ kernel registry
KERNELS: dict = {}      # name -> numba CUDA dispatcher
_NAMES: dict = {}       # id(dispatcher) -> name
_record: list | None = None


def kernel(fn=None, *, name=None):
    """``@cuda.jit`` that also registers the kernel by name (for the launch recorder)."""
    def wrap(f):
        d = cuda.jit(f)
        key = name or f.__name__
        KERNELS[key] = d
        _NAMES[id(d)] = key
        return d
    return wrap(fn) if fn is not None else wrap


def start_recording():
    """Record (kernel name, numba argument types) of every launch from now on (tests use
    it to compile exactly the launched specialisations to PTX for a real GPU)."""
    global _record
    _record = []


def stop_recording() -> list:
    global _record
    out, _record = _record or [], None
    return out


def launch(k, grid, block, *args):
    if _record is not None:
        import numba
        _record.append((_NAMES.get(id(k), getattr(k, "__name__", "?")),
                        tuple(numba.typeof(a) for a in args)))
    k[grid, block](*args)


def blocks(n: int, tpb: int = TPB) -> int:
    return max(1, min(MAX_BLOCKS, (int(n) + tpb - 1) // tpb))


def threads(n: int) -> int:
    """Threads per block for a 1-D grid-stride kernel over n elements: TPB, or for small n
    the smallest multiple of the warp size (32) that covers them."""
    return TPB if n >= TPB else max(32, 32 * ((int(n) + 31) // 32))


def launch1d(k, n, *args):
    """Launch a grid-stride kernel over n elements."""
    t = threads(n)
    launch(k, blocks(n, t), t, *args)


def row_block(n: int) -> int:
    """Threads per block of a row kernel for rows of length n: a power of two in [32, RB]."""
    t = 32
    while t < n and t < RB:
        t *= 2
    return t


def ceil_div(a: int, b: int) -> int:
    return (int(a) + b - 1) // b


# ------------------------------------------------------------------ arrays
def is_dev(a) -> bool:
    return (not isinstance(a, np.ndarray)
            and (hasattr(a, "__cuda_array_interface__") or bool(getattr(a, "__cuda_ndarray__", False))))


def is_c(a) -> bool:
    f = getattr(a, "is_c_contiguous", None)
    return f() if callable(f) else bool(a.flags.c_contiguous)


def empty(shape, dtype):
    return cuda.device_array(tuple(int(s) for s in shape), dtype=np.dtype(dtype))


def flat(a):
    """1-D view of a C-contiguous device array (a 0-d array becomes shape (1,))."""
    return a.reshape(max(1, int(np.prod(a.shape, dtype=np.int64))))


@kernel
def _fill_k(out, value):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = value


def full(shape, value, dtype):
    out = empty(shape, dtype)
    o = flat(out)
    if int(np.prod(out.shape, dtype=np.int64)) > 0:
        launch1d(_fill_k, o.size, o, np.dtype(dtype).type(value))
    return out


def zeros(shape, dtype):
    return full(shape, 0, dtype)


def to_device(a):
    """A host array (or anything np.asarray takes) -> a C-contiguous device array; a device
    array is returned as is."""
    if is_dev(a):
        return a
    return cuda.to_device(np.asarray(a, order="C"))


def to_host(a) -> np.ndarray:
    """A device array -> a new host array (a host array is copied)."""
    if is_dev(a):
        return a.copy_to_host()
    return np.array(a, copy=True)


def smoke_test():
    """Compile, launch and read back a one-thread kernel (raises if CUDA does not work)."""
    out = full((1,), 1.5, np.float32).copy_to_host()
    if out[0] != np.float32(1.5):
        raise RuntimeError(f"test kernel returned {out[0]} instead of 1.5")


# ------------------------------------------------------------------ argument checks
def need(fname: str, name: str, a, ndim=None, dtypes=FLOATS, contiguous=True):
    """Check that ``a`` is a device array of one of ``dtypes`` with ``ndim`` dims
    (an int, a tuple of allowed ints, or ``(k, None)`` for at least k); returns it."""
    if not is_dev(a):
        where = "a NumPy (host) array" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"{fname}: {name} must be a CUDA device array, got {where}; "
                         f"move it to the GPU first (Tensor.to('cuda') / kernels.cuda.to_device)")
    if dtypes is not None and np.dtype(a.dtype) not in [np.dtype(d) for d in dtypes]:
        allowed = " or ".join(str(np.dtype(d)) for d in dtypes)
        raise ValueError(f"{fname}: {name} must be {allowed}, got {a.dtype}")
    if ndim is not None:
        nd = len(a.shape)
        if isinstance(ndim, tuple) and len(ndim) == 2 and ndim[1] is None:
            ok, want = nd >= ndim[0], f"at least {ndim[0]}-d"
        else:
            allowed = ndim if isinstance(ndim, tuple) else (ndim,)
            ok, want = nd in allowed, " or ".join(f"{k}-d" for k in allowed)
        if not ok:
            raise ValueError(f"{fname}: {name} must be {want}, got shape {tuple(a.shape)}")
    if contiguous and not is_c(a):
        raise ValueError(f"{fname}: {name} must be C-contiguous (the CUDA kernels read flat, "
                         f"coalesced rows), got strides {a.strides} for shape {tuple(a.shape)}")
    return a


def same_dtype(fname: str, **arrays):
    named = [(k, v) for k, v in arrays.items() if v is not None]
    dts = {np.dtype(v.dtype) for _, v in named}
    if len(dts) > 1:
        given = ", ".join(f"{k} is {v.dtype}" for k, v in named)
        raise ValueError(f"{fname}: mixed dtypes ({given}); all float arrays must share one dtype")
    return np.dtype(named[0][1].dtype)


def same_shape(fname: str, name: str, a, shape, what="expected"):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{fname}: {name} must have shape {tuple(shape)} ({what}), got {tuple(a.shape)}")


def prod(shape) -> int:
    return int(math.prod(int(s) for s in shape))


# ------------------------------------------------------------------ per-dtype kernels
def per_dtype(name: str):
    """Decorator for a kernel *maker* ``maker(nbt) -> python function`` whose body needs the
    element type at compile time (shared-memory arrays, typed zeros): builds and registers
    one kernel per float dtype, returned as ``{np.dtype: kernel}``."""
    import numba

    def deco(maker):
        out = {}
        for np_dt, nb_dt in ((np.float32, numba.float32), (np.float64, numba.float64)):
            f = maker(nb_dt)
            f.__name__ = f"{name}_{np.dtype(np_dt).name}"
            out[np.dtype(np_dt)] = kernel(f, name=f.__name__)
        return out
    return deco


@cuda.jit(device=True)
def block_sum(sh, tid, v):
    """Sum of ``v`` over the threads of a block (blockDim.x: a power of two <= RB; tree in
    the shared array ``sh`` of RB elements). Every thread of the block must call it; every
    thread gets the total."""
    sh[tid] = v
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if tid < s:
            sh[tid] += sh[tid + s]
        cuda.syncthreads()
        s //= 2
    total = sh[0]
    cuda.syncthreads()  # sh may be reused right after
    return total


@cuda.jit(device=True)
def block_max(sh, tid, v):
    """Max of ``v`` over the threads of a block (see block_sum)."""
    sh[tid] = v
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if tid < s:
            if sh[tid + s] > sh[tid]:
                sh[tid] = sh[tid + s]
        cuda.syncthreads()
        s //= 2
    total = sh[0]
    cuda.syncthreads()
    return total
