"""Building blocks read from an experiment file's tables: the error type that names the
key, the epoch scaler of ``--epochs-scale``, optimizers, schedules and the lambda
curriculum, each with the schema of the keys it reads. Used by the runner (experiment.py)
and by every student method; imports no other module of this package but methods.py (for
LinearAnneal) and schema.py."""
from __future__ import annotations

import inspect
import math

from .. import optim
from .methods import LinearAnneal
from .schema import ConfigError, Key, Table, nearest

__all__ = ["ConfigError", "require", "Scaler", "build_optimizer", "build_schedules", "build_lambda",
           "apply_lr_scale", "OPTIMIZER", "SCHEDULES", "LAMBDA_KEYS"]


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


def _optimizer_problem(spec: dict):
    """An optimizer table: name, then that optimizer's own keyword arguments."""
    table = {"sgd": optim.SGD, "rmsprop": optim.RMSProp, "adam": optim.Adam}
    name = spec.get("name")
    if name is None:
        return f"missing key 'name' ({', '.join(table)})"
    if not isinstance(name, str) or name.lower() not in table:
        return f"'name' must be one of {', '.join(table)}; got {name!r}{nearest(str(name), table)}"
    sig = inspect.signature(table[name.lower()])
    known = [p for p in sig.parameters if p != "params"]
    for k, v in spec.items():
        if k == "name":
            continue
        if k not in known:
            return f"unknown key {k!r} for {name}{nearest(k, known)} (known: name, {', '.join(known)})"
        if k == "betas":
            if not (isinstance(v, list) and len(v) == 2 and all(
                    isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in v)):
                return f"'betas' must be two numbers in [0, 1), got {v!r}"
        elif k == "nesterov":
            if not isinstance(v, bool):
                return f"'nesterov' must be true/false, got {v!r}"
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"{k!r} must be a number, got {v!r}"
        elif k == "lr" and v <= 0 or k != "lr" and v < 0:
            return f"{k!r} must be {'> 0' if k == 'lr' else '>= 0'}, got {v!r}"
        elif k in ("momentum", "decay") and v >= 1:
            return f"{k!r} must be below 1, got {v!r}"
    if "lr" not in spec and sig.parameters["lr"].default is inspect.Parameter.empty:
        return f"missing key 'lr' for {name}"
    return None


OPTIMIZER = Key(dict, "{ name = sgd / rmsprop / adam, lr, and that optimizer's keywords: sgd momentum, "
                "nesterov, weight_decay; rmsprop decay, max_scaling; adam betas, eps, weight_decay }",
                check=_optimizer_problem)


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


SCHEDULES = dict(   # the keys build_schedules reads
    momentum_ramp=Key(dict, "momentum from its initial value to final, linearly over epochs", "none",
                      table=Table("momentum_ramp", final=Key(float, "final momentum", min=0),
                                  start=Key(int, "first epoch", "1", min=1),
                                  saturate=Key(int, "epoch it reaches final", "250", min=1))),
    lr_decay=Key(dict, "exponential decay per update: lr = max(lr0 / factor^updates, min_lr)", "none",
                 table=Table("lr_decay", factor=Key(float, "factor per update", min=1),
                             min_lr=Key(float, "floor", "1e-6", min=0))),
    lr_linear=Key(dict, "lr from lr0 at start to lr0 * factor at saturate (epochs), linearly", "none",
                  table=Table("lr_linear", start=Key(int, "first epoch", "1", min=1),
                              saturate=Key(int, "last epoch", min=1), factor=Key(float, "final factor", min=0))),
    lr_step=Key(dict, "lr times gamma at each milestone epoch", "none",
                table=Table("lr_step", milestones=Key(list, "epochs", min=1),
                            gamma=Key(float, "factor", "0.1", gt=0))),
)


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


LAMBDA_KEYS = dict(   # the keys build_lambda reads
    lam=Key((float, list), "lambda: a number, or [start, end] annealed linearly over lam_epochs", "[4, 0]",
            min=0, check=lambda v: None if not isinstance(v, list) or len(v) == 2 else "must be [start, end]"),
    lam_epochs=Key(list, "[first, last] epoch of the lambda anneal (scaled; fractions allowed)", "[5, 150]",
                   min=0, check=lambda v: None if len(v) == 2 and all(isinstance(e, (int, float)) for e in v)
                   else "must be [first, last]"))


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
