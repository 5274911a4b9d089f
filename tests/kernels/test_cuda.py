"""kernels.cuda against its twins: every kernel of the API equals kernels.reference, every
engine op equals kernels.cpu (float32, rtol/atol 1e-4 as the CPU kernel tests; the
argmax encodings exactly), on random inputs with ragged sizes (not multiples of the GEMM
tiles 8 and 16, the 1-D block of 256 threads or the row blocks of 32-128), and ties
for the max ops.

Runs on numba-cuda's simulator (see tests/cudasim.py: strict, so no NumPy fallback can hide in
the device code). The simulator executes every thread in Python, so shapes are tiny. The
last test compiles every kernel, with the argument types its launches used, to PTX for a
real GPU (sm_75), which the simulator never does (it catches typing errors a GPU would hit).
"""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernels
from kernels import cpu
from kernels import reference as ref

pytestmark = pytest.mark.cuda

F32 = np.float32
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def kc(cuda_target):
    return cuda_target


def dev(a):
    from numba import cuda
    return cuda.to_device(np.asarray(a, order="C"))


def host(a):
    assert kernels.is_device_array(a), f"expected a device array, got {type(a).__name__}"
    return a.copy_to_host()


def close(got, want, tol=TOL):
    got = host(got)
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, **tol)


def exact(got, want):
    got = host(got)
    assert got.shape == np.shape(want), (got.shape, np.shape(want))
    np.testing.assert_array_equal(got, want)


def rnd(rng, *shape, dt=F32):
    return rng.standard_normal(shape).astype(dt)


def ties(rng, *shape, dt=F32):
    return rng.integers(-2, 3, size=shape).astype(dt)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ----------------------------------------------------------------------------- API
def test_every_api_name_exists(kc):
    import inspect
    for name in kernels._API + kernels.ENGINE_API:
        assert callable(getattr(kc, name)), name
    for name in kernels._API:
        got = list(inspect.signature(getattr(kc, name)).parameters)
        want = list(inspect.signature(getattr(ref, name)).parameters)
        assert got == want, (name, got, want)


def test_available_on_the_simulator(kc):
    a = kc.available()
    assert a and a.simulator and "simulator" in a.reason


# ----------------------------------------------------------------------------- GEMM / conv
@pytest.mark.parametrize("m,k,n,ta,tb", [
    (11, 19, 5, False, False), (11, 19, 5, True, False), (11, 19, 5, False, True), (11, 19, 5, True, True),
    (17, 18, 9, False, False), (17, 18, 9, True, True)])
def test_matmul_ragged_tiles(kc, rng, m, k, n, ta, tb):
    """C = op(A) op(B), all four transpose cases; (11, 5) runs 8 x 8 tiles, (17, 9) 16 x 16
    tiles; no dimension is a multiple of its tile and K spans 2-3 tiles."""
    a = rnd(rng, k, m) if ta else rnd(rng, m, k)
    b = rnd(rng, n, k) if tb else rnd(rng, k, n)
    close(kernels.matmul(dev(a), dev(b), ta, tb), cpu.matmul(a, b, ta, tb))


def test_linear_forward_with_bias(kc, rng):
    x, w, b = rnd(rng, 5, 18), rnd(rng, 3, 18), rnd(rng, 3)
    close(kernels.linear_forward(dev(x), dev(w), dev(b)), cpu.linear_forward(x, w, b))
    close(kernels.linear_forward(dev(x), dev(w)), cpu.linear_forward(x, w))


def test_im2col_col2im(kc, rng):
    x = rnd(rng, 2, 3, 5, 6)
    args = ((3, 2), (2, 1), (1, 2))
    cols = ref.im2col(x, *args)
    close(kc.im2col(dev(x), *args), cols)
    c = rnd(rng, *cols.shape)
    close(kc.col2im(dev(c), x.shape, *args), ref.col2im(c, x.shape, *args))


