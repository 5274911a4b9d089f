"""Experiments from TOML files: train a teacher, then students by backprop, KD and FitNets
(Algorithm 1: hint stage, then KD), and report the paper's table beside ours.

File layout (see experiments/mnist-fitnets.toml)::

    [run]      seed, batch_size
    [data]     name, valid, preprocess = [...], augment = {...}, options, limits
    [teacher]  model, epochs, patience, optimizer = {...}, schedules
    [[student]] label, method = backprop | kd | fitnets, model, epochs, optimizer, ...
    [paper]    rows of the paper's table, by label

``--epochs-scale S`` multiplies every epoch count (epochs, patience, lambda and schedule
epochs), so the same file runs on a laptop budget or at the paper's length.
"""
from __future__ import annotations

import json
import math
import time
import tomllib
from pathlib import Path


from .. import __version__
from .. import random as mrandom
from ..data import DATASETS, MissingDataError, data_root
from ..data import preprocess as P
from ..data.fetch import fetch
from ..data.loaders import load, train_val_split
from ..device import resolve
from .. import models as M
from ..models.regressor import for_networks
from .. import optim
from .. import checkpoint
from .loop import FitResult, fit
from .methods import KD, Backprop, Hints, LinearAnneal, TeacherOutputs, error_rate
from .schema import ConfigError, Key, Table, _nearest
from .splits import Split
from .adversarial import student_keys as adversarial_keys


STUDENT_METHODS = ("backprop", "kd", "fitnets", "adversarial")


def _require(table: dict, key: str, where: str):
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}")
    return table[key]


def load_config(path) -> dict:
    """The experiment file as a dict, every key checked against the schema below."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"experiment file {path} does not exist")
    try:
        cfg = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    try:
        check_config(cfg)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    cfg["_path"] = str(path)
    return cfg


def check_config(cfg: dict):
    """Every table's keys, types and ranges (the schema tables beside the code that reads
    them), and the layers named in [[student]] tables against the models."""
    FILE.check(cfg, "the file")
    teacher = cfg["teacher"]
    if "checkpoint" not in teacher:
        for key in ("epochs", "optimizer"):
            _require(teacher, key, "[teacher]")
    tnames = _layer_names(teacher, "[teacher]")
    labels = set()
    for i, s in enumerate(cfg.get("student", [])):
        if not isinstance(s, dict):
            raise ConfigError(f"[[student]] #{i + 1} must be a table")
        name = s.get("label", s.get("method") if s.get("method") in STUDENT_METHODS else None)
        where = f"[[student]] {name!r}" if isinstance(name, str) else f"[[student]] #{i + 1}"
        STUDENT_KEYS["method"].validate(_require(s, "method", where), f"{where} 'method'")
        STUDENT_TABLES[s["method"]].check(s, where)
        label = s.get("label", s["method"])
        if label in labels or label == "teacher":
            raise ConfigError(f"{where}: label {label!r} is used twice; give each [[student]] its own label "
                              "(it names the output folder and the report row)")
        labels.add(label)
        if s["method"] == "fitnets":
            _require(s.get("stage1", {}), "epochs", f"{where} stage1")
            _require(s.get("stage2", s), "epochs", f"{where} stage2" if "stage2" in s else where)
        snames = _layer_names(s, where)
        if s["method"] == "fitnets":
            for key, names, whose in (("guided", snames, "student"), ("hint", tnames, "teacher")):
                if key in s and s[key] not in names:
                    raise ConfigError(f"{where} {key!r}: the {whose} model has no layer {s[key]!r}; "
                                      f"its layers are {', '.join(names)}")


def _layer_names(spec: dict, where: str) -> list:
    """The layer names of the model a table names, built once with its options (the
    random state is kept as it was: building draws initial weights)."""
    state = mrandom.get_state()
    try:
        net = M.build(spec["model"], 10, **spec.get("model_options", {}))
    except TypeError as e:
        raise ConfigError(f"{where} model_options: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{where} {e}") from None
    finally:
        mrandom.set_state(state)
    return list(getattr(net, "names", []))


# -- the schema: each key beside the code that reads it --------------------------------
def _optimizer_problem(spec: dict):
    """An optimizer table: name, then the optimizer's own keyword arguments."""
    import inspect
    name = spec.get("name")
    table = {"sgd": optim.SGD, "rmsprop": optim.RMSProp, "adam": optim.Adam}
    if name is None:
        return f"missing key 'name' ({', '.join(table)})"
    if not isinstance(name, str) or name.lower() not in table:
        return f"'name' must be one of {', '.join(table)}; got {name!r}{_nearest(str(name), table)}"
    sig = inspect.signature(table[name.lower()])
    known = [p for p in sig.parameters if p != "params"]
    for k, v in spec.items():
        if k == "name":
            continue
        if k not in known:
            return f"unknown key {k!r} for {name}{_nearest(k, known)} (known: name, {', '.join(known)})"
        if k == "betas":
            ok = isinstance(v, list) and len(v) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in v)
            if not ok:
                return f"'betas' must be two numbers in [0, 1), got {v!r}"
            continue
        if k == "nesterov":
            if not isinstance(v, bool):
                return f"'nesterov' must be true/false, got {v!r}"
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"{k!r} must be a number, got {v!r}"
        if k == "lr" and v <= 0 or k != "lr" and v < 0:
            return f"{k!r} must be {'> 0' if k == 'lr' else '>= 0'}, got {v!r}"
        if k in ("momentum", "decay") and v >= 1:
            return f"{k!r} must be below 1, got {v!r}"
    if "lr" not in spec and sig.parameters["lr"].default is inspect.Parameter.empty:
        return f"missing key 'lr' for {name}"
    return None


