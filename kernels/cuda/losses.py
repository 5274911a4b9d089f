"""Softmax, log-softmax and their gradients; cross-entropy; the KD and hint losses: the
CUDA twins of kernels/cpu/losses.py (same signatures and results).

Along the last axis (the engine's case: logits (N, C)) one block of up to RB threads handles one
row: threads stride along the row (coalesced), the row max and the sums of exponentials
are combined in shared memory, then each thread writes its elements. Along another axis
(x viewed as (outer, n, inner), inner > 1) one thread per (outer, inner) pair walks the
axis; neighbouring threads read neighbouring addresses.

Labels may be a host or a device integer array; they are range-checked on the host (a
device array of labels is copied back, N integers) and copied to the device.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from ..shapes import check_labels
from ._common import (RB, block_max, block_sum, empty, flat, is_dev, launch, launch1d, need, per_dtype, prod,
                      row_block, same_dtype, to_device)
from .reduce import reduce_sum

SOFTMAX, LOG_SOFTMAX, SOFTMAX_BWD, LOG_SOFTMAX_BWD = 0, 1, 2, 3


@per_dtype("softmax_rows")
def _rows_k(nbt):
    def k(u, v, out, nrows, n, mode):
        """Per row of length n: SOFTMAX(u), LOG_SOFTMAX(u), SOFTMAX_BWD(g=u, p=v) =
        p * (g - sum(g p)), LOG_SOFTMAX_BWD(g=u, out=v) = g - exp(out) * sum(g)."""
        sh = cuda.shared.array(RB, nbt)
        tid = cuda.threadIdx.x
        for row in range(cuda.blockIdx.x, nrows, cuda.gridDim.x):
            base = row * n
            if mode == SOFTMAX or mode == LOG_SOFTMAX:
                mx = nbt(-math.inf)
                for t in range(tid, n, cuda.blockDim.x):
                    if u[base + t] > mx:
                        mx = u[base + t]
                mx = block_max(sh, tid, mx)
                acc = nbt(0)
                for t in range(tid, n, cuda.blockDim.x):
                    acc += math.exp(u[base + t] - mx)
                total = block_sum(sh, tid, acc)
                if mode == SOFTMAX:
                    for t in range(tid, n, cuda.blockDim.x):
                        out[base + t] = math.exp(u[base + t] - mx) / total
                else:
                    lse = math.log(total)
                    for t in range(tid, n, cuda.blockDim.x):
                        out[base + t] = (u[base + t] - mx) - lse
            elif mode == SOFTMAX_BWD:
                acc = nbt(0)
                for t in range(tid, n, cuda.blockDim.x):
                    acc += u[base + t] * v[base + t]
                total = block_sum(sh, tid, acc)
                for t in range(tid, n, cuda.blockDim.x):
                    out[base + t] = v[base + t] * (u[base + t] - total)
            else:
                acc = nbt(0)
                for t in range(tid, n, cuda.blockDim.x):
                    acc += u[base + t]
                total = block_sum(sh, tid, acc)
                for t in range(tid, n, cuda.blockDim.x):
                    out[base + t] = u[base + t] - math.exp(v[base + t]) * total
    return k


@per_dtype("softmax_mid")
def _mid_k(nbt):
    def k(u, v, out, n, inner, mode):
        """As _rows_k along the middle axis of an (outer, n, inner) view; one thread per
        (outer, inner) pair."""
        for j in range(cuda.grid(1), out.size // n, cuda.gridsize(1)):
            o = j // inner
            i = j - o * inner
            base = o * n * inner + i
            if mode == SOFTMAX or mode == LOG_SOFTMAX:
                mx = nbt(-math.inf)
                for t in range(n):
                    if u[base + t * inner] > mx:
                        mx = u[base + t * inner]
                acc = nbt(0)
                for t in range(n):
                    acc += math.exp(u[base + t * inner] - mx)
                if mode == SOFTMAX:
                    for t in range(n):
                        out[base + t * inner] = math.exp(u[base + t * inner] - mx) / acc
                else:
                    lse = math.log(acc)
                    for t in range(n):
                        out[base + t * inner] = (u[base + t * inner] - mx) - lse
            elif mode == SOFTMAX_BWD:
                acc = nbt(0)
                for t in range(n):
                    acc += u[base + t * inner] * v[base + t * inner]
                for t in range(n):
                    out[base + t * inner] = v[base + t * inner] * (u[base + t * inner] - acc)
            else:
                acc = nbt(0)
                for t in range(n):
                    acc += u[base + t * inner]
                for t in range(n):
                    out[base + t * inner] = u[base + t * inner] - math.exp(v[base + t * inner]) * acc
    return k


def _along(fname, mode, u, v, axis):
    need(fname, "x" if v is None else "g", u, ndim=(1, None))
    if v is not None:
        need(fname, "y", v)
        if tuple(v.shape) != tuple(u.shape):
            raise ValueError(f"{fname}: g {tuple(u.shape)} and the forward output {tuple(v.shape)} must match")
        same_dtype(fname, g=u, y=v)
    shape = tuple(int(s) for s in u.shape)
    nd = len(shape)
    if not -nd <= int(axis) < nd:
        raise ValueError(f"{fname}: axis {axis} is out of bounds for shape {shape}")
    ax = int(axis) % nd
    outer, n, inner = prod(shape[:ax]), shape[ax], prod(shape[ax + 1:])
    dt = np.dtype(u.dtype)
    out = empty(shape, dt)
    if outer * n * inner == 0:
        return out
    uf = flat(u)
    vf = uf if v is None else flat(v)
    if inner == 1:
        launch(_rows_k[dt], min(outer, 65535), row_block(n), uf, vf, flat(out), outer, n, mode)
    else:
        launch1d(_mid_k[dt], outer * inner, uf, vf, flat(out), n, inner, mode)
    return out


def softmax(x, axis=-1):
    """exp(x - max) / sum exp(x - max) along ``axis``."""
    return _along("softmax", SOFTMAX, x, None, axis)


def log_softmax(x, axis=-1):
    """(x - max) - log(sum exp(x - max)) along ``axis``."""
    return _along("log_softmax", LOG_SOFTMAX, x, None, axis)


def softmax_backward(g, p, axis=-1):
    """p * (g - sum(g * p)) along ``axis`` (p = softmax output)."""
    return _along("softmax_backward", SOFTMAX_BWD, g, p, axis)


def log_softmax_backward(g, out, axis=-1):
    """g - exp(out) * sum(g) along ``axis`` (out = log_softmax output)."""
    return _along("log_softmax_backward", LOG_SOFTMAX_BWD, g, out, axis)


# ------------------------------------------------------------------ labels
def _labels(fname, labels, n, c):
    """-> device int64 labels (N,), checked on the host (kernels.shapes.check_labels)."""
    if not isinstance(labels, np.ndarray) and callable(getattr(labels, "numpy", None)):
        labels = labels.numpy()   # a minifit Tensor of labels
    return to_device(check_labels(fname, labels, n, c))


# ------------------------------------------------------------------ cross-entropy
@per_dtype("ce_loss")
def _ce_loss_k(nbt):
    def k(logp, labels, out, N, C):
        """out[0] = -sum_n logp[n, labels[n]] / N (one block)."""
        sh = cuda.shared.array(RB, nbt)
        tid = cuda.threadIdx.x
        acc = nbt(0)
        for n in range(tid, N, cuda.blockDim.x):
            acc += logp[n * C + labels[n]]
        total = block_sum(sh, tid, acc)
        if tid == 0:
            out[0] = -total / nbt(N)
    return k


@per_dtype("ce_grad")
def _ce_grad_k(nbt):
    def k(logp, labels, g, out, C, N):
        """out = (exp(logp) - onehot(labels)) * (g / N)."""
        scale = g[0] / nbt(N)
        for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            n = i // C
            d = math.exp(logp[i])
            if i - n * C == labels[n]:
                d -= nbt(1)
            out[i] = d * scale
    return k


def cross_entropy_forward(logits, labels):
    """-> (loss: 0-d device array = -1/N sum_n log softmax(z_n)[y_n], logp (N, C))."""
    need("cross_entropy_forward", "logits", logits, ndim=2)
    n, c = (int(s) for s in logits.shape)
    y = _labels("cross_entropy_forward", labels, n, c)
    dt = np.dtype(logits.dtype)
    logp = log_softmax(logits, axis=1)
    loss = empty((1,), dt)
    launch(_ce_loss_k[dt], 1, row_block(n), flat(logp), y, loss, n, c)
    return loss.reshape(()), logp


def cross_entropy_backward(logp, labels, g):
    """d loss / d logits = (softmax - onehot) * g / N; g: the loss's upstream gradient (a
    0-d or 1-element device array, or a host scalar)."""
    need("cross_entropy_backward", "logp", logp, ndim=2)
    n, c = (int(s) for s in logp.shape)
    y = _labels("cross_entropy_backward", labels, n, c)
    dt = np.dtype(logp.dtype)
    g1 = flat(g) if is_dev(g) else to_device(np.asarray(g, dtype=dt).reshape(1))
    out = empty((n, c), dt)
    if out.size:
        launch1d(_ce_grad_k[dt], out.size, flat(logp), y, g1, flat(out), c, n)
    return out


# ------------------------------------------------------------------ KD and hint losses
@per_dtype("kd_rows")
def _kd_k(nbt):
    def k(s, t, labels, grad, parts, N, C, tau, wt):
        """Per row n (one block): log P_S, log P_S^tau, P_T^tau by log-softmax; grad row =
        [(P_S - onehot) + wt (P_S^tau - P_T^tau)] / N; parts[0, n] = -log P_S(y_n),
        parts[1, n] = -sum_k P_T^tau log P_S^tau."""
        sh = cuda.shared.array(RB, nbt)
        tid = cuda.threadIdx.x
        for row in range(cuda.blockIdx.x, N, cuda.gridDim.x):
            base = row * C
            y = labels[row]
            ms = nbt(-math.inf)
            mt = nbt(-math.inf)
            for j in range(tid, C, cuda.blockDim.x):
                if s[base + j] > ms:
                    ms = s[base + j]
                if t[base + j] > mt:
                    mt = t[base + j]
            ms = block_max(sh, tid, ms)
            mt = block_max(sh, tid, mt)
            mst = ms / tau   # max of s / tau (division by tau > 0 preserves the order)
            mtt = mt / tau
            a1 = nbt(0)
            a2 = nbt(0)
            a3 = nbt(0)
            for j in range(tid, C, cuda.blockDim.x):
                a1 += math.exp(s[base + j] - ms)
                a2 += math.exp(s[base + j] / tau - mst)
                a3 += math.exp(t[base + j] / tau - mtt)
            lse1 = math.log(block_sum(sh, tid, a1))
            lse2 = math.log(block_sum(sh, tid, a2))
            lse3 = math.log(block_sum(sh, tid, a3))
            soft = nbt(0)
            for j in range(tid, C, cuda.blockDim.x):
                lps = (s[base + j] - ms) - lse1
                lpst = (s[base + j] / tau - mst) - lse2
                ptt = math.exp((t[base + j] / tau - mtt) - lse3)
                soft += ptt * lpst
                gj = math.exp(lps)
                if j == y:
                    gj -= nbt(1)
                gj += wt * (math.exp(lpst) - ptt)
                grad[base + j] = gj / nbt(N)
            soft = block_sum(sh, tid, soft)
            if tid == 0:
                parts[row] = -((s[base + y] - ms) - lse1)
                parts[N + row] = -soft
    return k


def kd_loss_value_and_grad(s, t, labels, tau, lam, hinton=False):
    """CUDA twin of the CPU kd_loss_value_and_grad (equation and derivation: minifit.losses.kd_loss): -> (value: float, grad (N, C)
    device array). value = 1/N sum_n [-log P_S(y_n) + w H(P_T^tau, P_S^tau)], w = lam or
    lam tau^2 (Hinton). One row per block; the two per-row terms are summed on the device
    and two numbers copied back."""
    need("kd_loss", "student logits", s, ndim=2)
    need("kd_loss", "teacher logits", t, ndim=2)
    if tuple(s.shape) != tuple(t.shape):
        raise ValueError(f"kd_loss: student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} must match")
    if tau <= 0:
        raise ValueError(f"kd_loss: tau must be positive, got {tau}")
    dt = np.dtype(s.dtype)
    if np.dtype(t.dtype) != dt:
        from .elementwise import astype
        t = astype(t, dt)
    n, c = (int(v) for v in s.shape)
    y = _labels("kd_loss", labels, n, c)
    w = lam * tau * tau if hinton else lam
    grad = empty((n, c), dt)
    parts = empty((2, n), dt)
    if n == 0:
        return float("nan"), grad
    launch(_kd_k[dt], min(n, 65535), row_block(c), flat(s), flat(t), y, flat(grad), flat(parts), n, c, dt.type(tau),
           dt.type(w / tau))
    hard, soft = reduce_sum(parts, 1).copy_to_host()
    return (float(hard) + w * float(soft)) / n, grad


@per_dtype("hint")
def _hint_k(nbt):
    def k(r, u, grad, sq, N):
        """grad = (r - u) / N; sq = (r - u)^2 in float64."""
        for i in range(cuda.grid(1), grad.size, cuda.gridsize(1)):
            d = r[i] - u[i]
            grad[i] = d / nbt(N)
            d64 = float64(d)
            sq[i] = d64 * d64
    return k


def hint_loss_value_and_grad(regressed, hint):
    """CUDA twin of the CPU hint_loss_value_and_grad: L_HT = 1/N sum_n 1/2
    ||r_n - u_n||^2 -> (value: float, dL/dr = (r - u) / N device array)."""
    need("hint_loss", "regressed", regressed, ndim=(1, None))
    need("hint_loss", "hint", hint, ndim=(1, None))
    if tuple(regressed.shape) != tuple(hint.shape):
        raise ValueError(f"hint_loss: the regressor output {tuple(regressed.shape)} and the teacher's hint "
                         f"{tuple(hint.shape)} must have the same shape")
    dt = np.dtype(regressed.dtype)
    if np.dtype(hint.dtype) != dt:
        from .elementwise import astype
        hint = astype(hint, dt)
    n = int(regressed.shape[0])
    grad = empty(regressed.shape, dt)
    sq = empty(regressed.shape, np.float64)
    if grad.size == 0:
        return 0.0, grad
    launch1d(_hint_k[dt], grad.size, flat(regressed), flat(hint), flat(grad), flat(sq), n)
    total = float(reduce_sum(sq).copy_to_host())
    return 0.5 * total / n, grad
