"""Shapes, geometry and argument checks shared by the implementations: output sizes, and
the ValueErrors that name the kernel, what it expected and what it got.

kernels.cpu checks every array argument with ``check`` (shape patterns, one float dtype
per call); kernels.cuda checks device arrays with its own ``need`` (they must also be
C-contiguous) and shares the rest: ``shape4``, ``geometry``, ``conv_out``, ``pool_out``,
``check_pieces``, ``check_labels``. minifit's ops check what users pass (with the
messages users see) before any kernel runs; these checks guard the kernels' own API.
"""
from __future__ import annotations

import math

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


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


def check_labels(fname, labels, n, c):
    """Class labels for logits (n, c), as a host int64 array: shape (n,), integers in [0, c).
    ``labels``: anything np.asarray takes (a device array is copied to the host first)."""
    if not isinstance(labels, np.ndarray) and callable(getattr(labels, "copy_to_host", None)):
        labels = labels.copy_to_host()
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{fname}: labels must have shape ({n},) for logits ({n}, {c}), got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{fname}: labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"{fname}: labels must lie in [0, {c}), got range [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64, copy=False)


# ------------------------------------------------------------------ arrays against shape patterns (CPU)
class Spec:
    """One argument to check: name, value, shape pattern, required dtype kind.

    pattern: tuple of dimension names (str: bound on first sight, must agree after),
    ints (exact) or None (any); a trailing "..." allows any further dims. kind "float"
    (float32/float64, one dtype per call) or "int" (any integer dtype)."""
    __slots__ = ("name", "value", "pattern", "kind")

    def __init__(self, name, value, pattern, kind="float"):
        self.name, self.value, self.pattern, self.kind = name, value, pattern, kind


def _fmt_pattern(pattern, bound):
    out = []
    for p in pattern:
        if p == "...":
            out.append("...")
        elif isinstance(p, str):
            out.append(f"{p}={bound[p][0]}" if p in bound else p)
        else:
            out.append(str(p))
    return "(" + ", ".join(out) + (",)" if len(out) == 1 else ")")


def check(fname, specs, bound=None):
    """Validate arrays against shape patterns and dtypes. Returns (bound dims dict
    name -> int, float dtype). Raises ValueError naming ``fname``, the expected and the
    given shapes. ``bound``: pre-bound dims {name: (value, source description)}."""
    bound = dict(bound or {})
    fdtype, fsrc = None, None
    for s in specs:
        a = s.value
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{fname}: {s.name} must be a NumPy array, got {type(a).__name__}")
        if s.kind == "float":
            if a.dtype not in FLOATS:
                raise ValueError(f"{fname}: {s.name} must be float32 or float64, got {a.dtype}")
            if fdtype is None:
                fdtype, fsrc = a.dtype, s.name
            elif a.dtype != fdtype:
                raise ValueError(f"{fname}: mixed dtypes: {fsrc} is {fdtype} but {s.name} is "
                                 f"{a.dtype} (all float arrays must share one dtype)")
        elif s.kind == "int":
            if a.dtype.kind not in "iu":
                raise ValueError(f"{fname}: {s.name} must be an integer array, got {a.dtype}")
        pat = s.pattern
        varargs = len(pat) > 0 and pat[-1] == "..."
        fixed = pat[:-1] if varargs else pat
        if (a.ndim < len(fixed)) if varargs else (a.ndim != len(fixed)):
            raise ValueError(f"{fname}: {s.name} must have shape {_fmt_pattern(pat, bound)}, "
                             f"got {a.shape} ({a.ndim}-d)")
        for d, p in enumerate(fixed):
            size = a.shape[d]
            if p is None:
                continue
            if isinstance(p, str):
                if p in bound:
                    if bound[p][0] != size:
                        raise ValueError(
                            f"{fname}: {s.name} must have shape {_fmt_pattern(pat, bound)} "
                            f"({p}={bound[p][0]} from {bound[p][1]}), got {a.shape}")
                else:
                    bound[p] = (size, f"{s.name} {a.shape}")
            elif p != size:
                raise ValueError(f"{fname}: {s.name} must have shape {_fmt_pattern(pat, bound)}, "
                                 f"got {a.shape}")
    return {k: v[0] for k, v in bound.items()}, fdtype


# ------------------------------------------------------------------ shapes and geometry (CPU and CUDA)
def shape4(fname, name, shape):
    """A 4-tuple of positive ints (N, C, H, W) from ``shape``."""
    try:
        t = tuple(int(v) for v in shape)
    except TypeError:
        raise ValueError(f"{fname}: {name} must be a shape (N, C, H, W), got {shape!r}") from None
    if len(t) != 4 or min(t) <= 0:
        raise ValueError(f"{fname}: {name} must be a shape (N, C, H, W) of positive ints, got {shape!r}")
    return t


def geometry(fname, kernel, stride, pad=(0, 0)):
    """(kh, kw, sh, sw, ph, pw) from ints or pairs: kernel >= 1, stride >= 1, pad >= 0."""
    try:
        kh, kw = pair(kernel, "kernel")
        sh, sw = pair(stride, "stride")
        ph, pw = pair(pad, "pad")
    except (TypeError, ValueError) as e:
        raise ValueError(f"{fname}: {e}") from None
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"{fname}: need kernel >= 1, stride >= 1, pad >= 0; got kernel "
                         f"{(kh, kw)}, stride {(sh, sw)}, pad {(ph, pw)}")
    return kh, kw, sh, sw, ph, pw


def conv_out(fname, h, w, kh, kw, sh, sw, ph, pw):
    """(OH, OW) of a convolution, at least 1 each."""
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"{fname}: kernel {(kh, kw)} with pad {(ph, pw)} does not fit the "
                         f"input plane {(h, w)}")
    return oh, ow


def pool_out(fname, h, w, kh, kw, sh, sw, ceil_mode):
    """(OH, OW) of a max pool (pool_output_size), the error naming ``fname``."""
    try:
        return pool_output_size(h, kh, sh, ceil_mode), pool_output_size(w, kw, sw, ceil_mode)
    except ValueError as e:
        raise ValueError(f"{fname}: {e} (input plane {(h, w)}, kernel {(kh, kw)})") from None


def check_pieces(fname, pieces, channels):
    """Maxout pieces: 1..255 (the arg is uint8) and a divisor of ``channels``."""
    pieces = int(pieces)
    if pieces < 1 or pieces > 255:
        raise ValueError(f"{fname}: pieces must be in 1..255, got {pieces}")
    if channels % pieces:
        raise ValueError(f"{fname}: channels {channels} not divisible by pieces {pieces}")
    return pieces



def float_dtype(fname, dtype):
    """np.dtype(dtype), which must be float32 or float64."""
    if np.dtype(dtype) not in FLOATS:
        raise ValueError(f"{fname}: dtype must be float32 or float64, got {np.dtype(dtype)}")
    return np.dtype(dtype)
