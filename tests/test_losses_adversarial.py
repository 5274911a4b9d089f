"""Conditional adversarial KD losses (L_A, L_DS, D's objective, L_GAN, L_L1, Hinton KD, the
student objective): hand-derived gradients against central finite differences in float64,
values against the definitions, and the term switches."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minifit import Tensor
from minifit import functional as F
from minifit.gradcheck import check_grad, leaf
from minifit.losses import (adversarial_value_and_grad, discriminator_loss, discriminator_loss_value_and_grad,
                            gan_loss, gan_loss_value_and_grad, hinton_kd_loss, hinton_kd_value_and_grad,
                            l1_loss, l1_loss_value_and_grad, la_loss, la_value_and_grad,
                            lds_loss, lds_value_and_grad, student_objective, student_objective_value_and_grad)
from kernels import kd_loss_value_and_grad
from minifit.models.wrn import Discriminator


def _logsoftmax(a):
    a = a - a.max(1, keepdims=True)
    return a - np.log(np.exp(a).sum(1, keepdims=True))


def _directional_check(fn, args, which, r, h=1e-6, tol=1e-6):
    """fn(*args) -> (value, grads); check grads[i] for every i in ``which`` (index into args)."""
    value, grads = fn(*args)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for gi, ai in enumerate(which):
        for _ in range(3):
            v = r.standard_normal(args[ai].shape)
            up, down = list(args), list(args)
            up[ai], down[ai] = args[ai] + h * v, args[ai] - h * v
            numeric = (fn(*up)[0] - fn(*down)[0]) / (2 * h)
            analytic = float((grads[gi] * v).sum())
            assert abs(numeric - analytic) <= tol + 1e-5 * max(abs(numeric), abs(analytic)), (ai, numeric, analytic)


PAIR_LOSSES = [la_value_and_grad, lds_value_and_grad, discriminator_loss_value_and_grad, gan_loss_value_and_grad]


@pytest.mark.parametrize("fn", PAIR_LOSSES, ids=lambda f: f.__name__)
@given(n=st.integers(1, 16), c=st.integers(1, 12), scale=st.sampled_from([0.1, 1.0, 10.0, 100.0]),
       seed=st.integers(0, 2**16))
def test_pair_loss_gradients_match_finite_differences(fn, n, c, scale, seed):
    r = np.random.default_rng(seed)
    dr, df = r.standard_normal((n, c + 2)) * scale, r.standard_normal((n, c + 2)) * scale
    y = r.integers(0, c, n)
    value, (gr, gf) = fn(dr, df, y)
    assert np.isfinite(value) and np.all(np.isfinite(gr)) and np.all(np.isfinite(gf))
    _directional_check(lambda a, b: fn(a, b, y), (dr, df), (0, 1), r, h=1e-6 * max(1.0, scale / 10))


def test_adversarial_values_match_the_definitions():
    r = np.random.default_rng(0)
    N, C = 5, 4
    dr, df, y = r.standard_normal((N, C + 2)), r.standard_normal((N, C + 2)), r.integers(0, C, N)
    rows = np.arange(N)
    rf_r, rf_f = _logsoftmax(dr[:, C:]), _logsoftmax(df[:, C:])
    cl_r, cl_f = _logsoftmax(dr[:, :C]), _logsoftmax(df[:, :C])
    la = np.mean(rf_r[:, 0] + rf_f[:, 1])               # log P(real | D(t)) + log P(fake | D(s))
    lds = np.mean(cl_r[rows, y] + cl_f[rows, y])         # log P(l | D(t)) + log P(l | D(s))
    (va, _), (vds, _) = adversarial_value_and_grad(dr, df, y)
    assert va == pytest.approx(la) and vds == pytest.approx(lds)
    assert discriminator_loss_value_and_grad(dr, df, y)[0] == pytest.approx(-0.5 * (la + lds))
    assert gan_loss_value_and_grad(dr, df, y)[0] == pytest.approx(0.5 * (la - lds))
    # L_A never looks at the class columns, L_DS never at the real/fake ones
    _, (ar, af) = la_value_and_grad(dr, df, y)
    _, (sr, sf) = lds_value_and_grad(dr, df, y)
    assert not ar[:, :C].any() and not af[:, :C].any() and not sr[:, C:].any() and not sf[:, C:].any()


def test_l1_loss_value_and_gradient():
    r = np.random.default_rng(1)
    s, t = r.standard_normal((6, 7)), r.standard_normal((6, 7))
    value, grad = l1_loss_value_and_grad(s, t)
    assert value == pytest.approx(np.abs(s - t).sum() / 6)
    _directional_check(lambda a: l1_loss_value_and_grad(a, t), (s,), (0,), r)
    np.testing.assert_array_equal(l1_loss_value_and_grad(t, t)[1], 0)   # subgradient 0 at s = t


@given(n=st.integers(1, 32), c=st.integers(2, 50), tau=st.floats(1, 20),
       scale=st.sampled_from([1.0, 10.0, 100.0]), seed=st.integers(0, 2**16))
def test_hinton_kd_gradient_and_relation_to_kd_loss(n, c, tau, scale, seed):
    r = np.random.default_rng(seed)
    s, t, y = r.standard_normal((n, c)) * scale, r.standard_normal((n, c)) * scale, r.integers(0, c, n)
    value, grad = hinton_kd_value_and_grad(s, t, y, tau)
    assert np.isfinite(value) and value >= 0
    _directional_check(lambda a: hinton_kd_value_and_grad(a, t, y, tau), (s,), (0,), r,
                       h=1e-6 * max(1.0, scale / 10))
    # 1/2 L_S + tau^2 KL has the gradient of kd_loss(hinton) with lam 1, hard term halved;
    # the KL differs from the cross-entropy by the teacher's entropy, a constant.
    _, g_ce = kd_loss_value_and_grad(s, t, y, tau, 1.0, hinton=True)
    _, g_soft = kd_loss_value_and_grad(s, t, y, tau, 0.0)   # the hard term alone
    np.testing.assert_allclose(grad, g_ce - 0.5 * g_soft, rtol=1e-7, atol=1e-12)


def test_graph_ops_match_their_numpy_functions_and_gradcheck():
    r = np.random.default_rng(2)
    N, C = 4, 3
    y = r.integers(0, C, N)
    dr, df = leaf(r.standard_normal((N, C + 2))), leaf(r.standard_normal((N, C + 2)))
    for op in (la_loss, lds_loss, discriminator_loss, gan_loss):
        check_grad(lambda a, b: op(a, b, y), [dr, df])
    s, t = leaf(r.standard_normal((N, C))), r.standard_normal((N, C))
    check_grad(lambda a: l1_loss(a, t), [s])
    check_grad(lambda a: hinton_kd_loss(a, t, y, 4.0), [s])


def test_student_objective_through_a_discriminator_gradchecks():
    """L_S + L_L1 + L_GAN with L_GAN through a float64 D, checked end to end w.r.t. the
    student's logits (D in eval mode: deterministic, batch norm with fixed statistics)."""
    r = np.random.default_rng(3)
    N, C = 6, 4
    D = Discriminator(C, depth=2).to(np.float64)
    for name, mod in D.named_modules():   # non-trivial running statistics
        if hasattr(mod, "running_mean"):
            mod.running_mean[:] = r.standard_normal(mod.running_mean.shape)
            mod.running_var[:] = r.uniform(0.5, 2.0, mod.running_var.shape)
    D.eval()
    t, y = r.standard_normal((N, C)) * 3, r.integers(0, C, N)
    s = leaf(r.standard_normal((N, C)) * 3)

    def objective(s):
        out = D(F.concatenate([Tensor(t), s]))
        return student_objective(s, t, y, out.data[:N], out[N:], ("S", "L1", "GAN", "KD"), tau=2.0)[0]
    check_grad(objective, [s])


