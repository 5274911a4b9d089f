"""Elementwise ops on the CPU: ReLU forward / backward (Numba, in the input's layout,
NHWC included), the dropout mask, and the engine's NumPy arithmetic (kernels.ENGINE_API:
broadcasting, casts; large same-shape operands split over the pool, mixed NCHW / CNHW
operands by planes)."""
from __future__ import annotations

import numpy as np

from .. import reference
from ..shapes import Spec, check, float_dtype
from . import runtime, tuning
from .layouts import canon, flat3, from_rows, is_nhwc, nc, nhwc_rows, pl, uncanon
from .runtime import kern, parallel, split


@kern
def _relu_k(x, y, i0, i1):
    for i in range(i0, i1):
        v = x[i]
        y[i] = v if v > 0 else 0


@kern
def _relu_bwd_k(dy, y, dx, i0, i1):
    for i in range(i0, i1):
        dx[i] = dy[i] if y[i] > 0 else 0


def relu_forward(x):
    fn = "relu_forward"
    check(fn, [Spec("x", x, ("...",))])
    if is_nhwc(x):
        xb, back = nhwc_rows(x), lambda y: from_rows(y, x.shape[0], x.shape[2], x.shape[3])
    else:
        xb, cf = canon(x) if x.ndim >= 2 else (np.ascontiguousarray(x), False)
        back = lambda y: uncanon(y, cf)  # noqa: E731
    y = np.empty(xb.shape, dtype=x.dtype)
    xf, yf = xb.reshape(-1), y.reshape(-1)
    split(lambda lo, hi: _relu_k(xf, yf, lo, hi), xf.size, xf.size)
    return back(y)


