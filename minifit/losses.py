"""The papers' losses, each with its gradient derived by hand and written out.

Each loss is a Tensor function that plugs its value and hand-derived gradient into the
autograd graph as one op; its docstring states the equation and the derivation. L_HT and
L_KD compute both in a kernel (``kernels.hint_loss_value_and_grad`` /
``kd_loss_value_and_grad``, on the CPU or the GPU like every op); the adversarial losses
(CPU only) have their NumPy ``*_value_and_grad`` functions here. Targets (the teacher's
outputs) never receive a gradient.

Notation: N batch size, s student logits (N, C), t teacher logits (N, C), y labels,
tau temperature, lam the weight of the soft term, P^tau = softmax(a / tau).
"""
from __future__ import annotations

import numpy as np

import kernels as K

from .functional.activation import log_softmax_array
from .functional.loss import check_labels
from .tensor import Tensor, as_tensor


def _as_array(a):
    """The array of a Tensor, a device array as it is, anything else as a NumPy array."""
    if isinstance(a, Tensor):
        return a.data
    return a if K.is_device_array(a) else np.asarray(a)


# -- L_HT --------------------------------------------------------------------------------
def hint_loss(regressed, hint) -> Tensor:
    """L_HT = 1/N sum_n 1/2 ||r_n - u_n||^2 for the regressor's output r (N, ...) and the
    teacher's hint u (a constant, no gradient), as one graph op.

    dL/dr = (r - u) / N: the gradient of 1/2 ||d||^2 is d, and each sample's term is
    divided by N. (kernels: hint_loss_value_and_grad computes both, on the CPU or the GPU.)"""
    r = as_tensor(regressed)
    u = _as_array(hint)
    if r.shape != tuple(u.shape):
        raise ValueError(f"hint_loss: the regressor output {r.shape} and the teacher's hint "
                         f"{tuple(u.shape)} must have the same shape")
    value, grad = K.hint_loss_value_and_grad(r.data, u)
    return Tensor.from_op(np.asarray(value, dtype=r.dtype), (r,), lambda g: (K.mul(grad, g),))


# -- L_KD --------------------------------------------------------------------------------
def kd_loss(student_logits, teacher_logits, labels, tau: float, lam: float, hinton: bool = False) -> Tensor:
    """L_KD = 1/N sum_n [ -log P_S(y_n) + w * H(P_T^tau, P_S^tau) ],  w = lam (FitNets) or
    lam * tau^2 (Hinton), H(p, q) = -sum_k p_k log q_k, as one graph op; the teacher's
    logits t are a constant (no gradient).

    dL/ds = 1/N [ (P_S - onehot(y)) + (w / tau) (P_S^tau - P_T^tau) ]
    (d/ds of -sum_k p_k log softmax(s/tau)_k = (softmax(s/tau) - p) / tau, as sum_k p_k = 1;
    the hard term is cross-entropy, whose gradient is P_S - onehot(y)). The kernel
    (kernels: kd_loss_value_and_grad, CPU or GPU) runs everything through log-softmax, so
    logits of +-1e3 stay finite."""
    s = as_tensor(student_logits)
    t = _as_array(teacher_logits)
    if s.shape != tuple(t.shape):
        raise ValueError(f"kd_loss: student logits {s.shape} and teacher logits {tuple(t.shape)} must match")
    if tau <= 0:
        raise ValueError(f"kd_loss: tau must be positive, got {tau}")
    y = check_labels("kd_loss", s, labels)
    value, grad = K.kd_loss_value_and_grad(s.data, t, y, tau, lam, hinton)
    return Tensor.from_op(np.asarray(value, dtype=s.dtype), (s,), lambda g: (K.mul(grad, g),))


# -- conditional adversarial KD (Xu, Hsu & Huang 2017, arXiv 1709.00513) -----------------
# D maps logits (N, C) to (N, C + 2): columns 0..C-1 are class scores, column C "real"
# (the input was teacher logits) and C + 1 "fake" (student logits). d_real = D(t),
# d_fake = D(F(x)), l the labels. For any row z and its log-softmax, d log softmax(z)_k / dz
# = onehot(k) - softmax(z); every gradient below is that identity, divided by N.
REAL, FAKE = 0, 1   # index within the 2-way real/fake head


def _split_d(op, d_real, d_fake, labels):
    if d_real.shape != d_fake.shape or d_real.ndim != 2 or d_real.shape[1] < 3:
        raise ValueError(f"{op}: D outputs for teacher {d_real.shape} and student {d_fake.shape} logits must "
                         "both be (N, C + 2) with C >= 1")
    C = d_real.shape[1] - 2
    y = check_labels(op, Tensor(d_real[:, :C]), labels)
    return C, y


def _log_prob_grad(z, k):
    """sum_n log softmax(z_n)[k_n] and its gradient onehot(k) - softmax(z)."""
    logp = log_softmax_array(z, axis=1)
    rows = np.arange(z.shape[0])
    grad = -np.exp(logp)
    grad[rows, k] += 1.0
    return float(logp[rows, k].astype(np.float64).sum()), grad


