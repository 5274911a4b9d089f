"""The training loop and methods on the CUDA target (simulator): one epoch of backprop and
one of KD through minifit.distill.fit give the CPU's losses and weights."""
import numpy as np
import pytest

import minifit
import minifit.nn as nn
import minifit.optim as optim
from minifit.data import Pipeline, Scale01
from minifit.distill import KD, Backprop, LinearAnneal, Split, TeacherOutputs, fit

pytestmark = pytest.mark.cuda


def net(seed):
    minifit.manual_seed(seed)
    return nn.Sequential(("h0", nn.MaxoutConv2d(1, 2, 2, 3, pool=2, pool_stride=2, irange=0.3)),
                         ("flat", nn.Flatten()), ("y", nn.Linear(2 * 2 * 2, 3, irange=0.3)))


def split(n=12, seed=0):
    r = np.random.default_rng(seed)
    return Split(r.integers(0, 255, (n, 1, 6, 6)).astype(np.uint8), r.integers(0, 3, n), batch_size=6,
                 transform=Pipeline(Scale01()), seed=seed)


def run(device, method):
    student = net(1).to(device=device)
    opt = optim.RMSProp(student.parameters(), lr=0.01)
    if method == "kd":
        teacher = net(2).to(device=device)
        outs = TeacherOutputs(teacher)
        outs.precompute("train", split())
        m = KD(student, opt, outs, tau=2.0, lam=LinearAnneal(1.0, 1.0))
    else:
        m = Backprop(student, opt)
    res = fit(m, split(), split(6, 1), epochs=1, log=lambda s: None, progress=False)
    return res.history[0]["train_loss"], {k: v for k, v in student.state_dict().items()}


@pytest.mark.parametrize("method", ["backprop", "kd"])
def test_one_epoch_on_cuda_equals_cpu(cuda_target, method):
    loss_c, state_c = run("cpu", method)
    loss_g, state_g = run("cuda", method)
    assert loss_g == pytest.approx(loss_c, rel=1e-5)
    for k in state_c:
        np.testing.assert_allclose(state_g[k], state_c[k], rtol=2e-4, atol=2e-5, err_msg=k)
