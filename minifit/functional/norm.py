"""Batch normalisation."""
from __future__ import annotations

import kernels as K

from ..tensor import Tensor, as_tensor
from . import _check
from .activation import relu as _relu


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True,
               momentum=0.1, eps=1e-5) -> Tensor:
    """y = gamma * (x - mu) / sqrt(var + eps) + beta, statistics per channel (axis 1) over
    every other axis. Training uses the batch statistics and updates the running ones in
    place (r <- (1 - momentum) r + momentum * batch, unbiased variance); evaluation uses
    the running ones. x: (N, C) or (N, C, H, W); gamma, beta: (C,)."""
    return _batch_norm("batch_norm", x, gamma, beta, running_mean, running_var, training, momentum, eps)


def batch_norm_relu(x, gamma, beta, running_mean=None, running_var=None, training=True,
                    momentum=0.1, eps=1e-5) -> Tensor:
    """relu(batch_norm(x, ...)), the pre-activation of a residual block, as one op: in
    training one kernel writes max(y, 0) (kernels.batch_norm_relu_forward); the backward is
    batch_norm_backward(relu_backward(g, out))."""
    return _batch_norm("batch_norm_relu", x, gamma, beta, running_mean, running_var, training, momentum, eps,
                       relu=True)


def _batch_norm(name, x, gamma, beta, running_mean, running_var, training, momentum, eps, relu=False):
    x, gamma, beta = as_tensor(x), as_tensor(gamma), as_tensor(beta)
    _check.ndim(name, x, (2, 4), "input", "N, C or N, C, H, W")
    C = x.shape[1]
    if gamma.shape != (C,) or beta.shape != (C,):
        _check.fail(name, f"gamma and beta must have shape ({C},) for input {x.shape}, "
                          f"got {gamma.shape} and {beta.shape}")
    _check.floating(name, ("input", x), ("gamma", gamma), ("beta", beta))
    if not training:
        if running_mean is None:
            _check.fail(name, "evaluation mode needs running_mean and running_var")
        y = K.batch_norm_inference(x.data, gamma.data, beta.data, running_mean, running_var, eps)
        out = Tensor.from_op(y, (x, gamma, beta), lambda g: K.batch_norm_eval_backward(
            g, x.data, gamma.data, running_mean, running_var, eps))
        return _relu(out) if relu else out
    count = x.size // C
    if count < 2:
        _check.fail(name, f"training needs more than one value per channel, got input {x.shape}")
    if relu:
        y, mu, invstd = K.batch_norm_relu_forward(x.data, gamma.data, beta.data, eps)
        backward = lambda g: K.batch_norm_backward(K.relu_backward(g, y), x.data, gamma.data, mu, invstd)  # noqa: E731,E501
    else:
        y, mu, invstd = K.batch_norm_forward(x.data, gamma.data, beta.data, eps)
        backward = lambda g: K.batch_norm_backward(g, x.data, gamma.data, mu, invstd)  # noqa: E731
    if running_mean is not None:
        K.batch_norm_update_running(running_mean, running_var, mu, invstd, momentum, eps, count)
    return Tensor.from_op(y, (x, gamma, beta), backward)
