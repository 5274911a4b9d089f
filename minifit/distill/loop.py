"""The one training loop. A method (backprop, KD, a FitNets stage, adversarial KD) supplies
``step`` and ``validate``; the loop owns epochs, schedules, the progress bar, per-epoch log
lines, NaN detection, checkpoints, resuming and early stopping.

Checkpoints (in ``out_dir``): ``last.npz`` after every epoch (models, optimizers, history,
RNG state) so ``resume=True`` continues without losing finished epochs, and ``best.npz``
whenever the validation metric improves; at the end the best weights are loaded back.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .. import random as mrandom
from ..device import move
from ..parallel import SINGLE
from ..tensor import Tensor, no_grad
from .methods import model_device


class NonFiniteError(FloatingPointError):
    """A loss became NaN or Inf; the message names the step and the first bad layer."""


def locate_nonfinite(model, x) -> str:
    """Run ``model`` (a Sequential) layer by layer on ``x`` and name the first layer whose
    parameters or output are not finite."""
    with no_grad():
        h = x if isinstance(x, Tensor) else Tensor(move(x, model_device(model)))
        if not np.all(np.isfinite(h.numpy())):
            return "the input batch"
        for name, layer in getattr(model, "_children", {}).items():
            for pname, p in layer.named_parameters():
                if not np.all(np.isfinite(p.numpy())):
                    return f"{name} (parameter {pname} is not finite)"
            h = layer(h)
            if not np.all(np.isfinite(h.numpy())):
                return f"{name} ({type(layer).__name__}: its output is not finite)"
    return "the loss itself (every layer output is finite)"


class Progress:
    """One updating line on a terminal; on a pipe, a line at each 25% so logs stay short."""

    def __init__(self, total: int, prefix: str, stream=None, enabled: bool = True):
        self.total, self.prefix = max(total, 1), prefix
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled
        self.start = time.perf_counter()
        self.last_quarter = 0

    def update(self, done: int, text: str = ""):
        if not self.enabled:
            return
        frac = done / self.total
        elapsed = time.perf_counter() - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * int(20 * frac)
        line = f"{self.prefix} [{bar:<20}] {done}/{self.total} {text} eta {eta:4.0f}s"
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150))
            self.stream.flush()
        elif int(4 * frac) > self.last_quarter and done < self.total:
            self.last_quarter = int(4 * frac)
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\r" + " " * 150 + "\r")
            self.stream.flush()


@dataclass
class FitResult:
    history: list = field(default_factory=list)   # one dict per epoch
    best_epoch: int = 0
    best_metric: float = math.inf
    stopped_early: bool = False
    seconds: float = 0.0


def fit(method, train, valid, epochs: int, out_dir=None, patience: int | None = None,
        resume: bool = False, log=print, progress: bool = True, name: str = "train", comm=SINGLE) -> FitResult:
    """Train ``method`` for up to ``epochs`` epochs.

    train: has ``batches(epoch) -> iterable of (idx, x, y)`` and ``num_batches``.
    valid: passed to ``method.validate(valid) -> (metric, logs)``; lower metric is better.
    patience: stop after this many epochs without a better validation metric.
    comm: data parallelism (minifit.parallel): each rank trains on its slice of every
    batch; only rank 0 logs and writes checkpoints, and reads them for every rank.
    """
    comm.attach(method)
    if not comm.is_root:
        log, progress = _quiet, False
    result = FitResult()
    last_path = best_path = None
    start_epoch = 1
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        last_path, best_path = os.path.join(out_dir, "last.npz"), os.path.join(out_dir, "best.npz")
        if resume and comm.bcast(os.path.exists(last_path)):
            meta = _load(method, last_path, comm)
            result.history = meta["history"]
            result.best_epoch, result.best_metric = meta["best_epoch"], meta["best_metric"]
            result.seconds = meta.get("seconds", 0.0)
            mrandom.set_state(meta["rng"])
            start_epoch = meta["epoch"] + 1
            if meta.get("done"):
                log(f"[{name}] already finished ({meta['epoch']} epochs); loading its best checkpoint")
                start_epoch = epochs + 1
                result.stopped_early = meta.get("stopped_early", False)
            else:
                log(f"[{name}] resuming after epoch {meta['epoch']} of {epochs}")
                if meta.get("ranks", 1) != comm.size:
                    log(f"[{name}] the checkpoint was written by {meta.get('ranks', 1)} process(es), this run has "
                        f"{comm.size}: weights, optimizer state and schedules carry over; the dropout masks and (with "
                        "per-rank batch norm) the batch statistics of the remaining epochs differ from a run on the "
                        "old number")
    step = sum(h.get("steps", 0) for h in result.history)
    best_in_memory = None  # without out_dir the best weights are kept here
    for epoch in range(start_epoch, epochs + 1):
        t0 = time.perf_counter()
        method.on_epoch_start(epoch)
        comm.on_epoch_start(epoch)
        bar = Progress(train.num_batches, f"[{name}] epoch {epoch}/{epochs}", enabled=progress)
        sums, count, images, comm0 = {}, 0, 0, comm.comm_seconds
        for i, (idx, x, y) in enumerate(train.batches(epoch)):
            images += len(idx)
            idx, x, y = comm.part(idx, x, y)
            logs = comm.mean_logs(method.step(idx, x, y))
            step += 1
            loss = logs["loss"]
            if not math.isfinite(loss):
                bar.close()
                raise NonFiniteError(
                    f"[{name}] epoch {epoch}, step {step}: the loss is {loss}; first non-finite: "
                    f"{locate_nonfinite(method.model, x)}. Lower the learning rate or check the input scaling.")
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.update(i + 1, f"loss {sums['loss'] / count:.4f} " + _speed(images, comm.comm_seconds - comm0, t0, comm))
        bar.close()
        speed = {"img_s": round(images / max(time.perf_counter() - t0, 1e-9), 1)}
        if comm.size > 1:  # share of the training steps' time spent in (or waiting at) collectives
            speed["comm_pct"] = round(100 * (comm.comm_seconds - comm0) / max(time.perf_counter() - t0, 1e-9), 1)
        method.on_epoch_end(epoch)
        comm.sync_buffers(method)
        metric, vlogs = method.validate(valid)
        seconds = time.perf_counter() - t0
        result.seconds += seconds
        row = {"epoch": epoch, "steps": count, "seconds": round(seconds, 2), "valid_metric": metric,
               **{f"train_{k}": v / max(count, 1) for k, v in sums.items()}, **vlogs, **method.epoch_logs(),
               **speed}
        result.history.append(row)
        improved = metric < result.best_metric
        if improved:
            result.best_metric, result.best_epoch = metric, epoch
        log(f"[{name}] epoch {epoch:3d}/{epochs} " + " ".join(
            f"{k[6:] if k.startswith('train_') else k} {_fmt(v)}" for k, v in row.items()
            if k not in ("epoch", "steps", "seconds", "valid_metric")) + f" ({seconds:.1f}s){' *' if improved else ''}")
        waited = epoch - result.best_epoch
        stop = patience is not None and waited >= patience
        if out_dir is None and improved:
            best_in_memory = method.state()
        if out_dir is not None and comm.is_root:
            if improved:
                method.save(best_path, epoch=epoch)
            method.save(last_path, epoch=epoch, history=result.history, best_epoch=result.best_epoch,
                        best_metric=result.best_metric, rng=mrandom.get_state(), seconds=result.seconds,
                        done=stop or epoch == epochs, stopped_early=stop, ranks=comm.size)
        if stop:
            result.stopped_early = True
            log(f"[{name}] early stop: no improvement for {waited} epochs (best epoch {result.best_epoch})")
            break
    if best_path is not None and comm.bcast(os.path.exists(best_path)):
        _load(method, best_path, comm)
    elif best_in_memory is not None:
        method.restore(best_in_memory)
    return result


def _load(method, path, comm) -> dict:
    """Load a checkpoint into ``method``: rank 0 reads it and sends it to every rank (the
    other machines need not see rank 0's files). Returns its meta."""
    if comm.size == 1:
        return method.load(path)
    payload = None
    if comm.is_root:
        meta = method.load(path)
        payload = (method.state(), meta)
    state, meta = comm.bcast(payload)
    if not comm.is_root:
        method.restore(state)
    return meta


def _speed(images, comm_seconds, t0, comm) -> str:
    elapsed = max(time.perf_counter() - t0, 1e-9)
    text = f"{images / elapsed:.0f} img/s"
    return text + (f" comm {100 * comm_seconds / elapsed:.0f}%" if comm.size > 1 else "")


def _quiet(*_):
    pass


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
