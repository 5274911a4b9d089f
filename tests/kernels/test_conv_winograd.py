"""kernels.cpu.conv_winograd (Winograd F(2x2, 3x3)) against kernels.reference, and the
conv paths that dispatch to it against the im2col path.

The float32 bound: max |err| <= BOUND * eps * sqrt(K) * max |ref|, K the length of the sums
behind one output value (forward 9 C, dx 9 O, dw and db N OH OW). Measured on fitnet-1 /
fitnet-4 layers with CIFAR-10 activations (benchmarks/ab_winograd_error.py): the forward
at 0.10-0.19, dx at 0.15-0.26, dw at 0.06-0.21 of eps sqrt(K) (the im2col path: 0.10-0.48).
BOUND = 1 leaves room for random data; a transposed or shifted kernel, a missed tile or a
wrong padding is off by O(1) of max |ref| (test_bound_catches_wrong_kernel)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernels import cpu, reference as ref
from kernels.cpu import conv as cpu_conv, conv_winograd as cw, pool as cpu_pool, runtime, tuning
from kernels.shapes import pool_out
from kernels.cpu.layouts import from_rows, is_nhwc

BOUND = {np.float32: 1.0, np.float64: 1.0}


def tol(dt, k, scale):
    return BOUND[dt] * np.finfo(dt).eps * np.sqrt(k) * scale


def assert_close(got, want, k, what):
    want = np.asarray(want, dtype=np.float64)
    err = np.abs(np.asarray(got, np.float64) - want).max()
    t = tol(got.dtype.type, k, np.abs(want).max())
    assert err <= t, f"{what}: max |err| {err:.3e} > bound {t:.3e} (K = {k})"


def cnhw(a):
    return np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1)


def forward(x, w, b, pad):
    """wino_rows_chunks(contiguous=True) (the training forward: each chunk transposed to
    C-ordered (O, m, OH*OW)) collected into an (N, O, OH, OW) array."""
    n, o = x.shape[0], w.shape[0]
    oh, ow = x.shape[2] + 2 * pad - 2, x.shape[3] + 2 * pad - 2
    y = np.full((o, n, oh * ow), np.nan, dtype=x.dtype)

    def put(z, n0):
        assert z.shape[0] == o and z.shape[2] == oh * ow and z.flags.c_contiguous
        y[:, n0:n0 + z.shape[1]] = z
    cw.wino_rows_chunks(x, w, b, (pad, pad), oh, ow, put, contiguous=True)
    return y.reshape(o, n, oh, ow).swapaxes(0, 1)


# (N, C, O, H, W, pad): odd maps (remainder tiles), pad 0..3, maps of 1x1 to 33 columns
CASES = [(3, 1, 1, 5, 5, 1), (4, 5, 7, 9, 7, 1), (2, 16, 32, 8, 8, 1), (5, 3, 4, 3, 3, 0), (2, 6, 5, 11, 6, 0),
         (3, 33, 9, 6, 5, 2), (2, 16, 48, 4, 4, 3), (7, 12, 24, 8, 8, 0), (2, 8, 16, 33, 32, 1), (1, 4, 3, 1, 2, 1)]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
@pytest.mark.parametrize("case", CASES)
def test_matches_reference(case, layout, dt):
    n, c, o, h, wd, pad = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = rng.standard_normal((n, c, h, wd)).astype(dt)
    w = rng.standard_normal((o, c, 3, 3)).astype(dt)
    b = rng.standard_normal(o).astype(dt)
    xin = cnhw(x) if layout == "cnhw" else x
    y = forward(xin, w, b, pad)
    yr = ref.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 1, pad)
    assert y.dtype == dt and y.shape == yr.shape
    assert_close(y, yr, 9 * c, "forward")
    assert_close(forward(xin, w, None, pad), yr - b[:, None, None], 9 * c, "forward, no bias")
    dy = rng.standard_normal(yr.shape).astype(dt)
    dxr, dwr, dbr = ref.conv2d_backward(dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), 1, pad)
    dx, dw, db = cw.wino_backward(np.ascontiguousarray(dy.swapaxes(0, 1)), xin, w, (pad, pad), True)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (o,)
    assert dx.dtype == dw.dtype == db.dtype == dt
    p = yr.shape[2] * yr.shape[3]
    assert_close(dx, dxr, 9 * o, "dx")
    assert_close(dw, dwr, n * p, "dw")
    assert_close(db, dbr, n * p, "db")
    none, dw2, db2 = cw.wino_backward(np.ascontiguousarray(dy.swapaxes(0, 1)), xin, w, (pad, pad), False)
    assert none is None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


def test_chunks_and_threads(monkeypatch):
    """Many chunks (tiny WINO_CHUNK_ELEMS / WINO_ROWS_CHUNK_ELEMS), a partial last chunk, 2
    threads: the same values; dw of two equal runs bitwise equal (the fixed-order
    reduction)."""
    rng = np.random.default_rng(1)
    x = cnhw(rng.standard_normal((11, 8, 7, 9)).astype(np.float32))
    w = rng.standard_normal((12, 8, 3, 3)).astype(np.float32)
    dy = cnhw(rng.standard_normal((11, 12, 7, 9)).astype(np.float32))
    monkeypatch.setattr(runtime, "GEMM_THREADS", 2)
    monkeypatch.setattr(runtime, "NT", 2)
    monkeypatch.setattr(tuning, "WINO_CHUNK_ELEMS", 1)   # one sample per chunk
    monkeypatch.setattr(tuning, "WINO_ROWS_CHUNK_ELEMS", 1)
    monkeypatch.setattr(tuning, "WINO_MIN_TILES", 1)
    y = forward(x, w, None, 1)
    assert_close(y, ref.conv2d_forward(np.ascontiguousarray(x).astype(np.float64), w.astype(np.float64), None, 1, 1),
                 72, "forward")
    dyc = np.ascontiguousarray(dy.swapaxes(0, 1))
    runs = [cw.wino_backward(dyc, x, w, (1, 1), True) for _ in range(3)]
    for r in runs[1:]:
        for a, e in zip(r, runs[0]):
            np.testing.assert_array_equal(a, e)
    dxr, dwr, _ = ref.conv2d_backward(np.ascontiguousarray(dy).astype(np.float64),
                                      np.ascontiguousarray(x).astype(np.float64), w.astype(np.float64), 1, 1)
    assert_close(runs[0][0], dxr, 9 * 12, "dx")
    assert_close(runs[0][1], dwr, 11 * 63, "dw")


def test_chunk_samples_rule(monkeypatch):
    """Samples per chunk: V and M under the element budget, but at least WINO_MIN_TILES
    tiles, at least one sample, and no more than the threads' share of the batch."""
    monkeypatch.setattr(tuning, "WINO_CHUNK_ELEMS", 1 << 18)
    monkeypatch.setattr(tuning, "WINO_MIN_TILES", 96)
    assert cw.chunk_samples(128, 16, 32, 256, 2) == 1            # 32x32 maps: the budget, 256 tiles
    assert cw.chunk_samples(128, 32, 64, 64, 2) == 2             # budget 2.7 -> 2 (128 tiles)
    assert cw.chunk_samples(128, 128, 256, 16, 2) == 6           # budget 2 (32 tiles): floor 96 / 16
    assert cw.chunk_samples(128, 48, 128, 16, 2) == 6            # budget 5.8 -> 5 (80 tiles): floor
    assert cw.chunk_samples(128, 16, 48, 4, 2) == 64             # budget 64 over the floor's 24
    assert cw.chunk_samples(8, 128, 256, 16, 2) == 4             # the threads' share caps both
    assert cw.chunk_samples(128, 16, 32, 256, 2, elems=1 << 20) == 5
    monkeypatch.setattr(tuning, "WINO_MIN_TILES", 0)
    assert cw.chunk_samples(128, 128, 256, 16, 2) == 2
    assert cw.chunk_samples(128, 1 << 20, 1, 256, 2) == 1       # never below one sample


