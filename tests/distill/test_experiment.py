"""A tiny end-to-end run of every method on real MNIST: teacher, backprop, KD and FitNets
(hint stage, then KD), through the same code path as `minifit run`."""
import json

import pytest

from minifit.cli import main
from minifit.distill.experiment import ConfigError, load_config, run_experiment

TINY = """
[run]
seed = 3
batch_size = 64
[data]
name = "mnist"
valid = 10000
limits = { train = 2048, valid = 256, test = 256 }
[teacher]
model = "mnist-teacher"
epochs = 3
optimizer = { name = "rmsprop", lr = 0.001 }
[[student]]
label = "backprop"
method = "backprop"
model = "mnist-fitnet"
model_options = { irange = 0.05 }   # the paper's .005 sits at chance for epochs
epochs = 2
optimizer = { name = "rmsprop", lr = 0.001 }
[[student]]
label = "kd"
method = "kd"
model = "mnist-fitnet"
model_options = { irange = 0.05 }   # the paper's .005 sits at chance for epochs
epochs = 2
optimizer = { name = "rmsprop", lr = 0.001 }
tau = 3.0
lam = [4.0, 0.0]
lam_epochs = [1, 2]
[[student]]
label = "fitnets"
method = "fitnets"
model = "mnist-fitnet"
model_options = { irange = 0.05 }   # the paper's .005 sits at chance for epochs
guided = "h3"
hint = "h1"
optimizer = { name = "rmsprop", lr = 0.001 }
stage1 = { epochs = 2 }
stage2 = { epochs = 2, tau = 3.0, lam = [4.0, 0.0], lam_epochs = [1, 2] }
[paper]
teacher = { test_err = 0.55 }
fitnets = { test_err = 0.51 }
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_root):
    folder = tmp_path_factory.mktemp("run")
    cfg = folder / "tiny.toml"
    cfg.write_text(TINY)
    summary = run_experiment(cfg, folder / "out", data_dir=data_root, log=lambda s: None, progress=False)
    return folder / "out", summary


def histories(out, folder):
    from minifit.checkpoint import read
    return read(out / folder / "last.npz")["meta"]["history"]


def test_every_method_lowers_its_training_loss(tiny_run):
    out, summary = tiny_run
    assert [r["label"] for r in summary["results"]] == ["teacher", "backprop", "kd", "fitnets"]
    for folder in ["teacher", "student-backprop", "student-kd", "student-fitnets/stage2"]:
        h = histories(out, folder)
        assert h[-1]["train_loss"] < h[0]["train_loss"], folder
    assert summary["results"][0]["test_err"] < 50  # the teacher learned something in 3 tiny epochs


def test_hint_stage_lowers_the_hint_loss(tiny_run):
    out, summary = tiny_run
    h = histories(out, "student-fitnets/stage1")
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    fit_row = summary["results"][-1]
    assert fit_row["hint_curve"][-1] < fit_row["hint_curve"][0]
    assert fit_row["regressor_params"] == 48 * 2 * 16 + 96  # 1x1 maxout conv, 2 pieces


def test_reports_are_written(tiny_run):
    out, summary = tiny_run
    md = (out / "results.md").read_text()
    assert "| fitnets | fitnets | mnist-fitnet |" in md and "MNIST test" in md and "0.51" in md
    data = json.loads((out / "results.json").read_text())
    assert data["data"]["test_file"].endswith("t10k-images-idx3-ubyte.gz")
    from PIL import Image
    assert Image.open(out / "curves.png").size == (800, 500)


def test_resume_of_a_finished_run_retrains_nothing(tiny_run, data_root, capsys):
    out, summary = tiny_run
    cfg = out.parent / "tiny.toml"
    code = main(["run", str(cfg), "--out", str(out), "--resume", "--data-dir", str(data_root), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "already finished" in printed and "epoch   1/" not in printed
    again = json.loads((out / "results.json").read_text())
    assert [r["test_err"] for r in again["results"]] == [r["test_err"] for r in summary["results"]]


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nname = "mnist"\n[teacher]\nmodel = "mnist-teacher"\n[[student]]\nmethod = "magic"\n')
    with pytest.raises(ConfigError, match="method must be one of backprop, kd, fitnets, adversarial, got 'magic'"):
        load_config(bad)
    bad.write_text("[data\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    assert main(["run", str(tmp_path / "none.toml")]) == 2


def test_shipped_experiment_files_parse():
    from pathlib import Path
    for path in sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.toml")):
        load_config(path)


def test_missing_mnist_is_fetched_on_first_use(tmp_path, monkeypatch):
    """`minifit run` on a machine without MNIST fetches it once into the data root."""
    import minifit.distill.experiment as E
    calls = []

    def fake_fetch(name, root):
        calls.append((name, str(root)))
        raise ConnectionError("offline (test): tried https://example/mnist")
    monkeypatch.setattr(E, "fetch", fake_fetch)
    cfg = tmp_path / "t.toml"
    cfg.write_text(TINY)
    with pytest.raises(ConnectionError, match="offline"):
        run_experiment(cfg, tmp_path / "out", data_dir=tmp_path / "empty", log=lambda s: None)
    assert calls == [("mnist", str(tmp_path / "empty"))]


SHORT = """
[run]
seed = 1
batch_size = 64
[data]
name = "mnist"
valid = 10000
limits = { train = 512, valid = 128, test = 128 }
[teacher]
model = "mnist-fitnet"
model_options = { irange = 0.05 }
epochs = 1
optimizer = { name = "rmsprop", lr = 0.001 }
""" + "".join(f"""[[student]]
label = "{label}"
method = "backprop"
model = "mnist-fitnet"
model_options = {{ irange = 0.05 }}
epochs = 1
optimizer = {{ name = "rmsprop", lr = 0.001 }}
""" for label in ("first", "second"))


def test_a_stopped_run_keeps_its_finished_rows(tmp_path, data_root, monkeypatch, capsys):
    """Reports are written after every row: a run stopped during its last student still has
    the teacher's and the first student's rows, marked unfinished; --resume completes it
    without retraining them."""
    from minifit.distill import experiment
    cfg = tmp_path / "short.toml"
    cfg.write_text(SHORT)
    real = experiment.Runner.student

    def stop_at_second(self, i, spec, teacher):
        if i == 1:
            raise KeyboardInterrupt
        return real(self, i, spec, teacher)
    monkeypatch.setattr(experiment.Runner, "student", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "out", data_dir=data_root, log=lambda s: None, progress=False)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "Unfinished run: 2 of 3 rows" in md
    assert "| teacher |" in md and "| first |" in md and "| second |" not in md
    monkeypatch.setattr(experiment.Runner, "student", real)
    code = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--resume", "--data-dir", str(data_root),
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and printed.count("already finished") == 2
    md = (tmp_path / "out" / "results.md").read_text()
    assert "Unfinished" not in md and "| second |" in md


FROM_FILE = """
[run]
seed = 2
batch_size = 100
[data]
name = "mnist"
valid = 10000
limits = {{ train = 250, valid = 200, test = 300 }}
drop_last = true
[teacher]
model = "mnist-teacher"
bias = "untied"
weights = "{weights}"
[teacher.rename]
{rename}
""" + "".join(f"""[[student]]
label = "{label}"
method = "{method}"
model = "mnist-fitnet"
bias = "untied"
seed = 11
epochs = 1
optimizer = {{{{ name = "rmsprop", lr = 0.001 }}}}
lam_epochs = [2.5, 16]
""" for label, method in (("bp", "backprop"), ("bp2", "backprop"), ("kd", "kd")))


def test_teacher_from_a_weights_file(tmp_path, data_root, capsys):
    """[teacher] weights + rename + bias: a teacher saved elsewhere (PyTorch names, npz here,
    safetensors in tests/test_weights.py) is loaded, evaluated and reported with its file's
    name and SHA-256; students with the same seed start from the same weights; drop_last
    skips the partial batch (250 examples, batch 100: 2 steps)."""
    import hashlib
    import numpy as np
    import minifit.models as M
    from minifit import weights
    teacher = M.build("mnist-teacher", bias="untied")
    ours = {"h0.weight": "layers.1.conv.weight", "h0.bias": "layers.1.b", "h1.weight": "layers.3.conv.weight",
            "h1.bias": "layers.3.b", "h2.weight": "layers.5.conv.weight", "h2.bias": "layers.5.b",
            "y.weight": "layers.7.1.weight", "y.bias": "layers.7.1.bias"}
    state = {ours[k]: v for k, v in teacher.state_dict().items()}
    path = tmp_path / "teacher.npz"
    weights.write(path, state)
    rename = "\n".join(f'"{theirs}" = "{mine}"' for mine, theirs in ours.items())
    cfg = tmp_path / "t.toml"
    cfg.write_text(FROM_FILE.format(weights=path, rename=rename))
    summary = run_experiment(cfg, tmp_path / "out", data_dir=data_root, log=print, progress=False)
    t, bp, _, kd = summary["results"]
    assert t["method"] == "loaded" and t["bias"] == "untied" and bp["bias"] == "untied"
    assert t["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    md = (tmp_path / "out" / "results.md").read_text()
    assert f"loaded from `teacher.npz` (SHA-256 {t['weights_sha256']})" in md and "untied conv biases" in md
    assert "loaded mnist-teacher (untied biases) from" in capsys.readouterr().out
    assert histories(tmp_path / "out", "student-bp")[0]["steps"] == 2
    # the same seed and batch order: two identical backprop rows end with the same weights
    from minifit.checkpoint import read
    w1, w2 = (read(tmp_path / "out" / f"student-{r}" / "best.npz")["model"] for r in ("bp", "bp2"))
    for k in w1:
        np.testing.assert_allclose(w1[k], w2[k], rtol=1e-5, atol=1e-7, err_msg=k)
    # mistakes in the table: one line each, exit 2
    for bad, msg in ((FROM_FILE.format(weights=tmp_path / "none.npz", rename=rename), "none.npz does not exist"),
                     (FROM_FILE.format(weights=path, rename='"layers.9.b" = "h9.bias"'),
                      "rename names 'layers.9.b', not in the file"),
                     (FROM_FILE.format(weights=path, rename=rename).replace('bias = "untied"\nweights',
                                                                            'bias = "tied"\nweights'),
                      "h0.bias has shape (96,) in the model but (96, 21, 21) in the state")):
        cfg.write_text(bad)
        assert main(["run", str(cfg), "--out", str(tmp_path / "bad"), "--data-dir", str(data_root),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err


def test_lambda_anneal_of_the_pytorch_protocol():
    """lam_epochs = [2.5, 16] gives, with e = epoch - 1 epochs completed, 4 while e < 1.5,
    4 (15 - e) / 13.5 after, 0 from e = 15 (experiments/mnist-fitnets-pytorch-teacher.toml)."""
    from minifit.distill.config import Scaler, build_lambda
    lam = build_lambda({"lam": [4.0, 0.0], "lam_epochs": [2.5, 16]}, Scaler(1.0))
    for epoch in range(1, 51):
        e = epoch - 1
        want = 4.0 if e < 1.5 else max(0.0, 4 * (15 - e) / 13.5)
        assert lam(epoch) == pytest.approx(want, abs=1e-12), epoch
