"""kernels/cpu/conv_small.py (small padded maps by the transposed formulation) against
kernels.reference, and its dispatch rule (use_small).

Error bound (float32, stated per element): a float32 sum of n terms differs from the
exact sum by at most n * 2^-24 * (the sum of the terms' magnitudes) (Higham's gamma_n,
whatever the order or blocking of the sum), so against the float64 reference
    |got - exact| <= (n + 2) * 2^-24 * S,
S the same sum over |terms| (reference kernels on |x|, |w|, |dy|, |b|), n the terms per
result: forward C*kh*kw + 1, dx O*kh*kw, dw N*OH*OW, db N*OH*OW (tied) or N (untied).
Measured on mnist-fitnet h4 / mnist-teacher h2 shapes: max errors 1-8e-7 of max |result|.
A shifted or flipped kernel breaks the bound by orders of magnitude
(test_bound_catches_a_flipped_kernel).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernels import cpu, reference as ref
from kernels.cpu import conv, conv_small, runtime, tuning

U32 = 2.0 ** -24


def _force(monkeypatch, on):
    g = 0.0 if on else 1e9
    monkeypatch.setattr(tuning, "SMALL_FWD_MIN_GROWTH", g)
    monkeypatch.setattr(tuning, "SMALL_BWD_MIN_GROWTH", g)


def _layout(a, cnhw):
    return np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1) if cnhw else a


def _fwd_bound(x, w, b, pad):
    """(exact forward in float64, its per-element bound)."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    exact = ref.conv2d_forward(np.ascontiguousarray(x64), w64, b64, 1, pad)
    mag = ref.conv2d_forward(np.abs(np.ascontiguousarray(x64)), np.abs(w64),
                             None if b is None else np.abs(b64), 1, pad)
    n = w.shape[1] * w.shape[2] * w.shape[3] + 1
    return exact, (n + 2) * U32 * mag


def _bwd_bound(dy, x, w, pad, untied):
    x64, w64, dy64 = (np.ascontiguousarray(a).astype(np.float64) for a in (x, w, dy))
    exact = ref.conv2d_backward(dy64, x64, w64, 1, pad, True, untied)
    mag = ref.conv2d_backward(np.abs(dy64), np.abs(x64), np.abs(w64), 1, pad, True, untied)
    n_o, _, kh, kw = w.shape
    nterms = (n_o * kh * kw, dy.shape[0] * dy.shape[2] * dy.shape[3],
              dy.shape[0] if untied else dy.shape[0] * dy.shape[2] * dy.shape[3])
    return exact, tuple((t + 2) * U32 * m for t, m in zip(nterms, mag))


def _within(got, exact, bound):
    assert got.shape == exact.shape
    err = np.abs(got.astype(np.float64) - exact)
    assert np.all(err <= bound), f"max excess {np.max(err - bound)}, max err {err.max()}"


@st.composite
def case(draw):
    k = draw(st.integers(1, 5))
    pad = draw(st.integers(0, 3))
    h = draw(st.integers(max(1, k - 2 * pad), 9))
    wd = draw(st.integers(max(1, k - 2 * pad), 9))
    return dict(n=draw(st.integers(1, 37)), c=draw(st.integers(1, 5)), o=draw(st.integers(1, 7)),
                h=h, w=wd, k=k, pad=pad, bias=draw(st.sampled_from([None, "tied", "untied"])),
                cnhw=draw(st.booleans()), need_dx=draw(st.booleans()), threads=draw(st.sampled_from([1, 2])),
                chunk=draw(st.sampled_from([None, 50, 2000])), seed=draw(st.integers(0, 2**16)))


def _draw(c, dt=np.float32):
    rng = np.random.default_rng(c["seed"])
    x = _layout(rng.standard_normal((c["n"], c["c"], c["h"], c["w"])).astype(dt), c["cnhw"])
    w = rng.standard_normal((c["o"], c["c"], c["k"], c["k"])).astype(dt)
    oh, ow = c["h"] + 2 * c["pad"] - c["k"] + 1, c["w"] + 2 * c["pad"] - c["k"] + 1
    bshape = (c["o"],) + ((oh, ow) if c["bias"] == "untied" else ())
    b = None if c["bias"] is None else rng.standard_normal(bshape).astype(dt)
    dy = _layout(rng.standard_normal((c["n"], c["o"], oh, ow)).astype(dt), c["cnhw"])
    return x, w, b, dy