OPTIMIZER = Key(dict, "{ name = sgd / rmsprop / adam, lr, and that optimizer's keywords: sgd momentum, "
                "nesterov, weight_decay; rmsprop decay, max_scaling; adam betas, eps, weight_decay }",
                check=_optimizer_problem)
SCHEDULES = dict(   # build_schedules reads these
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
                table=Table("lr_step", milestones=Key(list, "epochs", min=1), gamma=Key(float, "factor", "0.1", gt=0))),
)


def build_optimizer(model_params, spec: dict, where: str):
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


class Scaler:
    """Epoch counts scaled by --epochs-scale (at least 1)."""

    def __init__(self, scale: float):
        if scale <= 0:
            raise ConfigError(f"--epochs-scale must be positive, got {scale}")
        self.scale = scale

    def __call__(self, epochs):
        return max(1, int(round(epochs * self.scale)))


def _lambda(spec: dict, scale: Scaler) -> LinearAnneal:
    lam = spec.get("lam", [4.0, 0.0])
    lam = lam if isinstance(lam, list) else [lam, lam]
    e0, e1 = spec.get("lam_epochs", [5, 150])
    return LinearAnneal(lam[0], lam[1], (scale(e0), scale(e1)))


DATA = Table("[data]",
             name=Key(str, "dataset", choices=tuple(DATASETS)),
             valid=Key(int, "validation examples held out of the training split", "the dataset's usual", min=1),
             preprocess=Key(list, "steps fitted on the training part: names or { kind = ..., options }",
                            '["scale01"]', check=lambda v: _preprocess_problem(v)),
             augment=Key(dict, "training augmentation", "{}",
                         table=Table("augment", translate=Key(int, "pad-and-crop shift in pixels", "0", min=0),
                                     flip=Key(bool, "random horizontal mirror", "false"))),
             options=Key(dict, "loader options: cifar format, test_file; cifar100 labels; folder channels", "{}",
                         table=Table("options", format=Key(str, "file format", "whichever is found",
                                                           choices=("binary", "python")),
                                     test_file=Key(str, "a binary test file by name", "test_batch.bin"),
                                     labels=Key(str, "CIFAR-100 labels", "fine", choices=("fine", "coarse")),
                                     channels=Key(int, "image-folder channels", "auto", choices=(1, 3)))),
             limits=Key(dict, "use only the first N images of a split (quick runs)", "all",
                        table=Table("limits", **{k: Key(int, f"{k} images", "all", min=1)
                                                 for k in ("train", "valid", "test")})),
             fetch=Key(bool, "download the dataset when it is missing", "true for mnist, fashion-mnist"),
             precompute=Key(bool, "apply the preprocessing once to the whole set", "true with zca"))


