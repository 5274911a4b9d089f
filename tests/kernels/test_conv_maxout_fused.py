"""kernels.cpu.conv2d_maxout_forward (conv + maxout (+ max pool) fused per batch chunk)
equals the composition it replaces, and F.maxout_conv2d equals the unfused ops."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import kernels
from kernels import cpu, reference as ref
from kernels.cpu import conv_fft, layouts, runtime, tuning

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


@st.composite
def case(draw):
    k = draw(st.integers(1, 4))
    pad = draw(st.integers(0, 2))
    h = draw(st.integers(max(1, k - 2 * pad), 10))
    pool = draw(st.sampled_from([None, (1, 1), (2, 2), (3, 2), (4, 2), (8, 1)]))
    return dict(n=draw(st.integers(1, 9)), c=draw(st.integers(1, 4)), units=draw(st.integers(1, 4)),
                pieces=draw(st.integers(1, 4)), h=h, k=k, pad=pad, pool=pool,
                bias=draw(st.sampled_from([None, "tied", "untied"])),
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
    out = cpu.conv2d_forward(x, w, None, 1, c["pad"]).shape[2:]
    b = None if c["bias"] is None else rng.standard_normal((o,) + (out if c["bias"] == "untied" else ())).astype(dt)
    old, old_rows = tuning.CHUNK_ELEMS, (tuning.ROWS_MAX_O, tuning.ROWS_MIN_C)
    try:
        if c["chunk"]:
            tuning.CHUNK_ELEMS = c["chunk"]
        # the GEMM orientation (im2row / im2col), the same for both sides
        tuning.ROWS_MAX_O, tuning.ROWS_MIN_C = (10**9, 0) if c["rows"] else (0, 10**9)
        z = cpu.conv2d_forward(x, w, b, 1, c["pad"])
        if c["pool"] is None:
            yc, ac = cpu.maxout_forward(z, c["pieces"])
        else:
            yc, ac = cpu.maxout_pool_forward(z, c["pieces"], c["pool"], (c["pool"][1],) * 2, True)
        y, a = cpu.conv2d_maxout_forward(x, w, b, 1, c["pad"], c["pieces"], c["pool"],
                                         None if c["pool"] is None else (c["pool"][1],) * 2, True)
    finally:
        tuning.CHUNK_ELEMS, (tuning.ROWS_MAX_O, tuning.ROWS_MIN_C) = old, old_rows
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
    monkeypatch.setattr(runtime, "GEMM_THREADS", 2)
    monkeypatch.setattr(runtime, "NT", 2)
    monkeypatch.setattr(tuning, "CHUNK_ELEMS", 200)
    want = cpu.maxout_pool_forward(cpu.conv2d_forward(x, w, b, 1, 1), 2, (2, 2), (2, 2), True)
    got = cpu.conv2d_maxout_forward(x, w, b, 1, 1, 2, (2, 2), (2, 2), True)
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("dt", DTYPES)
@settings(max_examples=40, deadline=None)
@given(c=case(), layout=st.sampled_from(["nchw", "cnhw", "nhwc"]), max_o=st.sampled_from([0, 256]),
       wide=st.booleans())
def test_channels_last_equals_reference(dt, c, layout, max_o, wide):
    """The no-backward variant (channels_last=True: piece-major GEMM columns, NHWC rows,
    vectorised selects) returns the reference's values and args exactly, ties included
    (small-integer data: every sum is exact), from every input layout; NHWC when the rows
    orientation applies, else the CNHW path (max_o 0 forces it). ``wide``: 9 input maps,
    so that NCHW / CNHW inputs take the rows orientation too."""
    if wide:
        c["c"] = 9
    rng = np.random.default_rng(c["seed"])
    o = c["units"] * c["pieces"]
    x = rng.integers(-2, 3, (c["n"], c["c"], c["h"], c["h"])).astype(dt)
    w = rng.integers(-2, 3, (o, c["c"], c["k"], c["k"])).astype(dt)
    b = rng.integers(-2, 3, o).astype(dt) if c["bias"] else None
    xl = {"nchw": x, "cnhw": np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1),
          "nhwc": np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)}[layout]
    ps = None if c["pool"] is None else (c["pool"][1],) * 2
    old = tuning.NHWC_MAX_O, tuning.CHUNK_ELEMS
    try:
        tuning.NHWC_MAX_O, tuning.CHUNK_ELEMS = max_o, c["chunk"] or tuning.CHUNK_ELEMS
        y, a = kernels.conv2d_maxout_forward(xl, w, b, 1, c["pad"], c["pieces"], c["pool"], ps, True,
                                             channels_last=True)
    finally:
        tuning.NHWC_MAX_O, tuning.CHUNK_ELEMS = old
    zr = ref.conv2d_forward(x, w, b, 1, c["pad"])
    yr, ar = ref.maxout_forward(zr, c["pieces"]) if c["pool"] is None else \
        ref.maxout_pool_forward(zr, c["pieces"], c["pool"], ps, True)
    assert y.shape == yr.shape and y.dtype == yr.dtype and a.dtype == ar.dtype
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(a, ar)
    rows = o <= max_o and (c["c"] >= tuning.ROWS_MIN_C or layouts.is_nhwc(xl))
    if rows and min(y.shape) > 1:
        assert layouts.is_nhwc(y) and layouts.is_nhwc(a)


@pytest.mark.parametrize("dt", DTYPES)
@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(1, 3), units=st.integers(1, 3), pieces=st.integers(1, 3),
       h=st.integers(5, 11), w_=st.integers(5, 11), k=st.sampled_from([(5, 5), (8, 8), (5, 7)]),
       pad=st.integers(0, 3), pool=st.sampled_from([None, (2, 2), (4, 2), (3, 1)]), bias=st.booleans(),
       last=st.booleans(), seed=st.integers(0, 2**16))
def test_fft_path_equals_reference(dt, n, c, units, pieces, h, w_, k, pad, pool, bias, last, seed):
    """Large kernels by FFT (thresholds lowered so small cases take it): the reference's
    values within the dtype's rounding and, in float64, its args exactly (continuous
    data: no ties),
    in CNHW without ``channels_last`` and NHWC with it."""
    if h + 2 * pad < k[0] or w_ + 2 * pad < k[1]:
        return
    rng = np.random.default_rng(seed)
    o = units * pieces
    x = rng.standard_normal((n, c, h, w_)).astype(dt)
    w = rng.standard_normal((o, c) + k).astype(dt)
    b = rng.standard_normal(o).astype(dt) if bias else None
    ps = None if pool is None else (pool[1],) * 2
    old = (tuning.FFT_MIN_TAPS, tuning.FFT_MIN_C, tuning.FFT_MIN_P, tuning.FFT_MIN_P_NHWC, tuning.FFT_CHUNK,
           tuning.SMALL_FWD_MIN_GROWTH)
    try:   # (chunks of 2 samples: several, the last one partial when n is odd; the small-maps
        # path, which comes first, off)
        (tuning.FFT_MIN_TAPS, tuning.FFT_MIN_C, tuning.FFT_MIN_P, tuning.FFT_MIN_P_NHWC, tuning.FFT_CHUNK,
         tuning.SMALL_FWD_MIN_GROWTH) = 25, 1, 1, 1, 2, float("inf")
        assert conv_fft.use_fft(c, k[0], k[1], (1, 1), 1, 1, last)
        y, a = cpu.conv2d_maxout_forward(x, w, b, 1, pad, pieces, pool, ps, True, last)
    finally:
        (tuning.FFT_MIN_TAPS, tuning.FFT_MIN_C, tuning.FFT_MIN_P, tuning.FFT_MIN_P_NHWC, tuning.FFT_CHUNK,
         tuning.SMALL_FWD_MIN_GROWTH) = old
    zr = ref.conv2d_forward(x, w, b, 1, pad)
    yr, ar = ref.maxout_forward(zr, pieces) if pool is None else ref.maxout_pool_forward(zr, pieces, pool, ps, True)
    assert y.shape == yr.shape and y.dtype == yr.dtype and a.dtype == ar.dtype
    np.testing.assert_allclose(y, yr, **TOL[dt])
    if dt == np.float64:   # (float32 rounding may resolve a near-tie of two pieces differently)
        np.testing.assert_array_equal(a, ar)
    if min(y.shape) > 1:
        assert layouts.is_nhwc(y) == last and (last or y.swapaxes(0, 1).flags.c_contiguous)


@pytest.mark.parametrize("path", ["im2col", "rows", "channels_last", "fft"])
@pytest.mark.parametrize("pool", [None, (4, 2)])
def test_untied_bias_on_every_path(monkeypatch, path, pool):
    """An untied bias (O, OH, OW) is added to each chunk's GEMM output before the maxout
    on each of the fused kernel's four paths, and equals the reference composition."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 9, 11, 10)).astype(np.float32)
    w = rng.standard_normal((12, 9, 5, 5)).astype(np.float32) * 0.2
    b = rng.standard_normal((12, 9, 8)).astype(np.float32)   # pad 1: OH, OW = 9, 8
    monkeypatch.setattr(tuning, "CHUNK_ELEMS", 3000)            # several chunks
    rows = path in ("rows", "channels_last")
    monkeypatch.setattr(tuning, "ROWS_MAX_O", 10**9 if rows else 0)
    monkeypatch.setattr(tuning, "ROWS_MIN_C", 0 if rows else 10**9)
    if path == "fft":
        monkeypatch.setattr(tuning, "FFT_MIN_TAPS", 1)
        monkeypatch.setattr(tuning, "FFT_MIN_C", 1)
        monkeypatch.setattr(tuning, "FFT_MIN_P", 1)
        monkeypatch.setattr(tuning, "FFT_MIN_P_NHWC", 1)
    else:
        monkeypatch.setattr(tuning, "FFT_MIN_C", 10**9)
    ps = None if pool is None else (pool[1],) * 2
    y, a = cpu.conv2d_maxout_forward(x, w, b, 1, 1, 3, pool, ps, True, channels_last=path == "channels_last")
    zr = ref.conv2d_forward(x, w, b, 1, 1)
    yr, ar = ref.maxout_forward(zr, 3) if pool is None else ref.maxout_pool_forward(zr, 3, pool, ps, True)
    np.testing.assert_allclose(y, yr, rtol=2e-5, atol=2e-5)
    assert (np.asarray(a) == ar).mean() > 0.999   # (float32 near-ties may pick another piece)
    # the bias matters: without it the values differ
    assert not np.allclose(cpu.conv2d_maxout_forward(x, w, None, 1, 1, 3, pool, ps, True)[0], yr, atol=1e-2)


