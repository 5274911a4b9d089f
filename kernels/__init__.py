"""Array-in, array-out kernels: the bottom floor of minifit. Never imports minifit.

Three implementations of one API:
  kernels.reference  plain NumPy, the definition the tests hold the others to;
  kernels.cpu        Numba ``@njit`` (parallel, cached) for NumPy arrays;
  kernels.cuda       numba.cuda kernels for CUDA device arrays.

The functions exported here pick the implementation from the type of their first array
argument (a NumPy array runs on the CPU, a CUDA device array on the GPU): the one
dispatch point. Layout is NCHW; ``stride`` / ``pad`` / ``kernel`` are (h, w) pairs.

API (every implementation provides every name):
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
  dropout_mask(shape, p, seed, dtype) -> mask with entries 0 or 1/(1-p)

Fused forwards (here: the implementation's own kernel if it has one, else the composition):
  conv2d_maxout_forward(x, w, b, stride, pad, pieces, pool, pool_stride, ceil_mode) -> (y, arg)
  bn_relu_conv2d_forward(x, gamma, beta, running_mean, running_var, eps, w, b, stride, pad,
                         residual=None) -> y
  batch_norm_relu_forward(x, gamma, beta, eps) -> (y, mean, invstd)

Engine ops (ENGINE_API): the array math of minifit's functional ops, autograd and
optimizers outside the layer kernels (elementwise arithmetic with broadcasting, sums,
matmul, softmax / cross-entropy, batch-norm running statistics, optimizer updates,
max-norm). kernels.numpy_ops implements them for NumPy arrays, kernels.cuda for device
arrays; ``kernels.<name>`` runs on the GPU if any positional argument is a device array.
"""
from __future__ import annotations

from .shapes import conv_output_size, pool_output_size, pair  # noqa: F401

_API = (
    "im2col", "col2im", "conv2d_forward", "conv2d_backward",
    "maxout_forward", "maxout_backward",
    "maxpool2d_forward", "maxpool2d_backward", "maxout_pool_forward", "maxout_pool_backward",
    "global_avg_pool_forward", "global_avg_pool_backward",
    "batch_norm_forward", "batch_norm_backward", "batch_norm_inference",
    "relu_forward", "relu_backward", "dropout_mask",
)


ENGINE_API = (
    "add", "sub", "mul", "div", "neg", "absolute", "sign", "exp", "log",
    "astype", "zeros_like", "broadcast_to", "reduce_sum", "unbroadcast", "max_norm_",
    "matmul", "linear_forward",
    "softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_backward",
    "batch_norm_update_running", "batch_norm_eval_backward",
    "sgd_update", "rmsprop_update", "adam_update",
)


def is_device_array(a) -> bool:
    """True for a CUDA device array: not a NumPy array, and exposing
    __cuda_array_interface__ or numba's ``__cuda_ndarray__`` marker (numba-cuda's
    simulator arrays have only the latter)."""
    import numpy as np
    if isinstance(a, np.ndarray):
        return False
    return hasattr(a, "__cuda_array_interface__") or bool(getattr(a, "__cuda_ndarray__", False))


def backend(a):
    """The implementation module for array ``a``: kernels.cuda for device arrays,
    kernels.cpu otherwise."""
    if is_device_array(a):
        from . import cuda
        return cuda
    from . import cpu
    return cpu


def _dispatching(name):
    def call(first, *args, **kwargs):
        return getattr(backend(first), name)(first, *args, **kwargs)
    call.__name__ = name
    call.__doc__ = f"Dispatch ``{name}`` on the type of the first argument (cpu or cuda)."
    return call


for _name in _API:
    if _name != "dropout_mask":
        globals()[_name] = _dispatching(_name)
del _name


def _dispatching_any(name):
    def call(*args, **kwargs):
        for a in args:
            if is_device_array(a):
                from . import cuda
                return getattr(cuda, name)(*args, **kwargs)
        from . import numpy_ops
        return getattr(numpy_ops, name)(*args, **kwargs)
    call.__name__ = name
    call.__doc__ = f"``{name}`` on the GPU if any positional argument is a device array, else NumPy."
    return call


for _name in ENGINE_API:
    globals()[_name] = _dispatching_any(_name)
del _name


def conv2d_maxout_forward(x, w, b, stride, pad, pieces, pool=None, pool_stride=None, ceil_mode=True,
                          channels_last=False):
    """conv2d_forward, then maxout_forward (``pool`` None) or maxout_pool_forward: (y, arg).
    One fused kernel where the implementation has one (kernels.cpu), else the composition.
    ``channels_last``: the caller will not run the backward pass, so the kernel may return
    its fastest layout (kernels.cpu: NHWC); the values are the same either way."""
    impl = backend(x)
    fused = getattr(impl, "conv2d_maxout_forward", None)
    if fused is not None:
        return fused(x, w, b, stride, pad, pieces, pool, pool_stride, ceil_mode, channels_last)
    z = impl.conv2d_forward(x, w, b, stride, pad)
    if pool is None:
        return impl.maxout_forward(z, pieces)
    return impl.maxout_pool_forward(z, pieces, pool, pool if pool_stride is None else pool_stride, ceil_mode)


def bn_relu_conv2d_forward(x, gamma, beta, running_mean, running_var, eps, w, b, stride=1, pad=0,
                           residual=None):
    """conv2d_forward(relu_forward(batch_norm_inference(x, ...)), w, b, stride, pad)
    (+ residual, of the output's shape): the evaluation-mode pre-activation residual block.
    One fused kernel where the implementation has one (kernels.cpu: the affine map and the
    ReLU are applied as im2col reads x, the residual as the output is stored), else the
    composition."""
    impl = backend(x)
    fused = getattr(impl, "bn_relu_conv2d_forward", None)
    if fused is not None:
        return fused(x, gamma, beta, running_mean, running_var, eps, w, b, stride, pad, residual)
    a = impl.relu_forward(impl.batch_norm_inference(x, gamma, beta, running_mean, running_var, eps))
    y = impl.conv2d_forward(a, w, b, stride, pad)
    return y if residual is None else impl.add(y, residual)


def batch_norm_relu_forward(x, gamma, beta, eps=1e-5):
    """relu_forward of batch_norm_forward's output -> (y, mean, invstd): training-mode
    batch norm and ReLU, fused where the implementation has the kernel (kernels.cpu)."""
    impl = backend(x)
    fused = getattr(impl, "batch_norm_relu_forward", None)
    if fused is not None:
        return fused(x, gamma, beta, eps)
    z, mean, invstd = impl.batch_norm_forward(x, gamma, beta, eps)
    return impl.relu_forward(z), mean, invstd


def dropout_mask(shape, p, seed, dtype, like=None):
    """Dropout mask on the target of ``like`` (default: the CPU)."""
    return backend(like).dropout_mask(shape, p, seed, dtype)
