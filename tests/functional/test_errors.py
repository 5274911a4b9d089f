"""Bad input raises ValueError naming the op, the expected and the given shapes."""
import numpy as np
import pytest

import minifit.functional as F
from minifit import Tensor


def t(*shape, dtype=np.float32):
    return Tensor(np.zeros(shape, dtype))


@pytest.mark.parametrize("call, pattern", [
    (lambda: F.conv2d(t(2, 3, 8, 8), t(4, 1, 3, 3)), r"conv2d: input has 3 channels \(2, 3, 8, 8\).*\(4, 1, 3, 3\) expects 1"),
    (lambda: F.conv2d(t(3, 8, 8), t(4, 3, 3, 3)), r"conv2d: input must be 4-D .*got shape \(3, 8, 8\)"),
    (lambda: F.conv2d(t(1, 1, 2, 2), t(1, 1, 5, 5)), r"conv2d: kernel 5x5 is larger than the padded input"),
    (lambda: F.conv2d(t(1, 1, 8, 8), t(1, 1, 3, 3, dtype=np.float64)), r"conv2d: dtype mismatch"),
    (lambda: F.conv2d(Tensor(np.zeros((1, 1, 8, 8), np.int32)), t(1, 1, 3, 3)), r"conv2d: input must be floating"),
    (lambda: F.conv2d(t(1, 1, 8, 8), t(2, 1, 3, 3), t(3)), r"conv2d: bias must have shape \(2,\)"),
    (lambda: F.linear(t(4, 10), t(5, 9)), r"linear: input has 10 features \(4, 10\).*\(5, 9\) expects 9"),
    (lambda: F.maxout(t(2, 7), 2), r"maxout: axis 1 of the input \(2, 7\) must be a multiple of pieces=2"),
    (lambda: F.max_pool2d(t(1, 1, 3, 3), 4, 2), r"max_pool2d: window \(4, 4\) is larger than the input"),
    (lambda: F.max_pool2d(t(1, 3, 3), 2, 2), r"max_pool2d: input must be 4-D"),
    (lambda: F.batch_norm(t(4, 3), t(2), t(2)), r"batch_norm: gamma and beta must have shape \(3,\)"),
    (lambda: F.cross_entropy(t(4, 3), np.array([0, 1, 2])), r"cross_entropy: labels must have shape \(4,\)"),
    (lambda: F.cross_entropy(t(2, 3), np.array([0, 3])), r"cross_entropy: labels must lie in \[0, 3\)"),
    (lambda: F.reshape(t(2, 3), (4, 2)), r"reshape: cannot reshape \(2, 3\)"),
    (lambda: F.matmul(t(2, 3), t(2, 3)), r"matmul: expected \(n, k\) @ \(k, m\)"),
])
def test_bad_input_message(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()
