"""A/B of the optimizer step over a whole network's parameters, in one process, the two
sides alternating: before = kernels.reference's NumPy update, then its max_norm_ (several
whole-array passes); after = kernels.cpu's fused one-pass update (update + max-norm per
row). --split compares tuning.OPTIM_SPLIT settings of the fused update instead.

  env -u OPENBLAS_CORETYPE python benchmarks/ab_optim.py --models cifar-teacher,fitnet-1
  env -u OPENBLAS_CORETYPE python benchmarks/ab_optim.py --models fitnet-4 --split
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("MINIFIT_NUM_THREADS", "2")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mnist-fitnet,mnist-teacher,fitnet-1,fitnet-4,cifar-teacher,wrn-10-2")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--split", action="store_true", help="compare OPTIM_SPLIT = 64K, 1M, never")
    a = ap.parse_args(argv)
    from kernels import cpu, reference
    from kernels.cpu import tuning
    from minifit.models import build
    for name in a.models.split(","):
        ps = [(p.data, p.max_norm) for p in build(name).parameters()]
        rng = np.random.default_rng(0)
        gs = [rng.standard_normal(p.shape).astype(p.dtype) * 1e-3 for p, _ in ps]
        size = sum(p.size for p, _ in ps)
        for kind in (("sgd",) if a.split else ("sgd", "rmsprop")):
            vs = [np.zeros_like(p) for p, _ in ps]

            def numpy_step():
                for (p, mn), g, v in zip(ps, gs, vs):
                    if kind == "sgd":
                        reference.sgd_update(p, g, v, 0.01, 0.9)
                    else:
                        reference.rmsprop_update(p, g, v, 1e-3, 0.9, 1e-5)
                    if mn is not None:
                        reference.max_norm_(p, mn)

            def fused_step():
                for (p, mn), g, v in zip(ps, gs, vs):
                    if kind == "sgd":
                        cpu.sgd_update(p, g, v, 0.01, 0.9, max_norm=mn)
                    else:
                        cpu.rmsprop_update(p, g, v, 1e-3, 0.9, 1e-5, max_norm=mn)
            shipped = tuning.OPTIM_SPLIT
            if a.split:
                sides = {f"split {s}": (fused_step, s) for s in (1 << 16, 1 << 20, 1 << 62)}
            else:
                sides = {"numpy": (numpy_step, shipped), "fused": (fused_step, shipped)}
            times = {k: [] for k in sides}
            for i in range(a.repeats + 1):
                for k, (fn, split) in sides.items():
                    tuning.OPTIM_SPLIT = split
                    t0 = time.perf_counter()
                    fn()
                    if i:
                        times[k].append(time.perf_counter() - t0)
            tuning.OPTIM_SPLIT = shipped
            med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
            first = next(iter(med.values()))
            print(f"{name:14s} {kind:8s} ({size} params) " + "  ".join(
                f"{k} {m:8.2f} ms ({m / first:4.2f})" for k, m in med.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