@pytest.mark.parametrize("case", [
    dict(x=(2, 3, 5, 4), w=(4, 3, 3, 2), s=(2, 1), p=(1, 0), bias=True),
    dict(x=(1, 2, 3, 3), w=(3, 2, 1, 1), s=1, p=2, bias=False),
    dict(x=(3, 2, 6, 5), w=(4, 2, 3, 3), s=1, p=1, bias="untied"),   # bias (O, OH, OW) in the epilogue
])
def test_conv2d_forward_backward(kc, rng, case):
    x, w = rnd(rng, *case["x"]), rnd(rng, *case["w"])
    untied = case["bias"] == "untied"
    y0 = ref.conv2d_forward(x, w, None, case["s"], case["p"])
    b = rnd(rng, *y0.shape[1:]) if untied else rnd(rng, case["w"][0]) if case["bias"] else None
    y = ref.conv2d_forward(x, w, b, case["s"], case["p"])
    close(kc.conv2d_forward(dev(x), dev(w), None if b is None else dev(b), case["s"], case["p"]), y)
    dy = rnd(rng, *y.shape)
    want = ref.conv2d_backward(dy, x, w, case["s"], case["p"], True, untied)
    got = kc.conv2d_backward(dev(dy), dev(x), dev(w), case["s"], case["p"], True, untied)
    assert tuple(got[2].shape) == (y.shape[1:] if untied else (y.shape[1],))
    for g, r in zip(got, want):
        close(g, r)
    dx, dw, db = kc.conv2d_backward(dev(dy), dev(x), dev(w), case["s"], case["p"], False)
    assert dx is None
    close(dw, want[1])


# ----------------------------------------------------------------------------- maxout / pooling
@pytest.mark.parametrize("shape,pieces", [((2, 6, 3, 5), 3), ((3, 10), 2)])
def test_maxout(kc, rng, shape, pieces):
    x = ties(rng, *shape)   # many exact ties: the first piece must win
    y, arg = ref.maxout_forward(x, pieces)
    gy, garg = kc.maxout_forward(dev(x), pieces)
    close(gy, y)
    exact(garg, arg)
    assert garg.dtype == np.uint8
    dy = rnd(rng, *y.shape)
    close(kc.maxout_backward(dev(dy), garg, pieces), ref.maxout_backward(dy, arg, pieces))


@pytest.mark.parametrize("hw,k,s,ceil", [((5, 7), (3, 3), (2, 2), True), ((6, 5), (2, 3), (2, 1), False),
                                         ((3, 2), (4, 4), (2, 2), True)])
def test_maxpool(kc, rng, hw, k, s, ceil):
    x = ties(rng, 2, 3, *hw)
    y, arg = ref.maxpool2d_forward(x, k, s, ceil)
    gy, garg = kc.maxpool2d_forward(dev(x), k, s, ceil)
    close(gy, y)
    exact(garg, arg)
    dy = rnd(rng, *y.shape)
    close(kc.maxpool2d_backward(dev(dy), garg, x.shape), ref.maxpool2d_backward(dy, arg, x.shape))


@pytest.mark.parametrize("hw,pieces,k,s,ceil", [((5, 6), 2, (3, 3), (2, 2), True), ((4, 4), 3, (2, 2), (2, 2), False)])
def test_maxout_pool(kc, rng, hw, pieces, k, s, ceil):
    x = ties(rng, 2, 2 * pieces, *hw)
    y, arg = ref.maxout_pool_forward(x, pieces, k, s, ceil)
    gy, garg = kc.maxout_pool_forward(dev(x), pieces, k, s, ceil)
    close(gy, y)
    exact(garg, arg)   # the same (piece * H + h) * W + w encoding
    dy = rnd(rng, *y.shape)
    close(kc.maxout_pool_backward(dev(dy), garg, x.shape, pieces),
          ref.maxout_pool_backward(dy, arg, x.shape, pieces))


def test_global_avg_pool(kc, rng):
    x = rnd(rng, 2, 3, 9, 8)   # 72 values per plane: more than one 64-thread stride
    close(kc.global_avg_pool_forward(dev(x)), ref.global_avg_pool_forward(x))
    dy = rnd(rng, 2, 3)
    close(kc.global_avg_pool_backward(dev(dy), x.shape), ref.global_avg_pool_backward(dy, x.shape))