def test_bound_catches_wrong_kernel():
    """The bound is tight enough to fail a transposed kernel or a one-pixel shift."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    yr = ref.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, 1, 1)
    with pytest.raises(AssertionError):
        assert_close(forward(x, np.ascontiguousarray(w.transpose(0, 1, 3, 2)), None, 1), yr, 72, "transposed")
    with pytest.raises(AssertionError):
        assert_close(np.roll(forward(x, w, None, 1), 1, axis=3), yr, 72, "shifted")


def test_filter_transform_and_adjoint():
    """U = G g G^T and dg = G^T dU G (written out in Numba) equal the matrix products."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 7, 3, 3))
    u = cw.filter_transform(w)
    np.testing.assert_allclose(u, np.einsum("ik,ockl,jl->ijoc", cw.G, w, cw.G).reshape(16, 5, 7), atol=1e-14)
    du = rng.standard_normal((16, 5, 7))
    np.testing.assert_allclose(cw.filter_grad(du), np.einsum("ik,ijoc,jl->ockl", cw.G, du.reshape(4, 4, 5, 7), cw.G),
                               atol=1e-14)


@pytest.mark.parametrize("pool", [None, (2, 2)])
def test_untied_bias_by_winograd_equals_reference(monkeypatch, pool):
    """An untied bias (O, OH, OW) (the MNIST experiments' maxout convs): the fused forward
    adds it before the maxout, the backward's db is dy summed over the samples; the
    Winograd path is taken (counted) and equals the float64 reference within the bound."""
    calls = []
    monkeypatch.setattr(cpu_conv, "wino_rows_chunks",
                        lambda *a, **k: (calls.append("fwd"), cw.wino_rows_chunks(*a, **k)))
    monkeypatch.setattr(cpu_conv, "wino_backward", lambda *a, **k: (calls.append("bwd"), cw.wino_backward(*a, **k))[1])
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 32, 12, 12)).astype(np.float32)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    b = rng.standard_normal((64, 12, 12)).astype(np.float32)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    zr = ref.conv2d_forward(x64, w64, b64, 1, 1)
    y, arg = cpu.conv2d_maxout_forward(x, w, b, 1, 1, 2, pool, pool, True)
    yr, ar = ref.maxout_forward(zr, 2) if pool is None else ref.maxout_pool_forward(zr, 2, pool, pool, True)
    assert_close(y, yr, 9 * 32, "untied forward")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = cpu.conv2d_maxout_backward(dy, arg, x, w, 1, 1, 2, pool, pool, True, True, untied_bias=True)
    dz = ref.maxout_backward(dy.astype(np.float64), ar, 2) if pool is None else \
        ref.maxout_pool_backward(dy.astype(np.float64), ar, zr.shape, 2)
    dxr, dwr, dbr = ref.conv2d_backward(dz, x64, w64, 1, 1)
    assert db.shape == (64, 12, 12)
    assert_close(dx, dxr, 9 * 64, "untied dx")
    assert_close(dw, dwr, 3 * 144, "untied dw")
    np.testing.assert_allclose(db, dz.sum(axis=0), rtol=0, atol=4 * np.finfo(np.float32).eps * np.abs(dz).sum(axis=0).max())
    assert calls == ["fwd", "bwd"]


