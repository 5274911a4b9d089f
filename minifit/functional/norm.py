"""Batch normalisation."""
from __future__ import annotations

import numpy as np

import kernels as K

from ..tensor import Tensor, as_tensor
from . import _check
from .activation import dropout as _dropout, dropout_mask as _dropout_mask, relu as _relu


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True,
               momentum=0.1, eps=1e-5, group=None) -> Tensor:
    """y = gamma * (x - mu) / sqrt(var + eps) + beta, statistics per channel (axis 1) over
    every other axis. Training uses the batch statistics and updates the running ones in
    place (r <- (1 - momentum) r + momentum * batch, unbiased variance); evaluation uses
    the running ones. x: (N, C) or (N, C, H, W); gamma, beta: (C,).
    group: a data-parallel communicator (minifit.parallel) whose ranks each hold a slice of
    the batch: the statistics are then those of the whole batch (synced batch norm)."""
    return _batch_norm("batch_norm", x, gamma, beta, running_mean, running_var, training, momentum, eps,
                       group=group)


def batch_norm_relu(x, gamma, beta, running_mean=None, running_var=None, training=True,
                    momentum=0.1, eps=1e-5, group=None, dropout=0.0, rng=None) -> Tensor:
    """relu(batch_norm(x, ...)), the pre-activation of a residual block, and with ``dropout``
    = p > 0 then dropout(., p, training, rng) (a wide block's BN, ReLU, dropout), as one op:
    in training one kernel writes max(y, 0) (times the dropout mask, drawn first exactly as
    F.dropout draws it: the same values as the composition), kernels.batch_norm_relu_forward,
    and one computes the backward, batch_norm_backward(relu_backward(g * mask, out))
    (kernels.batch_norm_relu_backward)."""
    if not 0.0 <= dropout < 1.0:
        _check.fail("batch_norm_relu", f"dropout must be in [0, 1), got {dropout}")
    fused = training and dropout > 0.0 and (group is None or group.size <= 1)
    out = _batch_norm("batch_norm_relu", x, gamma, beta, running_mean, running_var, training, momentum, eps,
                      relu=True, group=group, dropout=dropout if fused else 0.0, rng=rng)
    return out if fused else _dropout(out, dropout, training, rng)


def _batch_norm(name, x, gamma, beta, running_mean, running_var, training, momentum, eps, relu=False,
                group=None, dropout=0.0, rng=None):
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
    if group is not None and group.size > 1:
        out = _synced_batch_norm(x, gamma, beta, running_mean, running_var, momentum, eps, group)
        return _relu(out) if relu else out
    count = x.size // C
    if count < 2:
        _check.fail(name, f"training needs more than one value per channel, got input {x.shape}")
    if relu:
        mask = _dropout_mask(x, dropout, rng) if dropout else None
        y, mu, invstd = K.batch_norm_relu_forward(x.data, gamma.data, beta.data, eps, mask)
        backward = lambda g: K.batch_norm_relu_backward(g, y, x.data, gamma.data, mu, invstd, mask)  # noqa: E731
    else:
        y, mu, invstd = K.batch_norm_forward(x.data, gamma.data, beta.data, eps)
        backward = lambda g: K.batch_norm_backward(g, x.data, gamma.data, mu, invstd)  # noqa: E731
    if running_mean is not None:
        K.batch_norm_update_running(running_mean, running_var, mu, invstd, momentum, eps, count)
    return Tensor.from_op(y, (x, gamma, beta), backward)


def _synced_batch_norm(x, gamma, beta, running_mean, running_var, momentum, eps, group) -> Tensor:
    """Training batch norm with the moments of the global batch, of which this rank holds
    rows with weight w = n_r / n (group.weight):

        mu = sum_r sum x / n,  var = sum_r sum (x - mu)^2 / n    (two all-reduces, float64)
        y = gamma (x - mu) / sqrt(var + eps) + beta

    Backward: this rank's loss is its slice's mean, so its upstream gradient g is 1 / w
    times the global loss's; with S_g = sum_r w sum g and S_gx = sum_r w sum g xhat (one
    all-reduce), dx = gamma invstd (g - (S_g + xhat S_gx) / (n w)) is again 1 / w times the
    global dx, and dgamma = sum g xhat, dbeta = sum g stay local sums (the optimizer's
    all-reduce weights them by w). CPU arrays."""
    ax = (0,) + tuple(range(2, x.ndim))
    sh = (1, -1) + (1,) * (x.ndim - 2)
    xd, dt = x.data, x.data.dtype
    local = xd.size // xd.shape[1]
    s = group.sum(np.concatenate([xd.sum(axis=ax, dtype=np.float64), [float(local)]]))
    count = int(round(s[-1]))
    if count < 2:
        _check.fail("batch_norm", f"training needs more than one value per channel, got input {x.shape} on each rank")
    mu = (s[:-1] / count)
    xc = xd - mu.astype(dt).reshape(sh)
    var = group.sum(np.square(xc, dtype=np.float64).sum(axis=ax)) / count
    invstd = (1.0 / np.sqrt(var + eps)).astype(dt)
    xhat = xc * invstd.reshape(sh)
    y = (xhat * gamma.data.astype(dt).reshape(sh) + beta.data.astype(dt).reshape(sh)).astype(dt)
    if running_mean is not None:
        K.batch_norm_update_running(running_mean, running_var, mu.astype(dt), invstd, momentum, eps, count)
    w = group.weight

    def backward(g):
        sums = group.sum(np.concatenate([g.sum(axis=ax, dtype=np.float64),
                                         (g * xhat).sum(axis=ax, dtype=np.float64)]) * w)
        C = xd.shape[1]
        s_g, s_gx = sums[:C].astype(dt).reshape(sh), sums[C:].astype(dt).reshape(sh)
        k = (gamma.data.astype(dt) * invstd).reshape(sh)
        dx = (k * (g - (s_g + xhat * s_gx) / dt.type(count * w))).astype(dt)
        return dx, (g * xhat).sum(axis=ax, dtype=dt), g.sum(axis=ax, dtype=dt)
    return Tensor.from_op(y, (x, gamma, beta), backward)
