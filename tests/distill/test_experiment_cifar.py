"""A tiny CIFAR-10 run through the experiment runner: preprocessing fitted on the training
split, augmentation (so teacher outputs are computed per batch, not cached), the FitNet-1
hint stage through a 2x2 regressor, and a second experiment reusing the trained teacher."""
import json

import pytest

from minifit.distill.experiment import run_experiment

BASE = """
[run]
seed = 2
batch_size = 64
[data]
name = "cifar10"
valid = 10000
options = {{ test_file = "test_batch_first1000.bin" }}
limits = {{ train = 192, valid = 64, test = 64 }}
preprocess = [{{ kind = "gcn", scale = 55.0 }}, "standardize"]
augment = {{ translate = 4, flip = true }}
[teacher]
model = "cifar-teacher"
epochs = 1
{teacher_extra}
optimizer = {{ name = "sgd", lr = 0.01, momentum = 0.5 }}
[[student]]
label = "{label}"
method = "{method}"
model = "{model}"
lr_scale = 0.05
optimizer = {{ name = "rmsprop", lr = 0.005 }}
{student_extra}
"""
FITNETS = """stage1 = { epochs = 1 }
stage2 = { epochs = 1, tau = 3.0, lam = [4.0, 1.0], lam_epochs = [1, 2] }"""


@pytest.fixture(scope="module")
def cifar_runs(tmp_path_factory, data_root):
    folder = tmp_path_factory.mktemp("cifar")
    first = folder / "fitnet1.toml"
    first.write_text(BASE.format(teacher_extra="", label="fitnets", method="fitnets", model="fitnet-1",
                                 student_extra=FITNETS))
    s1 = run_experiment(first, folder / "a", data_dir=data_root, log=lambda s: None, progress=False)
    second = folder / "depth.toml"
    second.write_text(BASE.format(teacher_extra=f'checkpoint = "{folder / "a" / "teacher" / "best.npz"}"',
                                  label="5-layers-kd", method="kd", model="depth-5-30m",
                                  student_extra="epochs = 1"))
    s2 = run_experiment(second, folder / "b", data_dir=data_root, log=lambda s: None, progress=False)
    return folder, s1, s2


def test_fitnet1_hint_stage_on_cifar(cifar_runs):
    folder, s1, _ = cifar_runs
    row = s1["results"][1]
    assert row["guided"] == "h5" and row["hint"] == "h1"
    assert row["regressor_params"] == 384 * 32 * 2 * 2 + 384  # 192x2 maps, 2x2 kernel over 32 channels
    assert s1["data"]["test"] == "CIFAR-10 test[:1000]"
    assert s1["data"]["augment"] and "GCN" in s1["data"]["preprocess"]
    md = (folder / "a" / "results.md").read_text()
    assert "CIFAR-10 test[:1000]" in md and "test_batch_first1000.bin" in md


def test_second_experiment_reuses_the_teacher(cifar_runs):
    folder, s1, s2 = cifar_runs
    teacher1, teacher2 = s1["results"][0], s2["results"][0]
    assert teacher2["method"] == "loaded" and teacher2["test_err"] == teacher1["test_err"]
    assert json.loads((folder / "b" / "results.json").read_text())["results"][1]["model"] == "depth-5-30m"


def test_missing_teacher_checkpoint_is_a_clear_error(tmp_path, data_root):
    cfg = tmp_path / "x.toml"
    cfg.write_text(BASE.format(teacher_extra='checkpoint = "nowhere/best.npz"', label="kd", method="kd",
                               model="depth-5-30m", student_extra="epochs = 1"))
    with pytest.raises(FileNotFoundError, match="checkpoint nowhere/best.npz does not exist: train the teacher first"):
        run_experiment(cfg, tmp_path / "o", data_dir=data_root, log=lambda s: None, progress=False)
