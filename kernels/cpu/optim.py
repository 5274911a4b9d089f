"""Optimizer updates on the CPU, in place, each with the max-norm constraint fused: SGD
(momentum, Nesterov, weight decay), RMSProp (pylearn2's form), Adam, and max_norm_ alone.

The formulas are kernels.reference's (sgd_update, ..., max_norm_), done in one pass per
row of the parameter (a row = one output unit's kernel or weight row, the slice the
max-norm constraint rescales): each element is updated, its square added to the row's
float64 norm, and the row rescaled while it is still in cache. NumPy needed four to nine
whole-array passes, plus a float64 copy for the norms, for the same work: cifar-teacher's
SGD step with its max-norm constraints (16.2M parameters) took 294 ms of a ~1.5 s training
step that way (2026-12-03, AMD EPYC, 2 threads, loaded machine); the one-pass update took
0.40x NumPy's time there, 0.45-0.65x on mnist-fitnet, mnist-teacher and fitnet-1's
parameters (benchmarks/ab_optim.py, medians of 9 alternating, same machine). The arithmetic is the reference's, operation for operation, in the
parameter's dtype (the hyper-parameters cast to it first, as NumPy does with a Python
float), so the update is bitwise the reference's; the max-norm scale can differ from
NumPy's pairwise float64 sum in its last float64 bits only. Rows are split over the thread
pool when the parameter is large (runtime.split). kernels/cuda/optim.py holds the CUDA
twins (there the constraint stays a second kernel).
"""
from __future__ import annotations

import numpy as np

from . import tuning
from .runtime import kern, split


@kern
def _constrain_row(p, r, max_norm):
    """Row r of p rescaled to L2 norm <= max_norm (max_norm <= 0: no constraint). The
    float64 sum of squares runs in 8 interleaved partial sums (fixed order, so the result
    is deterministic): one running sum is bound by the add latency (the whole fused SGD
    step of mnist-teacher's 96 x 3072 weight took 2.2 ms with one, ...)."""
    if max_norm <= 0:
        return
    n = p.shape[1]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    j = 0
    while j + 8 <= n:
        x0, x1, x2, x3 = np.float64(p[r, j]), np.float64(p[r, j + 1]), np.float64(p[r, j + 2]), np.float64(p[r, j + 3])
        x4, x5, x6, x7 = (np.float64(p[r, j + 4]), np.float64(p[r, j + 5]), np.float64(p[r, j + 6]),
                          np.float64(p[r, j + 7]))
        a0 += x0 * x0
        a1 += x1 * x1
        a2 += x2 * x2
        a3 += x3 * x3
        a4 += x4 * x4
        a5 += x5 * x5
        a6 += x6 * x6
        a7 += x7 * x7
        j += 8
    ss = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    while j < n:
        x = np.float64(p[r, j])
        ss += x * x
        j += 1
    scale = min(1.0, max_norm / max(np.sqrt(ss), 1e-12))
    if scale < 1.0:
        s = p.dtype.type(scale)
        for j in range(n):
            p[r, j] *= s


# Each update loop below has no loop-carried sum (the norm is a second pass over the row,
# still in L1), so LLVM vectorises it; the flags are loop-invariant (unswitched).
@kern
def _sgd_rows_k(p, g, v, lr, mu, wd, momentum, nesterov, decay, max_norm, r0, r1):
    for r in range(r0, r1):
        for j in range(p.shape[1]):
            x = p[r, j]
            gj = g[r, j]
            if decay:
                gj = gj + wd * x
            if momentum:
                vj = v[r, j] * mu
                vj = vj - lr * gj
                v[r, j] = vj
                x = x + (mu * vj - lr * gj) if nesterov else x + vj
            else:
                x = x - lr * gj
            p[r, j] = x
        _constrain_row(p, r, max_norm)


@kern
def _rmsprop_rows_k(p, g, ms, lr, decay, one_m_decay, eps, max_norm, r0, r1):
    for r in range(r0, r1):
        for j in range(p.shape[1]):
            gj = g[r, j]
            m = ms[r, j] * decay
            m = m + one_m_decay * gj * gj
            ms[r, j] = m
            d = np.sqrt(m)
            p[r, j] = p[r, j] - lr * gj / (eps if d < eps else d)   # np.maximum (NaN kept)
        _constrain_row(p, r, max_norm)


@kern
def _adam_rows_k(p, g, m, v, lr, b1, c1, b2, c2, bc1, bc2, eps, wd, decay, max_norm, r0, r1):
    for r in range(r0, r1):
        for j in range(p.shape[1]):
            x = p[r, j]
            gj = g[r, j]
            if decay:
                gj = gj + wd * x
            mj = m[r, j] * b1
            mj = mj + c1 * gj
            m[r, j] = mj
            vj = v[r, j] * b2
            vj = vj + c2 * gj * gj
            v[r, j] = vj
            p[r, j] = x - lr * (mj / bc1) / (np.sqrt(vj / bc2) + eps)
        _constrain_row(p, r, max_norm)


@kern
def _max_norm_rows_k(p, max_norm, r0, r1):
    for r in range(r0, r1):
        _constrain_row(p, r, max_norm)


def _rows(a):
    """a as a 2-D (rows, row size) view; the update writes through it, so a must be
    C-contiguous (parameters and their slots are)."""
    if not a.flags.c_contiguous:
        raise ValueError("optimizer kernels: parameters and their slots must be C-contiguous")
    return a.reshape(a.shape[0] if a.ndim else 1, -1)


def _run(kernel, p, *args):
    p2 = _rows(p)
    if p.size < tuning.OPTIM_SPLIT:
        kernel(p2, *args, 0, p2.shape[0])
    else:
        split(lambda r0, r1: kernel(p2, *args, r0, r1), p2.shape[0], p.size)
    return p


def _mn(max_norm):
    return -1.0 if max_norm is None else float(max_norm)


def sgd_update(p, g, v, lr, momentum=0.0, nesterov=False, weight_decay=0.0, max_norm=None):
    """reference.sgd_update, then reference.max_norm_(p, max_norm) unless None, in one pass."""
    T = p.dtype.type
    g2 = _rows(np.ascontiguousarray(g, dtype=p.dtype))
    return _run(_sgd_rows_k, p, g2, _rows(p if v is None else v), T(lr), T(momentum), T(weight_decay),
                v is not None, bool(nesterov), bool(weight_decay), _mn(max_norm))


def rmsprop_update(p, g, ms, lr, decay, eps, max_norm=None):
    """reference.rmsprop_update, then reference.max_norm_ unless None, in one pass."""
    T = p.dtype.type
    g2 = _rows(np.ascontiguousarray(g, dtype=p.dtype))
    return _run(_rmsprop_rows_k, p, g2, _rows(ms), T(lr), T(decay), T(1 - decay), T(eps), _mn(max_norm))


def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0, max_norm=None):
    """reference.adam_update, then reference.max_norm_ unless None, in one pass."""
    T = p.dtype.type
    g2 = _rows(np.ascontiguousarray(g, dtype=p.dtype))
    return _run(_adam_rows_k, p, g2, _rows(m), _rows(v), T(lr), T(beta1), T(1 - beta1), T(beta2), T(1 - beta2),
                T(1 - beta1 ** t), T(1 - beta2 ** t), T(eps), T(weight_decay), bool(weight_decay), _mn(max_norm))


def max_norm_(w, max_norm):
    """reference.max_norm_ in one pass per row: every slice w[i] rescaled to L2 norm <= max_norm."""
    return _run(_max_norm_rows_k, w, float(max_norm))
