"""A/B of one kernel path inside whole networks, in one process: a training step and an
inference pass of each network under two settings of kernels/cpu/tuning.py, the two
alternating call by call so both see the same machine load.

  env -u OPENBLAS_CORETYPE python benchmarks/ab_paths.py --models fitnet-1,fitnet-4 \\
      --b WINO_MIN_C=1000000 [--a NAME=VALUE ...] [--repeats 9]

A setting is NAME=VALUE (VALUE a Python expression, e.g. 1<<30); --a defaults to the
tuning as shipped. Prints per network the median times of A and B and B / A. Batch 128,
float32, MINIFIT_NUM_THREADS (default 2); the step is forward, cross-entropy, backward and
SGD (momentum, lr 0: the weights stay put, so both settings compute the same function).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("MINIFIT_NUM_THREADS", "2")


def settings(pairs):
    out = {}
    for s in pairs or []:
        name, _, val = s.partition("=")
        out[name.strip()] = eval(val, {})   # noqa: S307 (a benchmark's own command line)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mnist-fitnet,mnist-teacher,fitnet-1,fitnet-4,cifar-teacher,wrn-10-2")
    ap.add_argument("--a", nargs="*", default=[], help="NAME=VALUE tuning settings of side A")
    ap.add_argument("--b", nargs="*", default=[], help="NAME=VALUE tuning settings of side B")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--kinds", default="train,infer")
    ap.add_argument("--bias", choices=("tied", "untied"), default=None,
                    help="the maxout convs' biases (default: the model's; the MNIST experiments use untied)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: the process's CPU time (all its threads): far less sensitive than wall "
                         "time to other jobs on a shared machine, blind to idle waits")
    a = ap.parse_args(argv)
    from kernels.cpu import tuning
    from steps import network_steps
    sa, sb = settings(a.a), settings(a.b)
    tick = time.process_time if a.clock == "cpu" else time.perf_counter
    for name in list(sa) + list(sb):
        if not hasattr(tuning, name):
            sys.exit(f"ab_paths: tuning has no {name}")
    shipped = {k: getattr(tuning, k) for k in set(sa) | set(sb)}
    print(f"A: {sa or 'as shipped'}   B: {sb or 'as shipped'}   threads {os.environ['MINIFIT_NUM_THREADS']}, "
          f"{a.clock} clock")
    for name in a.models.split(","):
        _, train, infer = network_steps(name, a.bias, lr=0.0)
        for kind in a.kinds.split(","):
            fn = train if kind == "train" else infer
            times = {"A": [], "B": []}
            for i in range(a.repeats + 1):
                for side, st in (("A", sa), ("B", sb)):
                    for k, v in shipped.items():
                        setattr(tuning, k, st.get(k, v))
                    t0 = tick()
                    fn()
                    if i:   # the first round warms up (compiles, allocates)
                        times[side].append(tick() - t0)
            for k, v in shipped.items():
                setattr(tuning, k, v)
            ma, mb = (float(np.median(times[s])) for s in "AB")
            print(f"{name:14s} {kind:5s} A {ma * 1e3:8.1f} ms  B {mb * 1e3:8.1f} ms  B/A {mb / ma:5.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
