"""minifit.data.preprocess: pylearn2-exact GCN, ZCA whitening, standardisation, streamed
fitting, serialisation, and the random augmentations."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minifit.data import GCN, ZCA, Pipeline, RandomFlip, RandomTranslate, Scale01, Standardize


def pylearn2_gcn(X, scale=1.0, subtract_mean=True, use_std=False, sqrt_bias=0.0, min_divisor=1e-8):
    """pylearn2.expr.preprocessing.global_contrast_normalize, restated for the test."""
    mean = X.mean(axis=1)
    X = X - mean[:, None] if subtract_mean else X.copy()
    if use_std:
        ddof = 1 if X.shape[1] > 1 else 0
        normalizers = np.sqrt(sqrt_bias + X.var(axis=1, ddof=ddof)) / scale
    else:
        normalizers = np.sqrt(sqrt_bias + (X ** 2).sum(axis=1)) / scale
    normalizers[normalizers < min_divisor] = 1.0
    return X / normalizers[:, None]


@given(arrays(np.uint8, (5, 3, 4, 4)), st.booleans(), st.sampled_from([0.0, 10.0]))
def test_gcn_matches_pylearn2(x, use_std, sqrt_bias):
    got = GCN(scale=55.0, use_std=use_std, sqrt_bias=sqrt_bias)(x.astype(np.float64))
    want = pylearn2_gcn(x.reshape(5, -1).astype(np.float64), 55.0, use_std=use_std, sqrt_bias=sqrt_bias)
    np.testing.assert_allclose(got.reshape(5, -1), want, rtol=1e-12, atol=1e-12)


def test_gcn_scale_55_norms_and_constant_images():
    x = np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8)).astype(np.float32)
    x[0] = 7.0  # constant: divisor 0 < min_divisor -> replaced by 1, giving zeros, not NaN
    y = GCN()(x)
    assert y.dtype == np.float32
    norms = np.sqrt((y.reshape(4, -1).astype(np.float64) ** 2).sum(1))
    np.testing.assert_allclose(norms[1:], 55.0, rtol=1e-5)
    assert (y[0] == 0).all()


def _correlated(n, rng, shape=(3, 4, 4)):
    d = int(np.prod(shape))
    mix = rng.normal(size=(d, d))
    x = rng.normal(size=(n, d)) @ mix + 100
    return np.clip(x, 0, 255).astype(np.uint8).reshape(n, *shape)


def test_zca_whitens_training_covariance():
    rng = np.random.default_rng(1)
    x = _correlated(4000, rng)
    pipe = Pipeline(ZCA(filter_bias=1e-6)).fit(x, chunk=700)
    y = pipe(x, dtype=np.float64).reshape(len(x), -1)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-4)  # mean, P kept in float32
    cov = np.cov(y, rowvar=False, bias=True)
    np.testing.assert_allclose(cov, np.eye(cov.shape[0]), atol=1e-3)
    # pylearn2's default bias 0.1 shrinks small components: covariance eigenvalues e/(e+0.1) < 1
    y = Pipeline(ZCA()).fit(x)(x, dtype=np.float64).reshape(len(x), -1)
    assert np.linalg.eigvalsh(np.cov(y, rowvar=False, bias=True)).max() < 1


def test_zca_is_symmetric_and_matches_direct_formula():
    rng = np.random.default_rng(2)
    x = _correlated(500, rng, (1, 3, 3))
    zca = Pipeline(ZCA(filter_bias=0.1)).fit(x, chunk=64).steps[0]
    v = x.reshape(500, -1).astype(np.float64)
    v = v - v.mean(0)
    e, u = np.linalg.eigh(v.T @ v / len(v) + 0.1 * np.eye(9))
    np.testing.assert_allclose(zca.P, u @ np.diag(e ** -0.5) @ u.T, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(zca.P, zca.P.T, atol=1e-6)


def test_gcn_then_zca_fit_is_chunk_independent_and_roundtrips(tmp_path):
    rng = np.random.default_rng(3)
    x = _correlated(300, rng)
    a = Pipeline(GCN(scale=55.0), ZCA(filter_bias=0.1)).fit(x, chunk=300)
    b = Pipeline(GCN(scale=55.0), ZCA(filter_bias=0.1)).fit(x, chunk=37)
    np.testing.assert_allclose(a.steps[1].P, b.steps[1].P, rtol=1e-4, atol=1e-5)
    a.save(tmp_path / "pre.npz")
    c = Pipeline.load(tmp_path / "pre.npz")
    assert repr(c) == repr(a)
    np.testing.assert_array_equal(c(x[:10]), a(x[:10]))
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["steps"].tolist() == ["gcn", "zca"] and float(state["0.scale"]) == 55.0


def test_standardize_per_channel():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (200, 3, 5, 5)).astype(np.uint8)
    x[:, 2] //= 4
    pipe = Pipeline(Scale01(), Standardize()).fit(x, chunk=64)
    y = pipe(x, dtype=np.float64)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-9)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1, rtol=1e-9)
    assert pipe(x[:3]).dtype == np.float32
    z = Pipeline.from_state_dict(pipe.state_dict())(x[:3])
    np.testing.assert_array_equal(z, pipe(x[:3]))


def test_scale01_and_apply():
    x = np.array([0, 51, 255], np.uint8).reshape(3, 1, 1, 1)
    pipe = Pipeline(Scale01())
    np.testing.assert_allclose(pipe.apply(x, chunk=2).ravel(), [0, 0.2, 1], rtol=1e-6)


def test_unfitted_pipeline_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        Pipeline(ZCA()).save(tmp_path / "x.npz")


def test_random_translate_shifts_with_zero_fill():
    x = np.arange(1, 2 * 1 * 5 * 5 + 1, dtype=np.float32).reshape(2, 1, 5, 5)
    rng = np.random.default_rng(0)
    y = RandomTranslate(pad=2)(x, rng)
    assert y.shape == x.shape
    dy, dx = np.random.default_rng(0).integers(0, 5, size=(2, 2))
    for i in range(2):
        padded = np.pad(x[i, 0], 2)
        np.testing.assert_array_equal(y[i, 0], padded[dy[i]:dy[i] + 5, dx[i]:dx[i] + 5])
    assert RandomTranslate(0)(x, rng) is x


def test_random_flip():
    x = np.arange(4 * 2 * 3 * 3, dtype=np.float32).reshape(4, 2, 3, 3)
    y = RandomFlip(p=0.5)(x, np.random.default_rng(5))
    flipped = np.random.default_rng(5).random(4) < 0.5
    for i in range(4):
        np.testing.assert_array_equal(y[i], x[i, :, :, ::-1] if flipped[i] else x[i])
    assert (RandomFlip(p=1.0)(x, np.random.default_rng(0)) == x[..., ::-1]).all()


@pytest.mark.slow
def test_gcn_zca_on_real_cifar(cifar10_train):
    """The maxout/FitNets pipeline on 2,000 real CIFAR-10 images (D = 3072)."""
    ds, _ = cifar10_train
    x = ds.images[:2000]
    pipe = Pipeline(GCN(scale=55.0), ZCA(filter_bias=0.1)).fit(x)
    y = pipe(x[:500])
    assert y.shape == (500, 3, 32, 32) and y.dtype == np.float32 and np.isfinite(y).all()
