"""Strict experiment files: unknown keys refused by name with the nearest valid key, types
and ranges checked, layers checked against the models; the README lists every key; every
key the code reads is declared; mutations of a valid file run or fail in one line."""
from __future__ import annotations

import copy
import re
import shutil
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultkit import TINY, write_mnist
from minifit.distill import experiment
from minifit.distill.experiment import ConfigError, check_config, keys_table, load_config

REPO = Path(__file__).resolve().parents[2]
VALID = tomllib.loads(TINY.format(teacher_epochs=1, student_epochs=1))


def toml(cfg: dict) -> str:
    """A small TOML writer for the dicts these tests build (tables, arrays of tables, scalars)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + " }"
        return repr(v)
    out = []
    for name, table in cfg.items():
        if isinstance(table, list) and all(isinstance(t, dict) for t in table) and table:
            for t in table:
                out.append(f"[[{name}]]")
                out += [f'"{k}" = {value(v)}' for k, v in t.items()]
        elif isinstance(table, dict):
            out.append(f"[{name}]")
            out += [f'"{k}" = {value(v)}' for k, v in table.items()]
        else:
            out.insert(0, f'"{name}" = {value(table)}')
    return "\n".join(out) + "\n"


def refused(cfg: dict, match: str):
    with pytest.raises(ConfigError, match=match):
        check_config(cfg)


def test_the_issue_example_tua_instead_of_tau(tmp_path):
    cfg = copy.deepcopy(VALID)
    cfg["student"][0] = {**cfg["student"][0], "label": "kd", "method": "kd", "tua": 3.0}
    for k in ("guided", "hint", "stage1", "stage2"):
        cfg["student"][0].pop(k)
    cfg["student"][0]["epochs"] = 1
    path = tmp_path / "x.toml"
    path.write_text(toml(cfg))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert message.startswith(f"{path}: [[student]] 'kd': unknown key 'tua'; did you mean 'tau'? (known: label, ")
    assert "\n" not in message and ", tau, " in message


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["teacher"].update(epochs=0), r"\[teacher\] 'epochs' must be >= 1, got 0"),
    (lambda c: c["teacher"].update(epochs=2.5), r"\[teacher\] 'epochs' must be an integer, got 2.5"),
    (lambda c: c["run"].update(batch_size=0), r"\[run\] 'batch_size' must be >= 1, got 0"),
    (lambda c: c["run"].update(checkpoint_minutes=-1), r"\[run\] 'checkpoint_minutes' must be >= 0"),
    (lambda c: c["teacher"]["optimizer"].update(lr=0), r"\[teacher\] 'optimizer': 'lr' must be > 0, got 0"),
    (lambda c: c["teacher"]["optimizer"].update(momentun=0.9),
     r"unknown key 'momentun' for sgd; did you mean 'momentum'\?"),
    (lambda c: c["teacher"]["optimizer"].update(name="adagrad"), r"'name' must be one of sgd, rmsprop, adam"),
    (lambda c: c["student"][0].update(guided="h9"),
     r"\[\[student\]\] 'fitnets' 'guided': the student model has no layer 'h9'; its layers are h0, h1"),
    (lambda c: c["student"][0].update(hint="y2"), r"'hint': the teacher model has no layer 'y2'"),
    (lambda c: c["student"][0]["stage2"].update(tua=2.0), r"\[\[student\]\] fitnets stage2: unknown key 'tua'; "
                                                          r"did you mean 'tau'\?"),
    (lambda c: c["student"][0].update(method="distil"), r"'method' must be one of backprop, kd, fitnets, "
                                                        r"adversarial; got 'distil'"),
    (lambda c: c["data"].update(name="mnits"), r"\[data\] 'name' must be one of .*; got 'mnits'; did you mean "
                                               r"'mnist'\?"),
    (lambda c: c["data"].update(preprocess=["scale1"]), r"unknown step 'scale1'; did you mean 'scale01'\?"),
    (lambda c: c["data"]["augment"].update(flip="yes"), r"\[data\] augment 'flip' must be true/false"),
    (lambda c: c["teacher"].update(model="mnist-teachr"), r"unknown model 'mnist-teachr'"),
    (lambda c: c["teacher"]["model_options"].update(irang=0.1),
     r"\[teacher\]: model 'mnist-fitnet' does not take the option 'irang'"),
    (lambda c: c.update(stduent=[]), r"the file: unknown key 'stduent'; did you mean 'student'\?"),
    (lambda c: c["teacher"].pop("optimizer"), r"\[teacher\]: missing key 'optimizer'"),
    (lambda c: c["student"].append(dict(c["student"][0])), r"label 'fitnets' is used twice"),
])
def test_types_ranges_and_layers_are_checked(edit, match):
    cfg = copy.deepcopy(VALID)
    edit(cfg)
    refused(cfg, match)


def test_shipped_experiment_files_pass():
    for path in sorted((REPO / "experiments").glob("*.toml")):
        load_config(path)


def test_the_readme_lists_every_key():
    """The README's key table is keys_table()'s output, verbatim."""
    assert keys_table() in (REPO / "README.md").read_text()


# functions that read experiment-file tables (the schema helpers and the reports read other dicts)
_READERS = {"experiment.py": ("load_config", "check_config", "prepare_data", "_model_options", "_build_model",
                              "Runner", "train_backprop", "_kd_stage", "train_kd", "train_fitnets"),
            "config.py": ("require", "build_optimizer", "build_schedules", "build_lambda", "apply_lr_scale"),
            "adversarial.py": ("_terms", "train_student")}
# names those functions read that are not experiment-file keys (results, checkpoints, metadata)
_NOT_KEYS = {"num_classes", "_path", "train", "valid", "test", "results", "optim", "valid_metric",
             "infer_s"}


def _reads(path: Path, names) -> set:
    """String keys read in ``names``' bodies: t["key"], t.get("key", ...), _require(t, "key", ...)."""
    import ast
    keys = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            for n in ast.walk(node):
                if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant):
                    keys.add(n.slice.value)
                elif isinstance(n, ast.Call):
                    i = {"get": 0, "_require": 1}.get(getattr(n.func, "attr", getattr(n.func, "id", "")))
                    if i is not None and len(n.args) > i and isinstance(n.args[i], ast.Constant):
                        keys.add(n.args[i].value)
    return {k for k in keys if isinstance(k, str)}


