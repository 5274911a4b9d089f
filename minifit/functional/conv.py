"""Convolution and the dense layer: the two ops with weights."""
from __future__ import annotations

import kernels as K

from ..tensor import Tensor, as_tensor, records
from . import _check
from .pool import pool_window


def _conv_args(x, w, b, stride, padding):
    """Validated (x, w, b, stride pair, pad pair) of a convolution (errors name conv2d)."""
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
    if min(stride) < 1 or min(pad) < 0:
        _check.fail("conv2d", f"stride must be >= 1 and padding >= 0, got stride={stride} padding={pad}")
    if H + 2 * pad[0] < kh or W + 2 * pad[1] < kw:
        _check.fail("conv2d", f"kernel {kh}x{kw} is larger than the padded input "
                              f"{H + 2 * pad[0]}x{W + 2 * pad[1]} (input {x.shape}, padding {pad})")
    untied = (O, K.conv_output_size(H, kh, stride[0], pad[0]), K.conv_output_size(W, kw, stride[1], pad[1]))
    if b is not None and b.shape not in ((O,), untied):
        _check.fail("conv2d", f"bias must have shape ({O},) (tied: one per map) or {untied} (untied: one per "
                              f"map and output position), got {b.shape}")
    return x, w, b, stride, pad


def _untied(b) -> bool:
    """An untied bias (O, OH, OW): one per output position (pylearn2's MNIST maxout layers)."""
    return b is not None and b.ndim == 3


def conv2d(x, w, b=None, stride=1, padding=0) -> Tensor:
    """Cross-correlation. x: (N, C, H, W), w: (O, C, kh, kw) -> (N, O, OH, OW),
    OH = (H + 2 pad_h - kh) // stride_h + 1; b: (O,) tied, y[n, o] += b[o], or
    (O, OH, OW) untied, y[n, o, i, j] += b[o, i, j].

    Backward (kernels.conv2d_backward): dW = sum_n dY_n im2col(x_n)^T, dx = col2im(W^T dY),
    db = dY summed over n, i, j (tied) or over n only (untied).
    """
    return _conv2d(*_conv_args(x, w, b, stride, padding))


def _conv2d(x, w, b, stride, pad) -> Tensor:
    """conv2d on checked arguments."""
    y = K.conv2d_forward(x.data, w.data, None if b is None else b.data, stride, pad)

    def backward(g):
        dx, dw, db = K.conv2d_backward(g, x.data, w.data, stride, pad, x.requires_grad, _untied(b))
        return dx, dw, db
    parents = (x, w) if b is None else (x, w, b)
    return Tensor.from_op(y, parents, backward)


def maxout_conv2d(x, w, b, pieces: int, stride=1, padding=0, pool=None, pool_stride=None,
                  ceil_mode=True) -> Tensor:
    """maxout(conv2d(x, w, b), pieces), b tied (O,) or untied (O, OH, OW), then with
    ``pool`` a max pool (window ``pool``,
    stride ``pool_stride``, default the window): the values and gradients of
    ``maxout_pool2d(conv2d(...))`` / ``maxout(conv2d(...))``, with one fused forward kernel
    (kernels.conv2d_maxout_forward) that never stores the whole conv output.
    Backward: dz = maxout(_pool)_backward(g), then conv2d_backward(dz), in one kernel
    (kernels.conv2d_maxout_backward: dz is made chunk by chunk, in cache)."""
    x, w, b, stride, pad = _conv_args(x, w, b, stride, padding)
    N, _, H, W = x.shape
    O, _, kh, kw = w.shape
    pieces = int(pieces)
    if pieces < 1 or O % pieces:
        _check.fail("maxout_conv2d", f"the conv's {O} output maps must be a multiple of pieces={pieces}")
    if pool is None and pieces == 1:
        return _conv2d(x, w, b, stride, pad)
    z_shape = (N, O, K.conv_output_size(H, kh, stride[0], pad[0]), K.conv_output_size(W, kw, stride[1], pad[1]))
    k = s = None
    if pool is not None:
        k, s = pool_window("maxout_conv2d", z_shape[2:], pool, pool_stride, ceil_mode)
    parents = (x, w) if b is None else (x, w, b)
    # with no graph recorded the backward kernels (which expect CNHW) never run: the
    # forward may return its fastest layout
    y, arg = K.conv2d_maxout_forward(x.data, w.data, None if b is None else b.data, stride, pad, pieces,
                                     k, s, ceil_mode, channels_last=not records(parents))

    def backward(g):   # dz = maxout(_pool)_backward(g), fused into conv2d_backward
        return K.conv2d_maxout_backward(g, arg, x.data, w.data, stride, pad, pieces, k, s, ceil_mode,
                                        x.requires_grad, _untied(b))
    return Tensor.from_op(y, parents, backward)


def bn_relu_conv2d(x, gamma, beta, running_mean, running_var, w, b=None, stride=1, padding=0,
                   eps=1e-5, residual=None) -> Tensor:
    """conv2d(relu(batch_norm(x, ..., training=False)), w, b) (+ residual): a pre-activation
    residual block's BN-ReLU-conv (and its addition) in evaluation mode, where batch norm is
    the fixed per-channel map a = relu(x * s + t), s = gamma / sqrt(running_var + eps),
    t = beta - running_mean * s. One fused forward kernel (kernels.bn_relu_conv2d_forward:
    a is never stored). Backward recomputes a, then da, dW, db = conv2d_backward(g, a);
    dz = da * [a > 0]; dx = s dz, dgamma = sum dz * xhat, dbeta = sum dz
    (batch_norm_eval_backward); the residual gets g."""
    x, w, b, stride, pad = _conv_args(x, w, b, stride, padding)
    gamma, beta = as_tensor(gamma), as_tensor(beta)
    C = x.shape[1]
    if gamma.shape != (C,) or beta.shape != (C,) or running_mean.shape != (C,) or running_var.shape != (C,):
        _check.fail("bn_relu_conv2d", f"gamma, beta, running_mean and running_var must have shape ({C},) "
                                      f"for input {x.shape}, got {gamma.shape}, {beta.shape}, "
                                      f"{running_mean.shape}, {running_var.shape}")
    if residual is not None:
        residual = as_tensor(residual)
        out = (x.shape[0], w.shape[0], K.conv_output_size(x.shape[2], w.shape[2], stride[0], pad[0]),
               K.conv_output_size(x.shape[3], w.shape[3], stride[1], pad[1]))
        if residual.shape != out:
            _check.fail("bn_relu_conv2d", f"the residual must have the output's shape {out}, got {residual.shape}")
    y = K.bn_relu_conv2d_forward(x.data, gamma.data, beta.data, running_mean, running_var, eps,
                                 w.data, None if b is None else b.data, stride, pad,
                                 None if residual is None else residual.data)

    def backward(g):
        a = K.relu_forward(K.batch_norm_inference(x.data, gamma.data, beta.data, running_mean, running_var, eps))
        da, dw, db = K.conv2d_backward(g, a, w.data, stride, pad, True, _untied(b))
        dx, dgamma, dbeta = K.batch_norm_eval_backward(K.relu_backward(da, a), x.data, gamma.data,
                                                       running_mean, running_var, eps)
        return (dx, dgamma, dbeta, dw) + (() if b is None else (db,)) + (() if residual is None else (g,))
    parents = (x, gamma, beta, w) + (() if b is None else (b,)) + (() if residual is None else (residual,))
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
