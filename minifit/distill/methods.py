"""Training methods as objectives for the one loop (minifit.distill.loop.fit):
plain backprop, Hinton/FitNets KD, and FitNets stage 1 (hints). Each keeps the models and
optimizers it trains, so checkpoints and resuming are the loop's business, not theirs."""
from __future__ import annotations

import numpy as np

from .. import checkpoint
from .. import functional as F
from ..device import device_of, move
from ..losses import hint_loss, kd_loss
from ..parallel import SINGLE
from ..tensor import Tensor, no_grad


def model_device(model) -> str:
    """Where a model's parameters live ("cpu" or "cuda")."""
    p = next(iter(model.parameters()), None)
    return "cpu" if p is None else device_of(p.data)


def predict(model, x: np.ndarray, batch_size: int = 500, upto: str | None = None) -> np.ndarray:
    """Model outputs (host arrays) for host inputs, in evaluation mode, without a graph;
    batches go to the model's device and back."""
    was_training = model.training
    model.eval()
    dev = model_device(model)
    outs = []
    with no_grad():
        for i in range(0, len(x), batch_size):
            xb = Tensor(move(x[i:i + batch_size], dev))
            outs.append((model.forward(xb, upto=upto) if upto else model(xb)).numpy())
    model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0,))


def error_rate(model, valid, batch_size: int = 500, comm=SINGLE) -> float:
    """Misclassification rate (%) of ``model`` on ``valid`` (a Split); with a data-parallel
    ``comm`` each rank evaluates its share of the examples and the counts are summed."""
    wrong = total = 0
    for x, y in valid.eval_batches(batch_size, comm.share(len(valid))):
        logits = predict(model, x, batch_size)
        wrong += int((logits.argmax(axis=1) != y).sum())
        total += len(y)
    wrong, total = comm.sum([wrong, total])
    return float(100.0 * wrong / max(total, 1))


class Method:
    """Base: ``models`` (name -> Module, trained and checkpointed), ``optimizers`` (name ->
    Optimizer), ``schedules``; ``model`` is the network the loop validates and debugs."""

    name = "method"
    comm = SINGLE  # the data-parallel communicator (minifit.parallel); the loop attaches it

    def __init__(self, model, optimizer, schedules=()):
        self.model = model
        self.device = model_device(model)
        self.models = {"model": model}
        self.optimizers = {"optimizer": optimizer}
        self.schedules = list(schedules)

    def tensor(self, x) -> Tensor:
        """A host batch as a Tensor on the method's device."""
        return Tensor(move(x, self.device))

    # -- the loop's hooks ----------------------------------------------------------------
    def on_epoch_start(self, epoch: int):
        self.epoch = epoch
        for m in self.models.values():
            m.train()

    def on_epoch_end(self, epoch: int):
        for s in self.schedules:
            s.on_epoch_end(epoch)

    def loss(self, idx, x, y) -> tuple[Tensor, dict]:
        raise NotImplementedError

    def step(self, idx, x, y) -> dict:
        loss, logs = self.loss(idx, x, y)
        value = self.comm.mean(loss.item())  # the global batch's loss: every rank takes the same branch
        if not np.isfinite(value):
            return {"loss": value}  # no update: the loop reports it on the untouched model
        for opt in self.optimizers.values():
            opt.zero_grad()
        loss.backward()
        for opt in self.optimizers.values():
            opt.step()
        for s in self.schedules:
            s.on_update()
        return {"loss": value, **logs}

    def validate(self, valid) -> tuple[float, dict]:
        """(metric to minimise, logs); default: the model's validation error in %."""
        err = error_rate(self.model, valid, comm=self.comm)
        return err, {"valid_err": err}

    def epoch_logs(self) -> dict:
        opt = next(iter(self.optimizers.values()))
        return {"lr": opt.lr}

    # -- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": _Merged(self.models).state_dict(), "optim": _Merged(self.optimizers).state_dict()}

    def restore(self, state: dict):
        _Merged(self.models).load_state_dict(state["model"])
        _Merged(self.optimizers).load_state_dict(state["optim"])

    def save(self, path, **meta):
        checkpoint.save(path, _Merged(self.models), _Merged(self.optimizers), **meta)

    def load(self, path) -> dict:
        ckpt = checkpoint.read(path)
        _Merged(self.models).load_state_dict(ckpt["model"])
        if ckpt["optim"]:
            _Merged(self.optimizers).load_state_dict(ckpt["optim"])
        return ckpt["meta"]


class _Merged:
    """Several stateful objects seen as one state dict, keys prefixed by their name."""

    def __init__(self, parts: dict):
        self.parts = parts

    def state_dict(self):
        return {f"{name}:{k}": v for name, part in self.parts.items() for k, v in part.state_dict().items()}

    def load_state_dict(self, state):
        for name, part in self.parts.items():
            prefix = f"{name}:"
            part.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def batch_error(logits: Tensor, y) -> dict:
    """Training error (%) of a batch, from the logits the step computed anyway."""
    return {"err": 100.0 * float(np.mean(logits.numpy().argmax(axis=1) != y))}


