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
from .. import checkpoint
from .. import parallel
from . import adversarial
from .config import ConfigError, Scaler, apply_lr_scale, build_lambda, build_optimizer, build_schedules, require
from .loop import FitResult, fit
from .methods import KD, Backprop, Hints, TeacherOutputs, error_rate
from .splits import Split
from .tables import grouped_tables


def load_config(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"experiment file {path} does not exist")
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    require(cfg, "data", str(path))
    require(cfg, "teacher", str(path))
    for i, s in enumerate(cfg.get("student", [])):
        method = require(s, "method", f"{path}: [[student]] #{i + 1}")
        if method not in STUDENT_METHODS:
            raise ConfigError(f"{path}: [[student]] #{i + 1}: method must be one of {', '.join(STUDENT_METHODS)}, "
                              f"got {method!r}")
    cfg["_path"] = str(path)
    return cfg


def prepare_data(cfg: dict, data_dir=None, out_dir=None, resume=False, log=print, write=True):
    """(train, valid, test) Splits with preprocessing fitted on the training part only and
    saved to out_dir/preprocess.npz (reloaded on resume, so evaluation uses one transform).
    write: save it (False on data-parallel ranks other than 0, which fit the same one)."""
    d = cfg["data"]
    name = require(d, "name", "[data]")
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
    drop_last = d.get("drop_last", False)   # a last partial training batch is skipped (PyTorch's drop_last)
    splits = {k: Split(images[k], labels[k], bs, transform, augment if k == "train" else (), seed,
                       title=t.title, drop_last=drop_last and k == "train")
              for k, t in (("train", train), ("valid", valid), ("test", test))}
    meta = {"dataset": name, "train": splits["train"].title, "valid": splits["valid"].title,
            "test": splits["test"].title, "test_file": str(test.test_file or test.source_files[0]),
            "num_classes": full.num_classes, "preprocess": repr(pipeline), "augment": [repr(a) for a in augment],
            "sizes": {k: len(v) for k, v in splits.items()}}
    return splits, meta


def _model_options(spec: dict, where: str) -> dict:
    """The options models.build gets: ``model_options`` plus the table's ``bias`` key."""
    opts = dict(spec.get("model_options", {}))
    if "bias" in spec:
        if spec["bias"] not in ("tied", "untied"):
            raise ConfigError(f"{where}: bias must be \"tied\" or \"untied\", got {spec['bias']!r}")
        opts["bias"] = spec["bias"]
    return opts


def _build_model(spec: dict, where: str, num_classes: int):
    try:
        return M.build(require(spec, "model", where), num_classes, **_model_options(spec, where))
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


