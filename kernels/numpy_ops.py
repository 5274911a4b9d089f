"""NumPy versions of the engine's array ops (``kernels.ENGINE_API``): the CPU side of what
minifit's functional ops, autograd and optimizers compute outside the layer kernels.
kernels.cuda provides the same names for device arrays; ``kernels.<name>`` dispatches.

Each function is exactly the NumPy expression the engine used before the CUDA target
existed (same operations in the same order), so CPU results do not change.
"""
from __future__ import annotations

import numpy as np

from . import ENGINE_API

__all__ = list(ENGINE_API) + ["to_device", "to_host"]


# ------------------------------------------------------------------ elementwise
def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b


def div(a, b):
    return a / b


def neg(x):
    return -x


def absolute(x):
    return np.abs(x)


def sign(x):
    return np.sign(x)


def exp(x):
    return np.exp(x)


def log(x):
    return np.log(x)


def astype(x, dtype):
    return x.astype(dtype, copy=False)


def zeros_like(x):
    return np.zeros_like(x)


def broadcast_to(x, shape, dtype=None):
    """A new C-contiguous array: ``x`` broadcast to ``shape`` (cast to ``dtype``)."""
    return np.broadcast_to(x, shape).astype(x.dtype if dtype is None else dtype, copy=True)


# ------------------------------------------------------------------ reductions
def reduce_sum(x, axis=None, keepdims=False):
    return np.asarray(np.sum(x, axis=axis, keepdims=keepdims))


def unbroadcast(g, shape):
    """Sum a broadcast gradient back down to ``shape`` (the adjoint of broadcasting)."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(extra))) if extra else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def max_norm_(w, max_norm):
    """In place: every slice w[i] rescaled to L2 norm <= max_norm (norms in float64)."""
    axes = tuple(range(1, w.ndim))
    norms = np.sqrt((w.astype(np.float64) ** 2).sum(axis=axes, keepdims=True))
    scale = np.minimum(1.0, max_norm / np.maximum(norms, 1e-12))
    w *= scale.astype(w.dtype)
    return w


# ------------------------------------------------------------------ dense
def _gemm(a, b):
    """a @ b; 2-D float32/float64 products go through kernels.cpu.gemm (BLAS held at one
    thread, large products split over the kernel pool: the same dot products, faster)."""
    if (a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype and a.dtype in (np.float32, np.float64)
            and isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        from . import cpu
        return cpu.gemm(a, b)
    return a @ b


def matmul(a, b, trans_a=False, trans_b=False):
    return _gemm(a.T if trans_a else a, b.T if trans_b else b)


def linear_forward(x, w, b=None):
    y = _gemm(x, w.T)
    if b is not None:
        y += b
    return y


# ------------------------------------------------------------------ softmax family
def _shift(a, axis):
    return a - a.max(axis=axis, keepdims=True)  # exp never overflows after the shift


def softmax(a, axis=-1):
    e = np.exp(_shift(a, axis))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(a, axis=-1):
    z = _shift(a, axis)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def softmax_backward(g, p, axis=-1):
    return p * (g - (g * p).sum(axis=axis, keepdims=True))


def log_softmax_backward(g, out, axis=-1):
    return g - np.exp(out) * g.sum(axis=axis, keepdims=True)


def cross_entropy_forward(logits, labels):
    """-> (loss 0-d = -1/N sum_n log softmax(z_n)[y_n], logp). labels: int array (N,)."""
    logp = log_softmax(logits, axis=1)
    N = logits.shape[0]
    loss = -logp[np.arange(N), labels].sum() / N
    return np.asarray(loss, dtype=logits.dtype), logp


def cross_entropy_backward(logp, labels, g):
    N = logp.shape[0]
    d = np.exp(logp)
    d[np.arange(N), labels] -= 1.0
    return d * (g / N)


# ------------------------------------------------------------------ batch norm
def batch_norm_update_running(running_mean, running_var, mean, invstd, momentum, eps, count):
    var = 1.0 / invstd.astype(np.float64) ** 2 - eps
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * var * count / (count - 1)
    return running_mean, running_var


def batch_norm_eval_backward(g, x, gamma, running_mean, running_var, eps=1e-5):
    C = x.shape[1]
    shape = (1, C) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    scale = (gamma / np.sqrt(running_var + eps)).astype(x.dtype)
    xhat = (x - running_mean.reshape(shape)) / np.sqrt(running_var.reshape(shape) + eps)
    return g * scale.reshape(shape), (g * xhat).sum(axis=axes), g.sum(axis=axes)


# ------------------------------------------------------------------ optimizers (in place)
def sgd_update(p, g, v, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    if weight_decay:
        g = g + weight_decay * p
    if v is None:
        p -= lr * g
        return p
    v *= momentum
    v -= lr * g
    if nesterov:
        p += momentum * v - lr * g
    else:
        p += v
    return p


def rmsprop_update(p, g, ms, lr, decay, eps):
    ms *= decay
    ms += (1 - decay) * g * g
    p -= lr * g / np.maximum(np.sqrt(ms), eps)
    return p


def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0):
    if weight_decay:
        g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    mhat = m / (1 - beta1 ** t)
    vhat = v / (1 - beta2 ** t)
    p -= lr * mhat / (np.sqrt(vhat) + eps)
    return p


# ------------------------------------------------------------------ host arrays
def to_device(a):
    """On the CPU target: the array itself (as a NumPy array)."""
    return np.asarray(a)


def to_host(a):
    return np.array(a, copy=True)
