"""Every op's backward against central finite differences in float64, on hypothesis-drawn
shapes. check_grad compares directional derivatives along random directions; its
tolerance (rtol 1e-5) is far below the O(1) error a transposed or shifted gradient makes
(see test_check_grad_catches_wrong_gradients)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minifit.functional as F
from minifit import Tensor
from minifit.gradcheck import check_grad, leaf

seeds = st.integers(0, 2**16)


def randn(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def distinct(seed, *shape):
    """Values with well-separated entries, so max ops have no near-ties that finite
    differences would straddle."""
    r = np.random.default_rng(seed)
    return (r.permutation(int(np.prod(shape))).reshape(shape) * 0.1 + r.uniform(0, 0.01, shape))


@given(n=st.integers(1, 3), c=st.integers(1, 3), o=st.integers(1, 4), k=st.integers(1, 4),
       stride=st.integers(1, 3), pad=st.integers(0, 2), extra=st.integers(0, 4),
       bias=st.sampled_from([None, "tied", "untied"]), seed=seeds)
def test_conv2d(n, c, o, k, stride, pad, extra, bias, seed):
    h, w = k + extra, k + (extra + 1) % 5
    x, wt = leaf(randn(seed, n, c, h, w)), leaf(randn(seed + 1, o, c, k, k))
    out_hw = F.conv2d(x, wt, None, stride, pad).shape[2:]
    b = None if bias is None else leaf(randn(seed + 2, o, *(out_hw if bias == "untied" else ())))
    ins = [x, wt] + ([b] if bias else [])
    check_grad(lambda *a: F.conv2d(a[0], a[1], a[2] if bias else None, stride, pad) * leaf(
        randn(seed + 3, *F.conv2d(x, wt, b, stride, pad).shape), False), ins)


@given(n=st.integers(1, 3), c=st.integers(1, 3), units=st.integers(1, 3), pieces=st.integers(1, 3),
       k=st.integers(1, 3), pad=st.integers(0, 2), pool=st.sampled_from([None, (2, 2), (3, 2)]),
       bias=st.sampled_from([None, "tied", "untied"]), seed=seeds)
def test_maxout_conv2d(n, c, units, pieces, k, pad, pool, bias, seed):
    """The fused conv + maxout (+ pool) op, tied and untied biases (one per map and detector
    position, shape (units * pieces, OH, OW)): the gradient of the bias must land on the
    position whose piece won, so a tied-style sum over positions fails here."""
    x, wt = leaf(distinct(seed, n, c, 5, 6)), leaf(randn(seed + 1, units * pieces, c, k, k) * 0.3)
    out_hw = F.conv2d(x, wt, None, 1, pad).shape[2:]
    b = None if bias is None else leaf(distinct(seed + 2, units * pieces, *(out_hw if bias == "untied" else ())))
    ins = [x, wt] + ([b] if b is not None else [])

    def f(*a):
        return F.maxout_conv2d(a[0], a[1], a[2] if b is not None else None, pieces, 1, pad,
                               None if pool is None else pool[0], None if pool is None else pool[1])
    wgt = leaf(randn(seed + 3, *f(*ins).shape), False)
    check_grad(lambda *a: f(*a) * wgt, ins)
    if b is not None:   # and the value: the composition of the reference's definitions
        z = F.conv2d(x, wt, b, 1, pad)
        want = F.maxout(z, pieces) if pool is None else F.maxout_pool2d(z, pieces, pool[0], pool[1])
        np.testing.assert_allclose(f(*ins).data, want.data, rtol=1e-12, atol=1e-12)


def test_conv2d_rectangular_stride_and_padding():
    x, w = leaf(randn(0, 2, 2, 7, 6)), leaf(randn(1, 3, 2, 3, 2))
    check_grad(lambda x, w: F.conv2d(x, w, None, (2, 1), (1, 0)) ** 1 if False else
               F.conv2d(x, w, None, (2, 1), (1, 0)) * F.conv2d(x, w, None, (2, 1), (1, 0)), [x, w])


@given(n=st.integers(1, 3), units=st.integers(1, 4), pieces=st.integers(1, 5), spatial=st.booleans(),
       seed=seeds)
def test_maxout(n, units, pieces, spatial, seed):
    shape = (n, units * pieces, 3, 2) if spatial else (n, units * pieces)
    x = leaf(distinct(seed, *shape))
    wgt = leaf(randn(seed + 1, *((n, units, 3, 2) if spatial else (n, units))), False)
    check_grad(lambda x: F.maxout(x, pieces) * wgt, [x])


pool_cases = st.tuples(st.integers(1, 4), st.integers(1, 3)).filter(lambda ks: True)


@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       ks=pool_cases, ceil=st.booleans(), seed=seeds)
def test_max_pool2d(n, c, h, w, ks, ceil, seed):
    k, s = ks
    if not ceil and (h < k or w < k):
        return
    x = leaf(distinct(seed, n, c, h, w))
    out_shape = F.max_pool2d(x, k, s, ceil).shape
    wgt = leaf(randn(seed + 1, *out_shape), False)
    check_grad(lambda x: F.max_pool2d(x, k, s, ceil) * wgt, [x])


@given(n=st.integers(1, 2), units=st.integers(1, 3), pieces=st.integers(1, 4), h=st.integers(2, 9),
       k=st.integers(2, 4), s=st.integers(1, 2), ceil=st.booleans(), seed=seeds)
def test_maxout_pool2d_equals_maxout_then_pool(n, units, pieces, h, k, s, ceil, seed):
    if h < k and not ceil:
        return
    x = leaf(distinct(seed, n, units * pieces, h, h + 1))
    fused = F.maxout_pool2d(x, pieces, k, s, ceil)
    np.testing.assert_array_equal(fused.data, F.max_pool2d(F.maxout(x, pieces), k, s, ceil).data)
    wgt = leaf(randn(seed + 1, *fused.shape), False)
    check_grad(lambda x: F.maxout_pool2d(x, pieces, k, s, ceil) * wgt, [x])


def test_global_avg_pool2d():
    x = leaf(randn(0, 2, 3, 4, 5))
    check_grad(lambda x: F.global_avg_pool2d(x) * leaf(randn(1, 2, 3), False), [x])
    np.testing.assert_allclose(F.global_avg_pool2d(x).data, x.data.mean(axis=(2, 3)))


@given(n=st.integers(1, 5), fin=st.integers(1, 6), fout=st.integers(1, 6), bias=st.booleans(), seed=seeds)
def test_linear(n, fin, fout, bias, seed):
    x, w = leaf(randn(seed, n, fin)), leaf(randn(seed + 1, fout, fin))
    b = leaf(randn(seed + 2, fout)) if bias else None
    wgt = leaf(randn(seed + 3, n, fout), False)
    check_grad(lambda *a: F.linear(a[0], a[1], a[2] if bias else None) * wgt, [x, w] + ([b] if bias else []))


def test_relu_and_abs():
    x = leaf(distinct(0, 3, 4) - 0.6)
    check_grad(lambda x: F.relu(x) * leaf(randn(1, 3, 4), False), [x])
    check_grad(lambda x: F.abs(x) * leaf(randn(2, 3, 4), False), [x])


def test_dropout_gradient_uses_the_same_mask():
    x = leaf(randn(0, 4, 5))
    wgt = leaf(randn(1, 4, 5), False)
    check_grad(lambda x: F.dropout(x, 0.3, True, rng=7) * wgt, [x])
    assert F.dropout(x, 0.3, training=False) is x


@given(n=st.integers(2, 4), c=st.integers(1, 3), spatial=st.booleans(), training=st.booleans(), seed=seeds)
def test_batch_norm(n, c, spatial, training, seed):
    shape = (n, c, 3, 2) if spatial else (n, c)
    x, g, b = leaf(randn(seed, *shape)), leaf(randn(seed + 1, c)), leaf(randn(seed + 2, c))
    rm, rv = np.zeros(c), np.ones(c) * 1.5
    wgt = leaf(randn(seed + 3, *shape), False)
    # running stats are updated in place during training; pass copies per call
    check_grad(lambda x, g, b: F.batch_norm(x, g, b, rm.copy(), rv.copy(), training) * wgt, [x, g, b])


@given(n=st.integers(1, 3), c=st.integers(1, 3), o=st.integers(1, 4), k=st.sampled_from([1, 3]),
       stride=st.integers(1, 2), bias=st.booleans(), residual=st.booleans(), seed=seeds)
def test_bn_relu_conv2d(n, c, o, k, stride, bias, residual, seed):
    """The fused evaluation-mode BN-ReLU-conv (+ residual): finite differences, and the values
    and gradients of the composition conv2d(relu(batch_norm(training=False))) (+ residual)."""
    x, wt = leaf(randn(seed, n, c, 5, 4)), leaf(randn(seed + 1, o, c, k, k))
    g, b = leaf(randn(seed + 2, c)), leaf(randn(seed + 3, c))
    bias_ = leaf(randn(seed + 4, o)) if bias else None
    rm, rv = randn(seed + 5, c), np.abs(randn(seed + 6, c)) + 0.5
    pad = k // 2
    shape = F.bn_relu_conv2d(x, g, b, rm, rv, wt, bias_, stride, pad).shape
    res = leaf(randn(seed + 8, *shape)) if residual else None
    ins = [x, g, b, wt] + ([bias_] if bias else []) + ([res] if residual else [])
    wgt = leaf(randn(seed + 7, *shape), False)

    def fused(x, g, b, wt, *rest):
        rest = list(rest)
        bb = rest.pop(0) if bias else None
        return F.bn_relu_conv2d(x, g, b, rm, rv, wt, bb, stride, pad, residual=rest[0] if residual else None)
    check_grad(lambda *a: fused(*a) * wgt, ins)
    out = []
    for fuse in (True, False):
        for t in ins:
            t.grad = None
        if fuse:
            y = fused(*ins)
        else:
            y = F.conv2d(F.relu(F.batch_norm(x, g, b, rm, rv, training=False)), wt, bias_, stride, pad)
            y = F.add(y, res) if residual else y
        (y * wgt).sum().backward()
        out.append([y.numpy()] + [t.grad for t in ins])
    for a, e in zip(*out):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


@given(n=st.integers(2, 4), c=st.integers(1, 3), spatial=st.booleans(), training=st.booleans(), seed=seeds)
def test_batch_norm_relu(n, c, spatial, training, seed):
    """The fused relu(batch_norm): finite differences, and the composition's values,
    gradients and running statistics."""
    shape = (n, c, 3, 2) if spatial else (n, c)
    x, g, b = leaf(randn(seed, *shape)), leaf(randn(seed + 1, c)), leaf(randn(seed + 2, c))
    rm, rv = randn(seed + 3, c), np.abs(randn(seed + 4, c)) + 0.5
    wgt = leaf(randn(seed + 5, *shape), False)
    check_grad(lambda x, g, b: F.batch_norm_relu(x, g, b, rm.copy(), rv.copy(), training) * wgt, [x, g, b])
    out = []
    for fused in (True, False):
        for t in (x, g, b):
            t.grad = None
        r1, r2 = rm.copy(), rv.copy()
        y = (F.batch_norm_relu(x, g, b, r1, r2, training) if fused
             else F.relu(F.batch_norm(x, g, b, r1, r2, training)))
        (y * wgt).sum().backward()
        out.append([y.numpy(), x.grad, g.grad, b.grad, r1, r2])
    for a, e in zip(*out):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


@given(n=st.integers(2, 4), c=st.integers(1, 3), spatial=st.booleans(), training=st.booleans(),
       p=st.sampled_from([0.0, 0.3, 0.5]), seed=seeds)
def test_batch_norm_relu_dropout(n, c, spatial, training, p, seed):
    """relu(batch_norm) with dropout fused (a wide block's BN, ReLU, dropout): finite
    differences with the mask held fixed (one seed per evaluation), and bitwise the
    composition's values, gradients and running statistics (the same mask, drawn from the
    same generator)."""
    shape = (n, c, 3, 2) if spatial else (n, c)
    x, g, b = leaf(randn(seed, *shape)), leaf(randn(seed + 1, c)), leaf(randn(seed + 2, c))
    rm, rv = randn(seed + 3, c), np.abs(randn(seed + 4, c)) + 0.5
    wgt = leaf(randn(seed + 5, *shape), False)
    check_grad(lambda x, g, b: F.batch_norm_relu(x, g, b, rm.copy(), rv.copy(), training, dropout=p,
                                                 rng=seed) * wgt, [x, g, b])
    out = []
    for fused in (True, False):
        for t in (x, g, b):
            t.grad = None
        r1, r2 = rm.copy(), rv.copy()
        gen = np.random.default_rng(seed)
        y = (F.batch_norm_relu(x, g, b, r1, r2, training, dropout=p, rng=gen) if fused
             else F.dropout(F.batch_norm_relu(x, g, b, r1, r2, training), p, training, rng=gen))
        (y * wgt).sum().backward()
        out.append([y.numpy(), x.grad, g.grad, b.grad, r1, r2, gen.random()])
    for a, e in zip(*out):
        np.testing.assert_array_equal(a, e)


def test_batch_norm_relu_dropout_checks():
    x = leaf(randn(0, 4, 2))
    with pytest.raises(ValueError, match="dropout must be in"):
        F.batch_norm_relu(x, leaf(np.ones(2)), leaf(np.zeros(2)), dropout=1.0)


def test_batch_norm_statistics_and_running_update():
    x = leaf(randn(0, 8, 3, 4, 4) * 3 + 1)
    rm, rv = np.zeros(3), np.ones(3)
    y = F.batch_norm(x, leaf(np.ones(3)), leaf(np.zeros(3)), rm, rv, True, momentum=0.5)
    np.testing.assert_allclose(y.data.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.data.var(axis=(0, 2, 3)), 1, atol=1e-4)
    np.testing.assert_allclose(rm, 0.5 * x.data.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(rv, 0.5 + 0.5 * x.data.var(axis=(0, 2, 3), ddof=1))


@given(n=st.integers(1, 5), c=st.integers(2, 8), axis=st.sampled_from([0, 1, -1]), seed=seeds)
def test_softmax_family(n, c, axis, seed):
    x = leaf(randn(seed, n, c) * 3)
    wgt = leaf(randn(seed + 1, n, c), False)
    check_grad(lambda x: F.softmax(x, axis) * wgt, [x])
    check_grad(lambda x: F.log_softmax(x, axis) * wgt, [x])
    np.testing.assert_allclose(F.softmax(x, axis).data.sum(axis=axis), 1.0)


@given(n=st.integers(1, 6), c=st.integers(2, 10), scale=st.sampled_from([1.0, 30.0, 1000.0]), seed=seeds)
def test_cross_entropy(n, c, scale, seed):
    x = leaf(randn(seed, n, c) * scale)
    labels = np.random.default_rng(seed).integers(0, c, n)
    check_grad(lambda x: F.cross_entropy(x, labels), [x])
    logp = x.data - x.data.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    np.testing.assert_allclose(F.cross_entropy(x, labels).item(), -logp[np.arange(n), labels].mean())


@given(seed=seeds)
def test_arithmetic_reductions_and_shapes(seed):
    a, b = leaf(randn(seed, 2, 3, 4)), leaf(randn(seed + 1, 3, 1) + 3.0)
    c = leaf(randn(seed + 2, 4, 5))
    check_grad(lambda a, b: F.add(a, b) * F.sub(a, b) * F.div(a, b), [a, b])
    check_grad(lambda a: F.sum(a * a, axis=1) + F.mean(a, axis=(0, 2)).sum(), [a])
    check_grad(lambda a, c: F.matmul(F.reshape(a, (6, 4)), c) * F.matmul(F.reshape(a, (6, 4)), c), [a, c])
    check_grad(lambda a: F.concatenate([a, a * a], axis=1) * leaf(randn(seed, 2, 6, 4), False), [a])
    check_grad(lambda a: F.getitem(a, (slice(None), [0, 0, 2])) * 1.5 + F.flatten(a).sum(), [a])


def test_check_grad_catches_wrong_gradients():
    """The checker must fail on a transposed weight gradient and on an off-by-one shift."""
    x, w = leaf(randn(0, 3, 3)), leaf(randn(1, 3, 3))

    def transposed(x, w):
        out = F.matmul(x, w)
        out._backward = lambda g: (g @ w.data.T, (x.data.T @ g).T)
        return out * out

    def shifted(x):
        out = F.relu(x + 10.0)
        out._backward = lambda g: (np.roll(g, 1, axis=1),)
        return out * leaf(randn(2, 3, 3), False)

    with pytest.raises(AssertionError, match="gradient of input"):
        check_grad(transposed, [x, w])
    with pytest.raises(AssertionError, match="gradient of input"):
        check_grad(shifted, [x])


def test_float32_ops_stay_float32():
    x = Tensor(np.ones((2, 1, 5, 5), np.float32), requires_grad=True)
    w = Tensor(np.ones((4, 1, 3, 3), np.float32), requires_grad=True)
    y = F.maxout_pool2d(F.conv2d(x, w), 2, 2, 2, True)
    loss = F.cross_entropy(F.flatten(y), np.array([0, 1]))
    assert y.dtype == np.float32 and loss.dtype == np.float32
    loss.backward()
    assert w.grad.dtype == np.float32 and x.grad.dtype == np.float32