# -- the stages -------------------------------------------------------------------------
class Runner:
    """One experiment: the teacher, then each [[student]] by the method its table names.

    What a student method (an entry of STUDENT_METHODS) may use: ``fit(method, spec,
    folder, name)`` (the loop, with the table's epochs and patience scaled),
    ``record(label, method_name, model, fits, extra)`` (the report row),
    ``teacher_logits(teacher)`` (stored logits shared by the run's students), and the
    attributes ``splits``, ``num_classes``, ``device``, ``scale``, ``log`` and ``comm``.

    comm: the data-parallel communicator (default ``parallel.world()``: MPI when this
    process was started by mpirun with more than one rank; minifit.parallel). Only rank 0
    logs and writes; a method passes ``runner.comm`` to the TeacherOutputs it builds."""

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
        self._stored_logits = None

    def fit(self, method, spec, folder, name):
        """The training loop on ``method`` for the table ``spec`` (its epochs and patience,
        scaled), checkpoints under ``out/folder``."""
        epochs = self.scale(require(spec, "epochs", name))
        patience = spec.get("patience")
        return fit(method, self.splits["train"], self.splits["valid"], epochs, self.out / folder,
                   patience=None if patience is None else self.scale(patience), resume=self.resume,
                   log=self.log, progress=self.progress, name=name, comm=self.comm)

    def record(self, label, method_name, model, fits, extra=None):
        """Measure ``model``'s test error and add its row to the report."""
        test_err = error_rate(model, self.splits["test"], comm=self.comm)
        final = fits[-1]
        row = {"label": label, "method": method_name, "model": model.name, "params": model.num_params(),
               "bias": getattr(model, "bias_kind", None),
               "paper_params": model.paper_counts()[0], "test_err": test_err,
               "valid_err": final.best_metric, "best_epoch": final.best_epoch,
               "epochs": [len(f.history) for f in fits], "seconds": [round(f.seconds, 1) for f in fits],
               "curve": [h["valid_metric"] for h in final.history], **(extra or {})}
        self.results.append(row)
        self.log(f"[{label}] test error {test_err:.2f}% on {self.data_meta['test']} "
                 f"(best valid {final.best_metric:.2f}% at epoch {final.best_epoch})")
        return row

    def teacher_logits(self, teacher) -> TeacherOutputs:
        """The teacher's logits on the un-augmented training images, computed once per run
        and shared by every student that asks (with augmentation: an approximation, see
        minifit.distill.adversarial)."""
        stored = self._stored_logits
        if stored is None or stored.teacher is not teacher:
            stored = TeacherOutputs(teacher, cache=True, comm=self.comm)
            t0 = time.perf_counter()
            stored.precompute("train", self.splits["train"])
            self.log(f"[teacher] logits of the {len(self.splits['train'])} training images computed once and "
                     f"stored ({time.perf_counter() - t0:.1f}s)")
            self._stored_logits = stored
        return stored

    def teacher(self):
        spec = self.cfg["teacher"]
        mrandom.manual_seed(self.cfg.get("run", {}).get("seed", 0))
        model = _build_model(spec, "[teacher]", self.num_classes).to(device=self.device)
        apply_lr_scale(model, spec)
        if spec.get("weights"):
            return self._teacher_from_file(model, spec)
        if spec.get("checkpoint"):
            # a teacher trained by another run (e.g. the depth experiment reuses FitNet-1's)
            path = Path(spec["checkpoint"])
            if not path.exists():
                raise FileNotFoundError(f"[teacher] checkpoint {path} does not exist: train the teacher first "
                                        f"(e.g. minifit run experiments/cifar10-fitnet1.toml) or remove the key")
            state = checkpoint.read(path)["model"]
            model.load_state_dict({k.split(":", 1)[1]: v for k, v in state.items() if k.startswith("model:")})
            self.log(f"[teacher] loaded {path}")
            self.record("teacher", "loaded", model, [FitResult(best_metric=error_rate(model, self.splits["valid"], comm=self.comm))])
            return model
        opt = build_optimizer(model.parameters(), require(spec, "optimizer", "[teacher]"), "[teacher]")
        f = self.fit(Backprop(model, opt, build_schedules(opt, spec, self.scale)), spec, "teacher", "teacher")
        self.record("teacher", "backprop", model, [f])
        return model

    def _teacher_from_file(self, model, spec):
        """A teacher trained elsewhere: ``weights`` (.safetensors / .npz, e.g. a PyTorch
        state_dict saved with safetensors) loaded through ``rename`` {file name: minifit
        name}, then evaluated on the validation and test splits like a trained one."""
        from .. import weights
        path = Path(spec["weights"])
        rename = spec.get("rename")
        if rename is not None and not isinstance(rename, dict):
            raise ConfigError("[teacher] rename must be a table {\"name in the file\" = \"minifit name\", ...}")
        if not path.exists():
            raise ConfigError(f"[teacher] weights: {path} does not exist (relative paths are read from the "
                              f"current folder, {Path.cwd()})")
        weights.load(model, path, rename)
        digest = weights.sha256(path)
        self.log(f"[teacher] loaded {model.name} ({getattr(model, 'bias_kind', 'tied')} biases) from {path} "
                 f"(SHA-256 {digest[:16]}...)")
        self.record("teacher", "loaded", model, [FitResult(best_metric=error_rate(model, self.splits["valid"], comm=self.comm))],
                    {"weights_file": path.name, "weights_sha256": digest})
        return model

    def student(self, i, spec, teacher):
        """Build the [[student]] table's model and train it by its method's entry of
        STUDENT_METHODS; returns the report row."""
        method = spec["method"]
        label = spec.get("label", method)
        # ``seed``: the student's initialisation seed (rows with the same seed start from the
        # same weights); default: one per row
        mrandom.manual_seed(spec.get("seed", self.cfg.get("run", {}).get("seed", 0) + 1000 * (i + 1)))
        model = _build_model(spec, f"[[student]] {label}", self.num_classes).to(device=self.device)
        apply_lr_scale(model, spec)
        return STUDENT_METHODS[method](self, spec, label, model, teacher, f"student-{label}")

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


# -- the student methods: name -> train(runner, spec, label, model, teacher, folder) -> row --
def train_backprop(runner, spec, label, model, teacher, folder):
    """method = "backprop": the student alone, on the labels."""
    opt = build_optimizer(model.parameters(), spec["optimizer"], label)
    f = runner.fit(Backprop(model, opt, build_schedules(opt, spec, runner.scale)), spec, folder, label)
    return runner.record(label, "backprop", model, [f])


