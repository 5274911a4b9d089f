"""Batch normalisation."""
from __future__ import annotations

import kernels as K

from ..tensor import Tensor, as_tensor
from . import _check


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True,
               momentum=0.1, eps=1e-5) -> Tensor:
    """y = gamma * (x - mu) / sqrt(var + eps) + beta, statistics per channel (axis 1) over
    every other axis. Training uses the batch statistics and updates the running ones in
    place (r <- (1 - momentum) r + momentum * batch, unbiased variance); evaluation uses
    the running ones. x: (N, C) or (N, C, H, W); gamma, beta: (C,)."""
    x, gamma, beta = as_tensor(x), as_tensor(gamma), as_tensor(beta)
    _check.ndim("batch_norm", x, (2, 4), "input", "N, C or N, C, H, W")
    C = x.shape[1]
    if gamma.shape != (C,) or beta.shape != (C,):
        _check.fail("batch_norm", f"gamma and beta must have shape ({C},) for input {x.shape}, "
                                  f"got {gamma.shape} and {beta.shape}")
    _check.floating("batch_norm", ("input", x), ("gamma", gamma), ("beta", beta))
    if not training:
        if running_mean is None:
            _check.fail("batch_norm", "evaluation mode needs running_mean and running_var")
        y = K.batch_norm_inference(x.data, gamma.data, beta.data, running_mean, running_var, eps)
        return Tensor.from_op(y, (x, gamma, beta), lambda g: K.batch_norm_eval_backward(
            g, x.data, gamma.data, running_mean, running_var, eps))
    count = x.size // C
    if count < 2:
        _check.fail("batch_norm", f"training needs more than one value per channel, got input {x.shape}")
    y, mu, invstd = K.batch_norm_forward(x.data, gamma.data, beta.data, eps)
    if running_mean is not None:
        K.batch_norm_update_running(running_mean, running_var, mu, invstd, momentum, eps, count)
    return Tensor.from_op(y, (x, gamma, beta),
                          lambda g: K.batch_norm_backward(g, x.data, gamma.data, mu, invstd))
