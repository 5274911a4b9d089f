"""Pointwise activations, dropout, and the softmax family."""
from __future__ import annotations

import numpy as np

import kernels as K

from .. import random as mrandom
from ..tensor import Tensor, as_tensor
from . import _check


def relu(x) -> Tensor:
    """max(x, 0); gradient 1 where the output is positive."""
    x = as_tensor(x)
    y = K.relu_forward(x.data)
    return Tensor.from_op(y, (x,), lambda g: (K.relu_backward(g, y),))


def dropout(x, p: float, training: bool = True, rng=None) -> Tensor:
    """Inverted dropout: drop each unit with probability p, scale survivors by 1/(1-p), so
    evaluation (training=False) is the identity. ``rng``: a Generator or seed (default:
    minifit.random's)."""
    x = as_tensor(x)
    if not 0.0 <= p < 1.0:
        _check.fail("dropout", f"p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    mask = K.dropout_mask(x.shape, p, mrandom.generator() if rng is None else rng, x.dtype)
    return Tensor.from_op(x.data * mask, (x,), lambda g: (g * mask,))


def _shift(a, axis):
    return a - a.max(axis=axis, keepdims=True)  # exp never overflows after the shift


def softmax_array(a: np.ndarray, axis=-1) -> np.ndarray:
    e = np.exp(_shift(a, axis))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_array(a: np.ndarray, axis=-1) -> np.ndarray:
    z = _shift(a, axis)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def softmax(x, axis=-1) -> Tensor:
    """p = exp(x) / sum exp(x); backward: dx = p * (g - sum(g * p))."""
    x = as_tensor(x)
    p = softmax_array(x.data, axis)
    return Tensor.from_op(p, (x,), lambda g: (p * (g - (g * p).sum(axis=axis, keepdims=True)),))


def log_softmax(x, axis=-1) -> Tensor:
    """x - logsumexp(x); backward: dx = g - softmax(x) * sum(g)."""
    x = as_tensor(x)
    out = log_softmax_array(x.data, axis)
    return Tensor.from_op(out, (x,), lambda g: (g - np.exp(out) * g.sum(axis=axis, keepdims=True),))
