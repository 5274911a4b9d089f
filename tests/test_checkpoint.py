import os

import numpy as np
import pytest

import minifit
import minifit.nn as nn
import minifit.optim as optim
from minifit import Tensor, checkpoint


def model():
    return nn.Sequential(("h0", nn.MaxoutConv2d(1, 2, 2, 3)), ("f", nn.Flatten()), ("y", nn.Linear(2 * 6 * 6, 3)))


def trained(seed):
    minifit.manual_seed(seed)
    m = model()
    opt = optim.RMSProp(m.parameters(), lr=0.01)
    for p in m.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    return m, opt


def test_round_trip_into_fresh_model_and_optimizer(tmp_path):
    m, opt = trained(0)
    path = tmp_path / "ck.npz"
    checkpoint.save(path, m, opt, epoch=3, note="x")
    m2, opt2 = trained(1)
    meta = checkpoint.load(path, m2, opt2)
    assert meta == {"epoch": 3, "note": "x"}
    x = Tensor(np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32))
    np.testing.assert_array_equal(m(x).data, m2(x).data)
    np.testing.assert_array_equal(opt.state[0]["mean_square"], opt2.state[0]["mean_square"])
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_interrupted_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    m, opt = trained(0)
    path = tmp_path / "ck.npz"
    checkpoint.save(path, m, opt, epoch=1)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"partial garbage")
        raise KeyboardInterrupt("killed mid-write")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, m, opt, epoch=2)
    assert path.read_bytes() == before
    assert checkpoint.read(path)["meta"]["epoch"] == 1
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(checkpoint.CheckpointError, match="bad.npz is corrupt or not a minifit checkpoint"):
        checkpoint.read(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.read(tmp_path / "none.npz")