def adversarial_value_and_grad(d_real: np.ndarray, d_fake: np.ndarray, labels):
    """L_A  = 1/N sum_n [ log P(real | D(t_n)) + log P(fake | D(F(x_n))) ]   (real/fake head)
    L_DS = 1/N sum_n [ log P(l_n | D(t_n))   + log P(l_n | D(F(x_n))) ]    (class head)

    Returns (L_A, (dL_A/dd_real, dL_A/dd_fake)), (L_DS, (dL_DS/dd_real, dL_DS/dd_fake)).
    L_A touches only the last two columns, L_DS only the first C.
    """
    C, y = _split_d("adversarial loss", d_real, d_fake, labels)
    N = d_real.shape[0]
    out = []
    for which in ("A", "DS"):
        value, grads = 0.0, []
        for d, k in ((d_real, REAL), (d_fake, FAKE)):
            g = np.zeros_like(d)
            if which == "A":
                v, g[:, C:] = _log_prob_grad(d[:, C:], np.full(N, k))
            else:
                v, g[:, :C] = _log_prob_grad(d[:, :C], y)
            value += v
            grads.append(g / N)
        out.append((value / N, tuple(grads)))
    return tuple(out)


def la_value_and_grad(d_real, d_fake, labels):
    """L_A and its gradients (w.r.t. d_real, d_fake)."""
    return adversarial_value_and_grad(d_real, d_fake, labels)[0]


def lds_value_and_grad(d_real, d_fake, labels):
    """L_DS and its gradients (w.r.t. d_real, d_fake)."""
    return adversarial_value_and_grad(d_real, d_fake, labels)[1]


def discriminator_loss_value_and_grad(d_real, d_fake, labels):
    """D maximises 1/2 (L_A + L_DS); as a loss to minimise: -1/2 (L_A + L_DS)."""
    (la, (ar, af)), (lds, (sr, sf)) = adversarial_value_and_grad(d_real, d_fake, labels)
    return -0.5 * (la + lds), (-0.5 * (ar + sr), -0.5 * (af + sf))


def gan_loss_value_and_grad(d_real, d_fake, labels):
    """L_GAN = 1/2 (L_A - L_DS), minimised by the student: it lowers log P(fake | D(F(x)))
    (fools the real/fake head) and raises log P(l | D(F(x))) (satisfies D's class head).
    The d_real terms are constants to the student (their gradient is returned anyway)."""
    (la, (ar, af)), (lds, (sr, sf)) = adversarial_value_and_grad(d_real, d_fake, labels)
    return 0.5 * (la - lds), (0.5 * (ar - sr), 0.5 * (af - sf))


def l1_loss_value_and_grad(s: np.ndarray, t: np.ndarray):
    """L_L1 = 1/N sum_n ||s_n - t_n||_1 on raw logits.  dL/ds = sign(s - t) / N
    (subgradient 0 where s = t)."""
    if s.shape != t.shape:
        raise ValueError(f"l1_loss: student logits {s.shape} and teacher logits {t.shape} must match")
    diff = s - t.astype(s.dtype, copy=False)
    N = s.shape[0]
    return float(np.abs(diff.astype(np.float64)).sum()) / N, np.sign(diff) / N


def hinton_kd_value_and_grad(s: np.ndarray, t: np.ndarray, labels, tau: float):
    """The reference's Hinton KD: 1/2 L_S + tau^2 KL(P_T^tau || P_S^tau), averaged over N.

    KL = H(P_T^tau, P_S^tau) - H(P_T^tau): it differs from kd_loss(..., hinton=True)'s soft
    term only by the teacher's entropy (a constant), so the soft gradients agree; the hard
    term here has weight 1/2. dL/ds = 1/N [ 1/2 (P_S - onehot(y)) + tau (P_S^tau - P_T^tau) ].
    """
    if s.shape != t.shape:
        raise ValueError(f"hinton_kd: student logits {s.shape} and teacher logits {t.shape} must match")
    if tau <= 0:
        raise ValueError(f"hinton_kd: tau must be positive, got {tau}")
    y = check_labels("hinton_kd", Tensor(s), labels)
    N, rows = s.shape[0], np.arange(s.shape[0])
    log_ps = log_softmax_array(s, axis=1)
    log_ps_tau = log_softmax_array(s / tau, axis=1)
    log_pt_tau = log_softmax_array(t.astype(s.dtype, copy=False) / tau, axis=1)
    pt_tau = np.exp(log_pt_tau)
    hard = -float(log_ps[rows, y].astype(np.float64).sum())
    kl = float((pt_tau * (log_pt_tau - log_ps_tau)).astype(np.float64).sum())
    value = (0.5 * hard + tau * tau * kl) / N
    grad = 0.5 * np.exp(log_ps)
    grad[rows, y] -= 0.5
    grad += tau * (np.exp(log_ps_tau) - pt_tau)
    return value, grad / N