@settings(max_examples=60, deadline=None)
@given(c=case())
def test_small_path_vs_reference(c):
    """Forced on (every pad 0..3, odd sizes, both layouts, every bias, dx or not, 1 or 2
    threads, several chunk sizes): forward and backward within the float32 bound."""
    x, w, b, dy = _draw(c)
    mp = pytest.MonkeyPatch()
    try:
        _force(mp, True)
        mp.setattr(runtime, "GEMM_THREADS", c["threads"])
        mp.setattr(runtime, "NT", c["threads"])
        if c["chunk"]:
            mp.setattr(tuning, "CHUNK_ELEMS", c["chunk"])
            mp.setattr(tuning, "SMALL_MIN_M", 3)
        y = cpu.conv2d_forward(x, w, b, 1, c["pad"])
        dx, dw, db = cpu.conv2d_backward(dy, x, w, 1, c["pad"], c["need_dx"], c["bias"] == "untied")
    finally:
        mp.undo()
    assert y.dtype == np.float32 and dw.dtype == np.float32 and db.dtype == np.float32
    _within(y, *_fwd_bound(x, w, b, c["pad"]))
    (edx, edw, edb), (bdx, bdw, bdb) = _bwd_bound(dy, x, w, c["pad"], c["bias"] == "untied")
    if c["need_dx"]:
        _within(dx, edx, bdx)
    else:
        assert dx is None
    _within(dw, edw, bdw)
    _within(db, edb, bdb)


