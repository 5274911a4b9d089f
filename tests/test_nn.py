import numpy as np
import pytest

import minifit
import minifit.functional as F
import minifit.nn as nn
from minifit import Tensor
from minifit.gradcheck import check_grad, leaf


def small_maxout_net(dtype=np.float64):
    minifit.manual_seed(0)
    net = nn.Sequential(
        ("h0", nn.MaxoutConv2d(1, 3, 2, 3, padding=1, pool=3, pool_stride=2, irange=0.5)),  # overlap, ceil
        ("h1", nn.MaxoutConv2d(3, 2, 3, 2, pool=1, irange=0.5)),
        ("h2", nn.MaxoutLinear(2 * 3 * 3, 4, 2, irange=0.5)),
        ("y", nn.Linear(4, 5, irange=0.5)),
    )
    return net.to(dtype)


def test_composite_maxout_network_gradient_end_to_end():
    """Convs, overlapping ceil pooling, maxout dense, softmax cross-entropy: every
    parameter's gradient and the input's against finite differences in float64."""
    net = small_maxout_net()
    r = np.random.default_rng(1)
    x = leaf(r.standard_normal((3, 1, 8, 8)))
    y = np.array([0, 3, 4])
    params = net.parameters()

    def loss(x, *ps):
        return F.cross_entropy(net(x), y)
    check_grad(loss, [x] + params, directions=4)


def test_batchnorm_relu_dropout_network_gradient():
    minifit.manual_seed(0)
    net = nn.Sequential(("c", nn.Conv2d(2, 4, 3, padding=1, init="he")), ("bn", nn.BatchNorm2d(4)),
                        ("r", nn.ReLU()), ("p", nn.MaxPool2d(2)), ("g", nn.GlobalAvgPool2d()),
                        ("bn1", nn.BatchNorm1d(4)), ("y", nn.Linear(4, 3, init="he"))).to(np.float64)
    x = leaf(np.random.default_rng(2).standard_normal((4, 2, 6, 6)))
    check_grad(lambda x, *ps: F.cross_entropy(net(x), np.array([0, 1, 2, 1])), [x] + net.parameters())


def test_state_dict_round_trip_into_a_fresh_model():
    a, b = small_maxout_net(np.float32), None
    minifit.manual_seed(99)
    b = nn.Sequential(*[(n, l) for n, l in small_maxout_net(np.float32)])
    for p in b.parameters():
        p.data += 1.0
    b.load_state_dict(a.state_dict())
    x = Tensor(np.ones((2, 1, 8, 8), np.float32))
    np.testing.assert_array_equal(a(x).data, b(x).data)
    state = a.state_dict()
    state["h0.weight"] = np.zeros((1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"h0.weight has shape \(6, 1, 3, 3\) in the model but \(1, 1, 1, 1\)"):
        b.load_state_dict(state)
    del state["h0.weight"]
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict(state)


def test_batchnorm_buffers_in_state_and_eval_mode():
    bn = nn.BatchNorm1d(3)
    x = Tensor(np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32) * 2 + 5)
    bn(x)
    assert "running_mean" in bn.state_dict() and np.all(bn.running_mean > 0.1)
    bn.eval()
    y = bn(x)
    np.testing.assert_allclose(y.data, (x.data - bn.running_mean) / np.sqrt(bn.running_var + bn.eps), rtol=1e-5)


def test_max_norm_constraint_rescales_each_output_unit():
    conv = nn.Conv2d(2, 3, 3, max_kernel_norm=0.9)
    conv.weight.data[:] = 1.0  # each unit's kernel norm sqrt(18) > 0.9
    conv.weight.data[1] = 0.01  # this unit is inside the ball and must not change
    conv.apply_constraints()
    norms = np.sqrt((conv.weight.data ** 2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(norms[[0, 2]], 0.9, rtol=1e-6)
    np.testing.assert_allclose(conv.weight.data[1], 0.01)
    lin = nn.Linear(4, 2, max_col_norm=1.9)
    lin.weight.data[:] = 5.0
    lin.apply_constraints()
    np.testing.assert_allclose(np.sqrt((lin.weight.data ** 2).sum(axis=1)), 1.9, rtol=1e-6)


def test_init_ranges_and_dtypes():
    minifit.manual_seed(0)
    conv = nn.MaxoutConv2d(3, 4, 2, 5, irange=0.005)
    assert conv.weight.shape == (8, 3, 5, 5) and conv.weight.dtype == np.float32
    assert np.abs(conv.weight.data).max() <= 0.005 and np.abs(conv.weight.data).max() > 0.004
    he = nn.Conv2d(16, 32, 3, init="he").weight.data
    assert he.std() == pytest.approx(np.sqrt(2 / (16 * 9)), rel=0.05)


def test_train_eval_and_dropout():
    net = nn.Sequential(("d", nn.Dropout(0.5)), ("y", nn.Linear(10, 2)))
    x = Tensor(np.ones((4, 10), np.float32))
    net.eval()
    assert not net["d"].training
    np.testing.assert_array_equal(net(x).data, net(x).data)
    net.train()
    minifit.manual_seed(1)
    a = F.dropout(x, 0.5, True).data
    assert set(np.unique(a)) <= {0.0, 2.0}


def test_sequential_names_and_errors():
    with pytest.raises(ValueError, match="duplicate layer name 'a'"):
        nn.Sequential(("a", nn.ReLU()), ("a", nn.ReLU()))
    with pytest.raises(ValueError, match="not a Module"):
        nn.Sequential(("a", 3))
    seq = nn.Sequential(nn.ReLU(), nn.ReLU())
    assert seq.names == ["0", "1"] and len(seq["0":]) == 2