def test_untied_bias_backward_sums_over_samples_only():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3, 7, 7)).astype(np.float64)
    w = rng.standard_normal((4, 3, 3, 3))
    dy = rng.standard_normal((5, 4, 5, 5))
    for untied in (False, True):
        got = cpu.conv2d_backward(dy, x, w, 1, 0, True, untied)
        want = ref.conv2d_backward(dy, x, w, 1, 0, True, untied)
        for g, e in zip(got, want):
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got[2], dy.sum(axis=0))


@pytest.mark.parametrize("dt", DTYPES)
@settings(max_examples=40, deadline=None)
@given(c=case(), need_dx=st.booleans(), small=st.booleans())
def test_fused_backward_equals_composition(dt, c, need_dx, small):
    """conv2d_maxout_backward (dz made chunk by chunk) returns what maxout(_pool)_backward
    then conv2d_backward return: bitwise on the GEMM path (the same dz chunks meet the same
    GEMMs); on the small-map path (conv_small) the tied db is summed per chunk, so there to
    float rounding; and the reference's gradients within TOL."""
    rng = np.random.default_rng(c["seed"])
    o = c["units"] * c["pieces"]
    x = rng.standard_normal((c["n"], c["c"], c["h"], c["h"])).astype(dt)
    if c["cnhw"]:
        x = np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)
    w = rng.standard_normal((o, c["c"], c["k"], c["k"])).astype(dt)
    zs = cpu.conv2d_forward(x, w, None, 1, c["pad"]).shape
    untied = c["bias"] == "untied"
    ps = None if c["pool"] is None else (c["pool"][1],) * 2
    y, arg = cpu.conv2d_maxout_forward(x, w, None, 1, c["pad"], c["pieces"], c["pool"], ps, True)
    dy = rng.standard_normal(y.shape).astype(dt)
    if c["cnhw"]:
        dy = np.ascontiguousarray(dy.swapaxes(0, 1)).swapaxes(0, 1)
    old = tuning.CHUNK_ELEMS, tuning.SMALL_FWD_MIN_GROWTH, tuning.SMALL_BWD_MIN_GROWTH
    try:
        if c["chunk"]:
            tuning.CHUNK_ELEMS = c["chunk"]
        tuning.SMALL_FWD_MIN_GROWTH = tuning.SMALL_BWD_MIN_GROWTH = 0.0 if small else 1e9
        got = cpu.conv2d_maxout_backward(dy, arg, x, w, 1, c["pad"], c["pieces"], c["pool"], ps, True,
                                         need_dx, untied)
        dz = cpu.maxout_backward(dy, arg, c["pieces"]) if c["pool"] is None else \
            cpu.maxout_pool_backward(dy, arg, zs, c["pieces"])
        want = cpu.conv2d_backward(dz, x, w, 1, c["pad"], need_dx, untied)
    finally:
        tuning.CHUNK_ELEMS, tuning.SMALL_FWD_MIN_GROWTH, tuning.SMALL_BWD_MIN_GROWTH = old
    assert (got[0] is None) == (not need_dx)
    for g, e in zip(got, want):
        if e is None:
            continue
        assert g.shape == e.shape and g.dtype == e.dtype
        if small:
            np.testing.assert_allclose(g, e, **TOL[dt])
        else:
            np.testing.assert_array_equal(g, e)
    rdz = np.asarray(dz)
    ref_g = ref.conv2d_backward(np.ascontiguousarray(rdz), np.ascontiguousarray(x), w, 1, c["pad"], need_dx, untied)
    for g, e in zip(got, ref_g):
        if e is not None:
            np.testing.assert_allclose(g, e, **TOL[dt])


def test_fused_backward_rejects_a_foreign_arg():
    x = np.zeros((2, 3, 6, 6), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    dy = np.zeros((2, 2, 2, 2), np.float32)
    arg = np.full((2, 2, 2, 2), 10**6, np.int32)
    with pytest.raises(ValueError, match="arg holds indices outside"):
        cpu.conv2d_maxout_backward(dy, arg, x, w, 1, 0, 2, (2, 2), (2, 2))
    with pytest.raises(ValueError):   # dy of the wrong shape
        cpu.conv2d_maxout_backward(dy[:, :1], arg[:, :1], x, w, 1, 0, 2, (2, 2), (2, 2))
