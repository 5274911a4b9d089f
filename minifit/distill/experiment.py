"""Experiments from TOML files: train a teacher, then students by backprop, KD and FitNets
(Algorithm 1: hint stage, then KD), and report the paper's table beside ours.

File layout (see experiments/mnist-fitnets.toml)::

    [run]      seed, batch_size (the global batch: with N processes each takes 1/N of it),
               sync_bn (data parallelism: batch-norm statistics over the global batch)
    [data]     name, valid, preprocess = [...], augment = {...}, options, limits
    [teacher]  model, epochs, patience, optimizer = {...}, schedules
    [[student]] label, method = backprop | kd | fitnets, model, epochs, optimizer, ...
    [paper]    rows of the paper's table, by label

``--epochs-scale S`` multiplies every epoch count (epochs, patience, lambda and schedule
epochs), so the same file runs on a laptop budget or at the paper's length.
"""
from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path


from .. import __version__
from .. import random as mrandom
from ..data import MissingDataError, data_root
from ..data import preprocess as P
from ..data.fetch import fetch
from ..data.loaders import load, train_val_split
from ..device import resolve
from .. import models as M
from ..models.regressor import for_networks
from .. import optim
from .. import checkpoint
from .. import parallel
from .loop import FitResult, fit
from .methods import KD, Backprop, Hints, LinearAnneal, TeacherOutputs, error_rate
from .splits import Split


STUDENT_METHODS = ("backprop", "kd", "fitnets", "adversarial")


class ConfigError(ValueError):
    """A problem in an experiment file, named by its key."""


def _require(table: dict, key: str, where: str):
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}")
    return table[key]


def load_config(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"experiment file {path} does not exist")
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    _require(cfg, "data", str(path))
    _require(cfg, "teacher", str(path))
    for i, s in enumerate(cfg.get("student", [])):
        method = _require(s, "method", f"{path}: [[student]] #{i + 1}")
        if method not in STUDENT_METHODS:
            raise ConfigError(f"{path}: [[student]] #{i + 1}: method must be one of {', '.join(STUDENT_METHODS)}, "
                              f"got {method!r}")
    cfg["_path"] = str(path)
    return cfg


class Scaler:
    """Epoch counts scaled by --epochs-scale (at least 1)."""

    def __init__(self, scale: float):
        if scale <= 0:
            raise ConfigError(f"--epochs-scale must be positive, got {scale}")
        self.scale = scale

    def __call__(self, epochs):
        return max(1, int(round(epochs * self.scale)))


# -- building blocks from the file ------------------------------------------------------
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


def _lambda(spec: dict, scale: Scaler) -> LinearAnneal:
    lam = spec.get("lam", [4.0, 0.0])
    lam = lam if isinstance(lam, list) else [lam, lam]
    e0, e1 = spec.get("lam_epochs", [5, 150])
    return LinearAnneal(lam[0], lam[1], (scale(e0), scale(e1)))


def prepare_data(cfg: dict, data_dir=None, out_dir=None, resume=False, log=print, write=True):
    """(train, valid, test) Splits with preprocessing fitted on the training part only and
    saved to out_dir/preprocess.npz (reloaded on resume, so evaluation uses one transform).
    write: save it (False on data-parallel ranks other than 0, which fit the same one)."""
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
        if pipe_path is not None and write:
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


# -- the stages -------------------------------------------------------------------------
class Runner:
    """comm: the data-parallel communicator (default: ``parallel.world()``, MPI when this
    process was started by mpirun with more than one rank); only rank 0 logs and writes."""

    def __init__(self, cfg, out_dir, epochs_scale=1.0, resume=False, data_dir=None, log=print, progress=True,
                 device="cpu", comm=None):
        self.cfg, self.out = cfg, Path(out_dir)
        self.device = resolve(device)
        run = cfg.get("run", {})
        self.comm = comm if comm is not None else parallel.world()
        _check_parallel(self.comm, run, self.device)
        if self.comm.size > 1:  # the file decides: dropout streams per (seed, epoch, rank), batch-norm sync
            self.comm.seed, self.comm.sync_bn = int(run.get("seed", 0)), run.get("sync_bn", False)
        if not self.comm.is_root:
            log, progress = (lambda *_: None), False
        self.scale, self.resume, self.log, self.progress = Scaler(epochs_scale), resume, log, progress
        self.out.mkdir(parents=True, exist_ok=True)
        if self.comm.size > 1:
            log(f"[run] data parallel: {self.comm.describe()}")
        mrandom.manual_seed(run.get("seed", 0))
        self.splits, self.data_meta = prepare_data(cfg, data_dir, self.out, resume, log, write=self.comm.is_root)
        self.num_classes = self.data_meta["num_classes"]
        self.results = []

    def _fit(self, method, spec, folder, name):
        epochs = self.scale(_require(spec, "epochs", name))
        patience = spec.get("patience")
        return fit(method, self.splits["train"], self.splits["valid"], epochs, self.out / folder,
                   patience=None if patience is None else self.scale(patience), resume=self.resume,
                   log=self.log, progress=self.progress, name=name, comm=self.comm)

    def _record(self, label, method_name, model, fits, extra=None):
        test_err = error_rate(model, self.splits["test"], comm=self.comm)
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
            self._record("teacher", "loaded", model,
                         [FitResult(best_metric=error_rate(model, self.splits["valid"], comm=self.comm))])
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
            hints = TeacherOutputs(teacher, upto=hint, cache=not augmented, comm=self.comm)
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
        logits = TeacherOutputs(teacher, cache=not augmented, comm=self.comm)
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
                       "rows_planned": 1 + len(students), "processes": self.comm.size}
            if self.comm.is_root:
                write_reports(summary, self.out)
            return summary

        teacher = self.teacher()
        summary = report()
        for i, spec in enumerate(students):
            self.student(i, spec, teacher)
            summary = report()
        return summary


def run_experiment(path, out_dir=None, epochs_scale=1.0, resume=False, data_dir=None, log=print, progress=True,
                   device="cpu", comm=None):
    cfg = load_config(path)
    out_dir = out_dir or Path("runs") / Path(path).stem
    return Runner(cfg, out_dir, epochs_scale, resume, data_dir, log, progress, device, comm).run()


def _check_parallel(comm, run: dict, device: str):
    """What data parallelism needs of the file, checked before any data is read."""
    if not isinstance(run.get("sync_bn", False), bool):
        raise ConfigError(f"[run] sync_bn must be true or false, got {run['sync_bn']!r}")
    if comm.size == 1:
        return
    bs = run.get("batch_size", 128)
    if bs % comm.size:
        lower, upper = bs - bs % comm.size, bs + comm.size - bs % comm.size
        raise ConfigError(f"[run] batch_size = {bs} is the global batch and {comm.size} processes do not divide it: "
                          f"set batch_size to a multiple of {comm.size} (e.g. {lower or upper} or {upper}), "
                          "or run a number of processes that divides it")
    if device != "cpu":
        raise ConfigError(f"data parallelism over {comm.size} processes runs on the CPU; drop --device {device}")


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
    from .plot import plot_curves
    plot_curves({r["label"]: r["curve"] for r in summary["results"]}, out / "curves.png",
                title="validation error per epoch", ylabel="valid error %")
