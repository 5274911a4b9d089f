"""Array-in, array-out kernels: the bottom floor of minifit. Never imports minifit.

Three implementations of one API:
  kernels.reference  plain NumPy: the math, the definition the tests hold the others to;
  kernels.cpu        the fast versions for NumPy arrays (Numba ``@njit`` + BLAS on a thread
                     pool; one module per op family);
  kernels.cuda       numba.cuda kernels for CUDA device arrays.

The one dispatch rule: every function exported here runs ``kernels.cuda``'s version if
any of its array arguments is a CUDA device array, else ``kernels.cpu``'s (the only kernel
without an array argument, dropout_mask, takes ``like=`` to name one). Layout is NCHW;
``stride`` / ``pad`` / ``kernel`` are (h, w) pairs or ints.

Layer kernels (_API; kernels.reference has each):
  im2col(x, kernel, stride, pad) -> cols (N, C*kh*kw, OH*OW)
  col2im(cols, x_shape, kernel, stride, pad) -> x (N, C, H, W)   (sums overlaps)
  conv2d_forward(x, w, b, stride, pad) -> y (N, O, OH, OW)
      b: None, (O,) tied (one bias per map) or (O, OH, OW) untied (one per position)
  conv2d_backward(dy, x, w, stride, pad, need_dx, untied_bias=False) -> (dx | None, dw, db)
      db: (O,), or (O, OH, OW) with untied_bias
  maxout_forward(x, pieces) -> (y, arg)   x: (N, C*pieces, ...), y: (N, C, ...), arg uint8
  maxout_backward(dy, arg, pieces) -> dx
  maxpool2d_forward(x, kernel, stride, ceil_mode) -> (y, arg)   arg: int32 flat h*W+w
  maxpool2d_backward(dy, arg, x_shape) -> dx                    (a tie: one element)
  maxout_pool_forward(x, pieces, kernel, stride, ceil_mode) -> (y, arg)  fused maxout+pool
  maxout_pool_backward(dy, arg, x_shape, pieces) -> dx
  global_avg_pool_forward(x) -> (N, C);  global_avg_pool_backward(dy, x_shape) -> dx
  batch_norm_forward(x, gamma, beta, eps) -> (y, mean, invstd)  stats over all axes but 1
  batch_norm_backward(dy, x, gamma, mean, invstd) -> (dx, dgamma, dbeta)
  batch_norm_inference(x, gamma, beta, running_mean, running_var, eps) -> y
  relu_forward(x) -> y;  relu_backward(dy, y) -> dx
  dropout_mask(shape, p, seed, dtype, like=None) -> mask with entries 0 or 1/(1-p)

Fused kernels (FUSED_API: the values of the composition; kernels.cpu fuses them,
kernels.cuda composes them):
  conv2d_maxout_forward(x, w, b, stride, pad, pieces, pool, pool_stride, ceil_mode,
                        channels_last) -> (y, arg)   conv2d_forward, then maxout_forward
                        (pool None) or maxout_pool_forward; channels_last: the caller
                        runs no backward, the kernel may return its fastest layout
  conv2d_maxout_backward(dy, arg, x, w, stride, pad, pieces, pool, pool_stride, ceil_mode,
                         need_dx, untied_bias) -> (dx | None, dw, db)   conv2d_backward of
                        maxout_backward(dy, arg) (pool None) or maxout_pool_backward
  bn_relu_conv2d_forward(x, gamma, beta, running_mean, running_var, eps, w, b, stride, pad,
                         residual=None) -> y   conv2d_forward(relu(batch_norm_inference(x)))
                                               (+ residual)
  batch_norm_relu_forward(x, gamma, beta, eps, mask=None) -> (y, mean, invstd)
                        y = relu(batch_norm_forward(x)) (* mask: a dropout mask of x's shape)
  batch_norm_relu_backward(dy, y, x, gamma, mean, invstd, mask=None) -> (dx, dgamma, dbeta)
                        batch_norm_backward(relu_backward(dy (* mask), y), x, gamma, mean,
                        invstd), y the forward's output

Engine ops (ENGINE_API): the array math of minifit's functional ops, autograd, losses and
optimizers outside the layer kernels (elementwise arithmetic with broadcasting, sums,
matmul, softmax / cross-entropy, the KD and hint losses' values and gradients, batch-norm
running statistics, optimizer updates, max-norm). The updates take ``max_norm=None``: the
max-norm constraint applied to the updated parameter (kernels.cpu does both in one pass).
"""
from __future__ import annotations

import numpy as np

from .shapes import check_labels, conv_output_size, pool_output_size, pair  # noqa: F401

_API = (
    "im2col", "col2im", "conv2d_forward", "conv2d_backward",
    "maxout_forward", "maxout_backward",
    "maxpool2d_forward", "maxpool2d_backward", "maxout_pool_forward", "maxout_pool_backward",
    "global_avg_pool_forward", "global_avg_pool_backward",
    "batch_norm_forward", "batch_norm_backward", "batch_norm_inference",
    "relu_forward", "relu_backward", "dropout_mask",
)

FUSED_API = ("conv2d_maxout_forward", "conv2d_maxout_backward", "bn_relu_conv2d_forward", "batch_norm_relu_forward",
             "batch_norm_relu_backward")

ENGINE_API = (
    "add", "sub", "mul", "div", "neg", "absolute", "sign", "exp", "log",
    "astype", "zeros_like", "broadcast_to", "reduce_sum", "unbroadcast", "max_norm_",
    "matmul", "linear_forward",
    "softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_backward",
    "kd_loss_value_and_grad", "hint_loss_value_and_grad",
    "batch_norm_update_running", "batch_norm_eval_backward",
    "sgd_update", "rmsprop_update", "adam_update",
)

API = _API + FUSED_API + ENGINE_API   # every name kernels.cpu and kernels.cuda provide


def is_device_array(a) -> bool:
    """True for a CUDA device array: not a NumPy array, and exposing
    __cuda_array_interface__ or numba's ``__cuda_ndarray__`` marker (numba-cuda's
    simulator arrays have only the latter)."""
    if isinstance(a, np.ndarray):
        return False
    return hasattr(a, "__cuda_array_interface__") or bool(getattr(a, "__cuda_ndarray__", False))


def backend(*arrays):
    """The implementation for these arguments: kernels.cuda if any of them is a CUDA device
    array, else kernels.cpu (loaded on first use: importing kernels loads neither)."""
    for a in arrays:
        if is_device_array(a):
            from . import cuda
            return cuda
    from . import cpu
    return cpu


def _dispatching(name):
    def call(*args, like=None, **kwargs):
        return getattr(backend(like, *args, *kwargs.values()), name)(*args, **kwargs)
    call.__name__ = name
    call.__qualname__ = name
    call.__doc__ = (f"``{name}`` of kernels.cuda if an array argument (or ``like``) is a CUDA device "
                    f"array, else of kernels.cpu.")
    return call


for _name in API:
    globals()[_name] = _dispatching(_name)
del _name
