"""A small MNIST-shaped dataset written in the official IDX format (class prototypes plus
noise, so a few epochs learn something) and a tiny experiment over it, for the fault suite
and the config mutations: real files through the real loaders, no real data needed."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

TINY = """
[run]
seed = 5
batch_size = 32
checkpoint_minutes = 0            # a checkpoint after every step: any kill resumes exactly
[data]
name = "mnist"
valid = 96
augment = {{ translate = 2 }}     # the augmentation generator's state must survive too
limits = {{ train = 192, valid = 64, test = 64 }}
[teacher]
model = "mnist-fitnet"
model_options = {{ irange = 0.05, hidden_drop = 0.1 }}   # dropout: the global generator's state too
epochs = {teacher_epochs}
optimizer = {{ name = "sgd", lr = 0.05, momentum = 0.5 }}
momentum_ramp = {{ final = 0.7, start = 1, saturate = 3 }}
lr_decay = {{ factor = 1.0004, min_lr = 1e-6 }}
[[student]]
label = "fitnets"
method = "fitnets"                # two stages, a regressor, teacher outputs
model = "mnist-fitnet"
model_options = {{ irange = 0.05 }}
guided = "h3"
hint = "h3"
optimizer = {{ name = "rmsprop", lr = 0.001 }}
stage1 = {{ epochs = 1 }}
stage2 = {{ epochs = {student_epochs}, tau = 3.0, lam = [4.0, 0.0], lam_epochs = [1, 2] }}
"""


def _idx(path: Path, a: np.ndarray):
    path.write_bytes(bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())


def write_mnist(root: Path, n_train: int = 288, n_test: int = 64, seed: int = 0) -> Path:
    """root/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte; returns root."""
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, (10, 28, 28))
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.clip(protos[labels] * 0.6 + rng.integers(0, 100, (n, 28, 28)), 0, 255).astype(np.uint8)
        _idx(folder / f"{prefix}-images-idx3-ubyte", images)
        _idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def write_experiment(path: Path, teacher_epochs: int = 2, student_epochs: int = 2) -> Path:
    path.write_text(TINY.format(teacher_epochs=teacher_epochs, student_epochs=student_epochs))
    return path