def _preprocess_problem(steps):
    for step in steps:
        step = {"kind": step} if isinstance(step, str) else step
        if not isinstance(step, dict) or step.get("kind") not in P.Transform._kinds:
            kind = step.get("kind") if isinstance(step, dict) else step
            return f"unknown step {kind!r}{_nearest(str(kind), P.Transform._kinds)}; known: {sorted(P.Transform._kinds)}"
        import inspect
        known = [p for p in inspect.signature(P.Transform._kinds[step["kind"]]).parameters]
        for k, v in step.items():
            if k != "kind" and k not in known:
                return f"step {step['kind']!r}: unknown key {k!r}{_nearest(k, known)} (known: {', '.join(known) or 'none'})"
            if k != "kind" and (isinstance(v, bool) or not isinstance(v, (int, float))):
                return f"step {step['kind']!r}: {k!r} must be a number, got {v!r}"
    return None


def prepare_data(cfg: dict, data_dir=None, out_dir=None, resume=False, log=print):
    """(train, valid, test) Splits with preprocessing fitted on the training part only and
    saved to out_dir/preprocess.npz (reloaded on resume, so evaluation uses one transform)."""
    d = cfg["data"]
    name = _require(d, "name", "[data]")
    opts = d.get("options", {})
    try:
        full = load(name, "train", data_dir, **{k: v for k, v in opts.items() if k != "test_file"})
    except MissingDataError:
        if not d.get("fetch", name in ("mnist", "fashion-mnist")):
            raise
        # first use: download into the data root (verified against the published checksums)
        log(f"[data] {name} not found under {data_root(data_dir)}; fetching it (once)")
        fetch(name, data_dir)
        full = load(name, "train", data_dir, **{k: v for k, v in opts.items() if k != "test_file"})
    train, valid = train_val_split(full, d.get("valid"))
    test = load(name, "test", data_dir, **opts)
    lim = d.get("limits", {})
    images = {"train": train.images[:lim.get("train")], "valid": valid.images[:lim.get("valid")],
              "test": test.images[:lim.get("test")]}
    labels = {"train": train.labels[:lim.get("train")], "valid": valid.labels[:lim.get("valid")],
              "test": test.labels[:lim.get("test")]}
    pipe_path = Path(out_dir) / "preprocess.npz" if out_dir else None
    if pipe_path is not None and resume and pipe_path.exists():
        pipeline = P.Pipeline.load(pipe_path)
    else:
        steps = []
        for step in d.get("preprocess", ["scale01"]):
            step = {"kind": step} if isinstance(step, str) else dict(step)
            kind = step.pop("kind")
            if kind not in P.Transform._kinds:
                raise ConfigError(f"[data] preprocess: unknown step {kind!r}; known: {sorted(P.Transform._kinds)}")
            steps.append(P.Transform._kinds[kind](**step))
        t0 = time.perf_counter()
        pipeline = P.Pipeline(*steps).fit(images["train"])
        if any(s.needs_fit for s in steps):
            log(f"[data] fitted {pipeline} on {len(images['train'])} training images ({time.perf_counter() - t0:.1f}s)")
        if pipe_path is not None:
            pipe_path.parent.mkdir(parents=True, exist_ok=True)
            pipeline.save(pipe_path)
    transform = pipeline
    if d.get("precompute", any(s.kind == "zca" for s in pipeline.steps)):
        # whitening costs a (D, D) product per example: do it once, keep float arrays
        images = {k: pipeline.apply(v) for k, v in images.items()}
        transform = None
    aug = d.get("augment", {})
    augment = []
    if aug.get("translate"):
        augment.append(P.RandomTranslate(aug["translate"]))
    if aug.get("flip"):
        augment.append(P.RandomFlip())
    bs = cfg.get("run", {}).get("batch_size", 128)
    seed = cfg.get("run", {}).get("seed", 0)
    splits = {k: Split(images[k], labels[k], bs, transform, augment if k == "train" else (), seed,
                       title=t.title) for k, t in (("train", train), ("valid", valid), ("test", test))}
    meta = {"dataset": name, "train": splits["train"].title, "valid": splits["valid"].title,
            "test": splits["test"].title, "test_file": str(test.test_file or test.source_files[0]),
            "num_classes": full.num_classes, "preprocess": repr(pipeline), "augment": [repr(a) for a in augment],
            "sizes": {k: len(v) for k, v in splits.items()}}
    return splits, meta