def test_dispatch_rule(monkeypatch):
    c, o, p = tuning.WINO_MIN_C, tuning.WINO_MIN_O, tuning.WINO_MIN_P
    s = int(np.ceil(np.sqrt(p)))
    assert cw.use_winograd(c, o, 3, 3, (1, 1), s, s)
    assert not cw.use_winograd(c - 1, o, 3, 3, (1, 1), s, s)
    assert not cw.use_winograd(c, o - 1, 3, 3, (1, 1), s, s)
    assert not cw.use_winograd(c, o, 3, 3, (1, 1), 1, p - 1)
    assert not cw.use_winograd(c, o, 3, 3, (2, 2), s, s)
    assert not cw.use_winograd(c, o, 5, 5, (1, 1), s, s)
    assert not cw.use_winograd(c, o, 1, 1, (1, 1), s, s)
    # the training shapes the rule was measured on (tuning.WINO_MIN_C): (C, O, OH, OW, taken)
    for c_, o_, oh, ow, on in [(16, 32, 32, 32, True), (32, 64, 32, 32, True), (80, 160, 16, 16, True),
                               (128, 256, 8, 8, True), (16, 64, 16, 16, True), (32, 96, 8, 8, True),
                               (16, 48, 8, 8, True), (12, 48, 6, 6, True), (3, 64, 32, 32, False)]:
        assert cw.use_winograd(c_, o_, 3, 3, (1, 1), oh, ow) == on, (c_, o_, oh, ow)
    # and conv.py calls it where the rule says, and only there
    calls = []
    monkeypatch.setattr(cpu_conv, "wino_rows_chunks",
                        lambda *a, **k: (calls.append("fwd" if k.get("contiguous") else "rows"),
                                         cw.wino_rows_chunks(*a, **k))[1])
    monkeypatch.setattr(cpu_conv, "wino_backward", lambda *a, **k: (calls.append("bwd"), cw.wino_backward(*a, **k))[1])
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 32, 16, 16)).astype(np.float32)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    y = cpu.conv2d_forward(x, w, b, 1, 1)   # (rows handed to its store: not contiguous)
    cpu.conv2d_maxout_forward(x, w, b, 1, 1, 2)   # (the CNHW reduction: contiguous chunks)
    cpu.conv2d_backward(y, x, w, 1, 1)
    assert calls == ["rows", "fwd", "bwd"]
    calls.clear()
    xs = x[:, :, :8, :8]   # 8x8 maps of 32 (below the forward's former C * min(OH, OW) rule)
    ys = cpu.conv2d_forward(xs, w, b, 1, 1)
    cpu.conv2d_backward(ys, xs, w, 1, 1)
    assert calls == ["rows", "bwd"]
    calls.clear()
    cpu.conv2d_forward(x, w, b, 2, 1)   # stride 2
    cpu.conv2d_maxout_forward(x[:, :c - 1], w[:, :c - 1], b, 1, 1, 2)   # too few input maps
    cpu.conv2d_backward(y, x[:, :c - 1], w[:, :c - 1], 1, 1)
    assert calls == []
    # evaluation (channels_last): the NHWC-rows form, kept as rows, wherever the rule holds
    monkeypatch.setattr(tuning, "WINO_ROWS", False)   # off: the rows GEMM
    cpu.conv2d_maxout_forward(x, w, b, 1, 1, 2, channels_last=True)
    assert calls == []
    monkeypatch.setattr(tuning, "WINO_ROWS", True)
    cpu.conv2d_maxout_forward(x, w, b, 2, 1, 2, channels_last=True)   # stride 2
    cpu.conv2d_maxout_forward(x[:, :c - 1], w[:, :c - 1], b, 1, 1, 2, channels_last=True)   # too few maps
    assert calls == []
    y, a = cpu.conv2d_maxout_forward(xs, w, b, 1, 1, 2, (2, 2), (2, 2), True, channels_last=True)
    assert calls == ["rows"]
    assert is_nhwc(y) and is_nhwc(a)
    zr = ref.conv2d_forward(xs.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 1, 1)
    assert_close(y, ref.maxout_pool_forward(zr, 2, (2, 2), (2, 2), True)[0], 9 * 32, "evaluation forward")


