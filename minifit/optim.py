"""Optimizers and schedules. After every update each parameter's max-norm constraint is
applied (pylearn2 does the same), so a model never leaves its constraint set.

Every parameter's step uses ``lr * p.lr_scale`` (the FitNets configs scale every layer by .05).
Schedules change ``optimizer.lr`` / ``optimizer.momentum``: the training loop calls
``on_update()`` after each step and ``on_epoch_end(epoch)`` after each epoch (1-based).
"""
from __future__ import annotations

import numpy as np

import kernels as K

from .device import move, to_host
from .errors import UnknownNameError


class Optimizer:
    hyper = ("lr",)  # hyper-parameters saved in state_dict
    # data parallelism (minifit.parallel): sums the ranks' gradients in place before each step
    reduce_grads = None

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        self.lr = float(lr)
        self.state = [dict() for _ in self.params]  # per-parameter slots, e.g. velocity
        self.steps = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        if self.reduce_grads is not None:
            self.reduce_grads(self.params)
        self.steps += 1
        for p, slots in zip(self.params, self.state):
            if p.grad is None:
                continue
            if p.grad.shape != p.shape:
                raise ValueError(f"{type(self).__name__}.step: gradient shape {p.grad.shape} "
                                 f"does not match parameter shape {p.shape}")
            # the update kernels apply the max-norm constraint in the same pass (None: off)
            self._update(p, K.astype(p.grad, p.dtype), self.lr * p.lr_scale, slots, p.max_norm)

    def _slot(self, slots, name, p):
        if name not in slots:
            slots[name] = K.zeros_like(p.data)
        return slots[name]

    def _update(self, p, g, lr, slots, max_norm):
        raise NotImplementedError

    def state_dict(self) -> dict:
        out = {h: np.asarray(getattr(self, h)) for h in self.hyper}
        out["steps"] = np.asarray(self.steps)
        for i, slots in enumerate(self.state):
            for k, v in slots.items():
                out[f"slot.{i}.{k}"] = to_host(v)
        return out

    def load_state_dict(self, state: dict):
        for h in self.hyper:
            if h in state:
                setattr(self, h, float(state[h]))
        self.steps = int(state.get("steps", 0))
        self.state = [dict() for _ in self.params]
        for key, v in state.items():
            if key.startswith("slot."):
                _, i, name = key.split(".", 2)
                i = int(i)
                if i >= len(self.params) or v.shape != self.params[i].shape:
                    raise ValueError(f"{type(self).__name__}.load_state_dict: slot {key} of shape {v.shape} "
                                     "does not fit this model's parameters")
                self.state[i][name] = move(np.array(v, dtype=self.params[i].dtype), self.params[i].device)
        return self


class SGD(Optimizer):
    """v <- mu v - lr (g + wd p); p <- p + v  (Nesterov: p <- p + mu v - lr (g + wd p))."""

    hyper = ("lr", "momentum", "weight_decay")

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum, self.nesterov, self.weight_decay = float(momentum), nesterov, float(weight_decay)

    def _update(self, p, g, lr, slots, max_norm):
        v = self._slot(slots, "v", p) if self.momentum or "v" in slots else None
        K.sgd_update(p.data, g, v, lr, self.momentum, self.nesterov, self.weight_decay, max_norm)


class RMSProp(Optimizer):
    """pylearn2 RMSProp: ms <- decay ms + (1 - decay) g^2; p <- p - lr g / max(sqrt(ms), eps),
    with eps = 1 / max_scaling (default 1e5)."""

    hyper = ("lr", "decay")

    def __init__(self, params, lr, decay=0.9, max_scaling=1e5):
        super().__init__(params, lr)
        self.decay, self.eps = float(decay), 1.0 / float(max_scaling)

    def _update(self, p, g, lr, slots, max_norm):
        K.rmsprop_update(p.data, g, self._slot(slots, "mean_square", p), lr, self.decay, self.eps, max_norm)


class Adam(Optimizer):
    """Kingma & Ba: m, v moving averages of g and g^2 with bias correction."""

    hyper = ("lr", "beta1", "beta2")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2 = map(float, betas)
        self.eps, self.weight_decay = eps, weight_decay

    def _update(self, p, g, lr, slots, max_norm):
        m, v = self._slot(slots, "m", p), self._slot(slots, "v", p)
        K.adam_update(p.data, g, m, v, lr, self.beta1, self.beta2, self.eps, self.steps, self.weight_decay,
                      max_norm)


def build(name: str, params, **kwargs) -> Optimizer:
    """Optimizer by name ('sgd', 'rmsprop', 'adam'), as experiment files write it."""
    table = {"sgd": SGD, "rmsprop": RMSProp, "adam": Adam}
    if name.lower() not in table:
        raise UnknownNameError(f"unknown optimizer {name!r}; choose one of {sorted(table)}")
    return table[name.lower()](params, **kwargs)


# -- schedules -------------------------------------------------------------
class Schedule:
    def on_update(self):
        pass

    def on_epoch_end(self, epoch: int):
        pass


class StepLR(Schedule):
    """lr = base * gamma ** (number of milestones <= epoch): e.g. /10 at epochs 80 and 160."""

    def __init__(self, optimizer, milestones, gamma=0.1):
        self.opt, self.milestones, self.gamma = optimizer, sorted(milestones), gamma
        self.base = optimizer.lr

    def on_epoch_end(self, epoch):
        self.opt.lr = self.base * self.gamma ** sum(m <= epoch for m in self.milestones)


class LinearDecay(Schedule):
    """pylearn2 LinearDecayOverEpoch: lr goes linearly from base at ``start`` to
    base * decay_factor at ``saturate`` (epochs), constant after."""

    def __init__(self, optimizer, start, saturate, decay_factor):
        self.opt, self.start, self.saturate, self.factor = optimizer, start, saturate, decay_factor
        self.base = optimizer.lr

    def on_epoch_end(self, epoch):
        a = np.clip((epoch - self.start) / max(self.saturate - self.start, 1), 0.0, 1.0)
        self.opt.lr = self.base * (1 - a + a * self.factor)


class ExponentialDecay(Schedule):
    """pylearn2 ExponentialDecay: after each update lr = max(base / factor ** updates, min_lr)."""

    def __init__(self, optimizer, decay_factor, min_lr=1e-6):
        self.opt, self.factor, self.min_lr = optimizer, decay_factor, min_lr
        self.base = optimizer.lr

    def on_update(self):
        self.opt.lr = max(self.base / self.factor ** self.opt.steps, self.min_lr)


class MomentumRamp(Schedule):
    """pylearn2 MomentumAdjustor: momentum goes linearly from its initial value at epoch
    ``start`` to ``final`` at epoch ``saturate``."""

    def __init__(self, optimizer, final, start=1, saturate=250):
        self.opt, self.final, self.start, self.saturate = optimizer, final, start, saturate
        self.initial = optimizer.momentum

    def on_epoch_end(self, epoch):
        a = np.clip((epoch - self.start) / max(self.saturate - self.start, 1), 0.0, 1.0)
        self.opt.momentum = self.initial + a * (self.final - self.initial)