# ----------------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("shape", [(70, 3), (3, 2, 5, 5)])
def test_batch_norm(kc, rng, shape):
    c = shape[1]
    x = rnd(rng, *shape) * 3 + 1
    gamma, beta = rnd(rng, c), rnd(rng, c)
    y, mean, invstd = ref.batch_norm_forward(x, gamma, beta, 1e-5)
    gy, gmean, ginvstd = kc.batch_norm_forward(dev(x), dev(gamma), dev(beta), 1e-5)
    close(gy, y)
    close(gmean, mean)
    close(ginvstd, invstd)
    dy = rnd(rng, *shape)
    for g, r in zip(kc.batch_norm_backward(dev(dy), dev(x), dev(gamma), gmean, ginvstd),
                    ref.batch_norm_backward(dy, x, gamma, mean, invstd)):
        close(g, r)
    rm, rv = rnd(rng, c), np.abs(rnd(rng, c)) + 0.5
    close(kc.batch_norm_inference(dev(x), dev(gamma), dev(beta), dev(rm), dev(rv), 1e-5),
          ref.batch_norm_inference(x, gamma, beta, rm, rv, 1e-5))
    for g, r in zip(kc.batch_norm_eval_backward(dev(dy), dev(x), dev(gamma), dev(rm), dev(rv), 1e-5),
                    cpu.batch_norm_eval_backward(dy, x, gamma, rm, rv, 1e-5)):
        close(g, r)
    drm, drv = dev(rm), dev(rv)
    kc.batch_norm_update_running(drm, drv, gmean, ginvstd, 0.1, 1e-5, x.size // c)
    cpu.batch_norm_update_running(rm, rv, mean, invstd, 0.1, 1e-5, x.size // c)
    close(drm, rm)
    close(drv, rv)


def test_batch_norm_relu_fused_api(kc, rng):
    """The dispatcher's composition on the GPU equals the reference composition."""
    x = rnd(rng, 3, 2, 4, 5) * 2 + 0.5
    gamma, beta = rnd(rng, 2), rnd(rng, 2)
    y, mean, invstd = kernels.batch_norm_relu_forward(dev(x), dev(gamma), dev(beta), 1e-5)
    yr, mr, ir = ref.batch_norm_forward(x, gamma, beta, 1e-5)
    close(y, ref.relu_forward(yr))
    close(mean, mr)
    dy = rnd(rng, 3, 2, 4, 5)
    got = kernels.batch_norm_relu_backward(dev(dy), y, dev(x), dev(gamma), mean, invstd)
    want = ref.batch_norm_backward(ref.relu_backward(dy, ref.relu_forward(yr)), x, gamma, mr, ir)
    for g, r in zip(got, want):
        close(g, r)
    mask = ref.dropout_mask(x.shape, 0.4, 3, x.dtype)   # with a dropout mask
    y, mean, invstd = kernels.batch_norm_relu_forward(dev(x), dev(gamma), dev(beta), 1e-5, dev(mask))
    close(y, ref.relu_forward(yr) * mask)
    got = kernels.batch_norm_relu_backward(dev(dy), y, dev(x), dev(gamma), mean, invstd, dev(mask))
    want = ref.batch_norm_backward(ref.relu_backward(dy * mask, ref.relu_forward(yr)), x, gamma, mr, ir)
    for g, r in zip(got, want):
        close(g, r)


def test_bn_relu_conv2d_forward(kc, rng):
    """The dispatcher's composition on the GPU (no fused CUDA kernel) equals the reference."""
    x, w, b = rnd(rng, 2, 3, 5, 4), rnd(rng, 4, 3, 3, 3), rnd(rng, 4)
    gamma, beta, rm, rv = rnd(rng, 3), rnd(rng, 3), rnd(rng, 3), np.abs(rnd(rng, 3)) + 0.5
    want = ref.conv2d_forward(ref.relu_forward(ref.batch_norm_inference(x, gamma, beta, rm, rv, 1e-5)),
                              w, b, 1, 1)
    close(kernels.bn_relu_conv2d_forward(dev(x), dev(gamma), dev(beta), dev(rm), dev(rv), 1e-5,
                                         dev(w), dev(b), 1, 1), want)


@pytest.mark.parametrize("pool", [None, (2, 2)])
def test_conv2d_maxout_backward(kc, rng, pool):
    """The dispatcher's composition on the GPU equals kernels.cpu's fused backward."""
    x, w = rnd(rng, 2, 3, 4, 4), rnd(rng, 4, 3, 3, 3)
    y, arg = cpu.conv2d_maxout_forward(x, w, None, 1, 1, 2, pool, pool)
    dy = rnd(rng, *y.shape)
    got = kernels.conv2d_maxout_backward(dev(dy), dev(np.ascontiguousarray(arg)), dev(x), dev(w), 1, 1, 2,
                                         pool, pool)
    want = cpu.conv2d_maxout_backward(dy, arg, x, w, 1, 1, 2, pool, pool)
    for g, e in zip(got, want):
        close(g, e)


# ----------------------------------------------------------------------------- relu / dropout
def test_relu(kc, rng):
    x = ties(rng, 3, 100)   # zeros included: relu'(0) = 0
    y = ref.relu_forward(x)
    close(kc.relu_forward(dev(x)), y)
    dy = rnd(rng, 3, 100)
    close(kc.relu_backward(dev(dy), dev(y)), ref.relu_backward(dy, y))


def test_dropout_mask_is_the_cpu_mask(kc):
    got = kernels.dropout_mask((3, 7), 0.4, 5, F32, like=dev(np.zeros(1, F32)))
    exact(got, cpu.dropout_mask((3, 7), 0.4, 5, F32))


# ----------------------------------------------------------------------------- engine ops
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_broadcasting(kc, rng, op):
    f, g = getattr(kernels, op), getattr(cpu, op)
    a = rnd(rng, 4, 3, 5)
    pos = np.abs(rnd(rng, 4, 3, 5)) + 0.5
    for b in (pos, pos[0, :, :1], pos[:, :1, :1], pos[0, 0], pos[:1, :, :].reshape(3, 5)):
        close(f(dev(a), dev(b)), g(a, b))
        close(f(dev(b), dev(a + 3)), g(b, a + 3))
    close(f(dev(a), 2.5), g(a, F32(2.5)))                  # host scalar right
    close(f(1.5, dev(pos)), g(F32(1.5), pos))              # host scalar left
    close(f(dev(a), np.asarray(2.0)), g(a, F32(2.0)))      # 0-d host array = scalar
    close(f(dev(a), dev(np.asarray(3.0, F32))), g(a, np.asarray(3.0, F32)))   # 0-d device array


def test_binary_errors(kc, rng):
    with pytest.raises(ValueError, match="do not broadcast"):
        kernels.add(dev(rnd(rng, 2, 3)), dev(rnd(rng, 4)))
    with pytest.raises(ValueError, match="host array"):
        kernels.add(dev(rnd(rng, 2, 3)), rnd(rng, 3))


@pytest.mark.parametrize("op", ["neg", "absolute", "sign", "exp", "log"])
def test_unary(kc, rng, op):
    x = ties(rng, 5, 61) if op != "log" else np.abs(rnd(rng, 5, 61)) + 0.1
    close(getattr(kernels, op)(dev(x)), getattr(cpu, op)(x))


def test_casts_and_fills(kc, rng):
    x = rnd(rng, 3, 4)
    d = dev(x)
    assert kernels.astype(d, F32) is d
    close(kernels.astype(d, np.float64), x.astype(np.float64))
    close(kernels.zeros_like(d), np.zeros_like(x))
    close(kernels.broadcast_to(dev(x[:, :1]), (2, 3, 4)), cpu.broadcast_to(x[:, :1], (2, 3, 4)))


@pytest.mark.parametrize("axis,keepdims", [(None, False), (None, True), (0, False), (1, True), (-1, False),
                                           ((0, 2, 3), False), ((0, 2, 3), True), ((1, 3), False), ((), False)])
def test_reduce_sum(kc, rng, axis, keepdims):
    x = rnd(rng, 2, 3, 2, 37)
    close(kernels.reduce_sum(dev(x), axis, keepdims), cpu.reduce_sum(x, axis, keepdims))


def test_reduce_sum_rows_longer_than_the_block(kc, rng):
    x = rnd(rng, 2, 300)   # 128-thread blocks, three strides per row
    close(kernels.reduce_sum(dev(x), 1), cpu.reduce_sum(x, 1))


def test_reduce_sum_two_stage(kc, rng, monkeypatch):
    from kernels.cuda import reduce as kred
    monkeypatch.setattr(kred, "_SPLIT", 100)   # exercise the many-block path on a small array
    x = rnd(rng, 1000)
    close(kernels.reduce_sum(dev(x)), cpu.reduce_sum(x))


@pytest.mark.parametrize("gshape,shape", [((4, 3), (3,)), ((4, 3), (4, 1)), ((2, 4, 3), (1, 3)),
                                          ((4, 3), ()), ((4, 3), (4, 3))])
def test_unbroadcast(kc, rng, gshape, shape):
    g = rnd(rng, *gshape)
    close(kernels.unbroadcast(dev(g), shape), cpu.unbroadcast(g, shape))


@pytest.mark.parametrize("shape", [(5, 3, 2, 2), (2, 300), (6,)])
def test_max_norm(kc, rng, shape):
    w = rnd(rng, *shape)
    w[0] *= 0.01   # some rows inside the constraint, some outside
    d = dev(w)
    kernels.max_norm_(d, 1.3)
    close(d, cpu.max_norm_(w.copy(), 1.3))


@pytest.mark.parametrize("shape,axis", [((4, 70), -1), ((1, 300), -1), ((3, 5, 4), 1), ((2, 10), 0)])
def test_softmax_family(kc, rng, shape, axis):
    x = rnd(rng, *shape) * 4
    for fwd, bwd in (("softmax", "softmax_backward"), ("log_softmax", "log_softmax_backward")):
        y = getattr(cpu, fwd)(x, axis)
        gy = getattr(kernels, fwd)(dev(x), axis)
        close(gy, y)
        g = rnd(rng, *shape)
        close(getattr(kernels, bwd)(dev(g), gy, axis), getattr(cpu, bwd)(g, y, axis))


def test_cross_entropy(kc, rng):
    z, y = rnd(rng, 5, 70) * 3, rng.integers(0, 70, 5)
    loss, logp = cpu.cross_entropy_forward(z, y)
    gloss, glogp = kernels.cross_entropy_forward(dev(z), y)
    close(gloss, loss)
    close(glogp, logp)
    g = np.asarray(0.7, F32)
    close(kernels.cross_entropy_backward(glogp, y, dev(g)), cpu.cross_entropy_backward(logp, y, g))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 70\)"):
        kernels.cross_entropy_forward(dev(z), y + 70)


@pytest.mark.parametrize("hinton", [False, True])
def test_kd_and_hint_losses(kc, rng, hinton):
    s, t, y = rnd(rng, 4, 10) * 3, rnd(rng, 4, 10) * 3, rng.integers(0, 10, 4)
    v, g = cpu.kd_loss_value_and_grad(s, t, y, 3.0, 0.7, hinton)
    gv, gg = kc.kd_loss_value_and_grad(dev(s), dev(t), y, 3.0, 0.7, hinton)
    assert isinstance(gv, float) and abs(gv - v) <= 1e-5 * max(1.0, abs(v))
    close(gg, g)
    r, u = rnd(rng, 3, 2, 4, 5), rnd(rng, 3, 2, 4, 5)
    v, g = cpu.hint_loss_value_and_grad(r, u)
    gv, gg = kc.hint_loss_value_and_grad(dev(r), dev(u))
    assert abs(gv - v) <= 1e-6 * max(1.0, abs(v))
    close(gg, g)


def _update(mod, kind, p, g, s, max_norm=None):
    if kind == "sgd":
        mod.sgd_update(p, g, None, 0.1, max_norm=max_norm)
    elif kind == "sgd_momentum":
        mod.sgd_update(p, g, s[0], 0.1, 0.9, max_norm=max_norm)
    elif kind == "nesterov_wd":
        mod.sgd_update(p, g, s[0], 0.1, 0.9, True, 1e-3, max_norm=max_norm)
    elif kind == "rmsprop":
        mod.rmsprop_update(p, g, s[0], 0.01, 0.9, 1e-5, max_norm=max_norm)
    else:
        mod.adam_update(p, g, s[0], s[1], 1e-3, 0.9, 0.999, 1e-8, 3, 1e-4, max_norm=max_norm)


@pytest.mark.parametrize("max_norm", [None, 6.9])   # 6.9: about the median row norm (rows of 45 N(0,1))
@pytest.mark.parametrize("kind", ["sgd", "sgd_momentum", "nesterov_wd", "rmsprop", "adam"])
def test_optimizer_updates(kc, rng, kind, max_norm):
    """The CUDA updates (then max_norm_, a second kernel there) equal the CPU's fused ones."""
    p, g = rnd(rng, 7, 45), rnd(rng, 7, 45)   # 315 elements: a partial second 256-block
    slots = [np.abs(rnd(rng, 7, 45)) * 0.1 for _ in range(2)]
    dp, dslots = dev(p), [dev(s) for s in slots]
    _update(kernels, kind, dp, dev(g), dslots, max_norm)
    _update(cpu, kind, p, g, slots, max_norm)
    close(dp, p)
    for a, b in zip(dslots, slots):
        close(a, b)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("call,needles", [
    (lambda kc, d: kc.conv2d_forward(np.zeros((1, 1, 3, 3), F32), d((2, 1, 2, 2)), None), ["conv2d_forward", "device array", "host"]),
    (lambda kc, d: kc.conv2d_forward(d((1, 2, 3, 3)), d((2, 1, 2, 2)), None), ["conv2d_forward", "C=2"]),
    (lambda kc, d: kc.conv2d_forward(d((1, 1, 3, 3)), d((2, 1, 2, 2), np.float64), None), ["mixed dtypes"]),
    (lambda kc, d: kc.maxout_forward(d((2, 5, 3)), 2), ["maxout_forward", "not divisible"]),
    (lambda kc, d: kc.maxpool2d_forward(d((1, 1, 3, 3)), 5, 2, False), ["maxpool2d_forward", "larger"]),
    (lambda kc, d: kc.relu_backward(d((2, 3)), d((3, 2))), ["relu_backward", "same shape"]),
    (lambda kc, d: kc.batch_norm_forward(d((4, 3)), d((4,)), d((3,))), ["batch_norm_forward", "gamma", "C=3"]),
])
def test_value_errors(kc, call, needles):
    def d(shape, dt=F32):
        return dev(np.zeros(shape, dt))
    with pytest.raises(ValueError) as e:
        call(kc, d)
    for s in needles:
        assert s in str(e.value), (s, str(e.value))


# ----------------------------------------------------------------------------- real-GPU compile
def _exercise_every_kernel(kc):
    """Launch every registered kernel once (tiny inputs); the launcher records the types."""
    rng = np.random.default_rng(0)
    r = lambda *s: dev(rnd(rng, *s))  # noqa: E731
    x, w, b = r(1, 4, 3, 3), r(4, 4, 2, 2), r(4)
    y = kc.conv2d_forward(x, w, b, 1, 0)
    kc.conv2d_backward(y, x, w, 1, 0, True)
    kc.col2im(kc.im2col(x, 2, 1, 0), x.shape, 2, 1, 0)
    kc.linear_forward(r(3, 4), r(2, 4), r(2))
    kc.matmul(r(9, 2), r(2, 9))   # 16 x 16 tiles
    ym, am = kc.maxout_forward(x, 2)
    kc.maxout_backward(ym, am, 2)
    yp, ap = kc.maxpool2d_forward(x, 2, 2, True)
    kc.maxpool2d_backward(yp, ap, x.shape)
    yq, aq = kc.maxout_pool_forward(x, 2, 2, 2, True)
    kc.maxout_pool_backward(yq, aq, x.shape, 2)
    kc.global_avg_pool_backward(kc.global_avg_pool_forward(x), x.shape)
    g4 = r(4)
    yb, m, s = kc.batch_norm_forward(x, g4, b, 1e-5)
    kc.batch_norm_backward(yb, x, g4, m, s)
    kc.batch_norm_inference(x, g4, b, m, s, 1e-5)
    kc.batch_norm_eval_backward(yb, x, g4, m, s, 1e-5)
    kc.batch_norm_update_running(kc.zeros_like(m), kc.zeros_like(s), m, s, 0.1, 1e-5, 50)
    kc.relu_backward(x, kc.relu_forward(x))
    for f in (kc.add, kc.sub, kc.mul, kc.div):
        f(x, x), f(x, b.reshape((4, 1, 1))), f(x, 2.0)
    for f in (kc.neg, kc.absolute, kc.sign, kc.exp):
        f(x)
    kc.log(kc.exp(x))
    kc.astype(x, np.float64)
    kc.broadcast_to(b, (3, 4))
    kc.reduce_sum(x, (0, 2, 3)), kc.reduce_sum(x, 0)
    from kernels.cuda import reduce as kred
    saved, kred._SPLIT = kred._SPLIT, 10
    try:
        kc.reduce_sum(r(40))
    finally:
        kred._SPLIT = saved
    kc.max_norm_(r(3, 5), 1.0)
    z, lab = r(3, 5), np.array([0, 4, 2])
    for ax in (1, 0):
        p = kc.softmax(z, ax)
        kc.softmax_backward(z, p, ax), kc.log_softmax_backward(z, kc.log_softmax(z, ax), ax)
    loss, logp = kc.cross_entropy_forward(z, lab)
    kc.cross_entropy_backward(logp, lab, loss)
    kc.kd_loss_value_and_grad(z, r(3, 5), lab, 2.0, 0.5)
    kc.hint_loss_value_and_grad(z, r(3, 5))
    p = r(20)
    kc.sgd_update(p, r(20), r(20), 0.1, 0.9, True, 0.01)
    kc.rmsprop_update(p, r(20), kc.zeros_like(p), 0.1, 0.9, 1e-5)
    kc.adam_update(p, r(20), kc.zeros_like(p), kc.zeros_like(p), 0.1, 0.9, 0.99, 1e-8, 1)


def _as_float64(name, argtypes):
    """The launch of the float64 twin of a per-dtype kernel: float32 -> float64 throughout."""
    from numba import types

    def conv(t):
        if isinstance(t, types.Array) and t.dtype == types.float32:
            return t.copy(dtype=types.float64)
        return types.float64 if t == types.float32 else t
    return name[:-len("float32")] + "float64", tuple(conv(t) for t in argtypes)


def _compile_launches_to_ptx(kc, tmp_path, float64_twins):
    from kernels.cuda import _common
    _common.start_recording()
    try:
        _exercise_every_kernel(kc)
    finally:
        records = _common.stop_recording()
    twins = [_as_float64(name, types) for name, types in records if name.endswith("_float32")]
    launched = {name for name, _ in records + twins}
    assert launched == set(_common.KERNELS), f"kernels never launched: {set(_common.KERNELS) - launched}"
    unique = sorted(set(twins if float64_twins else records), key=str)
    path = tmp_path / "launches.pkl"
    path.write_bytes(pickle.dumps(unique))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["NUMBA_FORCE_CUDA_CC"] = "7.5"
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("ptx_check.py")), str(path)],
                          capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode == 3:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"compiled {len(unique)} " in proc.stdout, proc.stdout


def test_every_kernel_compiles_to_ptx_for_a_real_gpu(kc, tmp_path):
    """The simulator never compiles; this compiles each launched kernel specialisation with
    numba-cuda's real pipeline (type inference, lowering, NVVM) to PTX for sm_75, in a
    subprocess without the simulator. Skipped where NVVM / libdevice are not installed.
    The float64 twins of the per-dtype kernels (same source) compile under -m slow."""
    _compile_launches_to_ptx(kc, tmp_path, float64_twins=False)


@pytest.mark.slow
def test_float64_kernels_compile_to_ptx(kc, tmp_path):
    _compile_launches_to_ptx(kc, tmp_path, float64_twins=True)
