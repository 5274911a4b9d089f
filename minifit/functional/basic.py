"""Arithmetic, reductions and shape ops. Each op: forward, then its backward closure."""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor, as_tensor


def _unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast gradient back down to ``shape`` (the adjoint of broadcasting)."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(extra))) if extra else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _binary(op, a, b):
    a, b = as_tensor(a), as_tensor(b)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None
    return a, b


def add(a, b) -> Tensor:
    """a + b (broadcasting)."""
    a, b = _binary("add", a, b)
    return Tensor.from_op(a.data + b.data, (a, b),
                          lambda g: (_unbroadcast(g, a.shape), _unbroadcast(g, b.shape)))


def sub(a, b) -> Tensor:
    """a - b (broadcasting)."""
    a, b = _binary("sub", a, b)
    return Tensor.from_op(a.data - b.data, (a, b),
                          lambda g: (_unbroadcast(g, a.shape), _unbroadcast(-g, b.shape)))


def mul(a, b) -> Tensor:
    """a * b (broadcasting). d/da = g * b, d/db = g * a."""
    a, b = _binary("mul", a, b)
    return Tensor.from_op(a.data * b.data, (a, b),
                          lambda g: (_unbroadcast(g * b.data, a.shape), _unbroadcast(g * a.data, b.shape)))


def div(a, b) -> Tensor:
    """a / b (broadcasting). d/da = g / b, d/db = -g a / b^2."""
    a, b = _binary("div", a, b)
    out = a.data / b.data
    return Tensor.from_op(out, (a, b),
                          lambda g: (_unbroadcast(g / b.data, a.shape), _unbroadcast(-g * out / b.data, b.shape)))


def matmul(a, b) -> Tensor:
    """(n, k) @ (k, m) -> (n, m)."""
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: expected (n, k) @ (k, m), got {a.shape} @ {b.shape}")
    return Tensor.from_op(a.data @ b.data, (a, b), lambda g: (g @ b.data.T, a.data.T @ g))


def sum(x, axis=None, keepdims=False) -> Tensor:  # noqa: A001 - mirrors numpy
    """Sum over ``axis`` (all by default); the gradient broadcasts back."""
    x = as_tensor(x)
    out = np.sum(x.data, axis=axis, keepdims=keepdims)

    def backward(g):
        if axis is not None and not keepdims:
            g = np.expand_dims(g, axis)
        return (np.broadcast_to(g, x.shape).astype(x.dtype, copy=True),)
    return Tensor.from_op(np.asarray(out), (x,), backward)


def mean(x, axis=None, keepdims=False) -> Tensor:
    """Mean over ``axis``: sum / count."""
    x = as_tensor(x)
    count = x.size if axis is None else int(np.prod([x.shape[a] for a in np.atleast_1d(axis)]))
    return mul(sum(x, axis, keepdims), 1.0 / count)


def reshape(x, shape) -> Tensor:
    x = as_tensor(x)
    try:
        out = x.data.reshape(shape)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape {x.shape} ({x.size} elements) to {tuple(shape)}") from None
    return Tensor.from_op(out, (x,), lambda g: (g.reshape(x.shape),))


def flatten(x) -> Tensor:
    """(N, ...) -> (N, prod(...))."""
    x = as_tensor(x)
    return reshape(x, (x.shape[0], -1))


def concatenate(tensors, axis=0) -> Tensor:
    tensors = [as_tensor(t) for t in tensors]
    try:
        out = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError as e:
        raise ValueError(f"concatenate: shapes {[t.shape for t in tensors]} along axis {axis}: {e}") from None
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    return Tensor.from_op(out, tuple(tensors), lambda g: tuple(np.split(g, bounds, axis=axis)))


def getitem(x, index) -> Tensor:
    """x[index]; the gradient scatters back (np.add.at handles repeated indices)."""
    x = as_tensor(x)

    def backward(g):
        dx = np.zeros_like(x.data)
        np.add.at(dx, index, g)
        return (dx,)
    return Tensor.from_op(x.data[index], (x,), backward)


def abs(x) -> Tensor:  # noqa: A001
    """|x|; the subgradient at 0 is 0."""
    x = as_tensor(x)
    return Tensor.from_op(np.abs(x.data), (x,), lambda g: (g * np.sign(x.data),))
