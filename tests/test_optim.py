import numpy as np
import pytest

import minifit.optim as optim
from minifit.nn import Parameter


def param(values, lr_scale=1.0, max_norm=None):
    p = Parameter(np.array(values, dtype=np.float64), lr_scale=lr_scale, max_norm=max_norm)
    return p


def run(opt, p, grads):
    for g in grads:
        p.grad = np.array(g, dtype=np.float64)
        opt.step()


def test_sgd_momentum_matches_the_recurrence():
    p = param([1.0, -2.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.5)
    run(opt, p, [[1.0, 1.0], [2.0, 0.0]])
    v1 = -0.1 * np.array([1.0, 1.0])
    v2 = 0.5 * v1 - 0.1 * np.array([2.0, 0.0])
    np.testing.assert_allclose(p.data, np.array([1.0, -2.0]) + v1 + v2)


def test_sgd_nesterov_and_weight_decay():
    p = param([1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    run(opt, p, [[1.0]])
    g = 1.0 + 0.01 * 1.0
    v = -0.1 * g
    np.testing.assert_allclose(p.data, [1.0 + 0.9 * v - 0.1 * g])


def test_rmsprop_pylearn2_form_and_lr_scale():
    p = param([1.0, 1.0], lr_scale=0.05)
    opt = optim.RMSProp([p], lr=0.01, decay=0.9, max_scaling=1e5)
    run(opt, p, [[0.5, 1e-9]])
    ms = 0.1 * np.array([0.25, 1e-18])
    expected = 1.0 - 0.01 * 0.05 * np.array([0.5, 1e-9]) / np.maximum(np.sqrt(ms), 1e-5)
    np.testing.assert_allclose(p.data, expected)


def test_adam_first_steps():
    p = param([0.0])
    opt = optim.Adam([p], lr=0.1)
    run(opt, p, [[2.0], [2.0]])
    np.testing.assert_allclose(p.data, [-0.2], rtol=1e-6)  # bias-corrected: each step moves lr


def test_max_norm_applied_after_update():
    p = param([[3.0, 4.0]], max_norm=1.0)
    opt = optim.SGD([p], lr=0.0)
    run(opt, p, [[[0.0, 0.0]]])
    np.testing.assert_allclose(p.data, [[0.6, 0.8]])


def test_optimizer_state_round_trip():
    p = param([1.0, 2.0])
    opt = optim.RMSProp([p], lr=0.01)
    run(opt, p, [[1.0, 1.0]])
    q = param(p.data.copy())
    opt2 = optim.RMSProp([q], lr=0.5).load_state_dict(opt.state_dict())
    run(opt, p, [[0.3, -1.0]])
    run(opt2, q, [[0.3, -1.0]])
    np.testing.assert_array_equal(p.data, q.data)
    assert opt2.lr == 0.01 and opt2.steps == 2


def test_schedules():
    p = param([0.0])
    opt = optim.SGD([p], lr=1.0, momentum=0.5)
    step = optim.StepLR(opt, [2, 4], 0.1)
    step.on_epoch_end(1); assert opt.lr == 1.0
    step.on_epoch_end(2); assert opt.lr == pytest.approx(0.1)
    step.on_epoch_end(5); assert opt.lr == pytest.approx(0.01)
    opt.lr = 1.0
    lin = optim.LinearDecay(opt, start=1, saturate=11, decay_factor=0.01)
    lin.on_epoch_end(6); assert opt.lr == pytest.approx(1 - 0.5 * 0.99)
    lin.on_epoch_end(20); assert opt.lr == pytest.approx(0.01)
    opt.lr = 1.0
    exp = optim.ExponentialDecay(opt, decay_factor=2.0, min_lr=0.2)
    opt.steps = 2; exp.on_update(); assert opt.lr == pytest.approx(0.25)
    opt.steps = 5; exp.on_update(); assert opt.lr == pytest.approx(0.2)
    ramp = optim.MomentumRamp(opt, final=0.7, start=1, saturate=5)
    ramp.on_epoch_end(3); assert opt.momentum == pytest.approx(0.6)
    ramp.on_epoch_end(9); assert opt.momentum == pytest.approx(0.7)


def test_build_by_name():
    assert isinstance(optim.build("rmsprop", [param([1.0])], lr=0.1), optim.RMSProp)
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'"):
        optim.build("adagrad", [param([1.0])], lr=0.1)
