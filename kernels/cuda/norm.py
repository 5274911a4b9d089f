"""Batch normalisation: training forward / backward, inference, the running-statistics
update and the backward of the inference form.

x (N, C, ...) is viewed as (N, C, S). Per-channel statistics: one block (<= RB threads) per
channel; the threads stride over the N*S values of the channel (consecutive threads on
consecutive spatial positions) and combine in shared memory. Two passes for the variance
(mean first, then the mean of squared deviations), as the reference. The per-element
outputs are separate grid-stride kernels over the flat array (coalesced).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ._common import (RB, block_sum, empty, flat, kernel, launch, launch1d, need, per_dtype, prod, row_block,
                      same_dtype)
from .reduce import reduce_sum


@per_dtype("bn_stats")
def _stats_k(nbt):
    def k(x, mean, invstd, C, S, eps):
        """x flat (N, C, S); mean[c], invstd[c] = 1/sqrt(var + eps), biased variance."""
        sh = cuda.shared.array(RB, nbt)
        tid = cuda.threadIdx.x
        m = (x.size // C)
        for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
            acc = nbt(0)
            for t in range(tid, m, cuda.blockDim.x):
                n = t // S
                acc += x[(n * C + c) * S + t - n * S]
            mu = block_sum(sh, tid, acc) / nbt(m)
            acc = nbt(0)
            for t in range(tid, m, cuda.blockDim.x):
                n = t // S
                d = x[(n * C + c) * S + t - n * S] - mu
                acc += d * d
            var = block_sum(sh, tid, acc) / nbt(m)
            if tid == 0:
                mean[c] = mu
                invstd[c] = nbt(1) / math.sqrt(var + eps)
    return k


@kernel
def _bn_apply_k(x, mean, invstd, gamma, beta, y, C, S):
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        c = (i // S) % C
        y[i] = (x[i] - mean[c]) * invstd[c] * gamma[c] + beta[c]


@per_dtype("bn_bwd_stats")
def _bwd_stats_k(nbt):
    def k(dy, x, mean, invstd, dgamma, dbeta, C, S):
        """dbeta[c] = sum dy, dgamma[c] = sum dy * xhat over the channel's values."""
        sh = cuda.shared.array(RB, nbt)
        tid = cuda.threadIdx.x
        m = (x.size // C)
        for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
            sb = nbt(0)
            sg = nbt(0)
            mu = mean[c]
            istd = invstd[c]
            for t in range(tid, m, cuda.blockDim.x):
                n = t // S
                j = (n * C + c) * S + t - n * S
                g = dy[j]
                sb += g
                sg += g * ((x[j] - mu) * istd)
            tb = block_sum(sh, tid, sb)
            tg = block_sum(sh, tid, sg)
            if tid == 0:
                dbeta[c] = tb
                dgamma[c] = tg
    return k


@kernel
def _bn_bwd_apply_k(dy, x, gamma, mean, invstd, dgamma, dbeta, dx, C, S, m):
    """dx = gamma * invstd / m * (m * dy - dbeta - xhat * dgamma)."""
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        c = (i // S) % C
        xhat = (x[i] - mean[c]) * invstd[c]
        k = gamma[c] * invstd[c] / m
        dx[i] = k * (m * dy[i] - dbeta[c] - xhat * dgamma[c])


@kernel
def _bn_infer_k(x, gamma, beta, rmean, rvar, y, C, S, eps):
    """y = x * scale + shift, scale = gamma / sqrt(var + eps), shift = beta - mean * scale."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        c = (i // S) % C
        scale = gamma[c] / math.sqrt(rvar[c] + eps)
        shift = beta[c] - rmean[c] * scale
        y[i] = x[i] * scale + shift


@kernel
def _bn_eval_bwd_k(g, x, gamma, rmean, rvar, dx, gx, C, S, eps):
    """dx = g * scale; gx = g * xhat with xhat = (x - mean) / sqrt(var + eps)."""
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        c = (i // S) % C
        sd = math.sqrt(rvar[c] + eps)
        dx[i] = g[i] * (gamma[c] / sd)
        gx[i] = g[i] * ((x[i] - rmean[c]) / sd)


@kernel
def _bn_running_k(rmean, rvar, mean, invstd, keep, mom, mom64, eps, count):
    """r <- (1 - momentum) r + momentum * batch (unbiased variance, computed in float64)."""
    for c in range(cuda.grid(1), rmean.size, cuda.gridsize(1)):
        rmean[c] = rmean[c] * keep
        rmean[c] = rmean[c] + mom * mean[c]
        s = float(invstd[c])
        var = 1.0 / (s * s) - eps
        rv = rvar[c] * keep
        rvar[c] = rv + mom64 * var * count / (count - 1)


def _cs(x):
    n, c = int(x.shape[0]), int(x.shape[1])
    return n, c, prod(x.shape[2:])


def _check(fname, x, per_channel, **extra):
    need(fname, "x", x, ndim=(2, None))
    c = int(x.shape[1])
    for name, a in per_channel.items():
        need(fname, name, a, ndim=1)
        if tuple(a.shape) != (c,):
            raise ValueError(f"{fname}: {name} must have shape (C={c},) for x {tuple(x.shape)}, got {tuple(a.shape)}")
    for name, a in extra.items():
        need(fname, name, a)
        if tuple(a.shape) != tuple(x.shape):
            raise ValueError(f"{fname}: {name} must have the shape of x {tuple(x.shape)}, got {tuple(a.shape)}")


def batch_norm_forward(x, gamma, beta, eps=1e-5):
    """Training-mode batch norm over every axis but 1 -> (y, mean (C,), invstd (C,))."""
    _check("batch_norm_forward", x, dict(gamma=gamma, beta=beta))
    dt = same_dtype("batch_norm_forward", x=x, gamma=gamma, beta=beta)
    n, c, s = _cs(x)
    if n * s == 0:
        raise ValueError(f"batch_norm_forward: no values per channel in x {tuple(x.shape)}")
    mean, invstd = empty((c,), dt), empty((c,), dt)
    launch(_stats_k[dt], min(c, 65535), row_block(n * s), flat(x), mean, invstd, c, s, dt.type(eps))
    y = empty(x.shape, dt)
    launch1d(_bn_apply_k, y.size, flat(x), mean, invstd, gamma, beta, flat(y), c, s)
    return y, mean, invstd


def batch_norm_backward(dy, x, gamma, mean, invstd):
    """-> (dx, dgamma (C,), dbeta (C,))."""
    _check("batch_norm_backward", x, dict(gamma=gamma, mean=mean, invstd=invstd), dy=dy)
    dt = same_dtype("batch_norm_backward", dy=dy, x=x, gamma=gamma, mean=mean, invstd=invstd)
    n, c, s = _cs(x)
    dgamma, dbeta = empty((c,), dt), empty((c,), dt)
    launch(_bwd_stats_k[dt], min(c, 65535), row_block(n * s), flat(dy), flat(x), mean, invstd, dgamma, dbeta, c, s)
    dx = empty(x.shape, dt)
    launch1d(_bn_bwd_apply_k, dx.size, flat(dy), flat(x), gamma, mean, invstd, dgamma, dbeta,
           flat(dx), c, s, dt.type(n * s))
    return dx, dgamma, dbeta


def batch_norm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    _check("batch_norm_inference", x, dict(gamma=gamma, beta=beta, running_mean=running_mean,
                                            running_var=running_var))
    dt = np.dtype(x.dtype)
    n, c, s = _cs(x)
    y = empty(x.shape, dt)
    if y.size:
        launch1d(_bn_infer_k, y.size, flat(x), gamma, beta, running_mean, running_var, flat(y),
               c, s, dt.type(eps))
    return y


def batch_norm_eval_backward(g, x, gamma, running_mean, running_var, eps=1e-5):
    """Backward of batch_norm_inference -> (dx, dgamma, dbeta)."""
    _check("batch_norm_eval_backward", x, dict(gamma=gamma, running_mean=running_mean,
                                                running_var=running_var), g=g)
    dt = np.dtype(x.dtype)
    n, c, s = _cs(x)
    dx, gx = empty(x.shape, dt), empty(x.shape, dt)
    launch1d(_bn_eval_bwd_k, dx.size, flat(g), flat(x), gamma, running_mean, running_var,
           flat(dx), flat(gx), c, s, dt.type(eps))
    axes = (0,) + tuple(range(2, len(x.shape)))
    return dx, reduce_sum(gx, axes), reduce_sum(g, axes)


def batch_norm_update_running(running_mean, running_var, mean, invstd, momentum, eps, count):
    """In place: running <- (1 - momentum) running + momentum * batch statistics, the batch
    variance unbiased (count / (count - 1)); as minifit's CPU path."""
    for name, a in dict(running_mean=running_mean, running_var=running_var, mean=mean, invstd=invstd).items():
        need("batch_norm_update_running", name, a, ndim=1)
    dt = np.dtype(running_mean.dtype)
    launch1d(_bn_running_k, running_mean.size, running_mean, running_var, mean, invstd,
           dt.type(1 - momentum), dt.type(momentum), float(momentum), float(eps), float(count))
    return running_mean, running_var
