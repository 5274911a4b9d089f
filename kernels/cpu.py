"""CPU kernels (temporary: re-exports the NumPy reference until the Numba versions land)."""
from __future__ import annotations

from .reference import *  # noqa: F401,F403
from .reference import (  # noqa: F401
    im2col, col2im, conv2d_forward, conv2d_backward,
    maxout_forward, maxout_backward,
    maxpool2d_forward, maxpool2d_backward, maxout_pool_forward, maxout_pool_backward,
    global_avg_pool_forward, global_avg_pool_backward,
    batch_norm_forward, batch_norm_backward, batch_norm_inference,
    relu_forward, relu_backward, dropout_mask,
)
