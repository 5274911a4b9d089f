"""Sums and norms of the engine (kernels.ENGINE_API), in NumPy: reduce_sum, the adjoint of
broadcasting (unbroadcast). (The max-norm constraint is in optim.py, fused with the updates.)"""
from __future__ import annotations

import numpy as np


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

