import numpy as np
import pytest

import minifit
import minifit.functional as F
from minifit import Tensor, no_grad


def test_gradient_accumulates_when_a_tensor_is_used_twice():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * x + x * 3.0).sum()  # dy/dx = 2x + 3
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 3)


def test_diamond_graph_visits_each_node_once():
    x = Tensor(np.array([2.0]), requires_grad=True)
    a = x * 2.0
    b = a * a          # a used twice
    c = a + b          # a reached along two paths
    c.sum().backward()  # dc/dx = 2 + 2a*2 = 2 + 8x
    np.testing.assert_allclose(x.grad, 2 + 8 * x.data)


def test_backward_twice_accumulates_into_leaves():
    x = Tensor(np.ones(3), requires_grad=True)
    (x * 2.0).sum().backward()
    (x * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad, 4.0)


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2.0
    assert not y.requires_grad and y._backward is None
    assert minifit.is_grad_enabled()


def test_backward_needs_scalar_or_explicit_grad():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="non-scalar"):
        (x * 2.0).backward()
    (x * 2.0).backward(np.array([1.0, 0.0, 2.0]))
    np.testing.assert_allclose(x.grad, [2.0, 0.0, 4.0])


def test_backward_without_grad_inputs_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(2)).sum().backward()


def test_deep_chain_does_not_hit_recursion_limit():
    x = Tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 1.0)


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(ValueError, match="floating point"):
        Tensor(np.arange(3), requires_grad=True)


def test_operators_and_broadcasting():
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    b = Tensor(np.arange(3.0), requires_grad=True)
    ((a - b) / 2.0 + 1.0).sum().backward()
    np.testing.assert_allclose(a.grad, 0.5)
    np.testing.assert_allclose(b.grad, -1.0)  # summed over the broadcast axis: 2 * -0.5
    with pytest.raises(ValueError, match="do not broadcast"):
        F.add(Tensor(np.ones((2, 3))), Tensor(np.ones(4)))
