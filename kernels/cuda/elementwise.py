"""Elementwise kernels: binary arithmetic with NumPy broadcasting, unary ops, casts, relu,
dropout.

Every kernel is a grid-stride loop over the flat output: consecutive threads touch
consecutive elements (coalesced); ``i < n`` is the bounds check. Broadcasting is done in the
kernel by unravelling the flat output index over (up to) 6 dims and dotting it with each
operand's element strides (0 along broadcast dims), so a bias or a (N, 1) row statistic is
never materialised. A host scalar (Python number or 0-d NumPy array) is passed to the
kernel as an argument, never copied as an array.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .. import reference
from ..shapes import float_dtype
from ._common import empty, flat, is_dev, kernel, launch1d, need, prod, zeros

MAXDIM = 6
ADD, SUB, MUL, DIV = 0, 1, 2, 3
COPY, NEG, ABS, SIGN, EXP, LOG, RELU = 0, 1, 2, 3, 4, 5, 6


# ------------------------------------------------------------------ kernels
@cuda.jit(device=True)
def _apply(op, x, y):
    """x (op) y for op in ADD, SUB, MUL, DIV: the one switch the binary kernels share."""
    if op == ADD:
        return x + y
    if op == SUB:
        return x - y
    if op == MUL:
        return x * y
    return x / y


@kernel
def _binary_k(a, b, out, op):
    """out = a (op) b, same shapes, flat."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        x = a[i]
        y = b[i]
        out[i] = _apply(op, x, y)


@kernel
def _binary_bcast_k(a, b, out, op, shp, sta, stb):
    """out = a (op) b with broadcasting: ``shp`` is the output shape padded on the left to
    6 dims, ``sta``/``stb`` the operands' element strides (0 where broadcast)."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        rem = i
        ia = 0
        ib = 0
        for d in range(MAXDIM - 1, -1, -1):
            k = rem % shp[d]
            rem //= shp[d]
            ia += k * sta[d]
            ib += k * stb[d]
        x = a[ia]
        y = b[ib]
        out[i] = _apply(op, x, y)


@kernel
def _binary_scalar_k(a, s, out, op, scalar_first):
    """out = a (op) s, or s (op) a when ``scalar_first``."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        if scalar_first:
            x = s
            y = a[i]
        else:
            x = a[i]
            y = s
        out[i] = _apply(op, x, y)


