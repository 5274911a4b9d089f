"""The papers' losses, each with its gradient derived by hand and written out.

Each loss has a NumPy ``*_value_and_grad`` function (the equations, testable on their own)
and a Tensor function that plugs it into the autograd graph as one op. Targets (the
teacher's outputs) never receive a gradient.

Notation: N batch size, s student logits (N, C), t teacher logits (N, C), y labels,
tau temperature, lam the weight of the soft term, P^tau = softmax(a / tau).
"""
from __future__ import annotations

import numpy as np

from .functional.activation import log_softmax_array
from .functional.loss import check_labels
from .tensor import Tensor, as_tensor


def _as_array(a):
    return a.data if isinstance(a, Tensor) else np.asarray(a)


# -- L_HT --------------------------------------------------------------------------------
def hint_loss_value_and_grad(regressed: np.ndarray, hint: np.ndarray):
    """L_HT = 1/N sum_n 1/2 ||r_n - u_n||^2.   dL/dr = (r - u) / N."""
    if regressed.shape != hint.shape:
        raise ValueError(f"hint_loss: the regressor output {regressed.shape} and the teacher's hint "
                         f"{hint.shape} must have the same shape")
    N = regressed.shape[0]
    diff = regressed - hint.astype(regressed.dtype, copy=False)
    return 0.5 * float(np.sum(diff.astype(np.float64) ** 2)) / N, diff / N


def hint_loss(regressed, hint) -> Tensor:
    """Hint loss as a graph op; ``hint`` (teacher, up to the hint layer) is a constant."""
    r = as_tensor(regressed)
    value, grad = hint_loss_value_and_grad(r.data, _as_array(hint))
    return Tensor.from_op(np.asarray(value, dtype=r.dtype), (r,), lambda g: (grad * g,))


# -- L_KD --------------------------------------------------------------------------------
def kd_loss_value_and_grad(s: np.ndarray, t: np.ndarray, labels, tau: float, lam: float,
                           hinton: bool = False):
    """L_KD = 1/N sum_n [ -log P_S(y_n) + w * H(P_T^tau, P_S^tau) ],  w = lam (FitNets) or
    lam * tau^2 (Hinton), H(p, q) = -sum_k p_k log q_k.

    dL/ds = 1/N [ (P_S - onehot(y)) + (w / tau) (P_S^tau - P_T^tau) ]
    (d/ds of -sum_k p_k log softmax(s/tau)_k = (softmax(s/tau) - p) / tau, as sum_k p_k = 1).
    Everything runs through log-softmax, so logits of +-1e3 stay finite.
    """
    if s.shape != t.shape:
        raise ValueError(f"kd_loss: student logits {s.shape} and teacher logits {t.shape} must match")
    if tau <= 0:
        raise ValueError(f"kd_loss: tau must be positive, got {tau}")
    y = check_labels("kd_loss", Tensor(s), labels)
    N = s.shape[0]
    rows = np.arange(N)
    w = lam * tau * tau if hinton else lam
    log_ps = log_softmax_array(s, axis=1)
    log_ps_tau = log_softmax_array(s / tau, axis=1)
    pt_tau = np.exp(log_softmax_array(t.astype(s.dtype, copy=False) / tau, axis=1))
    hard = -log_ps[rows, y].sum()
    soft = -(pt_tau * log_ps_tau).sum()
    value = (float(hard) + w * float(soft)) / N
    grad = np.exp(log_ps)
    grad[rows, y] -= 1.0
    grad += (w / tau) * (np.exp(log_ps_tau) - pt_tau)
    grad /= N
    return value, grad


def kd_loss(student_logits, teacher_logits, labels, tau: float, lam: float, hinton: bool = False) -> Tensor:
    """KD loss as a graph op; the teacher's logits are a constant (no gradient)."""
    s = as_tensor(student_logits)
    value, grad = kd_loss_value_and_grad(s.data, _as_array(teacher_logits), labels, tau, lam, hinton)
    return Tensor.from_op(np.asarray(value, dtype=s.dtype), (s,), lambda g: (grad * g,))
