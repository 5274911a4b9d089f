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
    assert Image.open(out / "curves.png").size == (640, 430)   # one panel: no row has report tables


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
    bad.write_text('[data]\nname = "mnist"\n[teacher]\nmodel = "mnist-teacher"\nepochs = 1\n'
                   'optimizer = { name = "sgd", lr = 0.1 }\n[[student]]\nmethod = "magic"\n')
    with pytest.raises(ConfigError, match=r"\[\[student\]\] #1 'method' must be one of backprop, kd, fitnets, "
                                          r"adversarial; got 'magic'"):
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