def _kd_stage(runner, spec, s2, label, model, teacher, folder, name):
    """KD on the teacher's logits (cached when the training set is not augmented)."""
    augmented = bool(runner.splits["train"].augment)
    opt = build_optimizer(model.parameters(), s2.get("optimizer", spec["optimizer"]), label)
    logits = TeacherOutputs(teacher, cache=not augmented, comm=runner.comm)
    if not augmented:
        logits.precompute("train", runner.splits["train"])
    kd = KD(model, opt, logits, tau=s2.get("tau", 3.0), lam=build_lambda(s2, runner.scale),
            hinton=s2.get("hinton", False), schedules=build_schedules(opt, s2, runner.scale))
    return runner.fit(kd, s2, folder, name)


def train_kd(runner, spec, label, model, teacher, folder):
    """method = "kd": Hinton / FitNets KD (tau, lam, lam_epochs, hinton)."""
    f = _kd_stage(runner, spec, spec, label, model, teacher, folder, label)
    return runner.record(label, "kd", model, [f])


def train_fitnets(runner, spec, label, model, teacher, folder):
    """method = "fitnets" (FitNets Algorithm 1): [stage1] trains the student up to the
    guided layer and a regressor on the teacher's hint (L_HT), then [stage2] KD on the
    whole student."""
    augmented = bool(runner.splits["train"].augment)
    s1 = dict(spec.get("stage1", {}))
    guided = spec.get("guided", model.hint)
    hint = spec.get("hint", teacher.hint)
    regressor = for_networks(model, guided, teacher, hint, spec.get("regressor", "conv")).to(device=runner.device)
    part = model[:guided]
    params = part.parameters() + regressor.parameters()
    for p in regressor.parameters():
        p.lr_scale = float(spec.get("lr_scale", 1.0))
    opt1 = build_optimizer(params, s1.get("optimizer", spec["optimizer"]), f"{label} stage1")
    hints = TeacherOutputs(teacher, upto=hint, cache=not augmented, comm=runner.comm)
    if not augmented:
        hints.precompute("train", runner.splits["train"])
    hints.precompute("valid", runner.splits["valid"])
    stage1 = Hints(model, guided, regressor, opt1, hints, build_schedules(opt1, s1, runner.scale))
    fits = [runner.fit(stage1, s1, f"{folder}/stage1", f"{label}:stage1")]
    extra = dict(guided=guided, hint=hint, regressor_params=regressor.num_params(),
                 hint_curve=[h["valid_metric"] for h in fits[-1].history])
    scale_pre = spec.get("stage2", {}).get("pretrained_lr_scale")
    if scale_pre is not None:
        for p in part.parameters():
            p.lr_scale *= float(scale_pre)
    s2 = dict(spec.get("stage2", spec))
    fits.append(_kd_stage(runner, spec, s2, label, model, teacher, f"{folder}/stage2", f"{label}:stage2"))
    return runner.record(label, "fitnets", model, fits, extra)


STUDENT_METHODS = {"backprop": train_backprop, "kd": train_kd, "fitnets": train_fitnets,
                   "adversarial": adversarial.train_student}


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
    kinds = {}
    for r in summary["results"]:
        if r.get("bias"):
            kinds.setdefault(r["bias"], []).append(r["label"])
    biases = "; ".join(f"{k} conv biases ({'one per map and position' if k == 'untied' else 'one per map'}): "
                       f"{', '.join(v)}" for k, v in sorted(kinds.items()))
    lines += ["", f"Params: weights and biases as built{' (' + biases + ')' if biases else ''}; in brackets every "
              "maxout layer counted as 2 pieces, the convention that reproduces the paper's figures.", ""]
    for r in summary["results"]:
        if r.get("weights_sha256"):
            lines.append(f"Row {r['label']}: not trained here, loaded from `{r['weights_file']}` "
                         f"(SHA-256 {r['weights_sha256']}) and evaluated by minifit.")
    for r in summary["results"]:
        if "hint_curve" in r:
            lines.append(f"Hint stage of {r['label']} ({r['guided']} <- teacher {r['hint']}, regressor "
                         f"{r['regressor_params']:,} params): validation L_HT per epoch "
                         + ", ".join(f"{v:.3f}" for v in r["hint_curve"]))
    lines += grouped_tables(summary)   # rows with a "tables" field: extra sections (adversarial KD)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    from .plot import plot_curves
    plot_curves({r["label"]: r["curve"] for r in summary["results"]}, out / "curves.png",
                title="validation error per epoch", ylabel="valid error %")
