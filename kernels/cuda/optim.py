"""Optimizer updates, in place on device arrays: one fused grid-stride kernel per step and
parameter (parameter, gradient and slots read once, written once). Hyper-parameters are
passed in the parameter's dtype, so float32 parameters update in float32 as on the CPU.
The formulas are those of minifit.optim (kernels.numpy_ops holds the NumPy twins)."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ._common import flat, kernel, launch1d, need
from .reduce import max_norm_


@kernel
def _sgd_k(p, g, v, lr, mu, wd, use_v, nesterov, use_wd):
    """g' = g + wd p; without velocity p -= lr g'; else v = mu v - lr g' and
    p += v (or, Nesterov, p += mu v - lr g')."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = g[i]
        if use_wd:
            gi = gi + wd * p[i]
        if not use_v:
            p[i] = p[i] - lr * gi
        else:
            vi = v[i] * mu
            vi = vi - lr * gi
            v[i] = vi
            if nesterov:
                p[i] = p[i] + (mu * vi - lr * gi)
            else:
                p[i] = p[i] + vi


@kernel
def _rmsprop_k(p, g, ms, lr, decay, one_minus_decay, eps):
    """ms = decay ms + (1 - decay) g^2;  p -= lr g / max(sqrt(ms), eps)  (pylearn2)."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = g[i]
        m = ms[i] * decay
        m = m + one_minus_decay * gi * gi
        ms[i] = m
        p[i] = p[i] - lr * gi / max(math.sqrt(m), eps)


@kernel
def _adam_k(p, g, m, v, lr, b1, one_minus_b1, b2, one_minus_b2, c1, c2, eps, wd, use_wd):
    """m, v moving averages of g and g^2; p -= lr mhat / (sqrt(vhat) + eps),
    mhat = m / c1, vhat = v / c2 (c = 1 - beta^t)."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = g[i]
        if use_wd:
            gi = gi + wd * p[i]
        mi = m[i] * b1
        mi = mi + one_minus_b1 * gi
        vi = v[i] * b2
        vi = vi + one_minus_b2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - lr * (mi / c1) / (math.sqrt(vi / c2) + eps)


def _check(fname, p, **arrays):
    need(fname, "p", p)
    for name, a in arrays.items():
        if a is None:
            continue
        need(fname, name, a)
        if tuple(a.shape) != tuple(p.shape):
            raise ValueError(f"{fname}: {name} has shape {tuple(a.shape)} but the parameter has {tuple(p.shape)}")
        if np.dtype(a.dtype) != np.dtype(p.dtype):
            raise ValueError(f"{fname}: {name} is {a.dtype} but the parameter is {p.dtype}")
    return np.dtype(p.dtype).type


def sgd_update(p, g, v, lr, momentum=0.0, nesterov=False, weight_decay=0.0, max_norm=None):
    """In place on p (and the velocity v, or None for plain SGD); then max_norm_(p, max_norm)
    unless None (a second kernel here; one pass on the CPU)."""
    T = _check("sgd_update", p, g=g, v=v)
    if p.size:
        pf = flat(p)
        launch1d(_sgd_k, p.size, pf, flat(g), pf if v is None else flat(v), T(lr), T(momentum),
               T(weight_decay), v is not None, bool(nesterov), bool(weight_decay))
    return _constrain(p, max_norm)


def rmsprop_update(p, g, ms, lr, decay, eps, max_norm=None):
    """In place on p and the mean square ms; then max_norm_(p, max_norm) unless None."""
    T = _check("rmsprop_update", p, g=g, ms=ms)
    if p.size:
        launch1d(_rmsprop_k, p.size, flat(p), flat(g), flat(ms), T(lr), T(decay), T(1 - decay), T(eps))
    return _constrain(p, max_norm)


def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0, max_norm=None):
    """In place on p, m, v; ``t`` is the 1-based step count (bias correction); then
    max_norm_(p, max_norm) unless None."""
    T = _check("adam_update", p, g=g, m=m, v=v)
    if p.size:
        launch1d(_adam_k, p.size, flat(p), flat(g), flat(m), flat(v), T(lr), T(beta1), T(1 - beta1),
               T(beta2), T(1 - beta2), T(1 - beta1 ** t), T(1 - beta2 ** t), T(eps), T(weight_decay),
               bool(weight_decay))
    return _constrain(p, max_norm)


def _constrain(p, max_norm):
    if max_norm is not None and p.size:
        max_norm_(p, max_norm)
    return p