def _declared() -> set:
    keys = set()

    def walk(table):
        for k, key in table.keys.items():
            keys.add(k)
            if key.table is not None:
                walk(key.table)
    for t in [experiment.FILE, experiment.RUN, experiment.DATA, experiment.TEACHER, *experiment.STUDENT_TABLES.values()]:
        walk(t)
    return keys | {"name"}   # the optimizer's name (its other keys are the optimizer's arguments)


def test_every_key_the_code_reads_is_declared():
    """A key the runner reads without a schema line (e.g. one added by a merge) fails here,
    not silently at run time."""
    read = set()
    for file, names in _READERS.items():
        read |= _reads(REPO / "minifit" / "distill" / file, names)
    assert {"tau", "guided", "checkpoint", "losses", "batch_size"} <= read, "the scan no longer sees the reads"
    assert sorted(read - _NOT_KEYS - _declared()) == []


# -- hypothesis: mutations of a valid file ----------------------------------------------
_VALUES = st.sampled_from([0, 1, 2, -1, 0.5, -0.5, 3.0, 1e9, float("inf"), float("nan"), "", "x", "h1", "sgd",
                           "mnist-fitnet", True, False, [], [1], [1, 2], ["S"], {}, {"a": 1}])


def _paths(cfg, prefix=()):
    """Every (path to a key) in cfg, through tables and arrays of tables."""
    for k, v in cfg.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))
        elif isinstance(v, list) and v and all(isinstance(t, dict) for t in v):
            for i, t in enumerate(v):
                yield from _paths(t, prefix + (k, i))


def _at(cfg, path):
    for p in path:
        cfg = cfg[p]
    return cfg


@st.composite
def mutated(draw):
    cfg = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 2))):
        paths = list(_paths(cfg))
        path = draw(st.sampled_from(paths))
        parent, key = _at(cfg, path[:-1]), path[-1]
        op = draw(st.sampled_from(["delete", "set", "typo"]))
        if op == "delete":
            del parent[key]
        elif op == "set":
            parent[key] = draw(_VALUES)
        elif isinstance(key, str) and len(key) > 2:
            i = draw(st.integers(0, len(key) - 1))
            parent[key[:i] + key[i + 1:]] = parent.pop(key)
    return cfg


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("mut") / "data", n_train=160)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=mutated())
def test_mutated_files_run_or_fail_in_one_line(cfg, mnist_root, monkeypatch, capsys):
    """Each mutation gives a run (capped at one epoch per stage) or exit status 2 with one
    line; never a traceback or an internal error."""
    from minifit.cli import main
    real_fit = experiment.fit
    monkeypatch.setattr(experiment, "fit", lambda m, tr, va, epochs, *a, **k: real_fit(m, tr, va, 1, *a, **k))
    folder = Path(tempfile.mkdtemp(prefix="mut-"))
    try:
        path = folder / "m.toml"
        path.write_text(toml(cfg))
        code = main(["run", str(path), "--out", str(folder / "o"), "--data-dir", str(mnist_root), "--no-progress"])
        err = capsys.readouterr().err
        lines = [ln for ln in err.strip().splitlines() if ln]
        if code == 0:
            return
        assert code == 2, err
        assert len(lines) == 1 and lines[0].startswith("minifit: error: "), err
    finally:
        shutil.rmtree(folder, ignore_errors=True)
