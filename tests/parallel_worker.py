"""Training scenarios for tests/test_parallel.py: run in-process (one rank) by the test, and
under ``mpirun -n 2 python tests/parallel_worker.py SCENARIO OUT`` by it; each rank writes
its weights (and buffers) and the loop's history to OUT/rank{r}.npz.

The optimizers are SGD: a maxout unit passes the gradient to its largest piece, and when two
pieces lie within rounding of each other any change of summation order (2 ranks, or 2
kernel threads in one process) can route one example's gradient to the other piece. SGD
moves such a weight by that example's small share; RMSProp's first steps are about
3.2 lr sign(g), so there a flip is a full step (measured for this maxout student, 8 steps:
1 vs 2 kernel threads in ONE process differ by 0.39 of the largest weight with RMSProp,
3e-7 with SGD)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # run as a script: tests/kernels (the tests' folder) must not shadow the kernels package

import numpy as np  # noqa: E402

import minifit  # noqa: E402
import minifit.optim as optim  # noqa: E402
from minifit import parallel  # noqa: E402
from minifit.distill import Backprop, Split, fit  # noqa: E402

# 3 full batches of 32 and a last batch of 5: two ranks get 2 and 3 examples of it, so the
# n_r / n weighting of a short batch is exercised too
N, BATCH = 3 * 32 + 5, 32


def data(shape, classes=10, seed=0, n=N):
    r = np.random.default_rng(seed)
    labels = r.integers(0, classes, n)
    images = (r.standard_normal((n,) + shape) + 0.5 * labels[:, None, None, None]).astype(np.float32)
    return Split(images, labels, batch_size=BATCH, seed=seed)


def build(scenario):
    from minifit.models import build as build_model
    from minifit.models.wrn import wide_resnet
    minifit.manual_seed(5)
    if scenario.startswith("maxout"):
        # the FitNets MNIST student (six maxout conv layers); "-dropout": with hidden dropout;
        # "-rmsprop": RMSProp instead of SGD
        model = build_model("mnist-fitnet", 10, irange=0.05, hidden_drop=0.5 if scenario.endswith("dropout") else 0.0)
        opt = (optim.RMSProp(model.parameters(), lr=1e-3) if scenario.endswith("rmsprop")
               else optim.SGD(model.parameters(), lr=0.05, momentum=0.5))
        return Backprop(model, opt), data((1, 28, 28))
    if scenario.startswith("wrn"):
        model = wide_resnet(10, 1, 10, dropout=0.0, input_shape=(3, 12, 12))
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        return Backprop(model, opt), data((3, 12, 12))
    if scenario.startswith("adversarial"):
        from minifit.distill.adversarial import AdversarialKD
        from minifit.distill.methods import TeacherOutputs
        from minifit.models.wrn import Discriminator
        teacher = wide_resnet(10, 1, 10, dropout=0.0, input_shape=(3, 12, 12)).eval()
        student = wide_resnet(10, 1, 10, dropout=0.0, input_shape=(3, 12, 12))
        D = Discriminator(10, depth=2, dropout=0.0)
        method = AdversarialKD(student, optim.SGD(student.parameters(), 0.01, momentum=0.9),
                               TeacherOutputs(teacher, cache=False), D, optim.SGD(D.parameters(), 0.01, momentum=0.9),
                               terms=("S", "L1", "GAN"))
        return method, data((3, 12, 12))
    raise SystemExit(f"unknown scenario {scenario}")


def train(scenario, comm=parallel.SINGLE, epochs=2):
    """Train; returns (arrays, history) of this rank."""
    if scenario.endswith("sync"):
        comm.sync_bn = True
    method, split = build(scenario)
    res = fit(method, split, split, epochs, log=lambda *_: None, progress=False, comm=comm)
    arrays = {}
    for name, model in method.models.items():
        arrays.update({f"{name}:{k}": v for k, v in model.state_dict().items()})
    return arrays, res.history


def compare(a, b):
    """Largest difference between two runs' weights, relative to each tensor's largest."""
    x, y = np.load(Path(a) / "rank0.npz"), np.load(Path(b) / "rank0.npz")
    return max(float(np.abs(x[k].astype(np.float64) - y[k]).max() / max(np.abs(y[k]).max(), 1e-30)) for k in y)


def main():
    if sys.argv[1] == "compare":
        return print(f"largest relative weight difference {compare(sys.argv[2], sys.argv[3]):.2g}")
    scenario, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    comm = parallel.world()
    with comm.guard():
        if scenario == "raise-rank1":  # a rank fails during set-up: every rank must stop
            method, split = build("maxout")
            if comm.rank == 1:
                raise ValueError("a planted error on rank 1")
            fit(method, split, split, 50, log=lambda *_: None, progress=False, comm=comm)
        comm.seed = 7
        arrays, history = train(scenario, comm)
        np.savez(out / f"rank{comm.rank}.npz", **arrays)
        (out / f"rank{comm.rank}.json").write_text(json.dumps(history))


if __name__ == "__main__":
    main()
