"""Bad inputs raise ValueError naming the function and the expected / given shapes."""
import numpy as np
import pytest

from kernels import cpu

f32, f64 = np.float32, np.float64


def z(*shape, dt=f32):
    return np.zeros(shape, dtype=dt)


@pytest.mark.parametrize("call,needles", [
    (lambda: cpu.conv2d_forward(z(2, 3, 8), z(4, 3, 3, 3), None), ["conv2d_forward", "x", "(N, C, H, W)", "(2, 3, 8)"]),
    (lambda: cpu.conv2d_forward(z(2, 3, 8, 8), z(4, 2, 3, 3), None), ["conv2d_forward", "w", "C=3", "(4, 2, 3, 3)", "(2, 3, 8, 8)"]),
    (lambda: cpu.conv2d_forward(z(2, 3, 8, 8), z(4, 3, 3, 3), z(5)), ["conv2d_forward", "b", "O=4", "(5,)"]),
    (lambda: cpu.conv2d_forward(z(2, 3, 8, 8).astype(np.int64), z(4, 3, 3, 3), None), ["conv2d_forward", "float32 or float64", "int64"]),
    (lambda: cpu.conv2d_forward(z(2, 3, 8, 8), z(4, 3, 3, 3, dt=f64), None), ["conv2d_forward", "mixed dtypes", "float32", "float64"]),
    (lambda: cpu.conv2d_forward(z(2, 3, 2, 2), z(4, 3, 3, 3), None), ["conv2d_forward", "does not fit", "(2, 2)"]),
    (lambda: cpu.conv2d_forward([[1.0]], z(4, 3, 3, 3), None), ["conv2d_forward", "NumPy array", "list"]),
    (lambda: cpu.conv2d_forward(z(2, 3, 8, 8), z(4, 3, 3, 3), None, stride=(1, 2, 3)), ["conv2d_forward", "stride"]),
    (lambda: cpu.conv2d_backward(z(2, 4, 5, 5), z(2, 3, 8, 8), z(4, 3, 3, 3)), ["conv2d_backward", "dy", "(2, 4, 6, 6)", "(2, 4, 5, 5)"]),
    (lambda: cpu.conv2d_backward(z(2, 5, 6, 6), z(2, 3, 8, 8), z(4, 3, 3, 3)), ["conv2d_backward", "dy", "O=4"]),
    (lambda: cpu.im2col(z(3, 8, 8), 3), ["im2col", "(N, C, H, W)", "(3, 8, 8)"]),
    (lambda: cpu.col2im(z(2, 9, 10), (2, 1, 5, 5), 3), ["col2im", "cols", "(2, 9, 9)", "(2, 9, 10)"]),
    (lambda: cpu.col2im(z(2, 9, 9), (2, 1, 5), 3), ["col2im", "x_shape"]),
    (lambda: cpu.maxout_forward(z(2, 5, 3, 3), 2), ["maxout_forward", "5", "pieces 2"]),
    (lambda: cpu.maxout_forward(z(2), 2), ["maxout_forward", "(N, CP, ...)", "(2,)"]),
    (lambda: cpu.maxout_backward(z(2, 3, 4, 4), z(2, 3, 4, 5, dt=np.uint8), 2), ["maxout_backward", "arg"]),
    (lambda: cpu.maxout_backward(z(2, 3), z(2, 3), 2), ["maxout_backward", "arg", "integer"]),
    (lambda: cpu.maxpool2d_forward(z(1, 1, 3, 3), 5, 2, False), ["maxpool2d_forward", "larger", "(3, 3)"]),
    (lambda: cpu.maxpool2d_forward(z(1, 3, 3), 2, 2, True), ["maxpool2d_forward", "(N, C, H, W)", "(1, 3, 3)"]),
    (lambda: cpu.maxpool2d_backward(z(1, 2, 2, 2), z(1, 2, 2, 2, dt=np.int32), (1, 3, 4, 4)), ["maxpool2d_backward", "dy", "(1, 3, OH, OW)", "(1, 2, 2, 2)"]),
    (lambda: cpu.maxout_pool_forward(z(2, 6, 4, 4), 4, 2, 2, True), ["maxout_pool_forward", "6", "pieces 4"]),
    (lambda: cpu.maxout_pool_backward(z(1, 2, 2, 2), z(1, 2, 2, 2, dt=np.int32), (1, 6, 4, 4), 2), ["maxout_pool_backward", "dy", "(1, 3, OH, OW)"]),
    (lambda: cpu.maxpool2d_backward(z(1, 1, 2, 2), np.full((1, 1, 2, 2), 16, np.int32), (1, 1, 4, 4)), ["maxpool2d_backward", "outside [0, 16)"]),
    (lambda: cpu.maxout_pool_backward(z(1, 1, 2, 2), np.full((1, 1, 2, 2), -1, np.int32), (1, 2, 4, 4), 2), ["maxout_pool_backward", "outside [0, 32)"]),
    (lambda: cpu.global_avg_pool_forward(z(2, 3)), ["global_avg_pool_forward", "(N, C, H, W)", "(2, 3)"]),
    (lambda: cpu.global_avg_pool_backward(z(2, 4), (2, 3, 4, 4)), ["global_avg_pool_backward", "(2, 3)", "(2, 4)"]),
    (lambda: cpu.batch_norm_forward(z(4, 3), z(4), z(3)), ["batch_norm_forward", "gamma", "C=3", "(4,)"]),
    (lambda: cpu.batch_norm_forward(z(4, 3), z(3, dt=f64), z(3)), ["batch_norm_forward", "mixed dtypes"]),
    (lambda: cpu.batch_norm_backward(z(4, 2), z(4, 3), z(3), z(3), z(3)), ["batch_norm_backward", "dy", "(4, 2)"]),
    (lambda: cpu.relu_backward(z(4, 3), z(4, 2)), ["relu_backward", "(4, 3)", "(4, 2)"]),
    (lambda: cpu.relu_forward(z(4, 3).astype(np.int32)), ["relu_forward", "int32"]),
    (lambda: cpu.dropout_mask((3,), 0.5, 0, np.int32), ["dropout_mask", "int32"]),
    (lambda: cpu.dropout_mask((3,), 1.5, 0, f32), ["dropout_mask", "p"]),
])
def test_value_errors(call, needles):
    with pytest.raises(ValueError) as e:
        call()
    msg = str(e.value)
    for s in needles:
        assert s in msg, (s, msg)
