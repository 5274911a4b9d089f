"""The autograd-lite core: a Tensor, the graph it records, and reverse mode over it.

An op (see ``minifit.functional``) computes its output array and a ``backward``
closure mapping the output's gradient to one gradient per parent; ``Tensor.from_op``
wires both into the graph. ``Tensor.backward()`` then walks the graph once in reverse
topological order, summing gradients where a tensor is used more than once.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

import kernels as K

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def no_grad():
    """Inside this block ops record no graph (inference, teacher forward passes)."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


def records(parents) -> bool:
    """Will an op on these tensors be recorded for backward? (grad mode, and one needs grad)"""
    return is_grad_enabled() and any(p.requires_grad for p in parents)


def _is_device_array(a) -> bool:
    return K.is_device_array(a)


class Tensor:
    """An array with an optional gradient and the node that produced it.

    data: np.ndarray (CPU) or a numba CUDA device array (``device == "cuda"``).
    grad: gradient of the last ``backward()`` root w.r.t. this tensor (leaves only).
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "name")
    __array_priority__ = 1000  # so ndarray (op) Tensor defers to Tensor's operators

    def __init__(self, data, requires_grad: bool = False, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        if not _is_device_array(data):
            data = np.asarray(data)
            if data.dtype.kind in "iub" and requires_grad:
                raise ValueError(
                    f"Tensor: a tensor that requires grad must be floating point, got dtype {data.dtype}")
            if data.dtype == np.float16:
                data = data.astype(np.float32)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents: tuple = ()
        self._backward = None
        self.name = name

    # -- graph -------------------------------------------------------------
    @classmethod
    def from_op(cls, data, parents, backward) -> "Tensor":
        """Output of an op. ``backward(g)`` returns one gradient (or None) per parent."""
        out = cls(data)
        if records(parents):
            out.requires_grad = True
            out._parents = tuple(parents)
            out._backward = backward
        return out

    def backward(self, grad=None):
        """Reverse-mode differentiation from this tensor.

        With ``grad=None`` the tensor must hold one element (a loss) and gets gradient 1.
        Leaf tensors that require grad accumulate into ``.grad`` (so several
        ``backward()`` calls sum, as in PyTorch; an optimizer's ``zero_grad`` clears them).
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad "
                               "(no input of it had requires_grad=True, or it was made under no_grad())")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward(): a gradient must be given for a non-scalar output of shape {self.shape}")
            grad = _ones_like(self.data)
        order = self._topological_order()
        grads = {id(self): grad}
        for node in order:
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None:  # leaf
                node.grad = g if node.grad is None else K.add(node.grad, g)
                continue
            parent_grads = node._backward(g)
            for p, pg in zip(node._parents, parent_grads):
                if pg is None or not p.requires_grad:
                    continue
                k = id(p)
                grads[k] = pg if k not in grads else K.add(grads[k], pg)
            # free the graph as we go: intermediates are not needed twice
            node._backward = None
            node._parents = ()

    def _topological_order(self):
        order, seen = [], set()
        stack = [(self, False)]
        while stack:  # iterative DFS: deep networks would overflow recursion
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for p in node._parents:
                if p.requires_grad and id(p) not in seen:
                    stack.append((p, False))
        order.reverse()
        return order

    def detach(self) -> "Tensor":
        return Tensor(self.data)

    # -- array-like --------------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def ndim(self):
        return len(self.data.shape)

    @property
    def size(self):
        return int(np.prod(self.data.shape))

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        return "cuda" if _is_device_array(self.data) else "cpu"

    def to(self, device) -> "Tensor":
        """This tensor on ``device`` ("cpu", "cuda" or "auto"; see minifit.device.resolve):
        itself if it is there already, else a copy that stays in the graph (its gradient
        is copied back)."""
        from .device import move, resolve
        target = resolve(device)
        source = self.device
        if target == source:
            return self
        return Tensor.from_op(move(self.data, target), (self,), lambda g: (move(g, source),))

    def numpy(self) -> np.ndarray:
        return self.data.copy_to_host() if _is_device_array(self.data) else self.data

    def item(self) -> float:
        return float(np.asarray(self.numpy()).reshape(-1)[0])

    def __len__(self):
        return self.data.shape[0]

    def __repr__(self):
        rg = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device}{rg})"

    # operators delegate to minifit.functional (imported late: functional imports Tensor)
    def __add__(self, other):
        from . import functional as F
        return F.add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        from . import functional as F
        return F.sub(self, other)

    def __rsub__(self, other):
        from . import functional as F
        return F.sub(other, self)

    def __mul__(self, other):
        from . import functional as F
        return F.mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        from . import functional as F
        return F.mul(self, 1.0 / other) if np.isscalar(other) else F.div(self, other)

    def __neg__(self):
        from . import functional as F
        return F.mul(self, -1.0)

    def __matmul__(self, other):
        from . import functional as F
        return F.matmul(self, other)

    def __getitem__(self, index):
        from . import functional as F
        return F.getitem(self, index)

    def sum(self, axis=None, keepdims=False):
        from . import functional as F
        return F.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        from . import functional as F
        return F.mean(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        from . import functional as F
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return F.reshape(self, shape)


def _ones_like(a):
    if _is_device_array(a):
        from numba import cuda
        return cuda.to_device(np.ones(a.shape, dtype=a.dtype))
    return np.ones_like(a)


def as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)
