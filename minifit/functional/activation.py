"""Pointwise activations, dropout, and the softmax family."""
from __future__ import annotations

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
    mask = dropout_mask(x, p, rng)
    return Tensor.from_op(K.mul(x.data, mask), (x,), lambda g: (K.mul(g, mask),))


def dropout_mask(x, p: float, rng=None):
    """The mask dropout(x, p, rng=rng) multiplies x by (x's shape, dtype and device): the one
    place the draw is made, so the ops that fold it in (F.batch_norm_relu) draw the same."""
    return K.dropout_mask(x.shape, p, mrandom.generator() if rng is None else rng, x.dtype, like=x.data)


def softmax_array(a, axis=-1):
    """exp(a - max) / sum exp(a - max) (the max shift keeps exp from overflowing)."""
    return K.softmax(a, axis)


def log_softmax_array(a, axis=-1):
    """(a - max) - log sum exp(a - max)."""
    return K.log_softmax(a, axis)


def softmax(x, axis=-1) -> Tensor:
    """p = exp(x) / sum exp(x); backward: dx = p * (g - sum(g * p))."""
    x = as_tensor(x)
    p = softmax_array(x.data, axis)
    return Tensor.from_op(p, (x,), lambda g: (K.softmax_backward(g, p, axis),))


def log_softmax(x, axis=-1) -> Tensor:
    """x - logsumexp(x); backward: dx = g - softmax(x) * sum(g)."""
    x = as_tensor(x)
    out = log_softmax_array(x.data, axis)
    return Tensor.from_op(out, (x,), lambda g: (K.log_softmax_backward(g, out, axis),))
