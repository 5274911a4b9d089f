"""Whole-network training step with the Winograd path forced on vs off, in one process.

One training step as benchmarks/bench_models.py times it (forward, cross-entropy,
backward, SGD with momentum and the max-norm constraints; batch 128, float32, train mode),
on random inputs; the two settings alternate step by step (tuning.WINO_MIN_* = 0 for on,
10**9 for off), median of --repeat steps each after --warmup. With --rss on|off: a
separate run of --repeat steps in that setting only, printing the process's peak RSS.

  env -u OPENBLAS_CORETYPE MINIFIT_NUM_THREADS=2 /work/main/.venv/bin/python benchmarks/ab_winograd_models.py
      [--models fitnet-1,fitnet-4] [--repeat 7] [--clock wall|cpu] [--rss on|off]
      [--infer [--flag WINO_ROWS]]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kernels.cpu import tuning  # noqa: E402

BATCH = 128
LR, MOMENTUM = 0.01, 0.9
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def force(on):
    tuning.WINO_MIN_C, tuning.WINO_MIN_O, tuning.WINO_MIN_P = (0,) * 3 if on else (10**9,) * 3


def step_fn(name, infer=False):
    from steps import network_steps
    _, train, run = network_steps(name, lr=LR, momentum=MOMENTUM, seed=1, batch=BATCH)
    return run if infer else train


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="fitnet-1,fitnet-4")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall")
    ap.add_argument("--rss", choices=["on", "off"], default=None)
    ap.add_argument("--infer", action="store_true",
                    help="time inference (eval mode, no graph) with tuning.<--flag> on / off instead")
    ap.add_argument("--flag", default="WINO_ROWS", choices=["WINO_ROWS"])
    a = ap.parse_args()
    clock = CLOCK[a.clock]
    if a.rss:
        force(a.rss == "on")
        train = step_fn(a.models)
        for _ in range(a.repeat):
            train()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{a.models} winograd {a.rss}: peak RSS {peak:.0f} MB")
        return
    what = f"inference ({a.flag} on / off)" if a.infer else "training step"
    print(f"batch {BATCH}, float32, {what}, {a.clock} clock, median of {a.repeat} per side (alternating)")
    for name in a.models.split(","):
        train = step_fn(name, a.infer)
        t = {True: [], False: []}
        for r in range(a.warmup + a.repeat):
            for on in (True, False):
                if a.infer:
                    setattr(tuning, a.flag, on)
                else:
                    force(on)
                t0 = clock()
                train()
                if r >= a.warmup:
                    t[on].append((clock() - t0) * 1e3)
        on, off = statistics.median(t[True]), statistics.median(t[False])
        print(f"{name:14s} winograd on {on:8.1f} ms  off {off:8.1f} ms  ratio {on / off:.2f}"
              f"   (on: {' '.join(f'{v:.0f}' for v in t[True])}; off: {' '.join(f'{v:.0f}' for v in t[False])})",
              flush=True)


if __name__ == "__main__":
    main()