@pytest.mark.parametrize("terms", [("S",), ("L1",), ("GAN",), ("KD",), ("S", "GAN"), ("S", "L1"),
                                   ("S", "L1", "GAN")])
def test_switches_select_the_terms(terms):
    r = np.random.default_rng(4)
    N, C = 5, 3
    s, t, y = r.standard_normal((N, C)), r.standard_normal((N, C)), r.integers(0, C, N)
    dr, df = r.standard_normal((N, C + 2)), r.standard_normal((N, C + 2))
    value, parts, ds, dd = student_objective_value_and_grad(s, t, y, dr, df, terms, tau=3.0)
    assert set(parts) == set(terms) and value == pytest.approx(sum(parts.values()))
    expect_ds = np.zeros_like(s)
    if "S" in terms:
        expect_ds += kd_loss_value_and_grad(s, t, y, 1.0, 0.0)[1]
    if "L1" in terms:
        expect_ds += l1_loss_value_and_grad(s, t)[1]
    if "KD" in terms:
        expect_ds += hinton_kd_value_and_grad(s, t, y, 3.0)[1]
    np.testing.assert_allclose(ds, expect_ds, atol=1e-12)
    if "GAN" in terms:
        np.testing.assert_allclose(dd, gan_loss_value_and_grad(dr, df, y)[1][1])
    else:
        assert dd is None


def test_only_l1_on_the_student_gradient_is_the_l1_gradient():
    r = np.random.default_rng(5)
    s, t, y = leaf(r.standard_normal((4, 6))), r.standard_normal((4, 6)), r.integers(0, 6, 4)
    loss, parts = student_objective(s, t, y, terms=("L1",))
    loss.backward()
    np.testing.assert_array_equal(s.grad, l1_loss_value_and_grad(s.data, t)[1])
    assert list(parts) == ["L1"]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="terms must be"):
        student_objective_value_and_grad(np.zeros((2, 3)), np.zeros((2, 3)), [0, 1], terms=("S", "XX"))
    with pytest.raises(ValueError, match="GAN term needs"):
        student_objective_value_and_grad(np.zeros((2, 3)), np.zeros((2, 3)), [0, 1], terms=("GAN",))
    with pytest.raises(ValueError, match=r"\(N, C \+ 2\)"):
        gan_loss_value_and_grad(np.zeros((2, 5)), np.zeros((3, 5)), [0, 1])
    with pytest.raises(ValueError, match="must match"):
        l1_loss_value_and_grad(np.zeros((2, 3)), np.zeros((2, 4)))