def _apply_lr_scale(model, spec):
    if "lr_scale" in spec:
        for p in model.parameters():
            p.lr_scale = float(spec["lr_scale"])


RUN = Table("[run]",
            seed=Key(int, "seed of initialisation, dropout, shuffling and augmentation", "0"),
            batch_size=Key(int, "training batch size", "128", min=1),
            checkpoint_minutes=Key(float, "write last.npz inside an epoch at this interval (0: every step)",
                                   "5", min=0))
# keys every trained table reads (Runner._fit, teacher(), student())
TRAINED = dict(model=Key(str, "model name (minifit summary lists them)"),
               model_options=Key(dict, "keyword arguments of the model builder, e.g. { irange = 0.05 }", "{}"),
               epochs=Key(int, "epochs (scaled by --epochs-scale)", min=1),
               patience=Key(int, "early stop after this many epochs without a better validation error "
                                 "(scaled)", "none", min=1),
               optimizer=OPTIMIZER,
               lr_scale=Key(float, "learning-rate factor of every parameter", "1", gt=0),
               **SCHEDULES)
TEACHER = Table("[teacher]", **TRAINED,
                checkpoint=Key(str, "a teacher trained by another run (its best.npz): no training", "none"))
TEACHER.keys["epochs"] = Key(int, TRAINED["epochs"].doc + "; not with checkpoint", "required unless checkpoint",
                             min=1)
TEACHER.keys["optimizer"] = Key(dict, OPTIMIZER.doc, "required unless checkpoint", check=OPTIMIZER.check)
KD_KEYS = dict(tau=Key(float, "temperature tau of the softened outputs", "3", gt=0),
               lam=Key((float, list), "lambda: a number, or [start, end] annealed linearly over lam_epochs",
                       "[4, 0]", min=0),
               lam_epochs=Key(list, "[first, last] epoch of the lambda anneal (scaled)", "[5, 150]", min=0),
               hinton=Key(bool, "Hinton's tau^2-scaled KD term instead of the FitNets form", "false"))
STAGE = Table("stage", epochs=TRAINED["epochs"], patience=TRAINED["patience"],
              optimizer=Key(dict, "this stage's optimizer", "the student's", check=OPTIMIZER.check), **SCHEDULES)
STUDENT_KEYS = dict(label=Key(str, "row name in the report, output folder student-<label>", "the method"),
                    method=Key(str, "how the student is trained", choices=STUDENT_METHODS), **TRAINED)
STUDENT = Table("[[student]]", **STUDENT_KEYS)
FITNETS_KEYS = dict(guided=Key(str, "student layer guided by the hint (a layer of its model)", "model.hint"),
                    hint=Key(str, "teacher layer giving the hint (a layer of its model)", "teacher.hint"),
                    regressor=Key(str, "regressor kind", "conv", choices=("conv", "fc")),
                    stage1=Key(dict, "hint stage (FitNets Algorithm 1, stage 1)", "{}", table=STAGE),
                    stage2=Key(dict, "KD stage", "the student table itself",
                               table=STAGE.extend("stage2", **KD_KEYS, pretrained_lr_scale=Key(
                                   float, "lr factor of the hint-trained layers in stage 2", "1", gt=0))))