def force(monkeypatch, on):
    for name in ("WINO_MIN_C", "WINO_MIN_O", "WINO_MIN_P"):
        monkeypatch.setattr(tuning, name, 0 if on else 10**9)


def _maxout_arg_value(z, arg, pieces, pool):
    """The pre-maxout value each arg points at: z (N, C*pieces, H, W) float64."""
    n, cp, h, w = z.shape
    c = cp // pieces
    if pool is None:
        g = z.reshape(n, c, pieces, h, w)
        return np.take_along_axis(g, arg[:, :, None].astype(np.intp), axis=2)[:, :, 0]
    g = z.reshape(n, c, pieces * h * w)
    return np.take_along_axis(g, arg.reshape(n, c, -1).astype(np.intp), axis=2).reshape(arg.shape)


@pytest.mark.parametrize("pool", [None, (2, 2), (4, 2)])
@pytest.mark.parametrize("pad", [0, 1])
def test_fused_training_step_equals_im2col(monkeypatch, pool, pad):
    """conv2d_maxout_forward, maxout(_pool)_backward and conv2d_backward, Winograd forced on
    against forced off: y, dx, dw, db within the bound of the reference; the args equal
    except where two candidates tie within the bound."""
    rng = np.random.default_rng(5 + pad)
    n, c, o, h, pieces = 6, 16, 24, 11, 2
    x = cnhw(rng.standard_normal((n, c, h, h)).astype(np.float32))
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    oh = h + 2 * pad - 2
    out = {}
    for on in (False, True):
        force(monkeypatch, on)
        y, arg = cpu.conv2d_maxout_forward(x, w, b, 1, pad, pieces, pool, pool, True)
        g = np.ones_like(y)
        dz = cpu.maxout_backward(g, arg, pieces) if pool is None else \
            cpu.maxout_pool_backward(g, arg, (n, o, oh, oh), pieces)
        out[on] = (y, arg) + cpu.conv2d_backward(dz, x, w, 1, pad)
    z64 = ref.conv2d_forward(np.ascontiguousarray(x).astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                             1, pad)
    t = tol(np.float32, 9 * c, np.abs(z64).max())
    (y0, a0, dx0, dw0, db0), (y1, a1, dx1, dw1, db1) = out[False], out[True]
    assert np.abs(y1.astype(np.float64) - y0).max() <= 2 * t
    differ = a0 != a1
    assert differ.mean() < 0.01
    assert np.all(np.abs(_maxout_arg_value(z64, a0, pieces, pool) - _maxout_arg_value(z64, a1, pieces, pool))[differ]
                  <= 2 * t)
    if not differ.any():   # the same routing: the gradients agree within the bound
        assert_close(dx1, dx0, 9 * o, "dx")
        assert_close(dw1, dw0, n * oh * oh, "dw")
        assert_close(db1, db0, n * oh * oh, "db")