def _pair_op(fn, d_real, d_fake, labels) -> Tensor:
    r, f = as_tensor(d_real), as_tensor(d_fake)
    value, (gr, gf) = fn(r.data, f.data, labels)
    return Tensor.from_op(np.asarray(value, dtype=f.dtype), (r, f), lambda g: (gr * g, gf * g))


def la_loss(d_real, d_fake, labels) -> Tensor:
    """L_A as a graph op over D's outputs for teacher and student logits."""
    return _pair_op(la_value_and_grad, d_real, d_fake, labels)


def lds_loss(d_real, d_fake, labels) -> Tensor:
    """L_DS as a graph op."""
    return _pair_op(lds_value_and_grad, d_real, d_fake, labels)


def discriminator_loss(d_real, d_fake, labels) -> Tensor:
    """-1/2 (L_A + L_DS) as a graph op (D's objective, to minimise)."""
    return _pair_op(discriminator_loss_value_and_grad, d_real, d_fake, labels)


def gan_loss(d_real, d_fake, labels) -> Tensor:
    """L_GAN = 1/2 (L_A - L_DS) as a graph op (the student's adversarial term)."""
    return _pair_op(gan_loss_value_and_grad, d_real, d_fake, labels)


def l1_loss(student_logits, teacher_logits) -> Tensor:
    """L_L1 as a graph op; the teacher's logits are a constant."""
    s = as_tensor(student_logits)
    value, grad = l1_loss_value_and_grad(s.data, _as_array(teacher_logits))
    return Tensor.from_op(np.asarray(value, dtype=s.dtype), (s,), lambda g: (grad * g,))


def hinton_kd_loss(student_logits, teacher_logits, labels, tau: float) -> Tensor:
    """1/2 L_S + tau^2 KL as a graph op; the teacher's logits are a constant."""
    s = as_tensor(student_logits)
    value, grad = hinton_kd_value_and_grad(s.data, _as_array(teacher_logits), labels, tau)
    return Tensor.from_op(np.asarray(value, dtype=s.dtype), (s,), lambda g: (grad * g,))


STUDENT_TERMS = ("S", "L1", "GAN", "KD")


def student_objective_value_and_grad(s, t, labels, d_real=None, d_fake=None, terms=("S", "L1", "GAN"),
                                     tau: float = 1.0):
    """The student's objective, the sum of the switched-on terms (each of weight 1):
    S = L_S (cross-entropy with the labels), L1 = L_L1, GAN = L_GAN (needs d_real = D(t),
    d_fake = D(s)), KD = Hinton KD at temperature tau (the comparison method).

    Returns (value, {term: value}, dL/ds, dL/dd_fake): the direct gradient w.r.t. the
    student's logits and the gradient w.r.t. D's output for them (None without GAN); the
    GAN part reaches s through D (chain rule through D's layers, done by the graph).
    """
    unknown = [k for k in terms if k not in STUDENT_TERMS]
    if unknown or not terms:
        raise ValueError(f"student objective: terms must be a non-empty subset of {STUDENT_TERMS}, got {terms}")
    parts, ds, dd = {}, np.zeros_like(s), None
    if "S" in terms:
        y = check_labels("L_S", Tensor(s), labels)
        v, g = _log_prob_grad(s, y)
        parts["S"], ds = -v / len(s), ds - g / len(s)
    if "L1" in terms:
        parts["L1"], g = l1_loss_value_and_grad(s, t)
        ds = ds + g
    if "KD" in terms:
        parts["KD"], g = hinton_kd_value_and_grad(s, t, labels, tau)
        ds = ds + g
    if "GAN" in terms:
        if d_real is None or d_fake is None:
            raise ValueError("student objective: the GAN term needs D's outputs d_real and d_fake")
        parts["GAN"], (_, dd) = gan_loss_value_and_grad(d_real, d_fake, labels)
    return float(sum(parts.values())), parts, ds, dd


def student_objective(student_logits, teacher_logits, labels, d_real=None, d_fake=None,
                      terms=("S", "L1", "GAN"), tau: float = 1.0):
    """The student objective as one graph op over (s, D(s)); returns (Tensor, {term: value}).
    ``d_real`` is a constant (D's output for the teacher's logits)."""
    s = as_tensor(student_logits)
    value, parts, ds, dd = student_objective_value_and_grad(
        s.data, _as_array(teacher_logits), labels, None if d_real is None else _as_array(d_real),
        None if d_fake is None else _as_array(d_fake), terms, tau)
    if dd is None:
        return Tensor.from_op(np.asarray(value, dtype=s.dtype), (s,), lambda g: (ds * g,)), parts
    f = as_tensor(d_fake)
    return Tensor.from_op(np.asarray(value, dtype=s.dtype), (s, f), lambda g: (ds * g, dd * g)), parts
