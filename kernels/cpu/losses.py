"""Softmax, log-softmax and their gradients, cross-entropy, and the KD and hint losses'
values and gradients, in NumPy (the CUDA twins: kernels/cuda/losses.py). The equations
and their derivations are stated in minifit.losses, which calls these."""
from __future__ import annotations

import numpy as np

from ..shapes import check_labels


def _shift(a, axis):
    return a - a.max(axis=axis, keepdims=True)  # exp never overflows after the shift


def softmax(a, axis=-1):
    e = np.exp(_shift(a, axis))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(a, axis=-1):
    z = _shift(a, axis)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def softmax_backward(g, p, axis=-1):
    return p * (g - (g * p).sum(axis=axis, keepdims=True))


def log_softmax_backward(g, out, axis=-1):
    return g - np.exp(out) * g.sum(axis=axis, keepdims=True)


def cross_entropy_forward(logits, labels):
    """-> (loss 0-d = -1/N sum_n log softmax(z_n)[y_n], logp). labels: int array (N,)."""
    logp = log_softmax(logits, axis=1)
    N = logits.shape[0]
    loss = -logp[np.arange(N), labels].sum() / N
    return np.asarray(loss, dtype=logits.dtype), logp


def cross_entropy_backward(logp, labels, g):
    N = logp.shape[0]
    d = np.exp(logp)
    d[np.arange(N), labels] -= 1.0
    return d * (g / N)


# ------------------------------------------------------------------ KD and hint losses
def kd_loss_value_and_grad(s, t, labels, tau, lam, hinton=False):
    """(L_KD, dL/ds) for student logits s and teacher logits t (N, C), w = lam or lam tau^2:
    value = 1/N sum_n [-log P_S(y_n) + w H(P_T^tau, P_S^tau)],
    grad = 1/N [(P_S - onehot(y)) + (w / tau) (P_S^tau - P_T^tau)]
    (the derivation: minifit.losses.kd_loss). All through log-softmax: logits of +-1e3
    stay finite."""
    if s.shape != t.shape:
        raise ValueError(f"kd_loss: student logits {s.shape} and teacher logits {t.shape} must match")
    if s.ndim != 2:
        raise ValueError(f"kd_loss: logits must be 2-D (N, classes), got shape {s.shape}")
    if tau <= 0:
        raise ValueError(f"kd_loss: tau must be positive, got {tau}")
    y = check_labels("kd_loss", labels, *s.shape)
    N = s.shape[0]
    rows = np.arange(N)
    w = lam * tau * tau if hinton else lam
    log_ps = log_softmax(s, axis=1)
    log_ps_tau = log_softmax(s / tau, axis=1)
    pt_tau = np.exp(log_softmax(t.astype(s.dtype, copy=False) / tau, axis=1))
    hard = -log_ps[rows, y].sum()
    soft = -(pt_tau * log_ps_tau).sum()
    value = (float(hard) + w * float(soft)) / N
    grad = np.exp(log_ps)
    grad[rows, y] -= 1.0
    grad += (w / tau) * (np.exp(log_ps_tau) - pt_tau)
    grad /= N
    return value, grad


def hint_loss_value_and_grad(regressed, hint):
    """(L_HT, dL/dr) = (1/N sum_n 1/2 ||r_n - u_n||^2, (r - u) / N), the sum in float64."""
    if regressed.shape != hint.shape:
        raise ValueError(f"hint_loss: the regressor output {regressed.shape} and the teacher's hint "
                         f"{hint.shape} must have the same shape")
    N = regressed.shape[0]
    diff = regressed - hint.astype(regressed.dtype, copy=False)
    return 0.5 * float(np.sum(diff.astype(np.float64) ** 2)) / N, diff / N