def test_bound_catches_a_flipped_kernel():
    """The bound is not vacuous: the flipped kernel's forward (what a scatter with the
    taps' offsets reversed computes), or one shifted by a position, breaks it."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 4, 4)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    exact, bound = _fwd_bound(x, w, None, 3)
    flipped = ref.conv2d_forward(x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), None, 1, 3)
    assert np.any(np.abs(flipped - exact) > bound)
    shifted = np.roll(ref.conv2d_forward(x, w, None, 1, 3), 1, axis=3)
    assert np.any(np.abs(shifted - exact) > bound)


@pytest.mark.parametrize("shape", [(128, 16, 48, 4, 3, 3), (128, 48, 96, 4, 5, 3), (64, 16, 32, 10, 5, 3)])
def test_net_shapes(monkeypatch, shape):
    """mnist-fitnet h4, mnist-teacher h2, mnist-fitnet h2 (2 threads, CNHW as in the
    network): the path on, within the bound, and the measured error level."""
    n, c, o, h, k, pad = shape
    monkeypatch.setattr(runtime, "GEMM_THREADS", 2)
    monkeypatch.setattr(runtime, "NT", 2)
    _force(monkeypatch, True)
    x, w, b, dy = _draw(dict(n=n, c=c, o=o, h=h, w=h, k=k, pad=pad, bias="tied", cnhw=True, seed=1))
    y = cpu.conv2d_forward(x, w, b, 1, pad)
    exact, bound = _fwd_bound(x, w, b, pad)
    _within(y, exact, bound)
    assert np.abs(y - exact).max() <= 2e-6 * np.abs(exact).max()
    dx, dw, db = cpu.conv2d_backward(dy, x, w, 1, pad, True)
    ex, bd = _bwd_bound(dy, x, w, pad, False)
    for g, e, bb in zip((dx, dw, db), ex, bd):
        _within(g, e, bb)
        assert np.abs(g - e).max() <= 2e-6 * np.abs(e).max()


def test_dw_deterministic(monkeypatch):
    """dw is summed in a fixed order: two equal runs (2 threads, several chunks each) give
    bitwise-equal results."""
    monkeypatch.setattr(runtime, "GEMM_THREADS", 2)
    monkeypatch.setattr(runtime, "NT", 2)
    monkeypatch.setattr(tuning, "CHUNK_ELEMS", 20000)
    monkeypatch.setattr(tuning, "SMALL_MIN_M", 4)
    _force(monkeypatch, True)
    x, w, b, dy = _draw(dict(n=77, c=6, o=12, h=4, w=5, k=3, pad=3, bias="tied", cnhw=True, seed=5))
    runs = [cpu.conv2d_backward(dy, x, w, 1, 3, True) for _ in range(3)]
    for r in runs[1:]:
        for a, e in zip(r, runs[0]):
            np.testing.assert_array_equal(a, e)


def test_rule():
    """use_small on the networks' layers (thresholds as committed in tuning.py): the
    forward on mnist-fitnet h4 and mnist-teacher h2 only, the backward also on
    mnist-fitnet h2; never for stride 2, unpadded or same-size (pad 1, 3x3) convs."""
    us = conv_small.use_small
    # (H, W, kh, kw, stride, pad): fwd, bwd
    cases = {(4, 4, 3, 3, (1, 1), (3, 3)): (True, True),      # mnist-fitnet h4: 8x8 from 4x4
             (4, 4, 5, 5, (1, 1), (3, 3)): (True, True),      # mnist-teacher h2: 6x6 from 4x4
             (10, 10, 5, 5, (1, 1), (3, 3)): (False, True),   # mnist-fitnet h2: 12x12 from 10x10
             (12, 12, 3, 3, (1, 1), (0, 0)): (False, False),  # mnist-fitnet h3
             (8, 8, 3, 3, (1, 1), (0, 0)): (False, False),    # mnist-fitnet h5
             (10, 10, 8, 8, (1, 1), (3, 3)): (False, False),  # mnist-teacher h1
             (8, 8, 3, 3, (1, 1), (1, 1)): (False, False),    # cifar 'same' 3x3
             (4, 4, 3, 3, (2, 2), (3, 3)): (False, False)}    # stride 2
    for (h, w, kh, kw, s, p), (f, b) in cases.items():
        assert us(h, w, kh, kw, s, p) == f, (h, w, kh, kw, s, p)
        assert us(h, w, kh, kw, s, p, backward=True) == b, (h, w, kh, kw, s, p)


def test_dispatch_calls_the_path(monkeypatch):
    """conv2d_forward / conv2d_maxout_forward / conv2d_backward call conv_small where the
    rule says, and not elsewhere."""
    calls = []
    real_f, real_b = conv.small_chunks, conv.small_backward
    monkeypatch.setattr(conv, "small_chunks", lambda *a: calls.append("f") or real_f(*a))
    monkeypatch.setattr(conv, "small_backward", lambda *a: calls.append("b") or real_b(*a))
    x, w, b, dy = _draw(dict(n=5, c=3, o=4, h=4, w=4, k=3, pad=3, bias="tied", cnhw=False, seed=2))
    cpu.conv2d_forward(x, w, b, 1, 3)
    cpu.conv2d_maxout_forward(x, w, b, 1, 3, 2)
    cpu.conv2d_maxout_forward(x, w, b, 1, 3, 2, channels_last=True)
    cpu.conv2d_backward(dy, x, w, 1, 3)
    assert calls == ["f", "f", "f", "b"]
    calls.clear()
    cpu.conv2d_forward(x, w, b, 1, 1)           # same size: old path
    cpu.conv2d_backward(cpu.conv2d_forward(x, w, b, 1, 1), x, w, 1, 1)
    cpu.conv2d_forward(x, w, b, 2, 3)           # stride 2
    assert calls == []


@pytest.mark.parametrize("pool", [None, (2, 2), (4, 2)])
@pytest.mark.parametrize("bias", [None, "tied", "untied"])
def test_fused_paths_agree(monkeypatch, pool, bias):
    """conv2d_maxout_forward and conv2d_backward with the path forced on and off agree:
    float64 values to 1e-12 and the same args; float32 values within the bound."""
    ps = None if pool is None else (pool[1], pool[1])
    for dt in (np.float64, np.float32):
        x, w, b, dy = _draw(dict(n=19, c=4, o=6, h=5, w=5, k=3, pad=3, bias=bias, cnhw=True, seed=7), dt)
        out = {}
        for on in (True, False):
            _force(monkeypatch, on)
            y, a = cpu.conv2d_maxout_forward(x, w, b, 1, 3, 3, pool, ps)
            g = cpu.conv2d_backward(dy, x, w, 1, 3, True, bias == "untied")
            out[on] = (y, a, g)
        (y1, a1, g1), (y0, a0, g0) = out[True], out[False]
        if dt == np.float64:
            np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(a1, a0)
            for p, q in zip(g1, g0):
                np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-12)
        else:
            # max over pieces (and pool) is 1-Lipschitz: the maxout of values within the
            # forward's bound is within the largest bound of its inputs
            exact, bound = _fwd_bound(x, w, b, 3)
            assert np.all(np.abs(y1 - y0) <= 2 * bound.max())
            ex, bd = _bwd_bound(dy, x, w, 3, bias == "untied")
            for p, q, e, bb in zip(g1, g0, ex, bd):
                _within(p, e, bb)
                _within(q, e, bb)