STUDENT_TABLES = {"backprop": STUDENT.extend("[[student]] backprop"),
                  "kd": STUDENT.extend("[[student]] kd", **KD_KEYS),
                  "fitnets": STUDENT.extend("[[student]] fitnets", **KD_KEYS, **FITNETS_KEYS),
                  "adversarial": STUDENT.extend("[[student]] adversarial", **adversarial_keys(OPTIMIZER, SCHEDULES))}
STUDENT_TABLES["fitnets"].keys["epochs"] = Key(int, TRAINED["epochs"].doc, "stage1.epochs; stage2.epochs or "
                                                "this", min=1)
PAPER = Table("[paper]", open=True)   # row label -> { test_err = ... }: free labels
def keys_table() -> str:
    """Every key of an experiment file, as the README's table (the [[student]] rows of
    each method list only the keys beyond the common ones)."""
    from .schema import markdown
    common = set(STUDENT.keys)
    methods = [(t, common - {"epochs"} if m == "fitnets" else common) for m, t in STUDENT_TABLES.items()]
    return markdown([RUN, DATA, TEACHER, STUDENT, *methods, PAPER])


FILE = Table("the file", run=Key(dict, "run settings", "{}", table=RUN),
             data=Key(dict, "dataset, split, preprocessing", table=DATA),
             teacher=Key(dict, "the teacher", table=TEACHER),
             student=Key(list, "students, one table each", "[]"),
             paper=Key(dict, "the paper's figures by row label", "{}", table=PAPER))


