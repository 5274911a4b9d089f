"""L_HT and L_KD: hand-derived gradients against central finite differences in float64,
property-tested with hypothesis over batch sizes, classes, temperatures, lambdas and
logit scales up to 1e3."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minifit import Tensor
from minifit.gradcheck import check_grad, leaf
from kernels import hint_loss_value_and_grad, kd_loss_value_and_grad
from minifit.losses import hint_loss, kd_loss


def central_diff_grad(f, x, h):
    """Full central-difference gradient of scalar f at x (float64)."""
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f(x)
        flat[i] = old - h
        down = f(x)
        flat[i] = old
        gf[i] = (up - down) / (2 * h)
    return g


@given(n=st.integers(1, 64), c=st.integers(2, 100), tau=st.floats(1, 20), lam=st.floats(0, 10),
       scale=st.sampled_from([1.0, 10.0, 100.0, 1000.0]), hinton=st.booleans(), seed=st.integers(0, 2**16))
def test_kd_loss_gradient_matches_finite_differences(n, c, tau, lam, scale, hinton, seed):
    r = np.random.default_rng(seed)
    s, t = r.standard_normal((n, c)) * scale, r.standard_normal((n, c)) * scale
    y = r.integers(0, c, n)
    value, grad = kd_loss_value_and_grad(s, t, y, tau, lam, hinton)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # directional derivatives along random directions; the step shrinks with the logit scale
    # so the difference stays in the locally-smooth regime of the softmax
    h = 1e-6 * max(1.0, scale / 10)
    for _ in range(3):
        v = r.standard_normal((n, c))
        numeric = (kd_loss_value_and_grad(s + h * v, t, y, tau, lam, hinton)[0]
                   - kd_loss_value_and_grad(s - h * v, t, y, tau, lam, hinton)[0]) / (2 * h)
        analytic = float((grad * v).sum())
        assert abs(numeric - analytic) <= 1e-6 + 1e-4 * max(abs(numeric), abs(analytic)), (numeric, analytic)


def test_kd_loss_full_gradient_small_case():
    r = np.random.default_rng(1)
    s, t, y = r.standard_normal((3, 5)), r.standard_normal((3, 5)), np.array([0, 4, 2])
    _, grad = kd_loss_value_and_grad(s, t, y, 3.0, 4.0)
    numeric = central_diff_grad(lambda z: kd_loss_value_and_grad(z, t, y, 3.0, 4.0)[0], s.copy(), 1e-6)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_kd_loss_value_matches_the_definition():
    r = np.random.default_rng(2)
    s, t, y, tau, lam = r.standard_normal((4, 6)), r.standard_normal((4, 6)), np.array([1, 0, 5, 2]), 3.0, 2.5

    def softmax(a):
        e = np.exp(a - a.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    ce = -np.log(softmax(s)[np.arange(4), y]).mean()
    soft = -(softmax(t / tau) * np.log(softmax(s / tau))).sum(1).mean()
    assert kd_loss_value_and_grad(s, t, y, tau, lam)[0] == pytest.approx(ce + lam * soft, rel=1e-12)
    assert kd_loss_value_and_grad(s, t, y, tau, lam, hinton=True)[0] == pytest.approx(
        ce + lam * tau * tau * soft, rel=1e-12)


def test_kd_loss_with_lambda_zero_is_cross_entropy():
    from minifit.functional import cross_entropy
    r = np.random.default_rng(3)
    s, t, y = r.standard_normal((5, 4)), r.standard_normal((5, 4)) * 50, r.integers(0, 4, 5)
    assert kd_loss_value_and_grad(s, t, y, 3.0, 0.0)[0] == pytest.approx(cross_entropy(Tensor(s), y).item())


def test_kd_teacher_receives_no_gradient():
    s = leaf(np.random.default_rng(4).standard_normal((3, 4)))
    t = leaf(np.random.default_rng(5).standard_normal((3, 4)))
    kd_loss(s, t, np.array([0, 1, 2]), 3.0, 4.0).backward()
    assert s.grad is not None and t.grad is None
    check_grad(lambda s: kd_loss(s, t, np.array([0, 1, 2]), 3.0, 4.0), [s])


@given(n=st.integers(1, 64), shape=st.sampled_from([(3,), (2, 3, 3), (4, 1, 2)]), seed=st.integers(0, 2**16))
def test_hint_loss_gradient_matches_finite_differences(n, shape, seed):
    r = np.random.default_rng(seed)
    reg, hint = r.standard_normal((n,) + shape), r.standard_normal((n,) + shape)
    value, grad = hint_loss_value_and_grad(reg, hint)
    assert value == pytest.approx(0.5 * ((reg - hint) ** 2).reshape(n, -1).sum(1).mean())
    v = r.standard_normal(reg.shape)
    h = 1e-6
    numeric = (hint_loss_value_and_grad(reg + h * v, hint)[0] - hint_loss_value_and_grad(reg - h * v, hint)[0]) / (2 * h)
    assert numeric == pytest.approx(float((grad * v).sum()), rel=1e-6, abs=1e-9)


def test_hint_loss_in_graph_and_teacher_gets_no_gradient():
    reg, hint = leaf(np.random.default_rng(6).standard_normal((2, 3, 2, 2))), leaf(np.zeros((2, 3, 2, 2)))
    check_grad(lambda r: hint_loss(r, hint), [reg])
    assert hint.grad is None


def test_loss_shape_errors():
    with pytest.raises(ValueError, match=r"hint_loss: the regressor output \(2, 3\) and the teacher's hint \(2, 4\)"):
        hint_loss(Tensor(np.zeros((2, 3))), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"kd_loss: student logits \(2, 3\) and teacher logits \(2, 4\)"):
        kd_loss(Tensor(np.zeros((2, 3))), np.zeros((2, 4)), np.array([0, 1]), 3.0, 1.0)
