"""kernels.cpu equals kernels.reference on hypothesis-drawn shapes, both dtypes, the input
layouts the CPU kernels produce (C-contiguous NCHW, the CNHW transposed view, and the
channels-last NHWC view of bn_relu_conv2d_forward)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import kernels
from kernels import cpu, reference as ref
from kernels.cpu import conv, layouts, tuning
from kernels.cpu import runtime as cpu_runtime

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}
FAST = settings(max_examples=20, deadline=None)


def arr(rng, shape, dt, ties=False):
    if ties:  # small integers: many exact ties, to pin down the tie-breaking rule
        return rng.integers(-2, 3, size=shape).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def layout(x, kind):
    """The same values in another memory layout: kind True or "cnhw" (x.swapaxes(0, 1)
    C-contiguous), "nhwc" (channels-last: x.transpose(0, 2, 3, 1) C-contiguous), else as is."""
    if kind == "nhwc" and x.ndim == 4:
        out = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        assert layouts.is_nhwc(out) or 1 in x.shape[1:]   # (a size-1 axis makes layouts coincide)
        return out
    if kind not in (True, "cnhw") or x.ndim < 2:
        return x
    return np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)


def close(a, b, dt):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    np.testing.assert_allclose(a, b, **TOL[dt])


@st.composite
def conv_case(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 4)), o=draw(st.integers(1, 5)),
                h=h, w=w, k=(kh, kw), s=(sh, sw), p=(ph, pw), bias=draw(st.booleans()),
                cnhw=draw(st.booleans()), nhwc=draw(st.booleans()), rows=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


def x_layout(case):
    """The input layout a conv case draws: NHWC, else CNHW or NCHW."""
    return "nhwc" if case["nhwc"] else case["cnhw"]


class orientation:
    """Force conv2d_forward's GEMM orientation: im2row (rows=True) or im2col, whatever the
    channel counts (1x1 kernels always take im2col)."""

    def __init__(self, rows):
        self.limits = (10**9, 0) if rows else (0, 10**9)

    def __enter__(self):
        self.old = tuning.ROWS_MAX_O, tuning.ROWS_MIN_C
        tuning.ROWS_MAX_O, tuning.ROWS_MIN_C = self.limits

    def __exit__(self, *exc):
        tuning.ROWS_MAX_O, tuning.ROWS_MIN_C = self.old


@pytest.mark.parametrize("dt", DTYPES)
@FAST
@given(case=conv_case())
def test_conv_forward_backward(dt, case):
    rng = np.random.default_rng(case["seed"])
    x = arr(rng, (case["n"], case["c"], case["h"], case["w"]), dt)
    w = arr(rng, (case["o"], case["c"]) + case["k"], dt)
    b = arr(rng, (case["o"],), dt) if case["bias"] else None
    xl = layout(x, x_layout(case))   # (an NHWC x always takes the rows orientation)
    with orientation(case["rows"]):
        y = cpu.conv2d_forward(xl, w, b, case["s"], case["p"])
    close(y, ref.conv2d_forward(x, w, b, case["s"], case["p"]), dt)
    dy = arr(rng, y.shape, dt)
    for need_dx in (True, False):
        got = cpu.conv2d_backward(layout(dy, not case["cnhw"]), xl, w, case["s"], case["p"], need_dx)
        want = ref.conv2d_backward(dy, x, w, case["s"], case["p"], need_dx)
        if need_dx:
            close(got[0], want[0], dt)
        else:
            assert got[0] is None
        close(got[1], want[1], dt)
        close(got[2], want[2], dt)


@pytest.mark.parametrize("dt", DTYPES)
@FAST
@given(case=conv_case())
def test_im2col_col2im(dt, case):
    rng = np.random.default_rng(case["seed"])
    x = arr(rng, (case["n"], case["c"], case["h"], case["w"]), dt)
    cols = cpu.im2col(layout(x, case["cnhw"]), case["k"], case["s"], case["p"])
    close(cols, ref.im2col(x, case["k"], case["s"], case["p"]), dt)
    c = arr(rng, cols.shape, dt)
    close(cpu.col2im(c, x.shape, case["k"], case["s"], case["p"]),
          ref.col2im(c, x.shape, case["k"], case["s"], case["p"]), dt)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dt", DTYPES)
def test_conv_k_split(dt, bias, monkeypatch):
    """Long reductions: the im2col cut into input-map blocks whose products are summed
    (several blocks, the last one short, a partial last sample chunk), for the plain and
    the maxout-fused convolution."""
    monkeypatch.setattr(tuning, "CHUNK_ELEMS", 4 * 46 * 30)   # 1 sample (30 positions) per chunk ...
    monkeypatch.setattr(tuning, "KSPLIT_MIN_K", 10)
    monkeypatch.setattr(tuning, "KSPLIT_COLS", 64)              # ... raised to 3 (90 columns)
    monkeypatch.setattr(tuning, "KSPLIT_ELEMS", 2 * 9 * 3 * 30)  # 2 of the 5 maps per block
    monkeypatch.setattr(tuning, "ROWS_MAX_O", 0)
    rng = np.random.default_rng(4)
    x, w = arr(rng, (7, 5, 6, 5), dt), arr(rng, (6, 5, 3, 3), dt)
    b = arr(rng, (6,), dt) if bias else None
    calls = []
    real = conv.im2col_k
    monkeypatch.setattr(conv, "im2col_k", lambda *a: calls.append(a[4:6]) or real(*a))
    want = ref.conv2d_forward(x, w, b, 1, 1)
    close(cpu.conv2d_forward(layout(x, True), w, b, 1, 1), want, dt)
    assert {(0, 2), (2, 4), (4, 5)} <= set(calls)
    y, a = cpu.conv2d_maxout_forward(x, w, b, 1, 1, 2, (2, 2), (2, 2))
    yr, ar = ref.maxout_pool_forward(want, 2, (2, 2), (2, 2), True)
    close(y, yr, dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_rows_long_reduction_chunks(dt, monkeypatch):
    """Rows orientation with a long reduction: several samples per GEMM (the last chunk
    partial), for the plain, the BN-ReLU and the no-backward maxout convolutions."""
    monkeypatch.setattr(tuning, "CHUNK_ELEMS", 4 * 46 * 30)
    monkeypatch.setattr(tuning, "ROWS_LONG_K", 10)
    monkeypatch.setattr(tuning, "ROWS_MIN_M", 100)   # 4 samples of 30 positions per chunk
    monkeypatch.setattr(tuning, "ROWS_MAX_O", 10**9)
    monkeypatch.setattr(tuning, "ROWS_MIN_C", 0)
    rng = np.random.default_rng(8)
    x, w, b = arr(rng, (7, 5, 6, 5), dt), arr(rng, (6, 5, 3, 3), dt), arr(rng, (6,), dt)
    sizes = []
    real = conv.im2row_k
    monkeypatch.setattr(conv, "im2row_k", lambda *a: sizes.append(a[3]) or real(*a))
    want = ref.conv2d_forward(x, w, b, 1, 1)
    close(cpu.conv2d_forward(x, w, b, 1, 1), want, dt)
    assert max(sizes) == 4 and min(sizes) == 3
    g, bt, rm = arr(rng, (5,), dt), arr(rng, (5,), dt), arr(rng, (5,), dt)
    rv = (rng.random(5) + 0.1).astype(dt)
    close(cpu.bn_relu_conv2d_forward(x, g, bt, rm, rv, 1e-5, w, b, 1, 1),
          ref.conv2d_forward(ref.relu_forward(ref.batch_norm_inference(x, g, bt, rm, rv, 1e-5)), w, b, 1, 1), dt)
    y, a = cpu.conv2d_maxout_forward(layout(x, "nhwc"), w, b, 1, 1, 3, (2, 2), (2, 2), True, True)
    close(y, ref.maxout_pool_forward(want, 3, (2, 2), (2, 2), True)[0], dt)


@pytest.mark.parametrize("rows", [False, True])
@pytest.mark.parametrize("dt", DTYPES)
def test_conv_chunked_batches(dt, rows, monkeypatch):
    """Force several im2col / im2row chunks (the last one partial) through the GEMM path."""
    monkeypatch.setattr(tuning, "CHUNK_ELEMS", 2 * 18 * 25)
    monkeypatch.setattr(tuning, "ROWS_MAX_O", 10**9 if rows else 0)
    monkeypatch.setattr(tuning, "ROWS_MIN_C", 0)
    rng = np.random.default_rng(1)
    x, w, b = arr(rng, (7, 2, 6, 5), dt), arr(rng, (3, 2, 3, 3), dt), arr(rng, (3,), dt)
    assert conv._use_rows(2, 3, 3, 3) == rows
    y = cpu.conv2d_forward(x, w, b, 1, 1)
    close(y, ref.conv2d_forward(x, w, b, 1, 1), dt)
    dy = arr(rng, y.shape, dt)
    for g, r in zip(cpu.conv2d_backward(dy, x, w, 1, 1, True), ref.conv2d_backward(dy, x, w, 1, 1, True)):
        close(g, r, dt)


@st.composite
def pool_case(draw):
    ceil = draw(st.booleans())
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    h = draw(st.integers(1 if ceil else kh, 12))
    w = draw(st.integers(1 if ceil else kw, 12))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), pieces=draw(st.integers(1, 4)),
                h=h, w=w, k=(kh, kw), s=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
                ceil=ceil, ties=draw(st.booleans()), cnhw=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("dt", DTYPES)
@FAST
@given(case=pool_case())
def test_maxpool(dt, case):
    rng = np.random.default_rng(case["seed"])
    x = arr(rng, (case["n"], case["c"], case["h"], case["w"]), dt, case["ties"])
    y, a = cpu.maxpool2d_forward(layout(x, case["cnhw"]), case["k"], case["s"], case["ceil"])
    yr, ar = ref.maxpool2d_forward(x, case["k"], case["s"], case["ceil"])
    close(y, yr, dt)
    assert a.dtype == np.int32 and np.array_equal(a, ar)
    dy = arr(rng, y.shape, dt)
    close(cpu.maxpool2d_backward(dy, a, x.shape), ref.maxpool2d_backward(dy, ar, x.shape), dt)


@pytest.mark.parametrize("dt", DTYPES)
@FAST
@given(case=pool_case(), four_d=st.booleans())
def test_maxout(dt, case, four_d):
    rng = np.random.default_rng(case["seed"])
    p = case["pieces"]
    shape = (case["n"], case["c"] * p, case["h"], case["w"]) if four_d else (case["n"], case["c"] * p)
    x = arr(rng, shape, dt, case["ties"])
    y, a = cpu.maxout_forward(layout(x, case["cnhw"]), p)
    yr, ar = ref.maxout_forward(x, p)
    close(y, yr, dt)
    assert a.dtype == np.uint8 and np.array_equal(a, ar)
    dy = arr(rng, y.shape, dt)
    close(cpu.maxout_backward(layout(dy, not case["cnhw"]), a, p), ref.maxout_backward(dy, ar, p), dt)


@pytest.mark.parametrize("dt", DTYPES)
@FAST
@given(case=pool_case())
def test_maxout_pool_fused(dt, case):
    rng = np.random.default_rng(case["seed"])
    p = case["pieces"]
    x = arr(rng, (case["n"], case["c"] * p, case["h"], case["w"]), dt, case["ties"])
    args = (case["k"], case["s"], case["ceil"])
    y, a = cpu.maxout_pool_forward(layout(x, case["cnhw"]), p, *args)
    yr, ar = ref.maxout_pool_forward(x, p, *args)
    close(y, yr, dt)
    assert a.dtype == np.int32 and np.array_equal(a, ar)
    # the fused op equals maxout then pool, forward and backward
    ym, am = ref.maxout_forward(x, p)
    yp, ap = ref.maxpool2d_forward(ym, *args)
    close(y, yp, dt)
    dy = arr(rng, y.shape, dt)
    dx = cpu.maxout_pool_backward(dy, a, x.shape, p)
    close(dx, ref.maxout_pool_backward(dy, ar, x.shape, p), dt)
    close(dx, ref.maxout_backward(ref.maxpool2d_backward(dy, ap, ym.shape), am, p), dt)


@pytest.mark.parametrize("dt", DTYPES)
@FAST
@given(n=st.integers(1, 4), c=st.integers(1, 5), h=st.integers(1, 6), w=st.integers(1, 6),
       four_d=st.booleans(), cnhw=st.booleans(), seed=st.integers(0, 2**16))
def test_gap_bn_relu(dt, n, c, h, w, four_d, cnhw, seed):
    rng = np.random.default_rng(seed)
    x = arr(rng, (n, c, h, w), dt)
    g = arr(rng, (n, c), dt)
    close(cpu.global_avg_pool_forward(layout(x, cnhw)), ref.global_avg_pool_forward(x), dt)
    close(cpu.global_avg_pool_backward(g, x.shape), ref.global_avg_pool_backward(g, x.shape), dt)
    xb = x if four_d else x[:, :, 0, 0].copy()
    gamma, beta = arr(rng, (c,), dt), arr(rng, (c,), dt)
    y, mean, inv = cpu.batch_norm_forward(layout(xb, cnhw), gamma, beta, 1e-3)
    yr, mr, ir = ref.batch_norm_forward(xb, gamma, beta, 1e-3)
    tol = dict(rtol=1e-3, atol=1e-3) if dt == np.float32 else TOL[dt]  # var of tiny batches
    for u, v in ((y, yr), (mean, mr), (inv, ir)):
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_allclose(u, v, **tol)
    dy = arr(rng, xb.shape, dt)
    for u, v in zip(cpu.batch_norm_backward(dy, layout(xb, cnhw), gamma, mr, ir),
                    ref.batch_norm_backward(dy, xb, gamma, mr, ir)):
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_allclose(u, v, **tol)
    # batch norm + ReLU fused (training): the reference composition
    yf, mf, invf = cpu.batch_norm_relu_forward(layout(xb, cnhw), gamma, beta, 1e-3)
    np.testing.assert_allclose(yf, ref.relu_forward(yr), **tol)
    np.testing.assert_array_equal(mf, mean)
    np.testing.assert_array_equal(invf, inv)
    for u, v in zip(cpu.batch_norm_backward(layout(dy, not cnhw), layout(xb, cnhw), gamma, mf, invf),
                    ref.batch_norm_backward(dy, xb, gamma, mf, invf)):   # dy and x in different layouts
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_allclose(u, v, **tol)
    yr_relu = ref.relu_forward(yr)
    want = ref.batch_norm_backward(ref.relu_backward(dy, yr_relu), xb, gamma, mf, invf)
    for dy_lay in (cnhw, not cnhw):   # batch norm + ReLU backward fused: the reference composition
        got = cpu.batch_norm_relu_backward(layout(dy, dy_lay), yf, layout(xb, cnhw), gamma, mf, invf)
        for u, v in zip(got, want):
            assert u.dtype == v.dtype and u.shape == v.shape
            np.testing.assert_allclose(u, v, **tol)
    # ... with a dropout mask (in the other layout than x): relu(BN) * mask, and the
    # backward of BN of relu_backward(dy * mask, y): bitwise the unmasked kernels' values
    # times the mask (the same roundings), within tol of the reference composition
    mask = cpu.dropout_mask(xb.shape, 0.4, seed, dt)
    ym, mm, im = cpu.batch_norm_relu_forward(layout(xb, cnhw), gamma, beta, 1e-3, layout(mask, not cnhw))
    np.testing.assert_array_equal(ym, yf * mask)
    np.testing.assert_array_equal(mm, mf)
    np.testing.assert_array_equal(im, invf)
    want = ref.batch_norm_backward(ref.relu_backward(dy * mask, yr_relu), xb, gamma, mf, invf)
    got = cpu.batch_norm_relu_backward(layout(dy, cnhw), ym, layout(xb, cnhw), gamma, mf, invf,
                                       layout(mask, not cnhw))
    for u, v, e in zip(got, want, cpu.batch_norm_relu_backward(dy * mask, yf, xb, gamma, mf, invf)):
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_allclose(u, v, **tol)
        np.testing.assert_allclose(u, e, rtol=0, atol=(1e-5 if dt == np.float32 else 1e-12) * max(1, np.abs(e).max()))
    with pytest.raises(ValueError, match="mask"):
        cpu.batch_norm_relu_forward(xb, gamma, beta, 1e-3, np.ones((n, c + 1) + xb.shape[2:], dt))
    rm, rv = arr(rng, (c,), dt), np.abs(arr(rng, (c,), dt)) + 0.1
    close(cpu.batch_norm_inference(xb, gamma, beta, rm, rv, 1e-5),
          ref.batch_norm_inference(xb, gamma, beta, rm, rv, 1e-5), dt)
    close(cpu.relu_forward(layout(x, cnhw)), ref.relu_forward(x), dt)
    close(cpu.relu_backward(layout(g, cnhw), g), ref.relu_backward(g, g), dt)
    close(cpu.relu_backward(layout(x, cnhw), x), ref.relu_backward(x, x), dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_dropout_same_stream(dt):
    for p in (0.0, 0.2, 0.5):
        np.testing.assert_array_equal(cpu.dropout_mask((5, 7), p, 3, dt), ref.dropout_mask((5, 7), p, 3, dt))
    assert cpu.dropout_mask((4,), 0.5, 0, dt).dtype == dt


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n, before", [(1 << 19, 0), ((1 << 19) + 3, 0), (3 << 18, 1), ((1 << 20) + 1, 2)])
def test_dropout_parts_same_stream(dt, n, before, monkeypatch):
    """Large masks are drawn in parts over the threads (tuning.DROPOUT_SPLIT): the mask and
    the generator's state afterwards equal the one-thread reference's (odd sizes, and a
    generator holding half of a 64-bit output from an odd earlier float32 draw)."""
    monkeypatch.setattr(cpu_runtime, "NT", 3)   # three parts even on a 2-core machine
    g_cpu, g_ref = np.random.default_rng(5), np.random.default_rng(5)
    for g in (g_cpu, g_ref):
        g.random(before, dtype=np.float32)
    got = cpu.dropout_mask((n,), 0.3, g_cpu, dt)
    want = ref.dropout_mask((n,), 0.3, g_ref, dt)
    assert got.dtype == want.dtype == dt
    np.testing.assert_array_equal(got, want)
    assert g_cpu.bit_generator.state == g_ref.bit_generator.state
    np.testing.assert_array_equal(g_cpu.random(7, dtype=np.float32), g_ref.random(7, dtype=np.float32))
    np.testing.assert_array_equal(cpu.dropout_mask((n,), 0.5, 9, dt), ref.dropout_mask((n,), 0.5, 9, dt))


def test_layer_shaped_case():
    """One FitNet-like layer end to end (3x3 pad 1 maxout conv, 2x2 pool), chained."""
    rng = np.random.default_rng(7)
    dt = np.float32
    x, w, b = arr(rng, (4, 8, 16, 16), dt), 0.1 * arr(rng, (12, 8, 3, 3), dt), arr(rng, (12,), dt)
    z = cpu.conv2d_forward(x, w, b, 1, 1)
    y, a = cpu.maxout_pool_forward(z, 2, 2, 2, True)
    zr = ref.conv2d_forward(x, w, b, 1, 1)
    yr, ar = ref.maxout_pool_forward(zr, 2, 2, 2, True)
    close(y, yr, dt)
    dy = arr(rng, y.shape, dt)
    dz = cpu.maxout_pool_backward(dy, a, z.shape, 2)
    dx, dw, db = cpu.conv2d_backward(dz, x, w, 1, 1, True)
    dzr = ref.maxout_pool_backward(dy, ar, zr.shape, 2)
    for u, v in zip((dx, dw, db), ref.conv2d_backward(dzr, x, w, 1, 1, True)):
        close(u, v, dt)
    # a second layer fed with the CNHW-layout output of the first
    w2 = 0.1 * arr(rng, (4, 6, 3, 3), dt)
    close(cpu.conv2d_forward(y, w2, None, 1, 1), ref.conv2d_forward(yr, w2, None, 1, 1), dt)


def test_dispatch_and_strided_inputs():
    rng = np.random.default_rng(3)
    x = arr(rng, (2, 3, 10, 12), np.float64)[:, :, ::2, 1::2]  # neither layout: copied
    w = arr(rng, (2, 3, 2, 2), np.float64)
    np.testing.assert_allclose(kernels.conv2d_forward(x, w, None, 1, 0), ref.conv2d_forward(x, w, None, 1, 0))
    y, a = kernels.maxpool2d_forward(x, 2, 2, True)
    np.testing.assert_array_equal(y, ref.maxpool2d_forward(x, 2, 2, True)[0])
    assert kernels.backend(x) is cpu


def test_threaded_split_paths(monkeypatch):
    """Force the elementwise / pooling kernels onto several threads on small inputs."""
    monkeypatch.setattr(tuning, "GRAIN", 1)
    rng = np.random.default_rng(9)
    dt = np.float64
    x = layout(arr(rng, (5, 6, 7, 7), dt, ties=True), True)
    xr = np.ascontiguousarray(x)
    y, a = cpu.maxout_pool_forward(x, 3, 3, 2, True)
    yr, ar = ref.maxout_pool_forward(xr, 3, 3, 2, True)
    close(y, yr, dt)
    assert np.array_equal(a, ar)
    dy = arr(rng, y.shape, dt)
    close(cpu.maxout_pool_backward(dy, a, x.shape, 3), ref.maxout_pool_backward(dy, ar, x.shape, 3), dt)
    ym, am = cpu.maxout_forward(x, 2)
    close(ym, ref.maxout_forward(xr, 2)[0], dt)
    close(cpu.maxout_backward(ym, am, 2), ref.maxout_backward(ym, ref.maxout_forward(xr, 2)[1], 2), dt)
    close(cpu.maxpool2d_forward(x, 2, 2, False)[0], ref.maxpool2d_forward(xr, 2, 2, False)[0], dt)
    close(cpu.im2col(x, 3, 1, 1), ref.im2col(xr, 3, 1, 1), dt)
    cols = ref.im2col(xr, 3, 1, 1)
    close(cpu.col2im(cols, x.shape, 3, 1, 1), ref.col2im(cols, x.shape, 3, 1, 1), dt)
    g, bt = arr(rng, (6,), dt), arr(rng, (6,), dt)
    close(cpu.batch_norm_forward(x, g, bt, 1e-5)[0], ref.batch_norm_forward(xr, g, bt, 1e-5)[0], dt)
    close(cpu.relu_forward(x), ref.relu_forward(xr), dt)
    w = arr(rng, (4, 6, 3, 3), dt)
    dyc = arr(rng, (5, 4, 7, 7), dt)  # NCHW dy: transposed on the pool threads
    for u, v in zip(cpu.conv2d_backward(dyc, x, w, 1, 1), ref.conv2d_backward(dyc, xr, w, 1, 1)):
        close(u, v, dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_engine_arithmetic_in_parts(dt, monkeypatch):
    """The engine's add / sub / mul / div: two large same-shape operands go in parts over the
    pool (tuning.EW_SPLIT), with NumPy's values and dtype, in the first operand's layout:
    one buffer layout by contiguous halves, NCHW with CNHW by planes (not div); strided
    views, broadcasting, scalars, mixed or integer dtypes and small operands as NumPy."""
    from kernels.cpu import elementwise as ew
    monkeypatch.setattr(tuning, "EW_SPLIT", 1000)
    monkeypatch.setattr(tuning, "GRAIN", 1)
    parts = []
    real = ew.split
    monkeypatch.setattr(ew, "split", lambda k, total, work: (parts.append(total), real(k, total, work)))
    rng = np.random.default_rng(3)
    a = arr(rng, (6, 5, 7, 9), dt)
    b = arr(rng, (6, 5, 7, 9), dt) + dt(3)   # (no zero divisors)
    an, bn = layout(a, True), layout(b, True)
    small = (a[:1, :1], b[:1, :1])
    for f, ufunc in [(ew.add, np.add), (ew.sub, np.subtract), (ew.mul, np.multiply), (ew.div, np.true_divide)]:
        planes = f is not ew.div   # (mixed layouts: add / sub / mul by planes, in x's layout)
        for x, y, split in [(a, b, True), (an, bn, True), (a, bn, planes), (an, b, planes),
                            (a, b[:, :1], False), (a, dt(2.5), False), (a, b.astype(np.float16), False),
                            ((a * 4).astype(np.int64), np.abs((b * 4).astype(np.int64)) + 1, False),
                            (a[:, :, ::2], b[:, :, ::2], False), (*small, False)]:
            parts.clear()
            got, want = f(x, y), ufunc(x, y)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(got, want)
            assert bool(parts) == split, (f.__name__, x.shape, getattr(y, "shape", ()))
            if split:
                same = ew._layout(x) == ew._layout(y)
                assert parts == [x.size if same else x.shape[0] * x.shape[1]]
                assert ew._layout(got) == ew._layout(x)   # the first operand's layout


@pytest.mark.parametrize("dt", DTYPES)
@FAST
@given(case=conv_case())
def test_bn_relu_conv_forward(dt, case):
    """The fused evaluation-mode BN-ReLU-conv equals the composition of the reference ops
    for every input and residual layout, returns channels-last maps (which it reads back
    without a copy), and the dispatcher picks the CPU kernel."""
    rng = np.random.default_rng(case["seed"])
    c = case["c"]
    x = arr(rng, (case["n"], c, case["h"], case["w"]), dt)
    w = arr(rng, (case["o"], c) + case["k"], dt)
    b = arr(rng, (case["o"],), dt) if case["bias"] else None
    gamma, beta, mean = arr(rng, (c,), dt), arr(rng, (c,), dt), arr(rng, (c,), dt)
    var = (rng.random(c) + 0.1).astype(dt)
    want = ref.conv2d_forward(ref.relu_forward(ref.batch_norm_inference(x, gamma, beta, mean, var, 1e-5)),
                              w, b, case["s"], case["p"])
    res = arr(rng, want.shape, dt)
    xl = layout(x, x_layout(case))
    got = kernels.bn_relu_conv2d_forward(xl, gamma, beta, mean, var, 1e-5, w, b, case["s"], case["p"])
    close(got, want, dt)
    assert got.transpose(0, 2, 3, 1).flags.c_contiguous
    for res_layout in (False, "cnhw", "nhwc"):
        got = kernels.bn_relu_conv2d_forward(xl, gamma, beta, mean, var, 1e-5, w, b, case["s"], case["p"],
                                             layout(res, res_layout))
        close(got, want + res, dt)
    # a second block reads the channels-last output in place
    w2 = arr(rng, (2, case["o"], 3, 3), dt)
    g2, b2, m2 = arr(rng, (case["o"],), dt), arr(rng, (case["o"],), dt), arr(rng, (case["o"],), dt)
    v2 = (rng.random(case["o"]) + 0.1).astype(dt)
    want2 = ref.conv2d_forward(ref.relu_forward(ref.batch_norm_inference(want + res, g2, b2, m2, v2, 1e-5)),
                               w2, None, 1, 1)
    close(kernels.bn_relu_conv2d_forward(got, g2, b2, m2, v2, 1e-5, w2, None, 1, 1), want2, dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_channels_last_elementwise(dt):
    """batch_norm_inference, relu_forward and the layout-agnostic kernels on NHWC input."""
    rng = np.random.default_rng(11)
    x = arr(rng, (3, 5, 4, 6), dt)
    xl = layout(x, "nhwc")
    g, bt, rm = arr(rng, (5,), dt), arr(rng, (5,), dt), arr(rng, (5,), dt)
    rv = (rng.random(5) + 0.1).astype(dt)
    close(cpu.batch_norm_inference(xl, g, bt, rm, rv, 1e-5), ref.batch_norm_inference(x, g, bt, rm, rv, 1e-5), dt)
    close(cpu.relu_forward(xl), ref.relu_forward(x), dt)
    close(cpu.global_avg_pool_forward(xl), ref.global_avg_pool_forward(x), dt)
    close(cpu.batch_norm_forward(xl, g, bt, 1e-5)[0], ref.batch_norm_forward(x, g, bt, 1e-5)[0], dt)
    close(cpu.maxpool2d_forward(xl, 2, 2, True)[0], ref.maxpool2d_forward(x, 2, 2, True)[0], dt)
    dy = arr(rng, x.shape, dt)
    close(cpu.relu_backward(layout(dy, "nhwc"), xl), ref.relu_backward(dy, x), dt)


def test_rows_orientation_is_really_taken(monkeypatch):
    """The orientation switch reaches the im2row kernel (a patched _im2row_k must be called)."""
    calls = []
    real = conv.im2row_k
    monkeypatch.setattr(conv, "im2row_k", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(2)
    x, w = arr(rng, (2, 3, 5, 5), np.float64), arr(rng, (4, 3, 3, 3), np.float64)
    for rows in (False, True):
        with orientation(rows):
            close(cpu.conv2d_forward(x, w, None, 1, 1), ref.conv2d_forward(x, w, None, 1, 1), np.float64)
        assert bool(calls) == rows
