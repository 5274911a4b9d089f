"""Networks built by name: ``minifit.models.build("mnist-fitnet", num_classes=10)``.

Every model is a ``Network``: a Sequential of named layers (h0, h1, ..., y) with an
input shape, so "run up to the hint layer" is ``net.forward(x, upto="h1")`` and the
per-layer shapes, parameter and multiplication counts come from ``net.layer_table()``.
Families register a builder for a name or a name pattern (e.g. ``wrn-D-M``).
"""
from __future__ import annotations

import re
import time

import numpy as np

from ..nn import Sequential
from ..tensor import Tensor, no_grad

_BUILDERS: dict[str, callable] = {}
_PATTERNS: list[tuple[re.Pattern, callable, str]] = []


def register(name: str):
    """Decorator: ``@register("mnist-teacher")`` over ``builder(num_classes, **kw) -> Network``."""
    def deco(fn):
        _BUILDERS[name] = fn
        return fn
    return deco


def register_pattern(pattern: str, example: str):
    """Decorator for a family: ``builder(match, num_classes, **kw)``; ``example`` is shown in
    the list of names."""
    def deco(fn):
        _PATTERNS.append((re.compile(pattern + r"\Z"), fn, example))
        return fn
    return deco


def names() -> list[str]:
    _load_families()
    return sorted(_BUILDERS) + [ex for _, _, ex in _PATTERNS]


def build(name: str, num_classes: int = 10, **kwargs) -> "Network":
    """The network ``name``; ``kwargs`` are its family's options (maxout networks: bias="tied"
    | "untied", max_norms={layer: norm}, irange)."""
    _load_families()
    if name in _BUILDERS:
        fn, args = _BUILDERS[name], ()
    else:
        for pat, fn, _ in _PATTERNS:
            m = pat.match(name)
            if m:
                args = (m,)
                break
        else:
            raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}")
    try:
        net = fn(*args, num_classes=num_classes, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        raise ValueError(f"model {name!r} does not take the option {str(e).split('argument')[-1].strip()}; "
                         f"options given: {', '.join(sorted(kwargs))}") from None
    net.name = name
    return net


def _load_families():
    from . import maxout_nets  # noqa: F401  (registers on import)
    import importlib.util
    if importlib.util.find_spec(f"{__name__}.wrn") is not None:
        from . import wrn  # noqa: F401


def layer_mults(layer, in_shape, out_shape) -> int:
    """Multiplications per example, by the paper's convention (see the spec): a layer with
    its own ``num_mults(in_shape, out_shape)`` says; parameter-free layers count 0."""
    fn = getattr(layer, "num_mults", None)
    return int(fn(in_shape, out_shape)) if fn else 0


class Network(Sequential):
    """A Sequential with an input shape (C, H, W) and the paper's bookkeeping."""

    def __init__(self, *layers, input_shape, num_classes):
        super().__init__(*layers)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.name = type(self).__name__

    def layer_table(self):
        """[(name, layer, out_shape (no batch), params, mults)] from one zero example."""
        rows = []
        was_training = self.training
        self.eval()
        p = next(iter(self.parameters()), None)
        dtype = p.dtype if p is not None else np.float32
        x = Tensor(np.zeros((1,) + self.input_shape, dtype))
        with no_grad():
            for name, layer in self._children.items():
                in_shape = x.shape[1:]
                x = layer(x)
                params = sum(q.size for q in layer.parameters())
                rows.append((name, layer, x.shape[1:], int(params), layer_mults(layer, in_shape, x.shape[1:])))
        self.train(was_training)
        return rows

    def output_shape(self, upto: str | None = None):
        """Shape (no batch) of the output of layer ``upto`` (default: the last)."""
        for name, _, shape, _, _ in self.layer_table():
            if name == upto:
                return shape
        return shape

    def num_mults(self) -> int:
        return sum(r[4] for r in self.layer_table())

    def paper_counts(self, pieces: int = 2):
        """(params, mults) counting every maxout layer as ``pieces`` pieces: the spec shows
        this reproduces the paper's printed figures."""
        params = mults = 0
        for _, layer, _, p, m in self.layer_table():
            own = getattr(layer, "pieces", None)
            ratio = pieces / own if own else 1.0
            params += round(p * ratio)
            mults += round(m * ratio)
        return params, mults



def inference_seconds(net, batch: int = 100, repeats: int = 5) -> float:
    """Median wall seconds of one eval-mode forward pass of ``net`` over ``batch`` random
    images, after a warm-up pass (JIT compilation, buffers), as the papers' tables report
    CPU time per batch of 100. The network's training mode is restored."""
    was_training = net.training
    net.eval()
    x = Tensor(np.random.default_rng(0).standard_normal((batch,) + tuple(net.input_shape)).astype(np.float32))
    times = []
    with no_grad():
        net(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    net.train(was_training)
    return float(np.median(times))
