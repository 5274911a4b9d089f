"""The NumPy reference against independent ground truth (direct loops, finite
differences, hand-computed cases, adjointness)."""
import numpy as np
import pytest

from kernels import reference as ref
from kernels.shapes import pool_output_size, conv_output_size


def direct_conv(x, w, b, s, p):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    oh, ow = conv_output_size(h, kh, s[0], p[0]), conv_output_size(wd, kw, s[1], p[1])
    y = np.zeros((n, o, oh, ow))
    for i in range(n):
        for j in range(o):
            for a in range(oh):
                for bb in range(ow):
                    acc = 0.0 if b is None else b[j]
                    for ci in range(c):
                        for u in range(kh):
                            for v in range(kw):
                                acc += xp[i, ci, a * s[0] + u, bb * s[1] + v] * w[j, ci, u, v]
                    y[i, j, a, bb] = acc
    return y


@pytest.mark.parametrize("s,p", [((1, 1), (0, 0)), ((2, 1), (1, 2)), ((3, 2), (2, 1))])
def test_conv_reference_vs_direct_loops(s, p):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    np.testing.assert_allclose(ref.conv2d_forward(x, w, b, s, p), direct_conv(x, w, b, s, p), atol=1e-12)
    y32 = ref.conv2d_forward(x.astype(np.float32), w.astype(np.float32), None, s, p)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, direct_conv(x, w, None, s, p), atol=1e-4)


def test_conv_backward_reference_vs_finite_differences():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((3, 2, 3, 2))
    s, p = (2, 1), (1, 1)
    dy = rng.standard_normal(ref.conv2d_forward(x, w, None, s, p).shape)
    dx, dw, db = ref.conv2d_backward(dy, x, w, s, p, True)
    loss = lambda x_, w_: float((ref.conv2d_forward(x_, w_, None, s, p) * dy).sum())
    eps = 1e-6
    for arr, grad, fx in ((x, dx, lambda t: loss(t, w)), (w, dw, lambda t: loss(x, t))):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            a, b = arr.copy(), arr.copy()
            a[i] += eps
            b[i] -= eps
            num[i] = (fx(a) - fx(b)) / (2 * eps)
        np.testing.assert_allclose(grad, num, atol=1e-7)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)))


def test_im2col_col2im_adjoint():
    rng = np.random.default_rng(2)
    for k, s, p in (((3, 3), (1, 1), (1, 1)), ((2, 4), (3, 2), (2, 0))):
        x = rng.standard_normal((2, 3, 8, 7))
        cols = ref.im2col(x, k, s, p)
        c = rng.standard_normal(cols.shape)
        assert np.isclose((ref.col2im(c, x.shape, k, s, p) * x).sum(), (c * cols).sum())


@pytest.mark.parametrize("size,k,s,ceil,want", [
    (24, 4, 2, True, 11), (24, 4, 2, False, 11),   # mnist-fitnet h1 input 22 -> 10 below
    (21, 4, 2, True, 10), (21, 4, 2, False, 9),    # mnist-teacher layer 1 (28 - 8 + 1 = 21)
    (9, 4, 2, True, 4), (9, 4, 2, False, 3),       # mnist-teacher layer 2
    (22, 4, 2, True, 10), (10, 4, 2, True, 4),     # mnist-fitnet h1, h3
    (6, 2, 2, True, 3), (8, 8, 1, True, 1),        # 2x2 pool, CIFAR global 8/1
    (5, 3, 3, True, 2), (5, 3, 3, False, 1),
    (3, 2, 3, True, 1),                            # a window never starts past the input
    (3, 5, 2, True, 1),                            # window larger than the input: global
])
def test_pool_output_sizes(size, k, s, ceil, want):
    assert pool_output_size(size, k, s, ceil) == want


def test_pool_floor_window_too_large():
    with pytest.raises(ValueError):
        pool_output_size(3, 5, 2, False)


