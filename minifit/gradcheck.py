"""Finite-difference gradient checks (HIPS-autograd style), float64.

For f: inputs -> scalar, compare the analytic directional derivative <grad f, v> with the
central difference (f(x + h v) - f(x - h v)) / 2h along random directions v. A transposed
or off-by-one gradient changes the directional derivative at O(1), far above the O(h^2)
error of the difference, so a relative tolerance of ~1e-6 separates the two.
"""
from __future__ import annotations

import numpy as np

from .tensor import Tensor


def check_grad(f, inputs, directions=3, h=1e-6, rtol=1e-5, atol=1e-8, seed=0):
    """Check d f(*inputs) / d input for every float64 Tensor input with requires_grad.

    f returns a Tensor (reduced to a scalar by sum if it is not one). Raises AssertionError
    naming the input and the two derivatives on mismatch; returns the largest relative error.
    """
    rng = np.random.default_rng(seed)
    for t in inputs:
        if t.requires_grad and t.dtype != np.float64:
            raise ValueError(f"check_grad: inputs must be float64, got {t.dtype} (shape {t.shape})")

    def value():
        out = f(*inputs)
        return float(np.sum(out.data))

    for t in inputs:
        t.grad = None
    out = f(*inputs)
    if out.size != 1:
        from .functional import sum as fsum
        out = fsum(out)
    out.backward()
    worst = 0.0
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            continue
        analytic_grad = np.zeros_like(t.data) if t.grad is None else t.grad
        for _ in range(directions):
            v = rng.standard_normal(t.shape)
            original = t.data.copy()
            t.data = original + h * v
            plus = value()
            t.data = original - h * v
            minus = value()
            t.data = original
            numeric = (plus - minus) / (2 * h)
            analytic = float(np.sum(analytic_grad * v))
            err = abs(numeric - analytic)
            scale = max(abs(numeric), abs(analytic))
            if err > atol + rtol * scale:
                raise AssertionError(f"gradient of input {i} (shape {t.shape}) is wrong: "
                                     f"analytic {analytic:.10g} vs finite difference {numeric:.10g}")
            worst = max(worst, err / (scale + 1e-300))
    return worst


def leaf(array, requires_grad=True) -> Tensor:
    """A float64 leaf tensor for checks."""
    return Tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)
