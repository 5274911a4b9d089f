"""The training loop: NaN detection naming step and layer, checkpoints every epoch,
resuming without losing finished epochs, early stopping and the best checkpoint kept."""
import numpy as np
import pytest

import minifit
import minifit.nn as nn
import minifit.optim as optim
from minifit.distill import Backprop, NonFiniteError, Split, fit, locate_nonfinite


def toy_split(n=96, seed=0):
    r = np.random.default_rng(seed)
    labels = r.integers(0, 3, n)
    images = (r.integers(0, 60, (n, 1, 6, 6)) + labels[:, None, None, None] * 60).astype(np.uint8)
    from minifit.data import Pipeline, Scale01
    return Split(images, labels, batch_size=16, transform=Pipeline(Scale01()), seed=seed)


def toy_method(lr=0.01):
    minifit.manual_seed(0)
    model = nn.Sequential(("h0", nn.MaxoutConv2d(1, 4, 2, 3, pool=2, pool_stride=2, irange=0.3)),
                          ("flat", nn.Flatten()), ("y", nn.Linear(4 * 2 * 2, 3, irange=0.3)))
    return Backprop(model, optim.RMSProp(model.parameters(), lr=lr))


def test_fit_lowers_the_loss_and_keeps_the_best(tmp_path):
    m = toy_method()
    res = fit(m, toy_split(), toy_split(48, 1), epochs=4, out_dir=tmp_path, log=lambda s: None, progress=False)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert (tmp_path / "last.npz").exists() and (tmp_path / "best.npz").exists()
    assert res.best_metric == min(h["valid_metric"] for h in res.history)


def test_resume_continues_after_the_last_finished_epoch(tmp_path):
    logs = []

    class Interrupt(Exception):
        pass

    def log_then_die(msg):
        logs.append(msg)
        if "epoch   2/4" in msg:
            raise Interrupt  # killed right after epoch 2 was logged (its checkpoint is not written yet)
    with pytest.raises(Interrupt):
        fit(toy_method(), toy_split(), toy_split(48, 1), epochs=4, out_dir=tmp_path, log=log_then_die,
            progress=False)
    logs.clear()
    res = fit(toy_method(), toy_split(), toy_split(48, 1), epochs=4, out_dir=tmp_path, resume=True,
              log=logs.append, progress=False)
    assert any("resuming after epoch 1 of 4" in line for line in logs)
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    # an uninterrupted run gives the same history: epochs are seeded by (seed, epoch)
    full = fit(toy_method(), toy_split(), toy_split(48, 1), epochs=4, out_dir=tmp_path / "full",
               log=lambda s: None, progress=False)
    np.testing.assert_allclose([h["train_loss"] for h in res.history], [h["train_loss"] for h in full.history],
                               rtol=1e-5)


def test_early_stopping_with_patience():
    m = toy_method(lr=0.0)  # nothing changes: no epoch after the first improves
    res = fit(m, toy_split(), toy_split(48, 1), epochs=10, patience=2, log=lambda s: None, progress=False)
    assert res.stopped_early and len(res.history) == 3 and res.best_epoch == 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_is_reported_with_step_and_layer():
    m = toy_method()
    m.model["y"].weight.data[0, 0] = np.inf
    with pytest.raises(NonFiniteError, match=r"epoch 1, step 1: the loss is nan.*y \(parameter weight is not finite\)"):
        fit(m, toy_split(), toy_split(48, 1), epochs=1, log=lambda s: None, progress=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_locate_nonfinite_names_the_layer_whose_output_blows_up():
    m = toy_method()
    x = np.full((2, 1, 6, 6), 1e38, np.float32)
    m.model["h0"].weight.data[:] = 10.0
    assert locate_nonfinite(m.model, x).startswith("h0 (MaxoutConv2d: its output is not finite)")