@kern
def _planes_k(op, ab, acf, bb, bcf, out, t0, t1):
    """out = a + b (op 0), a - b (1), a * b (2), or a where b > 0 (3: relu_backward's dy
    where y > 0), plane by plane, for a and b (N, C, M) in different canonical layouts
    (planes t0..t1-1 in a's order; out in a's layout): each plane is contiguous in both, so
    no transposing copy (e.g. the dropout mask, drawn NCHW, times a CNHW activation)."""
    N, C = nc(ab, acf)
    for t in range(t0, t1):
        n, c = (t % N, t // N) if acf else (t // C, t % C)
        x = pl(ab, acf, n, c)
        y = pl(bb, bcf, n, c)
        o = pl(out, acf, n, c)
        if op == 0:
            for m in range(x.shape[0]):
                o[m] = x[m] + y[m]
        elif op == 1:
            for m in range(x.shape[0]):
                o[m] = x[m] - y[m]
        elif op == 2:
            for m in range(x.shape[0]):
                o[m] = x[m] * y[m]
        else:
            for m in range(x.shape[0]):
                o[m] = x[m] if y[m] > 0 else 0


def relu_backward(dy, y):
    fn = "relu_backward"
    check(fn, [Spec("dy", dy, ("...",)), Spec("y", y, ("...",))])
    if dy.shape != y.shape:
        raise ValueError(f"{fn}: dy and y must have one shape, got dy {dy.shape}, y {y.shape}")
    if dy.ndim == 4:
        db, dcf = canon(flat3(dy))
        yb, ycf = canon(flat3(y))
        if dcf != ycf:  # (e.g. dy from a NCHW product, y CNHW): no transposing copy of y
            dx = np.empty(db.shape, dtype=dy.dtype)
            planes = db.shape[0] * db.shape[1]
            split(lambda lo, hi: _planes_k(3, db, dcf, yb, ycf, dx, lo, hi), planes, dy.size)
            return uncanon(dx, dcf).reshape(dy.shape)
    db, cf = canon(dy) if dy.ndim >= 2 else (np.ascontiguousarray(dy), False)
    yb = uncanon(y, cf) if dy.ndim >= 2 else y
    yb = np.ascontiguousarray(yb)
    dx = np.empty(db.shape, dtype=dy.dtype)
    df, yf, xf = db.reshape(-1), yb.reshape(-1), dx.reshape(-1)
    split(lambda lo, hi: _relu_bwd_k(df, yf, xf, lo, hi), df.size, df.size)
    return uncanon(dx, cf)


@kern
def _keep_k(u, p, scale, out, i0, i1):
    """out = scale where u >= p, else 0 (the reference's (u >= p).astype * scale, fused)."""
    for i in range(i0, i1):
        out[i] = scale if u[i] >= p else 0


def dropout_mask(shape, p, seed=None, dtype=np.float32):
    """The reference's mask: the same float32 draws from the same generator, so equal masks
    for equal seeds, and the generator left where the reference leaves it. Large masks from
    a PCG64 generator (minifit.random's, or one made from an int seed) are drawn in up to NT
    contiguous parts at once: the first from the generator itself, part i from a copy
    advanced past the draws of the parts before it (each 64-bit PCG64 output gives two
    float32 draws, so parts start at even offsets, one later if the generator holds a half
    output), and the generator then takes the last part's final state. (Drawing is
    this mask's whole cost: 8.1 ms for a 128x32x32x32 mask on one core, 19 ms of each
    wrn-10-2 training step; measured beside tuning.DROPOUT_SPLIT.)"""
    fn = "dropout_mask"
    dtype = float_dtype(fn, dtype)
    p = float(p)
    n = int(np.prod(shape, dtype=np.int64))
    rng = seed if isinstance(seed, np.random.Generator) else None
    if rng is None and (seed is None or isinstance(seed, (int, np.integer))):
        rng = np.random.default_rng(seed)
    parts = min(runtime.NT, n // tuning.DROPOUT_SPLIT)
    if rng is None or not 0.0 < p < 1.0 or parts < 2 or type(rng.bit_generator) is not np.random.PCG64:
        return reference.dropout_mask(shape, p, rng if rng is not None else seed, dtype)
    u = np.empty(n, dtype=np.float32)
    # a generator may hold the upper half of its last output (after an odd number of float32
    # draws): the first draw takes it, and the pairs start one draw later
    st = rng.bit_generator.state
    h = st["has_uint32"]
    bounds = [0] + [((n * i // parts) & ~1) + h for i in range(1, parts)] + [n]
    gens = [rng]
    for i in range(1, parts):
        bg = np.random.PCG64()
        bg.state = dict(st, has_uint32=0, uinteger=0)
        bg.advance((bounds[i] - h) // 2)
        gens.append(np.random.Generator(bg))
    out = u if dtype == np.float32 else np.empty(n, dtype=dtype)
    p32, scale = np.float32(p), dtype.type(1.0 / (1.0 - p))

    def task(i, _w):
        lo, hi = bounds[i], bounds[i + 1]
        gens[i].random(dtype=np.float32, out=u[lo:hi])   # (numpy draws without the GIL)
        _keep_k(u, p32, scale, out, lo, hi)
    parallel(task, parts)
    rng.bit_generator.state = gens[-1].bit_generator.state
    return out.reshape(shape)


# ------------------------------------------------------------------ engine ops (NumPy)
def _layout(a):
    """False: C-contiguous; True: a CNHW view (a.swapaxes(0, 1) C-contiguous); else None."""
    if a.flags.c_contiguous:
        return False
    if a.ndim >= 2 and a.swapaxes(0, 1).flags.c_contiguous:
        return True
    return None


def _binary(ufunc, a, b, op=None):
    """ufunc(a, b) with NumPy's broadcasting and casts. Two same-shape float operands of one
    dtype and at least tuning.EW_SPLIT elements go in parts over the pool (the same values):
    in one buffer layout, contiguous halves by the ufunc (the result in their layout); 4-D
    in the two canonical layouts, by planes with _planes_k (``op``; the result in a's)."""
    if (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.dtype == b.dtype and a.dtype.kind == "f" and a.size >= tuning.EW_SPLIT):
        la, lb = _layout(a), _layout(b)
        if la is not None and la == lb:
            ab, bb = (a.swapaxes(0, 1), b.swapaxes(0, 1)) if la else (a, b)
            out = np.empty(ab.shape, dtype=a.dtype)
            af, bf, of = ab.reshape(-1), bb.reshape(-1), out.reshape(-1)
            split(lambda lo, hi: ufunc(af[lo:hi], bf[lo:hi], out=of[lo:hi]), af.size, af.size)
            return uncanon(out, la)
        if la is not None and lb is not None and a.ndim == 4 and op is not None:
            ab, bb = canon(flat3(a))[0], canon(flat3(b))[0]
            out = np.empty(ab.shape, dtype=a.dtype)
            planes = a.shape[0] * a.shape[1]
            split(lambda lo, hi: _planes_k(op, ab, la, bb, lb, out, lo, hi), planes, a.size)
            return uncanon(out, la).reshape(a.shape)
    return ufunc(a, b)


def add(a, b):
    return _binary(np.add, a, b, 0)


def sub(a, b):
    return _binary(np.subtract, a, b, 1)


def mul(a, b):
    return _binary(np.multiply, a, b, 2)


def div(a, b):
    return _binary(np.true_divide, a, b)


def neg(x):
    return -x


def absolute(x):
    return np.abs(x)


def sign(x):
    return np.sign(x)


def exp(x):
    return np.exp(x)


def log(x):
    return np.log(x)


def astype(x, dtype):
    return x.astype(dtype, copy=False)


def zeros_like(x):
    return np.zeros_like(x)


def broadcast_to(x, shape, dtype=None):
    """A new C-contiguous array: ``x`` broadcast to ``shape`` (cast to ``dtype``)."""
    return np.broadcast_to(x, shape).astype(x.dtype if dtype is None else dtype, copy=True)
