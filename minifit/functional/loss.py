"""Cross-entropy, the loss every method shares."""
from __future__ import annotations

import numpy as np

import kernels as K

from ..tensor import Tensor, as_tensor
from . import _check


def check_labels(op: str, logits, labels) -> np.ndarray:
    labels = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels)
    if logits.ndim != 2:
        _check.fail(op, f"logits must be 2-D (N, classes), got shape {logits.shape}")
    if labels.shape != (logits.shape[0],):
        _check.fail(op, f"labels must have shape ({logits.shape[0]},) for logits {logits.shape}, got {labels.shape}")
    if labels.dtype.kind not in "iu":
        _check.fail(op, f"labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        _check.fail(op, f"labels must lie in [0, {logits.shape[1]}), got range [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64, copy=False)


def cross_entropy(logits, labels) -> Tensor:
    """-1/N sum_n log softmax(z_n)[y_n].  d/dz = (softmax(z) - onehot(y)) / N."""
    z = as_tensor(logits)
    y = check_labels("cross_entropy", z, labels)
    loss, logp = K.cross_entropy_forward(z.data, y)
    return Tensor.from_op(loss, (z,), lambda g: (K.cross_entropy_backward(logp, y, g),))
