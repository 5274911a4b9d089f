"""Input validation shared by every op: errors name the op, what it expected and what it got."""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor


def fail(op: str, message: str):
    raise ValueError(f"{op}: {message}")


def ndim(op: str, t: Tensor, expected: int | tuple, what: str, layout: str = ""):
    allowed = expected if isinstance(expected, tuple) else (expected,)
    if t.ndim not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed)
        fail(op, f"{what} must be {want}{' (' + layout + ')' if layout else ''}, got shape {t.shape}")


def floating(op: str, *named):
    """Each (name, tensor) must be float32/float64, all of one dtype."""
    dtypes = {}
    for name, t in named:
        if t is None:
            continue
        if np.dtype(t.dtype).kind != "f":
            fail(op, f"{name} must be floating point (float32 or float64), got {t.dtype}")
        dtypes[name] = np.dtype(t.dtype)
    if len(set(dtypes.values())) > 1:
        given = ", ".join(f"{k}={v}" for k, v in dtypes.items())
        fail(op, f"dtype mismatch ({given}); cast them to one dtype, e.g. with model.to(dtype=np.float64)")