@kernel
def _unary_k(x, out, op):
    """out = f(x) for f in copy/cast, neg, abs, sign, exp, log, relu (store casts to out)."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        v = x[i]
        if op == COPY:
            out[i] = v
        elif op == NEG:
            out[i] = -v
        elif op == ABS:
            out[i] = abs(v)
        elif op == SIGN:
            if v > 0:
                out[i] = 1
            elif v < 0:
                out[i] = -1
            else:
                out[i] = 0
        elif op == EXP:
            out[i] = math.exp(v)
        elif op == LOG:
            out[i] = math.log(v)
        else:  # RELU
            if v > 0:
                out[i] = v
            else:
                out[i] = 0


@kernel
def _bcast_copy_k(x, out, shp, stx):
    """out = broadcast_to(x, shape) (materialised, cast to out's dtype)."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        rem = i
        ix = 0
        for d in range(MAXDIM - 1, -1, -1):
            k = rem % shp[d]
            rem //= shp[d]
            ix += k * stx[d]
        out[i] = x[ix]


@kernel
def _relu_bwd_k(dy, y, dx):
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        if y[i] > 0:
            dx[i] = dy[i]
        else:
            dx[i] = 0


# ------------------------------------------------------------------ helpers
def _pad(shape):
    return (1,) * (MAXDIM - len(shape)) + tuple(int(s) for s in shape)


def _bcast_strides(shape, out_shape):
    """Element strides of a C-contiguous array of ``shape`` read at the indices of
    ``out_shape`` (right-aligned, 0 along broadcast dims), padded to MAXDIM."""
    shape = _pad(shape)
    out_shape = _pad(out_shape)
    strides, step = [0] * MAXDIM, 1
    for d in range(MAXDIM - 1, -1, -1):
        strides[d] = 0 if (shape[d] == 1 and out_shape[d] != 1) else step
        step *= shape[d]
    return tuple(strides)


def _scalar(fname, v, dtype):
    """A host scalar operand -> a NumPy scalar of ``dtype`` (weak-scalar promotion: the
    device operand's dtype wins, as NumPy does for Python scalars)."""
    if isinstance(v, np.ndarray):
        if v.ndim != 0:
            raise ValueError(f"{fname}: one operand is on the GPU and the other is a host array of shape "
                             f"{v.shape}; move both to one device (Tensor.to('cuda'))")
        v = v[()]
    if not np.isscalar(v):
        raise ValueError(f"{fname}: operand of type {type(v).__name__} is neither a device array nor a scalar")
    return np.dtype(dtype).type(v)


def _binary(fname, op, a, b):
    ad, bd = is_dev(a), is_dev(b)
    if ad and bd:
        need(fname, "a", a, dtypes=None)
        need(fname, "b", b, dtypes=None)
        try:
            shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
        except ValueError:
            raise ValueError(f"{fname}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast") from None
        if len(shape) > MAXDIM:
            raise ValueError(f"{fname}: at most {MAXDIM} dims on the GPU, got {shape}")
        out = empty(shape, np.result_type(a.dtype, b.dtype))
        if out.size == 0:
            return out
        o = flat(out)
        if tuple(a.shape) == tuple(b.shape):
            launch1d(_binary_k, o.size, flat(a), flat(b), o, op)
        else:
            launch1d(_binary_bcast_k, o.size, flat(a), flat(b), o, op, _pad(shape),
                   _bcast_strides(a.shape, shape), _bcast_strides(b.shape, shape))
        return out
    if not (ad or bd):
        raise ValueError(f"{fname}: neither operand is a CUDA device array")
    arr, other = (a, b) if ad else (b, a)
    need(fname, "a" if ad else "b", arr, dtypes=None)
    s = _scalar(fname, other, arr.dtype)
    out = empty(arr.shape, arr.dtype)
    if out.size:
        launch1d(_binary_scalar_k, out.size, flat(arr), s, flat(out), op, not ad)
    return out


def _unary(fname, op, x, dtype=None):
    need(fname, "x", x, dtypes=None)
    out = empty(x.shape, x.dtype if dtype is None else dtype)
    if out.size:
        launch1d(_unary_k, out.size, flat(x), flat(out), op)
    return out


# ------------------------------------------------------------------ engine API
def add(a, b):
    """a + b with NumPy broadcasting (either operand may be a host scalar)."""
    return _binary("add", ADD, a, b)


def sub(a, b):
    return _binary("sub", SUB, a, b)


def mul(a, b):
    return _binary("mul", MUL, a, b)


def div(a, b):
    return _binary("div", DIV, a, b)


def neg(x):
    return _unary("neg", NEG, x)


def absolute(x):
    return _unary("absolute", ABS, x)


def sign(x):
    return _unary("sign", SIGN, x)


def exp(x):
    return _unary("exp", EXP, x)


def log(x):
    return _unary("log", LOG, x)


def astype(x, dtype):
    """Cast; returns ``x`` itself when it already has ``dtype`` (NumPy's copy=False)."""
    if np.dtype(x.dtype) == np.dtype(dtype):
        return x
    return _unary("astype", COPY, x, np.dtype(dtype))


def zeros_like(x):
    return zeros(x.shape, x.dtype)


def broadcast_to(x, shape, dtype=None):
    """A new C-contiguous array: ``x`` broadcast to ``shape`` (and cast to ``dtype``)."""
    need("broadcast_to", "x", x, dtypes=None)
    shape = tuple(int(s) for s in shape)
    try:
        if np.broadcast_shapes(tuple(x.shape), shape) != shape:
            raise ValueError
    except ValueError:
        raise ValueError(f"broadcast_to: cannot broadcast {tuple(x.shape)} to {shape}") from None
    if len(shape) > MAXDIM:
        raise ValueError(f"broadcast_to: at most {MAXDIM} dims on the GPU, got {shape}")
    out = empty(shape, x.dtype if dtype is None else dtype)
    if out.size:
        o = flat(out)
        launch1d(_bcast_copy_k, o.size, flat(x), o, _pad(shape), _bcast_strides(x.shape, shape))
    return out


# ------------------------------------------------------------------ kernel API
def relu_forward(x):
    need("relu_forward", "x", x)
    return _unary("relu_forward", RELU, x)


def relu_backward(dy, y):
    need("relu_backward", "dy", dy)
    need("relu_backward", "y", y)
    if tuple(dy.shape) != tuple(y.shape):
        raise ValueError(f"relu_backward: dy {tuple(dy.shape)} and y {tuple(y.shape)} must have the same shape")
    dx = empty(dy.shape, dy.dtype)
    if dx.size:
        launch1d(_relu_bwd_k, dx.size, flat(dy), flat(y), flat(dx))
    return dx


def dropout_mask(shape, p, seed=None, dtype=np.float32):
    """The reference's mask, as the CPU kernel draws it (same generator, same draws: a CUDA
    run and a CPU run with one seed drop the same units), copied to the device. One
    host-to-device copy per call."""
    mask = reference.dropout_mask(shape, p, seed, float_dtype("dropout_mask", dtype))
    return cuda.to_device(np.asarray(mask, order="C"))


__all__ = ["add", "sub", "mul", "div", "neg", "absolute", "sign", "exp", "log", "astype",
           "zeros_like", "broadcast_to", "relu_forward", "relu_backward", "dropout_mask", "prod"]
