"""Optimizer updates, in place, in NumPy: SGD (momentum, Nesterov, weight decay), RMSProp
(pylearn2's form), Adam. The formulas are minifit.optim's; kernels/cuda/optim.py holds the
CUDA twins."""
from __future__ import annotations

import numpy as np


def sgd_update(p, g, v, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    if weight_decay:
        g = g + weight_decay * p
    if v is None:
        p -= lr * g
        return p
    v *= momentum
    v -= lr * g
    if nesterov:
        p += momentum * v - lr * g
    else:
        p += v
    return p


def rmsprop_update(p, g, ms, lr, decay, eps):
    ms *= decay
    ms += (1 - decay) * g * g
    p -= lr * g / np.maximum(np.sqrt(ms), eps)
    return p


def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, weight_decay=0.0):
    if weight_decay:
        g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    mhat = m / (1 - beta1 ** t)
    vhat = v / (1 - beta2 ** t)
    p -= lr * mhat / (np.sqrt(vhat) + eps)
    return p
