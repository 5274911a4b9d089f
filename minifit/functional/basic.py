"""Arithmetic, reductions and shape ops. Each op: forward, then its backward closure."""
from __future__ import annotations

import numpy as np

import kernels as K

from ..tensor import Tensor, as_tensor


def _unbroadcast(g, shape: tuple):
    """Sum a broadcast gradient back down to ``shape`` (the adjoint of broadcasting)."""
    return K.unbroadcast(g, shape)


def _operand(v, other):
    """A Python scalar next to a floating tensor takes the tensor's dtype (NumPy's rule for
    Python scalars), so ``x * 0.5`` stays float32."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(other, Tensor) \
            and np.dtype(other.dtype).kind == "f":
        return Tensor(np.asarray(v, dtype=other.dtype))
    return as_tensor(v)


def _binary(op, a, b):
    a, b = _operand(a, b), _operand(b, a)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None
    return a, b


def add(a, b) -> Tensor:
    """a + b (broadcasting)."""
    a, b = _binary("add", a, b)
    return Tensor.from_op(K.add(a.data, b.data), (a, b),
                          lambda g: (_unbroadcast(g, a.shape) if a.requires_grad else None,
                                     _unbroadcast(g, b.shape) if b.requires_grad else None))


def sub(a, b) -> Tensor:
    """a - b (broadcasting)."""
    a, b = _binary("sub", a, b)
    return Tensor.from_op(K.sub(a.data, b.data), (a, b),
                          lambda g: (_unbroadcast(g, a.shape) if a.requires_grad else None,
                                     _unbroadcast(K.neg(g), b.shape) if b.requires_grad else None))


def mul(a, b) -> Tensor:
    """a * b (broadcasting). d/da = g * b, d/db = g * a."""
    a, b = _binary("mul", a, b)
    return Tensor.from_op(K.mul(a.data, b.data), (a, b),
                          lambda g: (_unbroadcast(K.mul(g, b.data), a.shape) if a.requires_grad else None,
                                     _unbroadcast(K.mul(g, a.data), b.shape) if b.requires_grad else None))


def div(a, b) -> Tensor:
    """a / b (broadcasting). d/da = g / b, d/db = -g a / b^2."""
    a, b = _binary("div", a, b)
    out = K.div(a.data, b.data)
    return Tensor.from_op(out, (a, b),
                          lambda g: (_unbroadcast(K.div(g, b.data), a.shape) if a.requires_grad else None,
                                     _unbroadcast(K.div(K.mul(K.neg(g), out), b.data), b.shape)
                                     if b.requires_grad else None))


def matmul(a, b) -> Tensor:
    """(n, k) @ (k, m) -> (n, m)."""
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: expected (n, k) @ (k, m), got {a.shape} @ {b.shape}")
    return Tensor.from_op(K.matmul(a.data, b.data), (a, b),
                          lambda g: (K.matmul(g, b.data, trans_b=True), K.matmul(a.data, g, trans_a=True)))


def sum(x, axis=None, keepdims=False) -> Tensor:  # noqa: A001 - mirrors numpy
    """Sum over ``axis`` (all by default); the gradient broadcasts back."""
    x = as_tensor(x)
    out = K.reduce_sum(x.data, axis, keepdims)

    def backward(g):
        if axis is not None and not keepdims:  # np.expand_dims(g, axis), as a reshape
            axes = {int(a) % x.ndim for a in np.atleast_1d(axis)}
            g = g.reshape(tuple(1 if i in axes else n for i, n in enumerate(x.shape)))
        return (K.broadcast_to(g, x.shape, x.dtype),)
    return Tensor.from_op(out, (x,), backward)


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


def _host_only(op, *tensors):
    if any(t.device != "cpu" for t in tensors):
        raise NotImplementedError(f"{op}: not implemented on the cuda device; move the tensors with .to('cpu')")


def concatenate(tensors, axis=0) -> Tensor:
    tensors = [as_tensor(t) for t in tensors]
    _host_only("concatenate", *tensors)
    try:
        out = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError as e:
        raise ValueError(f"concatenate: shapes {[t.shape for t in tensors]} along axis {axis}: {e}") from None
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    return Tensor.from_op(out, tuple(tensors), lambda g: tuple(np.split(g, bounds, axis=axis)))


def getitem(x, index) -> Tensor:
    """x[index]; the gradient scatters back (np.add.at handles repeated indices)."""
    x = as_tensor(x)
    _host_only("getitem", x)

    def backward(g):
        dx = np.zeros_like(x.data)
        np.add.at(dx, index, g)
        return (dx,)
    return Tensor.from_op(x.data[index], (x,), backward)


def abs(x) -> Tensor:  # noqa: A001
    """|x|; the subgradient at 0 is 0."""
    x = as_tensor(x)
    return Tensor.from_op(K.absolute(x.data), (x,), lambda g: (K.mul(g, K.sign(x.data)),))
