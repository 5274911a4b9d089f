"""Convolution and the dense layer: the two ops with weights."""
from __future__ import annotations

import kernels as K

from ..tensor import Tensor, as_tensor
from . import _check


def conv2d(x, w, b=None, stride=1, padding=0) -> Tensor:
    """Cross-correlation. x: (N, C, H, W), w: (O, C, kh, kw), b: (O,) -> (N, O, OH, OW),
    OH = (H + 2 pad_h - kh) // stride_h + 1.

    Backward (kernels.conv2d_backward): dW = sum_n dY_n im2col(x_n)^T, db = sum dY,
    dx = col2im(W^T dY).
    """
    x, w = as_tensor(x), as_tensor(w)
    b = None if b is None else as_tensor(b)
    _check.ndim("conv2d", x, 4, "input", "N, C, H, W")
    _check.ndim("conv2d", w, 4, "weight", "O, C, kh, kw")
    _check.floating("conv2d", ("input", x), ("weight", w), ("bias", b))
    stride, pad = K.pair(stride, "stride"), K.pair(padding, "padding")
    N, C, H, W = x.shape
    O, Cw, kh, kw = w.shape
    if C != Cw:
        _check.fail("conv2d", f"input has {C} channels {x.shape} but the weight {w.shape} expects {Cw} "
                              f"(weight layout O, C, kh, kw)")
    if b is not None and b.shape != (O,):
        _check.fail("conv2d", f"bias must have shape ({O},), got {b.shape}")
    if min(stride) < 1 or min(pad) < 0:
        _check.fail("conv2d", f"stride must be >= 1 and padding >= 0, got stride={stride} padding={pad}")
    if H + 2 * pad[0] < kh or W + 2 * pad[1] < kw:
        _check.fail("conv2d", f"kernel {kh}x{kw} is larger than the padded input "
                              f"{H + 2 * pad[0]}x{W + 2 * pad[1]} (input {x.shape}, padding {pad})")
    y = K.conv2d_forward(x.data, w.data, None if b is None else b.data, stride, pad)

    def backward(g):
        dx, dw, db = K.conv2d_backward(g, x.data, w.data, stride, pad, x.requires_grad)
        return dx, dw, db
    parents = (x, w) if b is None else (x, w, b)
    return Tensor.from_op(y, parents, backward)


def linear(x, w, b=None) -> Tensor:
    """y = x W^T + b. x: (N, in), w: (out, in), b: (out,) -> (N, out).
    dx = g W, dW = g^T x, db = sum_n g."""
    x, w = as_tensor(x), as_tensor(w)
    b = None if b is None else as_tensor(b)
    _check.ndim("linear", x, 2, "input", "N, in_features")
    _check.ndim("linear", w, 2, "weight", "out_features, in_features")
    _check.floating("linear", ("input", x), ("weight", w), ("bias", b))
    if x.shape[1] != w.shape[1]:
        _check.fail("linear", f"input has {x.shape[1]} features {x.shape} but the weight {w.shape} "
                              f"expects {w.shape[1]} (weight layout out, in)")
    if b is not None and b.shape != (w.shape[0],):
        _check.fail("linear", f"bias must have shape ({w.shape[0]},), got {b.shape}")
    y = K.linear_forward(x.data, w.data, None if b is None else b.data)

    def backward(g):
        dx = K.matmul(g, w.data) if x.requires_grad else None
        dw = K.matmul(g, x.data, trans_a=True)
        return (dx, dw) if b is None else (dx, dw, K.reduce_sum(g, 0))
    return Tensor.from_op(y, (x, w) if b is None else (x, w, b), backward)