class Backprop(Method):
    """Standard training: minimise cross-entropy with the labels."""

    name = "backprop"

    def loss(self, idx, x, y):
        logits = self.model(self.tensor(x))
        return F.cross_entropy(logits, y), batch_error(logits, y)


class LinearAnneal:
    """A value going linearly from ``start`` (up to epoch ``epochs[0]``) to ``end`` (from
    epoch ``epochs[1]`` on): the FitNets lambda curriculum."""

    def __init__(self, start: float, end: float, epochs=(0, 1)):
        self.start, self.end, self.epochs = float(start), float(end), tuple(epochs)

    def __call__(self, epoch: int) -> float:
        e0, e1 = self.epochs   # (may be fractional: epoch positions scaled by --epochs-scale)
        if epoch <= e0:
            return self.start
        if epoch >= e1:
            return self.end
        return self.start + (epoch - e0) / (e1 - e0) * (self.end - self.start)


class KD(Method):
    """Knowledge distillation: L_KD = CE(y, P_S) + lambda(epoch) * H(P_T^tau, P_S^tau).

    teacher: a TeacherOutputs source of the teacher's logits (cached or computed per batch).
    """

    name = "kd"

    def __init__(self, model, optimizer, teacher, tau=3.0, lam=LinearAnneal(4.0, 0.0), hinton=False,
                 schedules=()):
        super().__init__(model, optimizer, schedules)
        self.teacher, self.tau, self.lam, self.hinton = teacher, tau, lam, hinton
        self.epoch = 1

    def loss(self, idx, x, y):
        t = move(self.teacher.get(idx, x), self.device)
        logits = self.model(self.tensor(x))
        return kd_loss(logits, t, y, self.tau, self.lam(self.epoch), self.hinton), batch_error(logits, y)

    def epoch_logs(self):
        return {**super().epoch_logs(), "lambda": self.lam(self.epoch)}


class Hints(Method):
    """FitNets stage 1: minimise L_HT = 1/2 ||u_h(x) - r(v_g(x))||^2 over the student's
    layers up to the guided layer (``model[:guided]``) and the regressor."""

    name = "hints"

    def __init__(self, student, guided: str, regressor, optimizer, teacher_hints, schedules=()):
        self.guided_part = student[:guided]
        super().__init__(self.guided_part, optimizer, schedules)
        self.student, self.guided, self.regressor = student, guided, regressor
        self.models = {"guided": self.guided_part, "regressor": regressor}
        self.teacher = teacher_hints

    def regressed(self, x):
        return self.regressor(self.guided_part(self.tensor(x)))

    def loss(self, idx, x, y):
        return hint_loss(self.regressed(x), move(self.teacher.get(idx, x), self.device)), {}

    def validate(self, valid):
        """Mean hint loss on the validation split (the stage's own objective)."""
        total = n = 0.0
        for m in self.models.values():
            m.eval()
        with no_grad():
            for idx, x, _ in valid.indexed_eval_batches(500, self.comm.share(len(valid))):
                hint = move(self.teacher.get(idx, x, split="valid"), self.device)
                total += hint_loss(self.regressed(x), hint).item() * len(x)
                n += len(x)
        total, n = self.comm.sum([total, n])
        loss = float(total / max(n, 1))
        return loss, {"valid_hint": loss}


class TeacherOutputs:
    """The teacher's logits or hint-layer outputs for training examples.

    Without augmentation the outputs depend only on the example, so they are computed once
    per split and served by index (``cache=True``); with augmentation they are computed on
    each augmented batch. comm: with data parallelism each rank computes its share of a
    cached split (and only its own slice of each batch otherwise); the shares are summed
    into the full table on every rank.
    """

    def __init__(self, teacher, upto: str | None = None, cache: bool = True, batch_size: int = 500,
                 comm=SINGLE):
        self.teacher, self.upto, self.cache, self.batch_size = teacher, upto, cache, batch_size
        self.comm = comm
        self.store = {}

    def precompute(self, name: str, split):
        """Compute and keep the outputs for every example of ``split`` (a Split), by index."""
        out = None
        for idx, x, _ in split.indexed_eval_batches(self.batch_size, self.comm.share(len(split))):
            y = predict(self.teacher, x, self.batch_size, self.upto)
            if out is None:
                out = np.zeros((len(split),) + y.shape[1:], y.dtype)  # zeros: the other ranks' rows
            out[idx] = y
        self.store[name] = out if out is None else self.comm.sum_into(out)

    def get(self, idx, x, split: str = "train") -> np.ndarray:
        if self.cache and split in self.store:
            return self.store[split][idx]
        return predict(self.teacher, x, self.batch_size, self.upto)
