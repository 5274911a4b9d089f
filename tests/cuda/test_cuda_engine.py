"""The engine on the CUDA target (numba-cuda simulator, strict device arrays: see
tests/cudasim.py): device placement, and full training steps that must equal the CPU steps.

* a tiny maxout network (maxout conv + fused maxout/max-pool, dropout, maxout dense,
  softmax layer, cross-entropy, RMSProp with max-norm constraints): two steps on "cuda"
  give the CPU's losses, gradients, parameters and optimizer slots;
* one knowledge-distillation step (teacher forward without a graph, KD loss, SGD with
  Nesterov momentum) equals the CPU step;
* batch norm (training and evaluation), ReLU, global average pooling, Adam on "cuda";
* minifit.device.resolve gives a one-line error naming what is missing.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernels
import minifit
import minifit.functional as F
from minifit import losses, nn, optim
from minifit import random as mrandom
from minifit.device import DeviceUnavailable, resolve
from minifit.tensor import Tensor, no_grad

pytestmark = pytest.mark.cuda
TOL = dict(rtol=2e-4, atol=2e-5)


@pytest.fixture(scope="module")
def kc(cuda_target):
    return cuda_target


def on_device(t):
    return kernels.is_device_array(t.data if isinstance(t, Tensor) else t)


def host(a):
    return a.copy_to_host() if kernels.is_device_array(a) else np.asarray(a)


def tiny_maxout_net(seed=0, dropout=0.5, bias="tied"):
    mrandom.manual_seed(seed)
    net = nn.Sequential(
        ("h0", nn.MaxoutConv2d(1, 2, 2, 3, padding=1, pool=2, pool_stride=2, irange=0.3, max_kernel_norm=0.9,
                               bias=bias, input_size=(6, 6))),
        ("flat", nn.Flatten()),
        ("d1", nn.Dropout(dropout)),
        ("h1", nn.MaxoutLinear(2 * 3 * 3, 3, 2, irange=0.3, max_col_norm=1.9)),
        ("y", nn.Linear(3, 4, irange=0.3, max_col_norm=1.9365)),
    )
    if bias == "untied":   # non-zero, so a misplaced bias shows in the outputs
        net.h0.bias.data[...] = np.random.default_rng(seed).uniform(-0.3, 0.3, net.h0.bias.shape)
    return net


def twin_on_cuda(model_fn, **kw):
    cpu, gpu = model_fn(**kw), model_fn(**kw)
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu.to("cuda")


def assert_same_state(cpu_model, gpu_model, what):
    for (name, p), (_, q) in zip(cpu_model.named_parameters(), gpu_model.named_parameters()):
        assert on_device(q), f"{what}: {name} left the GPU"
        np.testing.assert_allclose(host(q.data), p.data, **TOL, err_msg=f"{what}: {name}")


# ----------------------------------------------------------------------------- placement
def test_tensor_to_and_back_keeps_the_graph(kc):
    x = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    xd = x.to("cuda")
    assert xd.device == "cuda" and x.device == "cpu" and xd.to("cuda") is xd
    loss = F.sum(F.mul(xd, xd) * 0.5)
    assert loss.device == "cuda" and loss.dtype == np.float32
    loss.backward()
    assert x.device == "cpu" and not on_device(x.grad)
    np.testing.assert_allclose(x.grad, x.data)
    assert xd.to("cpu").device == "cpu"


def test_module_to_moves_parameters_and_buffers(kc):
    m = nn.Sequential(("c", nn.Conv2d(1, 2, 3)), ("bn", nn.BatchNorm2d(2)))
    m.to("cuda")
    assert all(on_device(p) for p in m.parameters())
    assert on_device(m.bn.running_mean) and on_device(m.bn.running_var)
    state = m.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["bn.running_mean"] = np.full(2, 3.0, np.float32)
    m.load_state_dict(state)
    assert on_device(m.bn.running_mean) and host(m.bn.running_mean)[0] == 3.0
    m.to("cpu")
    assert not any(on_device(p) for p in m.parameters()) and not on_device(m.bn.running_var)


def test_resolve(kc, monkeypatch):
    assert resolve("cpu") == "cpu"
    assert resolve("cuda") == "cuda"            # the simulator counts when asked for explicitly
    assert resolve("auto") == "cpu"             # ... but auto wants a real GPU
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve("tpu")
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba_cuda" else real(name, *a))
    try:
        with pytest.raises(DeviceUnavailable) as e:
            kc.available(refresh=True)
            resolve("cuda")
        msg = str(e.value)
        assert "\n" not in msg and "numba-cuda is not installed" in msg
        assert 'pip install "numba-cuda[cu12]"' in msg and "[cu13]" in msg
        assert resolve("auto") == "cpu"
    finally:
        monkeypatch.undo()
        assert kc.available(refresh=True)


def test_without_a_gpu_the_error_is_one_line():
    """In a fresh process without the simulator (this machine has no NVIDIA driver): importing
    kernels.cuda works, and asking for cuda names the missing driver and the install."""
    code = ("import kernels.cuda as k, minifit.device as d\n"
            "a = k.available(); print('AVAILABLE', bool(a))\n"
            "try:\n    d.resolve('cuda')\nexcept d.DeviceUnavailable as e:\n    print('ERROR', e)\n"
            "print('AUTO', d.resolve('auto'))\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    if "AVAILABLE True" in out.stdout:
        pytest.skip("a real GPU works here")
    lines = [s for s in out.stdout.splitlines() if s.startswith("ERROR")]
    assert len(lines) == 1, out.stdout
    assert "numba-cuda" in lines[0] and ("driver" in lines[0] or "not installed" in lines[0]), lines[0]
    assert "AUTO cpu" in out.stdout


def test_host_only_ops_refuse_device_tensors(kc):
    x = Tensor(np.ones((2, 3), np.float32)).to("cuda")
    with pytest.raises(NotImplementedError, match="getitem: not implemented on the cuda device"):
        x[0]


# ----------------------------------------------------------------------------- training steps
def _ce_step(model, opt, x, y, seed):
    mrandom.manual_seed(seed)          # the same dropout draws on both targets
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    grads = {n: host(p.grad) for n, p in model.named_parameters()}
    opt.step()
    return loss, grads


@pytest.mark.parametrize("bias", ["tied", "untied"])
def test_maxout_network_training_step_equals_cpu(kc, bias):
    cpu, gpu = twin_on_cuda(tiny_maxout_net, bias=bias)
    assert gpu.h0.bias.shape == ((4,) if bias == "tied" else (4, 6, 6))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 6, 6)).astype(np.float32)
    y = np.array([0, 3, 1])
    opt_c = optim.RMSProp(cpu.parameters(), lr=0.05, decay=0.9)
    opt_g = optim.RMSProp(gpu.parameters(), lr=0.05, decay=0.9)
    for step in range(2):   # the second step reuses the RMSProp mean squares
        loss_c, grads_c = _ce_step(cpu, opt_c, Tensor(x), y, seed=10 + step)
        loss_g, grads_g = _ce_step(gpu, opt_g, Tensor(x).to("cuda"), y, seed=10 + step)
        assert on_device(loss_g) and loss_g.dtype == loss_c.dtype == np.float32
        np.testing.assert_allclose(loss_g.item(), loss_c.item(), rtol=1e-5)
        for name in grads_c:
            np.testing.assert_allclose(grads_g[name], grads_c[name], **TOL, err_msg=f"step {step}: grad {name}")
        assert_same_state(cpu, gpu, f"step {step}")
    for sc, sg in zip(opt_c.state, opt_g.state):
        assert on_device(sg["mean_square"])
        np.testing.assert_allclose(host(sg["mean_square"]), sc["mean_square"], **TOL)
    # the max-norm constraints were active: some kernel norm hit its bound on both targets
    w = host(gpu.h0.weight.data)
    assert np.sqrt((w.astype(np.float64) ** 2).sum(axis=(1, 2, 3))).max() <= 0.9 + 1e-5


def test_kd_step_equals_cpu(kc):
    teacher_c, teacher_g = twin_on_cuda(tiny_maxout_net, seed=7, dropout=0.0)
    student_c, student_g = twin_on_cuda(tiny_maxout_net, seed=3)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 1, 6, 6)).astype(np.float32)
    y = np.array([2, 0, 1])
    results = []
    for teacher, student, xt in ((teacher_c, student_c, Tensor(x)), (teacher_g, student_g, Tensor(x).to("cuda"))):
        opt = optim.SGD(student.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        teacher.eval()
        with no_grad():
            t_logits = teacher(xt)
        mrandom.manual_seed(21)
        loss = losses.kd_loss(student(xt), t_logits, y, tau=3.0, lam=0.5)
        loss.backward()
        grads = {n: host(p.grad) for n, p in student.named_parameters()}
        opt.step()
        results.append((loss.item(), host(t_logits.data), grads))
    (lc, tc, gc), (lg, tg, gg) = results
    np.testing.assert_allclose(tg, tc, **TOL)
    np.testing.assert_allclose(lg, lc, rtol=1e-5)
    for name in gc:
        np.testing.assert_allclose(gg[name], gc[name], **TOL, err_msg=name)
    assert_same_state(student_c, student_g, "KD step")


def test_batch_norm_relu_gap_adam_step_equals_cpu(kc):
    def net():
        mrandom.manual_seed(4)
        return nn.Sequential(("bn", nn.BatchNorm2d(2)), ("relu", nn.ReLU()), ("gap", nn.GlobalAvgPool2d()),
                             ("bn1", nn.BatchNorm1d(2)))
    cpu, gpu = twin_on_cuda(net)
    x = np.random.default_rng(2).standard_normal((4, 2, 3, 3)).astype(np.float32) * 2 + 1
    outs = []
    for model, xt in ((cpu, Tensor(x)), (gpu, Tensor(x).to("cuda"))):
        opt = optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
        out = model(xt)
        loss = F.mean(F.mul(out, out)) + F.sum(F.abs(out)) / 8.0
        loss.backward()
        opt.step()
        model.eval()
        z = model(xt)
        F.sum(z).backward()       # backward through evaluation-mode batch norm
        outs.append((host(out.data), loss.item(), host(z.data), {n: host(p.grad) for n, p in model.named_parameters()},
                     host(model.bn.running_var), host(model.bn1.running_mean)))
    for a, b in zip(outs[1], outs[0]):
        if isinstance(a, dict):
            for k in a:
                np.testing.assert_allclose(a[k], b[k], **TOL, err_msg=k)
        else:
            np.testing.assert_allclose(a, b, **TOL)
    assert_same_state(cpu, gpu, "BN/Adam step")


def test_optimizer_state_round_trip_on_device(kc):
    m = nn.Linear(3, 2).to("cuda")
    opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    F.sum(m(Tensor(np.ones((2, 3), np.float32)).to("cuda"))).backward()
    opt.step()
    state = opt.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    opt2 = optim.SGD(m.parameters(), lr=0.1, momentum=0.9).load_state_dict(state)
    assert on_device(opt2.state[0]["v"])
    np.testing.assert_array_equal(host(opt2.state[0]["v"]), state["slot.0.v"])


def test_python_scalars_keep_float32(kc):
    """x * 0.5, x / 2, 1 - x stay float32 on both targets (a Python scalar takes the tensor's
    dtype), so float32 models never silently compute in float64."""
    for x in (Tensor(np.ones(3, np.float32)), Tensor(np.ones(3, np.float32)).to("cuda")):
        for y in (x * 0.5, x / 2, 1.0 - x, F.mean(x)):
            assert y.dtype == np.float32 and y.device == x.device


def test_minifit_exports_device():
    assert minifit.device.resolve("cpu") == "cpu"
