import numpy as np
import pytest

import minifit.models as M
from minifit import Tensor, no_grad
from minifit.models.regressor import build_regressor, for_networks

# (name, weights+biases as built, paper-convention params, mults) measured from the spec's
# architectures; the paper-convention (2 pieces) figures are the paper's printed ones.
PAPER = {"mnist-teacher": 361e3, "mnist-fitnet": 30e3, "cifar-teacher": 9.04e6, "fitnet-1": 250e3,
         "fitnet-2": 862e3, "fitnet-4": 2.54e6}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_convention_counts_match_the_paper(name):
    params, _ = M.build(name).paper_counts()
    assert abs(params - PAPER[name]) / PAPER[name] < 0.01


def test_counts_as_configured():
    t = M.build("mnist-teacher")
    assert t.num_params() == 418714  # the spec: "418K weights" with the configs' own pieces
    assert t.num_mults() == 2 * 21 * 21 * 64 * 48 + 2 * 9 * 9 * 64 * 48 * 48 + 4 * 6 * 6 * 25 * 48 * 24 + 216 * 10
    assert M.build("cifar-teacher").num_params() == 16247830
    assert M.build("fitnet-4").paper_counts()[1] == pytest.approx(382e6, rel=0.005)
    assert M.build("cifar-teacher").paper_counts()[1] == pytest.approx(725e6, rel=0.005)


def test_fitnet_4_has_19_layers_and_hint_shapes():
    s, t = M.build("fitnet-4"), M.build("cifar-teacher")
    convs = [n for n in s.names if n.startswith("h")]
    assert len(convs) + 1 == 19  # h0..h16 convs, h17 dense maxout, y softmax
    assert s.hint == "h10" and s.output_shape("h10") == (80, 8, 8)
    assert t.output_shape("h1") == (192, 7, 7)


def test_every_model_builds_and_runs():
    for name in M.names():
        if not name[0].isalpha() or "D-M" in name:
            continue
        net = M.build(name, num_classes=7)
        x = Tensor(np.zeros((2,) + net.input_shape, np.float32))
        with no_grad():
            assert net.eval()(x).shape == (2, 7)


def test_forward_upto_runs_only_the_prefix():
    net = M.build("mnist-fitnet")
    x = Tensor(np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32))
    with no_grad():
        h3 = net.forward(x, upto="h3")
        assert h3.shape == (3, 16, 4, 4)
        np.testing.assert_array_equal(h3.data, net[:"h3"](x).data)
        np.testing.assert_array_equal(net(x).data, net["h4":](h3).data)
    with pytest.raises(ValueError, match="no layer named 'h9'"):
        net.forward(x, upto="h9")


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model 'mnist-big'.*mnist-fitnet"):
        M.build("mnist-big")


def test_mnist_regressor_is_1x1_maxout_conv():
    s, t = M.build("mnist-fitnet"), M.build("mnist-teacher")
    r = for_networks(s, "h3", t, "h1")
    layer = r["r"]
    assert layer.kernel_size == (1, 1) and layer.channels == 48 and layer.pieces == 2
    x = Tensor(np.zeros((2, 16, 4, 4), np.float32))
    assert r(x).shape == (2, 48, 4, 4)


def test_cifar_regressor_kernel_and_fc_alternative():
    r = build_regressor((80, 8, 8), (192, 7, 7), pieces=2)
    assert r["r"].kernel_size == (2, 2)
    fc = build_regressor((16, 4, 4), (48, 4, 4), kind="fc")
    assert fc(Tensor(np.zeros((2, 16, 4, 4), np.float32))).shape == (2, 48, 4, 4)
    assert fc.num_params() > r.num_params() / 10


def test_regressor_rejects_a_larger_teacher_map():
    with pytest.raises(ValueError, match="teacher's hint map 9x9 is larger than the student's guided map 8x8"):
        build_regressor((80, 8, 8), (192, 9, 9))


def test_untied_biases_one_per_map_and_detector_position():
    """bias="untied": (channels * pieces, OH, OW) before maxout and pooling, counted in
    num_params; the regressor copies the hint layer's kind."""
    tied, untied = M.build("mnist-teacher"), M.build("mnist-teacher", bias="untied")
    assert untied.h0.bias.shape == (96, 21, 21) and untied.h1.bias.shape == (96, 9, 9)
    assert untied.h2.bias.shape == (96, 6, 6) and tied.h2.bias.shape == (96,)
    extra = 96 * (21 * 21 - 1) + 96 * (9 * 9 - 1) + 96 * (6 * 6 - 1)
    assert untied.num_params() == tied.num_params() + extra
    assert untied.num_params("conv-bias") == 96 * (21 * 21 + 9 * 9 + 6 * 6)
    assert tied.num_params("conv-bias") == 3 * 96
    assert untied.bias_kind == "untied" and "bias=untied" in repr(untied.h0)
    s = M.build("mnist-fitnet", bias="untied")
    r = for_networks(s, "h3", untied, "h1")
    assert r.r.bias.shape == (96, 4, 4) and r.r.kernel_size == (1, 1)
    assert for_networks(M.build("mnist-fitnet"), "h3", tied, "h1").r.bias.shape == (96,)
    with no_grad():
        x = Tensor(np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32))
        assert untied(x).shape == (2, 10) and s(x).shape == (2, 10)


def test_model_options_are_checked():
    with pytest.raises(ValueError, match="tied"):
        M.build("mnist-fitnet", bias="per-map")
    with pytest.raises(ValueError, match="h9"):
        M.build("mnist-fitnet", max_norms={"h9": 0.9})
    with pytest.raises(ValueError, match="does not take the option"):
        M.build("wrn-10-1", bias="untied")
    s = M.build("mnist-fitnet", max_norms={"h1": 0.9})
    assert s.h0.weight.max_norm == s.h1.weight.max_norm == 0.9 and s.h2.weight.max_norm == 1.9365
    assert s.y.weight.max_norm == 1.9365
