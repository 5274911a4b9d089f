"""Building blocks read from an experiment file's tables: the error type that names the
key, the epoch scaler of ``--epochs-scale``, optimizers, schedules and the lambda
curriculum. Used by the runner (experiment.py) and by every student method; imports no
other module of this package but methods.py (for LinearAnneal)."""
from __future__ import annotations

from .. import optim
from .methods import LinearAnneal


class ConfigError(ValueError):
    """A problem in an experiment file, named by its key."""


def require(table: dict, key: str, where: str):
    """``table[key]``, or a ConfigError naming the key and where it was expected."""
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}")
    return table[key]


class Scaler:
    """Epoch counts scaled by --epochs-scale (at least 1)."""

    def __init__(self, scale: float):
        if scale <= 0:
            raise ConfigError(f"--epochs-scale must be positive, got {scale}")
        self.scale = scale

    def __call__(self, epochs):
        return max(1, int(round(epochs * self.scale)))

    def exact(self, epoch: float) -> float:
        """An epoch position scaled without rounding (the lambda anneal is continuous)."""
        return float(epoch) * self.scale


def build_optimizer(model_params, spec: dict, where: str):
    """``optimizer = { name = "sgd" | "rmsprop" | "adam", lr = ..., ... }``."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name is None:
        raise ConfigError(f"{where}: optimizer needs a name (sgd, rmsprop, adam)")
    try:
        return optim.build(name, model_params, **spec)
    except TypeError as e:
        raise ConfigError(f"{where}: bad optimizer settings {spec}: {e}") from None


def build_schedules(opt, spec: dict, scale: Scaler):
    """Schedules named in a [teacher] / [[student]] table."""
    out = []
    if "momentum_ramp" in spec:
        r = spec["momentum_ramp"]
        out.append(optim.MomentumRamp(opt, r["final"], scale(r.get("start", 1)), scale(r.get("saturate", 250))))
    if "lr_decay" in spec:  # exponential, per update
        r = spec["lr_decay"]
        out.append(optim.ExponentialDecay(opt, r["factor"], r.get("min_lr", 1e-6)))
    if "lr_linear" in spec:
        r = spec["lr_linear"]
        out.append(optim.LinearDecay(opt, scale(r.get("start", 1)), scale(r["saturate"]), r["factor"]))
    if "lr_step" in spec:
        r = spec["lr_step"]
        out.append(optim.StepLR(opt, [scale(m) for m in r["milestones"]], r.get("gamma", 0.1)))
    return out


def build_lambda(spec: dict, scale: Scaler) -> LinearAnneal:
    """KD's lambda: ``lam = [start, end]`` (or one value), annealed linearly in the (1-based)
    epoch between ``lam_epochs`` (fractional positions allowed, scaled without rounding)."""
    lam = spec.get("lam", [4.0, 0.0])
    lam = lam if isinstance(lam, list) else [lam, lam]
    e0, e1 = spec.get("lam_epochs", [5, 150])
    return LinearAnneal(lam[0], lam[1], (scale.exact(e0), scale.exact(e1)))


def apply_lr_scale(model, spec: dict):
    """``lr_scale = s``: every parameter of ``model`` learns at s times the optimizer's rate."""
    if "lr_scale" in spec:
        for p in model.parameters():
            p.lr_scale = float(spec["lr_scale"])