# -- the stages -------------------------------------------------------------------------
class Runner:
    def __init__(self, cfg, out_dir, epochs_scale=1.0, resume=False, data_dir=None, log=print, progress=True,
                 device="cpu"):
        self.cfg, self.out = cfg, Path(out_dir)
        self.device = resolve(device)
        self.scale, self.resume, self.log, self.progress = Scaler(epochs_scale), resume, log, progress
        self.out.mkdir(parents=True, exist_ok=True)
        mrandom.manual_seed(cfg.get("run", {}).get("seed", 0))
        self.splits, self.data_meta = prepare_data(cfg, data_dir, self.out, resume, log)
        self.num_classes = self.data_meta["num_classes"]
        self.results = []

    def _fit(self, method, spec, folder, name):
        epochs = self.scale(_require(spec, "epochs", name))
        patience = spec.get("patience")
        return fit(method, self.splits["train"], self.splits["valid"], epochs, self.out / folder,
                   patience=None if patience is None else self.scale(patience), resume=self.resume,
                   log=self.log, progress=self.progress, name=name,
                   checkpoint_minutes=self.cfg.get("run", {}).get("checkpoint_minutes", 5.0))

    def _record(self, label, method_name, model, fits, extra=None):
        test_err = error_rate(model, self.splits["test"])
        final = fits[-1]
        row = {"label": label, "method": method_name, "model": model.name, "params": model.num_params(),
               "paper_params": model.paper_counts()[0], "test_err": test_err,
               "valid_err": final.best_metric, "best_epoch": final.best_epoch,
               "epochs": [len(f.history) for f in fits], "seconds": [round(f.seconds, 1) for f in fits],
               "curve": [h["valid_metric"] for h in final.history], **(extra or {})}
        self.results.append(row)
        self.log(f"[{label}] test error {test_err:.2f}% on {self.data_meta['test']} "
                 f"(best valid {final.best_metric:.2f}% at epoch {final.best_epoch})")
        return row

    def teacher(self):
        spec = self.cfg["teacher"]
        mrandom.manual_seed(self.cfg.get("run", {}).get("seed", 0))
        model = M.build(_require(spec, "model", "[teacher]"), self.num_classes,
                        **spec.get("model_options", {})).to(device=self.device)
        _apply_lr_scale(model, spec)
        if spec.get("checkpoint"):
            # a teacher trained by another run (e.g. the depth experiment reuses FitNet-1's)
            path = Path(spec["checkpoint"])
            if not path.exists():
                raise FileNotFoundError(f"[teacher] checkpoint {path} does not exist: train the teacher first "
                                        f"(e.g. minifit run experiments/cifar10-fitnet1.toml) or remove the key")
            state = checkpoint.read(path)["model"]
            model.load_state_dict({k.split(":", 1)[1]: v for k, v in state.items() if k.startswith("model:")})
            self.log(f"[teacher] loaded {path}")
            self._record("teacher", "loaded", model, [FitResult(best_metric=error_rate(model, self.splits["valid"]))])
            return model
        opt = build_optimizer(model.parameters(), _require(spec, "optimizer", "[teacher]"), "[teacher]")
        f = self._fit(Backprop(model, opt, build_schedules(opt, spec, self.scale)), spec, "teacher", "teacher")
        self._record("teacher", "backprop", model, [f])
        return model

    def student(self, i, spec, teacher):
        method = spec["method"]
        label = spec.get("label", method)
        mrandom.manual_seed(self.cfg.get("run", {}).get("seed", 0) + 1000 * (i + 1))
        model = M.build(_require(spec, "model", f"[[student]] {label}"), self.num_classes,
                        **spec.get("model_options", {})).to(device=self.device)
        _apply_lr_scale(model, spec)
        folder = f"student-{label}"
        augmented = bool(self.splits["train"].augment)
        if method == "adversarial":  # conditional adversarial KD (minifit.distill.adversarial)
            from .adversarial import train_student
            if self.device != "cpu":
                raise ConfigError(f"[[student]] {label}: adversarial KD runs on the CPU only (its discriminator "
                                  "concatenates device tensors, which the CUDA target does not implement yet)")
            return train_student(self, spec, label, model, teacher, folder)
        if method == "backprop":
            opt = build_optimizer(model.parameters(), spec["optimizer"], label)
            f = self._fit(Backprop(model, opt, build_schedules(opt, spec, self.scale)), spec, folder, label)
            return self._record(label, method, model, [f])
        fits, extra = [], {}
        if method == "fitnets":
            s1 = dict(spec.get("stage1", {}))
            guided = spec.get("guided", model.hint)
            hint = spec.get("hint", teacher.hint)
            regressor = for_networks(model, guided, teacher, hint, spec.get("regressor", "conv")).to(device=self.device)
            part = model[:guided]
            params = part.parameters() + regressor.parameters()
            for p in regressor.parameters():
                p.lr_scale = float(spec.get("lr_scale", 1.0))
            opt1 = build_optimizer(params, s1.get("optimizer", spec["optimizer"]), f"{label} stage1")
            hints = TeacherOutputs(teacher, upto=hint, cache=not augmented)
            if not augmented:
                hints.precompute("train", self.splits["train"])
            hints.precompute("valid", self.splits["valid"])
            stage1 = Hints(model, guided, regressor, opt1, hints, build_schedules(opt1, s1, self.scale))
            fits.append(self._fit(stage1, s1, f"{folder}/stage1", f"{label}:stage1"))
            extra.update(guided=guided, hint=hint, regressor_params=regressor.num_params(),
                         hint_curve=[h["valid_metric"] for h in fits[-1].history])
            scale_pre = spec.get("stage2", {}).get("pretrained_lr_scale")
            if scale_pre is not None:
                for p in part.parameters():
                    p.lr_scale *= float(scale_pre)
        s2 = dict(spec.get("stage2", spec)) if method == "fitnets" else spec
        opt = build_optimizer(model.parameters(), s2.get("optimizer", spec["optimizer"]), label)
        logits = TeacherOutputs(teacher, cache=not augmented)
        if not augmented:
            logits.precompute("train", self.splits["train"])
        kd = KD(model, opt, logits, tau=s2.get("tau", 3.0), lam=_lambda(s2, self.scale),
                hinton=s2.get("hinton", False), schedules=build_schedules(opt, s2, self.scale))
        fits.append(self._fit(kd, s2, folder if method == "kd" else f"{folder}/stage2",
                              label if method == "kd" else f"{label}:stage2"))
        return self._record(label, method, model, fits, extra)

    def run(self):
        t0 = time.perf_counter()
        students = self.cfg.get("student", [])

        def report():
            # after every row, so a run that is stopped still leaves the rows it finished
            summary = {"experiment": self.cfg["_path"], "minifit": __version__, "epochs_scale": self.scale.scale,
                       "data": self.data_meta, "results": self.results, "paper": self.cfg.get("paper", {}),
                       "wall_seconds": round(time.perf_counter() - t0, 1),
                       "rows_planned": 1 + len(students)}
            write_reports(summary, self.out)
            return summary

        teacher = self.teacher()
        summary = report()
        for i, spec in enumerate(students):
            self.student(i, spec, teacher)
            summary = report()
        return summary