@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_conv2d_forward_layouts(monkeypatch, layout):
    """conv2d_forward through Winograd and through im2col: both within the bound of the
    reference, from NCHW and CNHW inputs."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 16, 10, 9)).astype(np.float32)
    x = cnhw(x) if layout == "cnhw" else x
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    force(monkeypatch, False)
    y0 = cpu.conv2d_forward(x, w, None, 1, 1)
    force(monkeypatch, True)
    y1 = cpu.conv2d_forward(x, w, None, 1, 1)
    yr = ref.conv2d_forward(np.ascontiguousarray(x).astype(np.float64), w.astype(np.float64), None, 1, 1)
    assert_close(y0, yr, 144, "im2col")
    assert_close(y1, yr, 144, "winograd")


@pytest.mark.parametrize("residual", [False, True])
def test_bn_relu_conv_evaluation(monkeypatch, residual):
    """bn_relu_conv2d_forward (evaluation: BN and ReLU folded into the first copy of x, the
    residual added to each chunk's rows) by the NHWC-rows Winograd and, with
    tuning.WINO_ROWS off, by the rows GEMM: both equal the reference composition, NHWC out."""
    rng = np.random.default_rng(7)
    n, c, o, h = 3, 16, 32, 9
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    gamma, beta = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    mean, var = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    res = rng.standard_normal((n, o, h, h)).astype(np.float32) if residual else None
    calls = []
    monkeypatch.setattr(cpu_conv, "wino_rows_chunks",
                        lambda *a, **k: (calls.append(1), cw.wino_rows_chunks(*a, **k))[1])
    a = ref.relu_forward(ref.batch_norm_inference(x.astype(np.float64), gamma.astype(np.float64),
                                                  beta.astype(np.float64), mean.astype(np.float64),
                                                  var.astype(np.float64), 1e-5))
    yr = ref.conv2d_forward(a, w.astype(np.float64), None, 1, 1)
    if residual:
        yr = yr + res
    for on in (True, False):
        monkeypatch.setattr(tuning, "WINO_ROWS", on)
        calls.clear()
        y = cpu.bn_relu_conv2d_forward(x, gamma, beta, mean, var, 1e-5, w, None, 1, 1, res)
        assert calls == ([1] if on else [])
        assert is_nhwc(y)
        assert_close(y, yr, 9 * c, f"bn_relu_conv2d_forward, WINO_ROWS {on}")


def rows_forward(x, w, b, pad, pre=None):
    """wino_rows_chunks' rows -> (N, O, OH, OW) (channels-last), checking the consume contract."""
    n, o = x.shape[0], w.shape[0]
    oh, ow = x.shape[2] + 2 * pad - 2, x.shape[3] + 2 * pad - 2
    yr = np.full((n * oh * ow, o), np.nan, dtype=x.dtype)
    seen = []

    def got(z, n0):   # z (O, m, OH*OW): a view of rows n0*OH*OW.. of yr
        assert z.shape[0] == o and z.shape[2] == oh * ow and np.shares_memory(z, yr)
        np.testing.assert_array_equal(z.reshape(o, -1).T, yr[n0 * oh * ow:(n0 + z.shape[1]) * oh * ow])
        seen.extend(range(n0, n0 + z.shape[1]))
    cw.wino_rows_chunks(x, w, b, (pad, pad), oh, ow, got, pre, rows_out=yr)
    assert sorted(seen) == list(range(n))
    return from_rows(yr, n, oh, ow)


def nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "cnhw", "nhwc"])
@pytest.mark.parametrize("case", CASES)
def test_rows_form_matches_reference(case, layout, dt):
    """wino_rows_chunks' NHWC rows (the form evaluation passes keep) from every input layout,
    with and without a bias, and with BN + ReLU folded into its read: within the bound."""
    n, c, o, h, wd, pad = case
    rng = np.random.default_rng(hash(case) % 2**32 + 1)
    x = rng.standard_normal((n, c, h, wd)).astype(dt)
    w = rng.standard_normal((o, c, 3, 3)).astype(dt)
    b = rng.standard_normal(o).astype(dt)
    xin = {"nchw": x, "cnhw": cnhw(x), "nhwc": nhwc(x)}[layout]
    yr = ref.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 1, pad)
    y = rows_forward(xin, w, b, pad)
    assert y.dtype == dt and y.shape == yr.shape
    assert_close(y, yr, 9 * c, "rows forward")
    assert_close(rows_forward(xin, w, None, pad), yr - b[:, None, None], 9 * c, "rows forward, no bias")
    scale, shift = rng.uniform(0.5, 2, c).astype(dt), rng.standard_normal(c).astype(dt)
    a = np.maximum(x.astype(np.float64) * scale[:, None, None] + shift[:, None, None], 0)
    assert_close(rows_forward(xin, w, b, pad, (True, scale, shift)),
                 ref.conv2d_forward(a, w.astype(np.float64), b.astype(np.float64), 1, pad), 9 * c, "rows, pre")


