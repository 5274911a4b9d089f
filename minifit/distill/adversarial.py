"""Conditional adversarial KD (Xu, Hsu & Huang 2017, arXiv 1709.00513).

A discriminator D over logits learns the loss: it tells the teacher's logits ("real")
from the student's ("fake") and classifies both (the auxiliary-classifier form). Each
iteration:

1. the student's logits s = F(x) are computed once (with its graph);
2. D is updated on [t; s] with s detached (the student fixed), minimising
   -1/2 (L_A + L_DS);
3. the student is updated (D fixed: only the student's optimizer steps) on the sum of
   the switched-on terms of L_S + L_L1 + L_GAN (+ Hinton KD for the comparison runs),
   the GAN term through the updated D.

Using s from before D's update in step 3 is exactly "update D, then the student": the
student's parameters have not changed in between, so a second forward pass would give the
same logits (up to a fresh dropout mask).

Choices the reference does not pin down, made here and kept switchable:

* D sees teacher and student logits in ONE batch [t; s] (2N rows), so its batch norms
  normalise both with the same statistics. Separate batches would let D's first batch
  norm erase exactly the scale and offset differences between the two sets of logits.
* D stays in training mode (batch statistics, dropout) in both steps; its running
  statistics are updated in both, and never used for training.
* Teacher logits: "computed once and stored". With flips and pad-and-crop the stored
  logits are the teacher's output on the un-augmented image, served for every augmented
  copy of it: an approximation (the teacher's output on a shifted or mirrored image is
  close to, not equal to, that on the original), the one the paper describes. Set
  ``teacher_cache = false`` in the experiment file for exact per-batch teacher outputs
  (a teacher forward pass on every batch).
* Runs whose terms do not include GAN build and train no D (it would not change the
  student): the L_S, L_S + L_L1 and KD rows are plain single-network training.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..losses import STUDENT_TERMS, discriminator_loss, student_objective
from ..models import inference_seconds
from ..models.wrn import Discriminator
from ..tensor import Tensor
from .config import ConfigError, build_optimizer, build_schedules
from .methods import Method, TeacherOutputs


class AdversarialKD(Method):
    """Student (and, with the GAN term, discriminator) training for the one loop.

    terms: subset of ("S", "L1", "GAN", "KD") summed with weight 1 for the student.
    update_d / update_student: switch either update off (the tests' toy checks).
    """

    name = "adversarial"

    def __init__(self, student, optimizer, teacher: TeacherOutputs, discriminator=None, d_optimizer=None,
                 terms=("S", "L1", "GAN"), tau: float = 1.0, schedules=(), update_d=True, update_student=True):
        super().__init__(student, optimizer, schedules)
        terms = tuple(terms)
        if not terms or any(k not in STUDENT_TERMS for k in terms):
            raise ValueError(f"adversarial: terms must be a non-empty subset of {STUDENT_TERMS}, got {terms}")
        if "GAN" in terms and (discriminator is None or d_optimizer is None):
            raise ValueError("adversarial: the GAN term needs a discriminator and its optimizer")
        self.student, self.teacher, self.terms, self.tau = student, teacher, terms, float(tau)
        self.D, self.d_opt = (discriminator, d_optimizer) if "GAN" in terms else (None, None)
        self.update_d, self.update_student = update_d, update_student
        self.models = {"student": student}
        self.optimizers = {"student": optimizer}
        if self.D is not None:
            self.models["discriminator"] = self.D
            self.optimizers["discriminator"] = self.d_opt

    # -- one iteration -----------------------------------------------------------------------
    def d_step(self, s: np.ndarray, t: np.ndarray, y) -> dict:
        """One update of D on teacher logits t (real) and student logits s (fake, constants)."""
        N = len(s)
        out = self.D(Tensor(np.concatenate([t.astype(s.dtype, copy=False), s])))
        loss = discriminator_loss(out[:N], out[N:], y)
        value = self.comm.mean(loss.item())  # the global batch's: every rank takes the same branch
        if np.isfinite(value) and self.update_d:
            self.d_opt.zero_grad()
            loss.backward()
            self.d_opt.step()
        return {"loss_d": value, **d_accuracies(out.data, y)}

    def step(self, idx, x, y) -> dict:
        t = np.asarray(self.teacher.get(idx, x))
        s = self.student(Tensor(x))
        t = t.astype(s.dtype, copy=False)
        logs = {}
        d_real = d_fake = None
        if self.D is not None:
            logs.update(self.d_step(s.data, t, y))
            N = len(t)
            out = self.D(F.concatenate([Tensor(t), s]))
            d_real, d_fake = out.data[:N], out[N:]
        loss, parts = student_objective(s, t, y, d_real, d_fake, self.terms, self.tau)
        value = self.comm.mean(loss.item())
        err = 100.0 * float(np.mean(s.data.argmax(axis=1) != np.asarray(y)))
        logs = {"loss": value, **{f"L_{k}": v for k, v in parts.items()}, **logs, "err": err}
        if not np.isfinite(value) or not self.update_student:
            return logs
        self.optimizers["student"].zero_grad()
        loss.backward()
        self.optimizers["student"].step()
        if self.D is not None:
            self.D.zero_grad()   # the student's backward left gradients in D: D was fixed
        for sch in self.schedules:
            sch.on_update()
        return logs

    def epoch_logs(self) -> dict:
        logs = {"lr": self.optimizers["student"].lr}
        if self.d_opt is not None:
            logs["lr_d"] = self.d_opt.lr
        return logs


def d_accuracies(out: np.ndarray, y) -> dict:
    """D's accuracy on a [t; s] batch of outputs (2N, C + 2): the real/fake head on the
    teacher rows (real) and on the student rows (fake), and the class head on both."""
    N = len(out) // 2
    C = out.shape[1] - 2
    rf = out[:, C:].argmax(axis=1)   # 0 = real, 1 = fake
    cls = out[:, :C].argmax(axis=1)
    y = np.asarray(y)
    real, fake = float((rf[:N] == 0).mean()), float((rf[N:] == 1).mean())
    return {"d_real_acc": real, "d_fake_acc": fake, "d_acc": 0.5 * (real + fake),
            "d_cls_acc": float((cls == np.concatenate([y, y])).mean())}


# -- the experiment runner's entry point -----------------------------------------------------
def _terms(spec, label):
    terms = spec.get("losses", ["S", "L1", "GAN"])
    if isinstance(terms, str):
        terms = [p.strip() for p in terms.split("+")]
    terms = tuple(k.removeprefix("L_") for k in terms)
    if not terms or any(k not in STUDENT_TERMS for k in terms):
        raise ConfigError(f"[[student]] {label}: losses must be a non-empty subset of {list(STUDENT_TERMS)}, "
                          f"got {spec.get('losses')}")
    return terms


def train_student(runner, spec, label, model, teacher, folder):
    """[[student]] method = "adversarial": keys (beside label, model, epochs, optimizer, lr_step)

        losses = ["S", "L1", "GAN"]   any non-empty subset of S, L1, GAN, KD (weight 1 each)
        tau = 5.0                      the KD term's temperature
        discriminator = { depth = 3, dropout = 0.3, optimizer = {...}, lr_step = {...} }
                                       (optimizer/lr_step default to the student's, lr 1e-3)
        teacher_cache = true           teacher logits computed once (see the module doc)
        tables = ["ablation", ...]     report tables this row belongs to (results.md)
        time_inference = true          measure CPU seconds per batch of 100 for the report
    """
    if runner.device != "cpu":
        raise ConfigError(f"[[student]] {label}: adversarial KD runs on the CPU only (its discriminator "
                          "concatenates device tensors, which the CUDA target does not implement yet)")
    terms = _terms(spec, label)
    opt = build_optimizer(model.parameters(), spec["optimizer"], label)
    schedules = build_schedules(opt, spec, runner.scale)
    D = d_opt = None
    dspec = dict(spec.get("discriminator", {}))
    if "GAN" in terms:
        D = Discriminator(runner.num_classes, depth=dspec.get("depth", 3), dropout=dspec.get("dropout", 0.3))
        d_opt_spec = dspec.get("optimizer", {**spec["optimizer"], "lr": 1e-3})
        d_opt = build_optimizer(D.parameters(), d_opt_spec, f"{label} discriminator")
        dsched = {k: dspec[k] for k in ("lr_step", "lr_decay", "lr_linear") if k in dspec} or spec
        schedules += build_schedules(d_opt, {k: v for k, v in dsched.items() if k != "momentum_ramp"}, runner.scale)
    cache = bool(spec.get("teacher_cache", True))
    logits = runner.teacher_logits(teacher) if cache else TeacherOutputs(teacher, cache=False, comm=runner.comm)
    method = AdversarialKD(model, opt, logits, D, d_opt, terms, spec.get("tau", 1.0), schedules)
    f = runner.fit(method, spec, folder, label)
    extra = {"losses": " + ".join(f"L_{k}" if k != "KD" else f"KD(T={method.tau:g})" for k in terms),
             "tables": list(spec.get("tables", [])), "d_depth": D.depth if D is not None else None,
             "d_log": [{k: h[k] for k in ("epoch", "train_loss_d", "train_d_real_acc", "train_d_fake_acc")
                        if k in h} for h in f.history] if D is not None else []}
    if "KD" in terms:
        extra["tau"] = method.tau
    if spec.get("time_inference", True):
        extra["infer_s"] = round(inference_seconds(model), 4)
        _time_teacher(runner, teacher)
    return runner.record(label, "adversarial", model, [f], extra)


def _time_teacher(runner, teacher):
    """Give the teacher's row its inference time once (for the student-size table)."""
    for r in runner.results:
        if r["label"] == "teacher" and "infer_s" not in r:
            r["infer_s"] = round(inference_seconds(teacher), 4)
            r.setdefault("tables", ["size"])
