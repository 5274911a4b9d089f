"""Conditional adversarial KD training: on a fixed toy problem the discriminator's accuracy
rises when only it trains and falls when only the student trains; the switches decide which
networks and terms are trained; a tiny run on real CIFAR-10 images through the runner."""
import json

import numpy as np
import pytest

from minifit import Tensor, no_grad
from minifit import random as mrandom
from minifit.distill.adversarial import AdversarialKD, d_accuracies
from minifit.distill.experiment import load_config, run_experiment
from minifit.losses import l1_loss_value_and_grad
from minifit.models.wrn import Discriminator
from minifit.nn import Linear
from minifit.optim import SGD

N, DIM, C = 64, 8, 4


class FixedTeacher:
    def __init__(self, logits):
        self.logits = logits

    def get(self, idx, x, split="train"):
        return self.logits[idx]


@pytest.fixture
def toy():
    mrandom.manual_seed(0)
    r = np.random.default_rng(0)
    x = r.standard_normal((N, DIM)).astype(np.float32)
    t = (3 * x @ r.standard_normal((DIM, C))).astype(np.float32)
    y = t.argmax(1)
    student = Linear(DIM, C, init="he")
    D = Discriminator(C, depth=2, dropout=0.0)
    return x, t, y, student, D


def make(student, D, t, terms=("S", "L1", "GAN"), **kw):
    return AdversarialKD(student, SGD(student.parameters(), 0.05, momentum=0.9), FixedTeacher(t), D,
                         SGD(D.parameters(), 0.05, momentum=0.9) if D is not None else None, terms, **kw)


def d_acc(D, student, x, t, y):
    with no_grad():
        s = student(Tensor(x)).data
        return d_accuracies(D(Tensor(np.concatenate([t, s]))).data, y)["d_acc"]


def test_d_accuracy_rises_when_only_d_trains_and_falls_when_only_the_student_trains(toy):
    x, t, y, student, D = toy
    idx = np.arange(N)
    before = d_acc(D, student, x, t, y)
    only_d = make(student, D, t, update_student=False)
    w0 = student.weight.data.copy()
    for _ in range(150):
        logs = only_d.step(idx, x, y)
    trained = d_acc(D, student, x, t, y)
    assert trained > max(before, 0.9), (before, trained)
    np.testing.assert_array_equal(student.weight.data, w0)       # the student never moved
    assert {"loss", "loss_d", "d_real_acc", "d_fake_acc", "d_acc", "L_GAN"} <= set(logs)

    d_state = D.state_dict()
    only_student = make(student, D, t, terms=("GAN",), update_d=False)
    for _ in range(100):
        only_student.step(idx, x, y)
    for k, v in D.state_dict().items():
        if "running" not in k:   # D's parameters are fixed (its BN running statistics still track)
            np.testing.assert_array_equal(v, d_state[k], err_msg=k)
    fooled = d_acc(D, student, x, t, y)
    assert fooled < trained - 0.2, (trained, fooled)