def test_rows_form_chunks_threads_and_wrong_kernel(monkeypatch):
    """One sample per chunk over 2 threads (the zero border of each worker's scratch reused
    across chunks, a partial last chunk): within the bound; and the bound fails a
    transposed kernel and a one-pixel shift of this form's output."""
    rng = np.random.default_rng(8)
    x = nhwc(rng.standard_normal((11, 16, 7, 9)).astype(np.float32))
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    yr = ref.conv2d_forward(np.ascontiguousarray(x).astype(np.float64), w.astype(np.float64), None, 1, 1)
    monkeypatch.setattr(runtime, "GEMM_THREADS", 2)
    monkeypatch.setattr(runtime, "NT", 2)
    monkeypatch.setattr(tuning, "WINO_ROWS_CHUNK_ELEMS", 1)
    monkeypatch.setattr(tuning, "WINO_MIN_TILES", 1)
    assert_close(rows_forward(x, w, None, 1), yr, 144, "one sample per chunk")
    with pytest.raises(AssertionError):
        assert_close(rows_forward(x, np.ascontiguousarray(w.transpose(0, 1, 3, 2)), None, 1), yr, 144, "transposed")
    with pytest.raises(AssertionError):
        assert_close(np.roll(rows_forward(x, w, None, 1), 1, axis=3), yr, 144, "shifted")


@st.composite
def maxout_case(draw):
    pool = draw(st.sampled_from([None, (2, 2), (3, 2), (4, 2), (8, 1)]))
    return dict(n=draw(st.integers(1, 5)), c=draw(st.integers(1, 6)), units=draw(st.integers(1, 4)),
                pieces=draw(st.integers(1, 4)), h=draw(st.integers(1, 9)), w=draw(st.integers(1, 9)),
                pad=draw(st.integers(0, 2)), pool=pool, bias=draw(st.sampled_from([None, "tied", "untied"])),
                layout=draw(st.sampled_from(["nchw", "cnhw", "nhwc"])), seed=draw(st.integers(0, 2**16)))


