"""Differentiable ops on Tensors. Each op computes its output with a kernel or NumPy and
returns it with its backward closure beside it (see minifit.tensor)."""
from .activation import dropout, log_softmax, relu, softmax  # noqa: F401
from .basic import (abs, add, concatenate, div, flatten, getitem, matmul, mean, mul,  # noqa: F401,A004
                    reshape, sub, sum)
from .conv import bn_relu_conv2d, conv2d, linear, maxout_conv2d  # noqa: F401
from .loss import cross_entropy  # noqa: F401
from .norm import batch_norm, batch_norm_relu  # noqa: F401
from .pool import global_avg_pool2d, max_pool2d, maxout, maxout_pool2d  # noqa: F401
