"""kernels/cpu/conv_fft.py (convolution by FFT: fft_conv_rows, the forward, and
fft_conv_backward, both gradients) against kernels.reference, and conv2d_backward's dispatch
to it.

Error bound (float32 and float64 alike, eps of the dtype): y, dx and dw satisfy
    max|a - a_ref| <= BOUND * eps * (1 + log2(fh*fw)) * max|a_ref|,
fh x fw the transform grid (conv_fft._grid), a_ref the reference in float64; db (a plain
sum of dy over n*OH*OW terms, or n for untied biases) satisfies the summation bound
    max|db - db_ref| <= BOUND * eps * (1 + log2(terms)) * max_o sum|dy|.
BOUND = 2. Measured (2026-12-03, benchmarks/ab_fft.py --bound 150) max|err| / (eps (1 +
log2(fh fw)) max|ref|) over 150 random cases (kernels 1..8, pads 0..4, sizes 1..13, 1..6
maps and samples): float32 y
0.52, dx 0.36, dw 0.34; float64 y 0.59, dx 0.43, dw 0.56; on the four large-kernel layers
of mnist-teacher and cifar-teacher (batch 128, float32) 0.17-0.24. A flipped, shifted or
transposed kernel gradient, or a conjugation error (which flips an output), misses the
bound by orders of magnitude (test_bound_catches_wrong_results).
"""
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernels import cpu, reference as ref
from kernels.cpu import conv, conv_fft, tuning

BOUND = 2.0


def within(got, want, grid, dt):
    """True when got is within the stated bound of want (module docstring)."""
    fh, fw = grid
    tol = BOUND * np.finfo(dt).eps * (1 + np.log2(fh * fw)) * np.abs(want).max()
    return got.shape == want.shape and float(np.abs(got - want).max()) <= tol


def assert_within(got, want, grid, dt, what):
    fh, fw = grid
    err = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-300)
    assert within(got, want, grid, dt), (f"{what}: max err {err:.3g} of max|ref| > "
                                         f"{BOUND} eps (1 + log2({fh}*{fw}))")


@contextmanager
def fft_chunk(m):
    """tuning.FFT_CHUNK = m inside (hypothesis' examples share one function's fixtures)."""
    old = tuning.FFT_CHUNK
    tuning.FFT_CHUNK = m
    try:
        yield
    finally:
        tuning.FFT_CHUNK = old


def layout(a, cnhw):
    """a in the CNHW memory layout (a.swapaxes(0, 1) C-contiguous) or as it is (NCHW)."""
    return np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1) if cnhw else a


@st.composite
def case(draw):
    kh, kw = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    ph, pw = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    h = draw(st.integers(max(1, kh - 2 * ph), 13))
    w = draw(st.integers(max(1, kw - 2 * pw), 13))
    return dict(n=draw(st.integers(1, 7)), c=draw(st.integers(1, 6)), o=draw(st.integers(1, 6)),
                h=h, w=w, kh=kh, kw=kw, ph=ph, pw=pw,
                x_cnhw=draw(st.booleans()), dy_cnhw=draw(st.booleans()), need_dx=draw(st.booleans()),
                untied=draw(st.booleans()), chunk=draw(st.sampled_from([1, 2, 128])),
                seed=draw(st.integers(0, 2**16)))