def _maxout_rows_composition(x, w, b, pad, pieces, pool, ps):
    """The unfused evaluation path: wino_rows_chunks' rows (maps piece-major), the bias
    added, then pool.mo_rows_k -> (y, arg) as NHWC rows."""
    n, o = x.shape[0], w.shape[0]
    cy = o // pieces
    oh, ow = x.shape[2] + 2 * pad - 2, x.shape[3] + 2 * pad - 2
    perm = np.arange(o).reshape(cy, pieces).T.reshape(-1)
    rows = np.empty((n * oh * ow, o), x.dtype)
    cw.wino_rows_chunks(x, w[perm], None, (pad, pad), oh, ow, lambda z, n0: None, rows_out=rows)
    if b is not None:
        bp = b[perm]
        rows.reshape(n, oh * ow, o)[:] += bp.reshape(o, -1).T if b.ndim == 3 else bp
    kh, kw, sh, sw = (1, 1, 1, 1) if pool is None else pool + ps
    yh, yw = (oh, ow) if pool is None else pool_out("test", oh, ow, kh, kw, sh, sw, True)
    y = np.empty((n * yh * yw, cy), x.dtype)
    arg = np.empty((n * yh * yw, cy), np.uint8 if pool is None else np.int32)
    cpu_pool.mo_rows_k(rows, pieces, oh, ow, kh, kw, sh, sw, yh, yw, pool is not None, 0, y, arg)
    return from_rows(y, n, yh, yw), from_rows(arg, n, yh, yw)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@settings(max_examples=40, deadline=None)
@given(k=maxout_case(), threads=st.sampled_from([1, 2]), small_chunks=st.booleans())
def test_maxout_by_output_transform(dt, k, threads, small_chunks):
    """Evaluation-mode conv2d_maxout_forward by Winograd reduces each position's pieces in
    the output transform (output_transform_maxout_k: the conv output never stored): bitwise
    the rows then pool.mo_rows_k (continuous data), and with small-integer data (every sum
    exact, ties everywhere) the reference's values and args exactly; every layout, odd maps
    (remainder tiles), pool or none, no / tied / untied bias, 1-2 threads, many chunks."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tuning, "WINO_MIN_C", 1)
        mp.setattr(tuning, "WINO_MIN_O", 1)
        mp.setattr(tuning, "WINO_MIN_P", 1)
        mp.setattr(tuning, "SMALL_FWD_MIN_GROWTH", float("inf"))   # (small maps, wide padding)
        mp.setattr(runtime, "GEMM_THREADS", threads)
        mp.setattr(runtime, "NT", threads)
        if small_chunks:
            mp.setattr(tuning, "WINO_ROWS_CHUNK_ELEMS", 1)
            mp.setattr(tuning, "WINO_MIN_TILES", 1)
        _check_maxout_by_output_transform(dt, k)


def _check_maxout_by_output_transform(dt, k):
    n, c, o, pad, pieces, pool = k["n"], k["c"], k["units"] * k["pieces"], k["pad"], k["pieces"], k["pool"]
    h, wd = k["h"] + 2, k["w"] + 2   # (a 3x3 kernel with no padding needs 3 rows)
    oh, ow = h + 2 * pad - 2, wd + 2 * pad - 2
    ps = None if pool is None else (pool[1],) * 2
    assert cw.use_winograd_rows(c, o, 3, 3, (1, 1), oh, ow)
    rng = np.random.default_rng(k["seed"])
    for data in ("continuous", "integer"):
        draw = (lambda sh: rng.standard_normal(sh)) if data == "continuous" else (lambda sh: rng.integers(-2, 3, sh))
        x, w = draw((n, c, h, wd)).astype(dt), draw((o, c, 3, 3)).astype(dt)
        b = None if k["bias"] is None else draw((o,) if k["bias"] == "tied" else (o, oh, ow)).astype(dt)
        xin = {"nchw": x, "cnhw": cnhw(x), "nhwc": nhwc(x)}[k["layout"]]
        y, a = cpu.conv2d_maxout_forward(xin, w, b, 1, pad, pieces, pool, ps, True, channels_last=True)
        assert y.dtype == dt and a.dtype == (np.uint8 if pool is None else np.int32)
        if data == "continuous":
            yc, ac = _maxout_rows_composition(xin, w, b, pad, pieces, pool, ps)
            np.testing.assert_array_equal(y, yc)
            np.testing.assert_array_equal(a, ac)
        else:
            zr = ref.conv2d_forward(x, w, b, 1, pad)
            yr, ar = ref.maxout_forward(zr, pieces) if pool is None else ref.maxout_pool_forward(zr, pieces, pool,
                                                                                                ps, True)
            np.testing.assert_array_equal(y, yr)
            np.testing.assert_array_equal(a, ar)
