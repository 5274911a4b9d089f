"""The fused forwards of kernels.FUSED_API on the GPU, as compositions of the CUDA kernels
(kernels.cpu fuses them; no fused CUDA kernel is written yet). Same values as the CPU's;
results are C-contiguous (``channels_last`` is accepted and changes nothing here)."""
from __future__ import annotations

from .elementwise import add, relu_forward
from .gemm import conv2d_forward
from .norm import batch_norm_forward, batch_norm_inference
from .pool import maxout_forward, maxout_pool_forward


def conv2d_maxout_forward(x, w, b, stride, pad, pieces, pool=None, pool_stride=None, ceil_mode=True,
                          channels_last=False):
    """maxout_forward (``pool`` None) or maxout_pool_forward of conv2d_forward(x, w, b, ...)."""
    z = conv2d_forward(x, w, b, stride, pad)
    if pool is None:
        return maxout_forward(z, pieces)
    return maxout_pool_forward(z, pieces, pool, pool if pool_stride is None else pool_stride, ceil_mode)


def bn_relu_conv2d_forward(x, gamma, beta, running_mean, running_var, eps, w, b, stride=1, pad=0,
                           residual=None):
    """conv2d_forward(relu_forward(batch_norm_inference(x, ...)), w, b) (+ residual)."""
    a = relu_forward(batch_norm_inference(x, gamma, beta, running_mean, running_var, eps))
    y = conv2d_forward(a, w, b, stride, pad)
    return y if residual is None else add(y, residual)


def batch_norm_relu_forward(x, gamma, beta, eps=1e-5):
    """relu_forward of batch_norm_forward's output -> (y, mean, invstd)."""
    z, mean, invstd = batch_norm_forward(x, gamma, beta, eps)
    return relu_forward(z), mean, invstd
