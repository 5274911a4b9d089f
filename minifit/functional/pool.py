"""Maxout and pooling: ops that route the gradient to the arg-max."""
from __future__ import annotations

import kernels as K

from ..tensor import Tensor, as_tensor
from . import _check


def maxout(x, pieces: int) -> Tensor:
    """h_i = max_{j < pieces} x_{i*pieces + j} over axis 1 (groups of consecutive channels).
    x: (N, C*pieces, ...) -> (N, C, ...); the gradient goes to the arg-max of each group."""
    x = as_tensor(x)
    if x.ndim < 2:
        _check.fail("maxout", f"input must be at least 2-D (N, C*pieces, ...), got shape {x.shape}")
    if pieces < 1 or x.shape[1] % pieces:
        _check.fail("maxout", f"axis 1 of the input {x.shape} must be a multiple of pieces={pieces}")
    if pieces == 1:
        return x
    y, arg = K.maxout_forward(x.data, pieces)
    return Tensor.from_op(y, (x,), lambda g: (K.maxout_backward(g, arg, pieces),))


def pool_window(op, hw, kernel_size, stride, ceil_mode):
    """Checked (kernel, stride) pairs of a max pool over planes of size ``hw`` (stride
    defaults to the window); errors name ``op``."""
    k = K.pair(kernel_size, "kernel_size")
    s = K.pair(k if stride is None else stride, "stride")
    if min(k) < 1 or min(s) < 1:
        _check.fail(op, f"kernel_size and stride must be >= 1, got {k} and {s}")
    for size, kk in zip(hw, k):
        if size < kk and not ceil_mode:
            _check.fail(op, f"window {k} is larger than the input {tuple(hw)} (floor mode); "
                            f"use ceil_mode=True or a smaller window")
    return k, s


def _pool_args(op, x, kernel_size, stride, ceil_mode):
    _check.ndim(op, x, 4, "input", "N, C, H, W")
    return pool_window(op, x.shape[2:], kernel_size, stride, ceil_mode)


def max_pool2d(x, kernel_size, stride=None, ceil_mode=False) -> Tensor:
    """y[n,c,i,j] = max over the window at (i*s_h, j*s_w); overlapping windows allowed.
    Output size: floor((H-k)/s)+1, or with ceil_mode the pylearn2 ceil((H-k)/s)+1."""
    x = as_tensor(x)
    k, s = _pool_args("max_pool2d", x, kernel_size, stride, ceil_mode)
    y, arg = K.maxpool2d_forward(x.data, k, s, ceil_mode)
    return Tensor.from_op(y, (x,), lambda g: (K.maxpool2d_backward(g, arg, x.shape),))


def maxout_pool2d(x, pieces: int, kernel_size, stride=None, ceil_mode=True) -> Tensor:
    """max_pool2d(maxout(x, pieces)) in one fused kernel (same values and gradient)."""
    x = as_tensor(x)
    if pieces < 1 or x.ndim != 4 or x.shape[1] % pieces:
        _check.fail("maxout_pool2d", f"input must be (N, C*pieces, H, W) with pieces={pieces}, got {x.shape}")
    k, s = _pool_args("maxout_pool2d", x, kernel_size, stride, ceil_mode)
    y, arg = K.maxout_pool_forward(x.data, pieces, k, s, ceil_mode)
    return Tensor.from_op(y, (x,), lambda g: (K.maxout_pool_backward(g, arg, x.shape, pieces),))


def global_avg_pool2d(x) -> Tensor:
    """(N, C, H, W) -> (N, C): mean over H, W; the gradient spreads evenly."""
    x = as_tensor(x)
    _check.ndim("global_avg_pool2d", x, 4, "input", "N, C, H, W")
    y = K.global_avg_pool_forward(x.data)
    return Tensor.from_op(y, (x,), lambda g: (K.global_avg_pool_backward(g, x.shape),))

