"""kernels.cpu.conv2d_maxout_forward (conv + maxout (+ max pool) fused per batch chunk)
equals the composition it replaces, and F.maxout_conv2d equals the unfused ops."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import kernels
from kernels import cpu, reference as ref

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


@st.composite
def case(draw):
    k = draw(st.integers(1, 4))
    pad = draw(st.integers(0, 2))
    h = draw(st.integers(max(1, k - 2 * pad), 10))
    pool = draw(st.sampled_from([None, (1, 1), (2, 2), (3, 2), (4, 2), (8, 1)]))
    return dict(n=draw(st.integers(1, 9)), c=draw(st.integers(1, 4)), units=draw(st.integers(1, 4)),
                pieces=draw(st.integers(1, 4)), h=h, k=k, pad=pad, pool=pool, bias=draw(st.booleans()),
                cnhw=draw(st.booleans()), chunk=draw(st.sampled_from([None, 40, 300])),
                rows=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("dt", DTYPES)
@settings(max_examples=40, deadline=None)
@given(c=case())
def test_fused_equals_composition(dt, c):
    rng = np.random.default_rng(c["seed"])
    o = c["units"] * c["pieces"]
    x = rng.standard_normal((c["n"], c["c"], c["h"], c["h"])).astype(dt)
    if c["cnhw"]:
        x = np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)
    w = rng.standard_normal((o, c["c"], c["k"], c["k"])).astype(dt)
    b = rng.standard_normal(o).astype(dt) if c["bias"] else None
    old, old_rows = cpu._CHUNK_ELEMS, (cpu._ROWS_MAX_O, cpu._ROWS_MIN_C)
    try:
        if c["chunk"]:
            cpu._CHUNK_ELEMS = c["chunk"]
        # the GEMM orientation (im2row / im2col), the same for both sides
        cpu._ROWS_MAX_O, cpu._ROWS_MIN_C = (10**9, 0) if c["rows"] else (0, 10**9)
        z = cpu.conv2d_forward(x, w, b, 1, c["pad"])
        if c["pool"] is None:
            yc, ac = cpu.maxout_forward(z, c["pieces"])
        else:
            yc, ac = cpu.maxout_pool_forward(z, c["pieces"], c["pool"], (c["pool"][1],) * 2, True)
        y, a = cpu.conv2d_maxout_forward(x, w, b, 1, c["pad"], c["pieces"], c["pool"],
                                         None if c["pool"] is None else (c["pool"][1],) * 2, True)
    finally:
        cpu._CHUNK_ELEMS, (cpu._ROWS_MAX_O, cpu._ROWS_MIN_C) = old, old_rows
    assert y.shape == yc.shape and y.dtype == yc.dtype and a.dtype == ac.dtype
    np.testing.assert_array_equal(y, yc)       # same GEMM chunks: bit-identical
    np.testing.assert_array_equal(a, ac)
    # and against the reference definition
    zr = ref.conv2d_forward(np.ascontiguousarray(x), w, b, 1, c["pad"])
    yr = ref.maxout_forward(zr, c["pieces"])[0] if c["pool"] is None else \
        ref.maxout_pool_forward(zr, c["pieces"], c["pool"], (c["pool"][1],) * 2, True)[0]
    np.testing.assert_allclose(y, yr, **TOL[dt])


def test_dispatch_and_threads(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((13, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    want = cpu.maxout_pool_forward(cpu.conv2d_forward(x, w, b, 1, 1), 2, (2, 2), (2, 2), True)
    got = kernels.conv2d_maxout_forward(x, w, b, 1, 1, 2, (2, 2), (2, 2), True)
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g, e)
    monkeypatch.setattr(cpu, "_GEMM_THREADS", 2)
    monkeypatch.setattr(cpu, "_NT", 2)
    monkeypatch.setattr(cpu, "_CHUNK_ELEMS", 200)
    want = cpu.maxout_pool_forward(cpu.conv2d_forward(x, w, b, 1, 1), 2, (2, 2), (2, 2), True)
    got = cpu.conv2d_maxout_forward(x, w, b, 1, 1, 2, (2, 2), (2, 2), True)
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("pool", [None, 2, 4])
def test_functional_equals_unfused(pool):
    from minifit import functional as F
    from minifit.tensor import Tensor
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((5, 3, 10, 10))
    ws = rng.standard_normal((8, 3, 3, 3)) * 0.3
    bs = rng.standard_normal(8)
    out = []
    for fused in (True, False):
        x, w, b = Tensor(xs, requires_grad=True), Tensor(ws, requires_grad=True), Tensor(bs, requires_grad=True)
        if fused:
            y = F.maxout_conv2d(x, w, b, 2, 1, 1, pool, None if pool is None else 2)
        else:
            z = F.conv2d(x, w, b, 1, 1)
            y = F.maxout(z, 2) if pool is None else F.maxout_pool2d(z, 2, pool, 2, True)
        (y * Tensor(np.linspace(-1, 1, y.size).reshape(y.shape))).sum().backward()
        out.append((y.numpy(), x.grad, w.grad, b.grad))
    for a, e in zip(*out):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)
