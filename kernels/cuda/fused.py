"""The fused kernels of kernels.FUSED_API on the GPU, as compositions of the CUDA kernels
(kernels.cpu fuses them; no fused CUDA kernel is written yet). Same values as the CPU's;
results are C-contiguous (``channels_last`` is accepted and changes nothing here)."""
from __future__ import annotations

from ..shapes import pair
from .elementwise import add, mul, relu_backward, relu_forward
from .gemm import conv2d_backward, conv2d_forward
from .norm import batch_norm_backward, batch_norm_forward, batch_norm_inference
from .pool import maxout_backward, maxout_forward, maxout_pool_backward, maxout_pool_forward


def conv2d_maxout_forward(x, w, b, stride, pad, pieces, pool=None, pool_stride=None, ceil_mode=True,
                          channels_last=False):
    """maxout_forward (``pool`` None) or maxout_pool_forward of conv2d_forward(x, w, b, ...)."""
    z = conv2d_forward(x, w, b, stride, pad)
    if pool is None:
        return maxout_forward(z, pieces)
    return maxout_pool_forward(z, pieces, pool, pool if pool_stride is None else pool_stride, ceil_mode)


def conv2d_maxout_backward(dy, arg, x, w, stride, pad, pieces, pool=None, pool_stride=None, ceil_mode=True,
                           need_dx=True, untied_bias=False):
    """conv2d_backward of maxout_backward(dy, arg, pieces) (``pool`` None) or
    maxout_pool_backward(dy, arg, z_shape, pieces)."""
    if pool is None:
        dz = maxout_backward(dy, arg, pieces)
    else:
        n, o, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
        (sh, sw), (ph, pw) = pair(stride, "stride"), pair(pad, "pad")
        z_shape = (n, o, (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1)
        dz = maxout_pool_backward(dy, arg, z_shape, pieces)
    return conv2d_backward(dz, x, w, stride, pad, need_dx, untied_bias)


def bn_relu_conv2d_forward(x, gamma, beta, running_mean, running_var, eps, w, b, stride=1, pad=0,
                           residual=None):
    """conv2d_forward(relu_forward(batch_norm_inference(x, ...)), w, b) (+ residual)."""
    a = relu_forward(batch_norm_inference(x, gamma, beta, running_mean, running_var, eps))
    y = conv2d_forward(a, w, b, stride, pad)
    return y if residual is None else add(y, residual)


def batch_norm_relu_forward(x, gamma, beta, eps=1e-5, mask=None):
    """relu_forward of batch_norm_forward's output (times the dropout mask, if given) ->
    (y, mean, invstd)."""
    z, mean, invstd = batch_norm_forward(x, gamma, beta, eps)
    y = relu_forward(z)
    return (y if mask is None else mul(y, mask)), mean, invstd


def batch_norm_relu_backward(dy, y, x, gamma, mean, invstd, mask=None):
    """batch_norm_backward of relu_backward(dy * mask, y) -> (dx, dgamma, dbeta)."""
    g = dy if mask is None else mul(dy, mask)
    return batch_norm_backward(relu_backward(g, y), x, gamma, mean, invstd)