def test_without_gan_no_discriminator_is_trained_and_l1_alone_is_the_l1_gradient(toy):
    x, t, y, student, _ = toy
    method = make(student, None, t, terms=("L1",))
    assert list(method.models) == ["student"] and list(method.optimizers) == ["student"]
    # the update is plain SGD on the L1 gradient: one step from zero momentum
    w0, b0 = student.weight.data.copy(), student.bias.data.copy()
    s = x @ w0.T + b0
    _, g = l1_loss_value_and_grad(s, t)
    logs = method.step(np.arange(N), x, y)
    assert set(logs) == {"loss", "L_L1", "err"}
    np.testing.assert_allclose(student.weight.data, w0 - 0.05 * g.T @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(student.bias.data, b0 - 0.05 * g.sum(0), rtol=1e-5, atol=1e-6)


def test_switches_change_the_student_update(toy):
    x, t, y, student, D = toy
    state = student.state_dict()
    updates = {}
    for terms in (("S",), ("L1",), ("GAN",), ("S", "L1", "GAN")):
        student.load_state_dict(state)
        mrandom.manual_seed(1)
        Dk = Discriminator(C, depth=2, dropout=0.0)
        make(student, Dk if "GAN" in terms else None, t, terms=terms).step(np.arange(N), x, y)
        updates[terms] = student.weight.data - state["weight"]
    keys = list(updates)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            assert not np.allclose(updates[keys[i]], updates[keys[j]]), (keys[i], keys[j])
    with pytest.raises(ValueError, match="needs a discriminator"):
        make(student, None, t, terms=("GAN",))
    with pytest.raises(ValueError, match="subset"):
        make(student, None, t, terms=("S", "L2"))


TINY = """
[run]
seed = 5
batch_size = 64
[data]
name = "cifar10"
valid = 10000
preprocess = ["scale01", "standardize"]
augment = { translate = 4, flip = true }
limits = { train = 320, valid = 128, test = 128 }
[teacher]
model = "wrn-10-1"
epochs = 1
optimizer = { name = "sgd", lr = 0.1, momentum = 0.9, weight_decay = 1e-4 }
[[student]]
label = "ours"
method = "adversarial"
model = "wrn-10-1"
losses = ["S", "L1", "GAN"]
epochs = 1
optimizer = { name = "sgd", lr = 0.1, momentum = 0.9, weight_decay = 1e-4 }
lr_step = { milestones = [1], gamma = 0.1 }
discriminator = { depth = 3 }
tables = ["ablation", "size"]
[[student]]
label = "kd-t5"
method = "adversarial"
model = "wrn-10-1"
losses = ["KD"]
tau = 5.0
epochs = 1
optimizer = { name = "sgd", lr = 0.1, momentum = 0.9, weight_decay = 1e-4 }
tables = ["kd"]
time_inference = false
[paper]
ours = { test_err = 6.09, infer_s = 0.14, params = "0.32M" }
[paper.tables.ablation]
title = "Loss ablation"
text = "Paper, Table 3: all three 6.09 / 25.75"
"""


def test_tiny_run_on_real_cifar10_through_the_runner(tmp_path, data_root):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    summary = run_experiment(cfg, out, data_dir=data_root, log=lambda s: None, progress=False)
    rows = {r["label"]: r for r in summary["results"]}
    assert list(rows) == ["teacher", "ours", "kd-t5"]
    ours = rows["ours"]
    assert ours["method"] == "adversarial" and ours["losses"] == "L_S + L_L1 + L_GAN" and ours["d_depth"] == 3
    assert ours["infer_s"] > 0 and rows["teacher"]["infer_s"] > 0 and "infer_s" not in rows["kd-t5"]
    assert {"train_loss_d", "train_d_real_acc", "train_d_fake_acc"} <= set(ours["d_log"][0])
    assert rows["kd-t5"]["d_log"] == [] and rows["kd-t5"]["tau"] == 5.0
    from minifit.checkpoint import read
    hist = read(out / "student-ours" / "last.npz")["meta"]["history"]
    assert {"train_L_S", "train_L_L1", "train_L_GAN", "train_loss_d", "lr", "lr_d"} <= set(hist[0])
    assert hist[0]["lr_d"] == pytest.approx(1e-4)   # D: lr 1e-3, the student's step schedule
    md = (out / "results.md").read_text()
    assert "## Loss ablation" in md and "## size" in md and "## kd" in md
    assert "Paper, Table 3" in md and "| ours | L_S + L_L1 + L_GAN | wrn-10-1 |" in md
    assert json.loads((out / "results.json").read_text())["results"][1]["d_log"]


@pytest.mark.parametrize("name", ["cifar10-adversarial", "cifar100-adversarial"])
def test_experiment_files_parse(name):
    from pathlib import Path
    cfg = load_config(Path(__file__).resolve().parents[2] / "experiments" / f"{name}.toml")
    labels = [s["label"] for s in cfg["student"]]
    assert len(labels) == len(set(labels))
    assert all(s["method"] == "adversarial" for s in cfg["student"])
    tables = {t for s in cfg["student"] for t in s.get("tables", [])}
    assert {"ablation", "kd", "size"} <= tables


def test_cifar100_file_runs_on_a_generated_cifar100(tmp_path):
    """The CIFAR-100 experiment file, trimmed to two students and tiny nets, on random images
    in the CIFAR-100 binary format (no copy of CIFAR-100 is available here): 100 classes
    reach the discriminator (100 wide, 102 outputs) and the report."""
    from pathlib import Path
    from minifit.distill.experiment import Runner
    r = np.random.default_rng(0)
    folder = tmp_path / "data" / "cifar-100-binary"
    folder.mkdir(parents=True)
    for split, n in (("train", 160), ("test", 40)):
        fine, coarse = r.integers(0, 100, n), r.integers(0, 20, n)
        pixels = r.integers(0, 256, (n, 3072))
        (folder / f"{split}.bin").write_bytes(np.concatenate([coarse[:, None], fine[:, None], pixels], 1)
                                              .astype(np.uint8).tobytes())
    cfg = load_config(Path(__file__).resolve().parents[2] / "experiments" / "cifar100-adversarial.toml")
    cfg["data"]["valid"] = 32
    cfg["run"]["batch_size"] = 64
    cfg["teacher"].update(model="wrn-10-1", epochs=1)
    cfg["student"] = [dict(s, epochs=1) for s in cfg["student"] if s["label"] in ("ours", "kd-T5")]
    summary = Runner(cfg, tmp_path / "out", data_dir=tmp_path / "data", log=lambda s: None, progress=False).run()
    rows = {row["label"]: row for row in summary["results"]}
    assert summary["data"]["num_classes"] == 100 and list(rows) == ["teacher", "ours", "kd-T5"]
    from minifit.checkpoint import read
    model = read(tmp_path / "out" / "student-ours" / "best.npz")["model"]
    assert model["discriminator:out.weight"].shape == (102, 100)
    assert "| kd-T5 | KD(T=5) | wrn-10-1 |" in (tmp_path / "out" / "results.md").read_text()
