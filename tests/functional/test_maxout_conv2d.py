"""F.maxout_conv2d (one fused forward kernel, kernels.conv2d_maxout_forward) against the
unfused ops, values and gradients, and the layout it asks the kernel for."""
import numpy as np
import pytest

from kernels.cpu import layouts
from minifit import functional as F
from minifit.tensor import Tensor, no_grad


@pytest.mark.parametrize("pool", [None, 2, 4])
def test_functional_equals_unfused(pool):
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((5, 3, 10, 10))
    ws = rng.standard_normal((8, 3, 3, 3)) * 0.3
    bs = rng.standard_normal(8)
    out = []
    for fused in (True, False):
        x, w, b = Tensor(xs, requires_grad=True), Tensor(ws, requires_grad=True), Tensor(bs, requires_grad=True)
        if fused:
            y = F.maxout_conv2d(x, w, b, 2, 1, 1, pool, None if pool is None else 2)
        else:
            z = F.conv2d(x, w, b, 1, 1)
            y = F.maxout(z, 2) if pool is None else F.maxout_pool2d(z, 2, pool, 2, True)
        (y * Tensor(np.linspace(-1, 1, y.size).reshape(y.shape))).sum().backward()
        out.append((y.numpy(), x.grad, w.grad, b.grad))
    for a, e in zip(*out):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_functional_layout_follows_the_graph():
    """F.maxout_conv2d returns NHWC maps only when no backward pass is recorded; the
    values are the same in both modes."""
    rng = np.random.default_rng(5)
    x = Tensor(rng.standard_normal((4, 8, 6, 6)).astype(np.float32))
    w = Tensor(rng.standard_normal((6, 8, 3, 3)).astype(np.float32), requires_grad=True)
    with no_grad():
        y0 = F.maxout_conv2d(x, w, None, 2, 1, 1, 2, 2)
    y1 = F.maxout_conv2d(x, w, None, 2, 1, 1, 2, 2)
    assert layouts.is_nhwc(y0.data) and not layouts.is_nhwc(y1.data) and y1.requires_grad
    np.testing.assert_allclose(y0.data, y1.data, rtol=1e-5, atol=1e-5)
