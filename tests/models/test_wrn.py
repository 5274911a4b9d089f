"""Wide residual networks and the discriminator: the paper's Table 5 sizes, structure, shapes,
layer tables and gradients."""
import numpy as np
import pytest

from minifit import Tensor
from minifit import random as mrandom
from minifit.gradcheck import check_grad, leaf
from minifit.models import build, names
from minifit.models.wrn import Discriminator, WideBlock

# Table 5 of the paper (CIFAR-100, so 100 classes): model -> params as printed
TABLE5 = {"wrn-10-2": "0.32M", "wrn-10-4": "1.22M", "wrn-10-6": "2.72M", "wrn-10-8": "4.81M",
          "wrn-10-10": "7.49M", "wrn-16-4": "2.77M", "wrn-22-4": "4.32M", "wrn-28-4": "5.87M",
          "wrn-34-4": "7.42M", "wrn-40-10": "55.9M"}


@pytest.mark.parametrize("name", TABLE5)
def test_num_params_match_table5_to_the_printed_precision(name):
    printed = TABLE5[name]
    decimals = len(printed[:-1].split(".")[1])
    net = build(name, num_classes=100)
    assert f"{net.num_params() / 1e6:.{decimals}f}M" == printed


def test_structure_follows_the_reference():
    net = build("wrn-16-4", num_classes=10)
    assert "wrn-D-M" in names()
    assert net.names == ["conv0", "g1b1", "g1b2", "g2b1", "g2b2", "g3b1", "g3b2", "bn", "relu", "pool", "fc"]
    blocks = {n: net[n] for n in net.names if n.startswith("g")}
    assert [(b.in_channels, b.out_channels, b.stride, b.projects) for b in blocks.values()] == [
        (16, 64, 1, True), (64, 64, 1, False), (64, 128, 2, True), (128, 128, 1, False),
        (128, 256, 2, True), (256, 256, 1, False)]
    assert all(b.p == 0.3 for b in blocks.values())
    assert build("wrn-10-1")["g1b1"].projects is False      # 16 -> 16, stride 1: identity
    assert build("wrn-10-1", dropout=0.0)["g1b1"].p == 0.0
    rows = net.layer_table()
    shapes = {name: shape for name, _, shape, _, _ in rows}
    assert shapes["g1b2"] == (64, 32, 32) and shapes["g2b1"] == (128, 16, 16) and shapes["g3b2"] == (256, 8, 8)
    assert shapes["pool"] == (256,) and shapes["fc"] == (10,)
    assert sum(r[3] for r in rows) == net.num_params()
    # mults of g2b1: conv1 64->128 3x3 at 16x16, conv2 128->128, 1x1 projection 64->128
    assert dict((r[0], r[4]) for r in rows)["g2b1"] == 256 * (9 * 64 * 128 + 9 * 128 * 128 + 64 * 128)


@pytest.mark.parametrize("bad", ["wrn-12-2", "wrn-4-1", "wrn-10-0"])
def test_bad_names_are_explained(bad):
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4|widen factor"):
        build(bad)


def test_forward_shapes_and_eval_determinism():
    net = build("wrn-10-1", num_classes=10)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    assert net(x).shape == (2, 10)
    net.eval()
    np.testing.assert_array_equal(net(x).data, net(x).data)


def test_block_gradients_float64():
    mrandom.manual_seed(0)   # fixed weights: a random draw can put a ReLU input within h of its kink
    r = np.random.default_rng(1)
    for stride, cin, cout in ((1, 4, 4), (2, 3, 5)):
        block = WideBlock(cin, cout, stride, dropout=0.0).to(np.float64)
        x = leaf(r.standard_normal((3, cin, 6, 6)))
        w = Tensor(r.standard_normal((3, cout, 6 // stride, 6 // stride)))
        check_grad(lambda a, *params: (block(a) * w).sum(), [x] + block.parameters(), seed=stride)


def test_eval_block_is_the_train_graph_with_running_statistics():
    """Evaluation folds each BN + ReLU into the next conv (F.bn_relu_conv2d); the values and
    gradients equal the plain graph with batch norm in evaluation mode."""
    from minifit import functional as F
    mrandom.manual_seed(0)
    r = np.random.default_rng(3)
    for stride, cin, cout in ((1, 4, 4), (2, 3, 5)):
        block = WideBlock(cin, cout, stride).to(np.float64)
        for bn in (block.bn1, block.bn2):   # non-trivial running statistics and affine
            bn.running_mean[:] = r.standard_normal(bn.num_features)
            bn.running_var[:] = r.random(bn.num_features) + 0.5
            bn.weight.data[:] = r.standard_normal(bn.num_features)
            bn.bias.data[:] = r.standard_normal(bn.num_features)
        block.eval()
        xs = r.standard_normal((3, cin, 6, 6))
        g = r.standard_normal((3, cout, 6 // stride, 6 // stride))

        def plain(x):
            a = F.relu(block.bn1(x))
            h = block.conv2(F.relu(block.bn2(block.conv1(a))))
            return F.add(h, block.shortcut(a) if block.projects else x)
        out = []
        for f in (block, plain):
            x = leaf(xs)
            for p in block.parameters():
                p.grad = None
            y = f(x)
            (y * Tensor(g)).sum().backward()
            out.append([y.numpy(), x.grad] + [p.grad for p in block.parameters()])
        for a, e in zip(*out):
            np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


def test_discriminator_structure_and_gradients():
    D = Discriminator(10)
    assert D.names == ["bn0", "b1", "b2", "b3", "out"] and D.depth == 3
    assert D(Tensor(np.zeros((4, 10), np.float32))).shape == (4, 12)
    assert all(D[n].p == 0.3 and D[n].width == 10 for n in ("b1", "b2", "b3"))
    assert Discriminator(10, depth=1).names == ["bn0", "b1", "out"]
    mrandom.manual_seed(0)
    r = np.random.default_rng(2)
    D = Discriminator(3, depth=2, dropout=0.0).to(np.float64)
    x = leaf(r.standard_normal((5, 3)))
    w = Tensor(r.standard_normal((5, 5)))
    check_grad(lambda a, *params: (D(a) * w).sum(), [x] + D.parameters())