def run_experiment(path, out_dir=None, epochs_scale=1.0, resume=False, data_dir=None, log=print, progress=True,
                   device="cpu"):
    cfg = load_config(path)
    out_dir = out_dir or Path("runs") / Path(path).stem
    return Runner(cfg, out_dir, epochs_scale, resume, data_dir, log, progress, device).run()


# -- reports ----------------------------------------------------------------------------
def _unfinished(summary):
    planned, done = summary.get("rows_planned"), len(summary["results"])
    if planned is None or done >= planned:
        return []
    return [f"**Unfinished run: {done} of {planned} rows so far** (`--resume` continues it).", ""]


def write_reports(summary: dict, out: Path):
    """results.json, results.md (the paper's table beside ours) and curves.png."""
    with open(out / "results.json", "w") as f:
        json.dump(summary, f, indent=1)
    paper = summary.get("paper", {})
    d = summary["data"]
    lines = [f"# Results: {Path(summary['experiment']).name}", "",
             f"Data: train {d['train']} ({d['sizes']['train']}), validation {d['valid']} ({d['sizes']['valid']}), "
             f"test **{d['test']}** ({d['sizes']['test']}, file `{Path(d['test_file']).name}`).  ",
             f"Preprocessing: {d['preprocess']}; augmentation: {', '.join(d['augment']) or 'none'}.  ",
             f"Epochs scale {summary['epochs_scale']}; total wall time {summary['wall_seconds']:.0f} s; minifit "
             f"{summary['minifit']}. Test error is measured with the best-validation checkpoint.", "",
             *_unfinished(summary),
             "| row | method | model | params (paper count) | paper test err % | our test err % | "
             "best valid err % (epoch) | epochs | wall s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary["results"]:
        p = paper.get(r["label"], {})
        perr = p.get("test_err") if isinstance(p, dict) else p
        lines.append(f"| {r['label']} | {r['method']} | {r['model']} | {r['params']:,} ({r['paper_params']:,}) | "
                     f"{'-' if perr is None else perr} | {r['test_err']:.2f} | {r['valid_err']:.2f} ({r['best_epoch']}) | "
                     f"{' + '.join(map(str, r['epochs']))} | {' + '.join(map(str, r['seconds']))} |")
    lines += ["", "Params: weights and biases as built (one bias per map); in brackets every maxout layer "
              "counted as 2 pieces, the convention that reproduces the paper's figures.", ""]
    for r in summary["results"]:
        if "hint_curve" in r:
            lines.append(f"Hint stage of {r['label']} ({r['guided']} <- teacher {r['hint']}, regressor "
                         f"{r['regressor_params']:,} params): validation L_HT per epoch "
                         + ", ".join(f"{v:.3f}" for v in r["hint_curve"]))
    from .tables import grouped_tables  # rows with a "tables" field: extra sections (adversarial KD)
    lines += grouped_tables(summary)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    from .plot import plot_panels
    from .tables import table_groups
    groups = [(title, rows) for _, title, rows in table_groups(summary)]
    rest = [r for r in summary["results"] if not r.get("tables")]
    if rest or not groups:
        groups.append(("validation error per epoch" if not groups else "other rows", rest))
    plot_panels([(title, {r["label"]: r["curve"] for r in rows}) for title, rows in groups], out / "curves.png",
                ylabel="valid error %")
