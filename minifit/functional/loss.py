"""Cross-entropy, the loss every method shares."""
from __future__ import annotations

import numpy as np

import kernels as K

from ..tensor import Tensor, as_tensor
from . import _check


def check_labels(op: str, logits, labels) -> np.ndarray:
    """Labels for 2-D logits (N, classes): int64 (N,) in [0, classes), else a ValueError
    naming ``op``."""
    if logits.ndim != 2:
        _check.fail(op, f"logits must be 2-D (N, classes), got shape {logits.shape}")
    return K.check_labels(op, labels.numpy() if isinstance(labels, Tensor) else labels, *logits.shape)


def cross_entropy(logits, labels) -> Tensor:
    """-1/N sum_n log softmax(z_n)[y_n].  d/dz = (softmax(z) - onehot(y)) / N."""
    z = as_tensor(logits)
    y = check_labels("cross_entropy", z, labels)
    loss, logp = K.cross_entropy_forward(z.data, y)
    return Tensor.from_op(loss, (z,), lambda g: (K.cross_entropy_backward(logp, y, g),))