def test_maxpool_hand_case_clipped_windows_and_ties():
    x = np.array([[1, 5, 2, 0, 9],
                  [3, 5, 7, 1, 1],
                  [0, 2, 2, 8, 4]], dtype=np.float64)[None, None]
    y, a = ref.maxpool2d_forward(x, 2, 2, True)   # windows rows 0-1, 2; cols 0-1, 2-3, 4
    np.testing.assert_array_equal(y[0, 0], [[5, 7, 9], [2, 8, 4]])
    np.testing.assert_array_equal(a[0, 0], [[1, 7, 4], [11, 13, 14]])  # tie 5/5 -> first
    yf, _ = ref.maxpool2d_forward(x, 2, 2, False)
    np.testing.assert_array_equal(yf[0, 0], [[5, 7]])
    dx = ref.maxpool2d_backward(np.ones_like(y), a, x.shape)
    assert dx.sum() == y.size and dx[0, 0, 0, 1] == 1 and dx[0, 0, 1, 1] == 0
    # overlapping windows sharing a winner accumulate
    y2, a2 = ref.maxpool2d_forward(x, 2, 1, True)
    dx2 = ref.maxpool2d_backward(np.ones_like(y2), a2, x.shape)
    assert dx2[0, 0, 2, 3] == 2  # the 8 wins both lower windows that contain it


def test_maxout_hand_case():
    x = np.array([[1, 3, 3, 0, -1, -2]], dtype=np.float32)  # groups (1,3,3), (0,-1,-2)
    y, a = ref.maxout_forward(x, 3)
    np.testing.assert_array_equal(y, [[3, 0]])
    np.testing.assert_array_equal(a, [[1, 0]])   # tie 3/3 -> first
    assert a.dtype == np.uint8 and y.dtype == np.float32
    np.testing.assert_array_equal(ref.maxout_backward(np.array([[2, 5]], np.float32), a, 3),
                                  [[0, 2, 0, 5, 0, 0]])


def test_maxout_pool_arg_encoding():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 4, 5, 5))
    y, a = ref.maxout_pool_forward(x, 2, 2, 2, True)
    g = x.reshape(1, 2, 2 * 5 * 5)
    np.testing.assert_array_equal(np.take_along_axis(g, a.reshape(1, 2, -1).astype(int), 2).reshape(y.shape), y)


def test_batch_norm_reference():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 2, 2)) * 3 + 1
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    y, mean, inv = ref.batch_norm_forward(x, gamma, beta, 1e-5)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(inv, 1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5))
    z = (y - beta[None, :, None, None]) / gamma[None, :, None, None]
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    dy = rng.standard_normal(x.shape)
    dx, dg, dbt = ref.batch_norm_backward(dy, x, gamma, mean, inv)
    f = lambda t: float((ref.batch_norm_forward(t, gamma, beta, 1e-5)[0] * dy).sum())
    eps = 1e-6
    for i in [(0, 0, 0, 0), (1, 2, 1, 0), (3, 1, 1, 1)]:
        a, b = x.copy(), x.copy()
        a[i] += eps
        b[i] -= eps
        assert np.isclose(dx[i], (f(a) - f(b)) / (2 * eps), atol=1e-6)
    np.testing.assert_allclose(dbt, dy.sum(axis=(0, 2, 3)))
    y_inf = ref.batch_norm_inference(x, gamma, beta, mean, 1 / inv**2 - 1e-5, 1e-5)
    np.testing.assert_allclose(y_inf, y, atol=1e-10)


def test_gap_relu_dropout_reference():
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(ref.global_avg_pool_forward(x), [[5.5, 17.5]])
    dx = ref.global_avg_pool_backward(np.array([[12.0, 24.0]], np.float32), x.shape)
    assert dx.dtype == np.float32 and (dx[0, 0] == 1).all() and (dx[0, 1] == 2).all()
    np.testing.assert_array_equal(ref.relu_backward(np.ones(3), np.array([-1.0, 0.0, 2.0])), [0, 0, 1])
    m = ref.dropout_mask((200, 100), 0.25, 11, np.float32)
    assert m.dtype == np.float32 and set(np.unique(m)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((m == 0).mean() - 0.25) < 0.02
    np.testing.assert_array_equal(m, ref.dropout_mask((200, 100), 0.25, 11, np.float32))
    assert not np.array_equal(m, ref.dropout_mask((200, 100), 0.25, 12, np.float32))
    assert (ref.dropout_mask((3, 3), 0.0, 1, np.float64) == 1).all()
    g = np.random.default_rng(0)
    m1, m2 = ref.dropout_mask((50,), 0.5, g, np.float64), ref.dropout_mask((50,), 0.5, g, np.float64)
    assert not np.array_equal(m1, m2)  # a Generator advances