def draw_inputs(c, dt):
    rng = np.random.default_rng(c["seed"])
    oh, ow = c["h"] + 2 * c["ph"] - c["kh"] + 1, c["w"] + 2 * c["pw"] - c["kw"] + 1
    x = rng.standard_normal((c["n"], c["c"], c["h"], c["w"])).astype(dt)
    w = rng.standard_normal((c["o"], c["c"], c["kh"], c["kw"])).astype(dt)
    dy = rng.standard_normal((c["n"], c["o"], oh, ow)).astype(dt)
    return x, w, dy, oh, ow


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@settings(max_examples=60, deadline=None)
@given(c=case())
def test_backward_equals_reference(dt, c):
    x, w, dy, _, _ = draw_inputs(c, dt)
    grid = conv_fft._grid(c["h"], c["w"], c["ph"], c["pw"])[:2]
    want = ref.conv2d_backward(dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), 1,
                               (c["ph"], c["pw"]), c["need_dx"], c["untied"])
    with fft_chunk(c["chunk"]):   # 1, 2: several chunks; 128: one
        dx, dw, db = conv_fft.fft_conv_backward(layout(dy, c["dy_cnhw"]), layout(x, c["x_cnhw"]), w,
                                                (c["ph"], c["pw"]), c["need_dx"], c["untied"])
    assert dw.dtype == dt and db.dtype == dt and dw.flags.c_contiguous
    assert_within(dw, want[1], grid, dt, "dw")
    terms = dy.shape[0] * (1 if c["untied"] else dy.shape[2] * dy.shape[3])
    scale = np.abs(dy.astype(np.float64)).sum(axis=(0,) if c["untied"] else (0, 2, 3)).max()
    assert float(np.abs(db - want[2]).max()) <= BOUND * np.finfo(dt).eps * (1 + np.log2(terms)) * scale
    if c["need_dx"]:
        assert dx.dtype == dt and dx.swapaxes(0, 1).flags.c_contiguous   # CNHW, as conv2d_backward's
        assert_within(dx, want[0], grid, dt, "dx")
    else:
        assert dx is None


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@settings(max_examples=40, deadline=None)
@given(c=case(), bias=st.booleans())
def test_forward_equals_reference(dt, c, bias):
    x, w, _, oh, ow = draw_inputs(c, dt)
    b = np.random.default_rng(c["seed"] + 1).standard_normal(c["o"]).astype(dt) if bias else None
    grid = conv_fft._grid(c["h"], c["w"], c["ph"], c["pw"])[:2]
    y = np.empty((c["n"], oh, ow, c["o"]), dtype=dt)

    def put(z, n0):
        y[n0:n0 + z.shape[0] // (oh * ow)] = z.reshape(-1, oh, ow, c["o"])
    with fft_chunk(c["chunk"]):
        conv_fft.fft_conv_rows(layout(x, c["x_cnhw"]), w, b, (c["ph"], c["pw"]), oh, ow, put)
    want = ref.conv2d_forward(x.astype(np.float64), w.astype(np.float64),
                              None if b is None else b.astype(np.float64), 1, (c["ph"], c["pw"]))
    assert_within(y.transpose(0, 3, 1, 2), want, grid, dt, "y")


def test_bound_catches_wrong_results():
    """The bound is tight enough to fail a flipped, shifted or transposed kernel gradient,
    a flipped dx (what a missing or extra conjugation gives) and a shifted dx."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 5, 5, 5)).astype(np.float32)
    dy = rng.standard_normal((4, 6, 9, 9)).astype(np.float32)
    grid = conv_fft._grid(9, 9, 2, 2)[:2]
    dx, dw, _ = conv_fft.fft_conv_backward(dy, x, w, (2, 2), True)
    _, dwr, _ = want = ref.conv2d_backward(dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), 1, 2)
    dxr = want[0]
    assert within(dw, dwr, grid, np.float32) and within(dx, dxr, grid, np.float32)
    for bad in (dwr[:, :, ::-1, ::-1], dwr[:, :, ::-1], np.roll(dwr, 1, axis=3), dwr.transpose(0, 1, 3, 2)):
        assert not within(dw, bad, grid, np.float32)
    for bad in (dxr[:, :, ::-1, ::-1], np.roll(dxr, 1, axis=2)):
        assert not within(dx, bad, grid, np.float32)


def test_backward_deterministic(monkeypatch):
    """Two equal calls give equal bits (dw's spectra add up over the chunks in a fixed
    order, each frequency by one thread)."""
    monkeypatch.setattr(tuning, "FFT_CHUNK", 3)
    rng = np.random.default_rng(5)
    x = layout(rng.standard_normal((11, 8, 10, 10)).astype(np.float32), True)
    w = rng.standard_normal((12, 8, 5, 5)).astype(np.float32)
    dy = layout(rng.standard_normal((11, 12, 10, 10)).astype(np.float32), True)
    a = conv_fft.fft_conv_backward(dy, x, w, (2, 2), True)
    for _ in range(3):
        b = conv_fft.fft_conv_backward(dy, x, w, (2, 2), True)
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("untied", [False, True])
def test_conv2d_backward_dispatch(need_dx, untied, monkeypatch):
    """conv2d_backward takes the FFT path exactly when use_fft_backward says so (thresholds
    forced each way), and both paths agree within the bound."""
    rng = np.random.default_rng(7)
    x = layout(rng.standard_normal((6, 9, 7, 7)).astype(np.float32), True)
    w = rng.standard_normal((10, 9, 5, 5)).astype(np.float32)
    dy = layout(rng.standard_normal((6, 10, 7, 7)).astype(np.float32), True)
    grid = conv_fft._grid(7, 7, 2, 2)[:2]
    calls = []
    real = conv.fft_conv_backward
    monkeypatch.setattr(conv, "fft_conv_backward", lambda *a: calls.append(1) or real(*a))
    out = {}
    for path, taps in (("fft", 1), ("im2col", 10**9)):
        monkeypatch.setattr(tuning, "FFT_BWD_MIN_TAPS", taps)
        for name in ("FFT_BWD_MIN_C", "FFT_BWD_MIN_P"):
            monkeypatch.setattr(tuning, name, 1)
        calls.clear()
        out[path] = cpu.conv2d_backward(dy, x, w, 1, 2, need_dx, untied)
        assert len(calls) == (path == "fft")
    for a, b in zip(out["fft"], out["im2col"]):
        if need_dx or a is not None:
            assert a.shape == b.shape
            assert_within(a, b, grid, np.float32, "fft vs im2col")
    assert (out["fft"][0] is None) == (not need_dx)


def test_rule_on_the_teachers_layers():
    """The measured rule (tuning.FFT_BWD_*): the large-kernel layers over many maps by FFT,
    the first layers (1 or 3 input maps) and stride > 1 by im2col."""
    use = conv_fft.use_fft_backward
    assert use(48, 96, 8, 8, (1, 1), 9, 9, True)        # mnist-teacher h1
    assert use(48, 96, 5, 5, (1, 1), 6, 6, True)        # mnist-teacher h2
    assert use(96, 384, 8, 8, (1, 1), 15, 15, True)     # cifar-teacher h1
    assert use(192, 384, 5, 5, (1, 1), 9, 9, True)      # cifar-teacher h2
    assert not use(1, 96, 8, 8, (1, 1), 21, 21, False)  # mnist-teacher h0
    assert not use(3, 192, 8, 8, (1, 1), 33, 33, False)  # cifar-teacher h0
    assert not use(96, 384, 8, 8, (2, 2), 8, 8, True)
    assert not use(64, 64, 3, 3, (1, 1), 32, 32, True)   # 3x3: im2col (or Winograd)
