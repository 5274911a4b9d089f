"""CPU kernels for NumPy arrays: Numba (``@njit(nogil=True, cache=True)``) and BLAS GEMMs on
a small thread pool; the fast versions of the functions in kernels/reference.py ("the
math"), held to them by tests/kernels.

The same API as ``kernels.cuda`` (every name of kernels.API; the layer kernels also as in
kernels.reference). Every layer kernel checks its arguments (kernels.shapes.check) and
raises a ValueError naming the function, the expected and the given shapes/dtypes, never
a Numba typing error. All float arrays of one call share one dtype, float32 or float64.
Results may be in any layout (layouts.py says which): callers must not assume
C-contiguity.

Layout of the package (read in this order):
  runtime      the thread pool, OpenBLAS held at one thread, the Numba options, malloc
  tuning       every threshold, beside the measurement that chose it
  layouts      NCHW / CNHW / NHWC buffers and the moves between them
  patches      im2col, col2im, im2row (the convolutions' patch copies)
  conv         conv2d_forward / conv2d_backward side by side, the GEMM driver, the fused
               forwards (bn_relu_conv2d_forward, conv2d_maxout_forward) and
               conv2d_maxout_backward; "which path runs when" in its docstring
  conv_fft     the FFT convolution of large kernels (forward and backward)
  conv_small   small padded maps (output larger than the input) by the transposed
               formulation
  pool         maxout, max pool, fused maxout + pool, global average pool, the reductions
               of conv2d_maxout_forward; "which path runs when" in its docstring
  norm         batch norm (training, fused with ReLU, evaluation, running statistics)
  elementwise  ReLU, dropout mask, the engine's arithmetic
  reduce       sums, unbroadcast, max-norm
  dense        gemm, matmul, linear_forward
  losses       softmax family, cross-entropy, KD and hint losses
  optim        SGD, RMSProp, Adam updates
"""
from __future__ import annotations

from .conv import (bn_relu_conv2d_forward, conv2d_backward, conv2d_forward, conv2d_maxout_backward,
                   conv2d_maxout_forward)
from .dense import gemm, linear_forward, matmul
from .elementwise import (absolute, add, astype, broadcast_to, div, dropout_mask, exp, log, mul, neg, relu_backward,
                          relu_forward, sign, sub, zeros_like)
from .layouts import to_device, to_host
from .losses import (cross_entropy_backward, cross_entropy_forward, hint_loss_value_and_grad, kd_loss_value_and_grad,
                     log_softmax, log_softmax_backward, softmax, softmax_backward)
from .norm import (batch_norm_backward, batch_norm_eval_backward, batch_norm_forward, batch_norm_inference,
                   batch_norm_relu_backward, batch_norm_relu_forward, batch_norm_update_running)
from .optim import adam_update, max_norm_, rmsprop_update, sgd_update
from .patches import col2im, im2col
from .pool import (global_avg_pool_backward, global_avg_pool_forward, maxout_backward, maxout_forward,
                   maxout_pool_backward, maxout_pool_forward, maxpool2d_backward, maxpool2d_forward)
from .reduce import reduce_sum, unbroadcast
from .runtime import MALLOC_TUNED

__all__ = ["MALLOC_TUNED", "absolute", "adam_update", "add", "astype", "batch_norm_backward",
           "batch_norm_eval_backward", "batch_norm_forward", "batch_norm_inference", "batch_norm_relu_backward", "batch_norm_relu_forward", "batch_norm_update_running",
           "bn_relu_conv2d_forward", "broadcast_to", "col2im", "conv2d_backward", "conv2d_forward",
           "conv2d_maxout_backward", "conv2d_maxout_forward", "cross_entropy_backward", "cross_entropy_forward", "div", "dropout_mask", "exp",
           "gemm", "global_avg_pool_backward", "global_avg_pool_forward", "hint_loss_value_and_grad", "im2col",
           "kd_loss_value_and_grad", "linear_forward", "log", "log_softmax", "log_softmax_backward", "matmul",
           "max_norm_", "maxout_backward", "maxout_forward", "maxout_pool_backward", "maxout_pool_forward",
           "maxpool2d_backward", "maxpool2d_forward", "mul", "neg", "reduce_sum", "relu_backward", "relu_forward",
           "rmsprop_update", "sgd_update", "sign", "softmax", "softmax_backward", "sub", "to_device", "to_host",
           "unbroadcast", "zeros_like"]
