"""Output-size arithmetic shared by every implementation (pure Python)."""
from __future__ import annotations

import math


def pair(v, name="value"):
    """An int or an (h, w) pair -> (h, w) of ints."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name}: expected an int or a pair (h, w), got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def conv_output_size(size: int, k: int, stride: int, pad: int) -> int:
    """floor((size + 2*pad - k) / stride) + 1."""
    return (size + 2 * pad - k) // stride + 1


def pool_output_size(size: int, k: int, stride: int, ceil_mode: bool) -> int:
    """Pooling output length without padding.

    floor: (size - k) // stride + 1.  ceil (pylearn2's max_pool_c01b): a last partial
    window counts, ceil((size - k) / stride) + 1, but a window never starts past the input.
    A window larger than the input gives one output in ceil mode (the global max) and is
    an error in floor mode.
    """
    if size <= 0:
        raise ValueError(f"pool: input size must be positive, got {size}")
    if size < k:
        if ceil_mode:
            return 1
        raise ValueError(f"pool: window {k} is larger than the input {size} (floor mode)")
    if not ceil_mode:
        return (size - k) // stride + 1
    out = math.ceil((size - k) / stride) + 1
    if (out - 1) * stride >= size:
        out -= 1
    return out
