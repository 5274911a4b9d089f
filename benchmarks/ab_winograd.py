"""A/B of the Winograd F(2x2, 3x3) path against the im2col path, per layer, in one process.

For each stride-1 3x3 training layer (batch 128, float32, x and dy in CNHW as in-network):
the forward (kernels.cpu.conv2d_maxout_forward, or conv2d_forward for the WRN's plain
convs) and the backward (conv2d_backward, dx only where the layer is not the first)
timed with Winograd forced on (tuning.WINO_MIN_* = 0) and off (= 10**9), the two
alternating call by call; median of --repeat calls each after one warm-up.

  env -u OPENBLAS_CORETYPE MINIFIT_NUM_THREADS=2 /work/main/.venv/bin/python benchmarks/ab_winograd.py
      [--repeat 7] [--only SUBSTRING] [--chunk ELEMS,...] [--clock wall|cpu]

--chunk times the Winograd path at each chunk budget instead (A/B/C...): the value is set as both
tuning.WINO_ROWS_CHUNK_ELEMS (the forward's) and tuning.WINO_CHUNK_ELEMS (the backward's).
--clock cpu: process CPU time (both threads' sum): less sensitive to other jobs on a shared
machine than the wall clock.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kernels import cpu  # noqa: E402
from kernels.cpu import tuning  # noqa: E402

BATCH = 128
# (name, C, conv maps O, pieces (1: a plain conv), pad, pool (k, s) or None, H=W, need dx)
LAYERS = [
    ("fitnet-4 h0", 3, 64, 2, 1, None, 32, False),
    ("fitnet-4 h1-2", 32, 64, 2, 1, None, 32, True),
    ("fitnet-4 h3", 32, 96, 2, 1, None, 32, True),
    ("fitnet-4 h4", 48, 96, 2, 1, (2, 2), 32, True),
    ("fitnet-4 h5", 48, 160, 2, 1, None, 16, True),
    ("fitnet-4 h6-9", 80, 160, 2, 1, None, 16, True),
    ("fitnet-4 h10", 80, 160, 2, 1, (2, 2), 16, True),
    ("fitnet-4 h11", 80, 256, 2, 1, None, 8, True),
    ("fitnet-4 h12-15", 128, 256, 2, 1, None, 8, True),
    ("fitnet-4 h16", 128, 256, 2, 1, (8, 1), 8, True),
    ("fitnet-1 h1", 16, 32, 2, 1, None, 32, True),
    ("fitnet-1 h2", 16, 32, 2, 1, (2, 2), 32, True),
    ("fitnet-1 h3", 16, 64, 2, 1, None, 16, True),
    ("fitnet-1 h4", 32, 64, 2, 1, None, 16, True),
    ("fitnet-1 h5", 32, 64, 2, 1, (2, 2), 16, True),
    ("fitnet-1 h6", 32, 96, 2, 1, None, 8, True),
    ("fitnet-1 h7", 48, 96, 2, 1, None, 8, True),
    ("fitnet-1 h8", 48, 128, 2, 1, (8, 1), 8, True),
    ("mnist-fitnet h1", 16, 32, 2, 0, (4, 2), 24, True),
    ("mnist-fitnet h3", 16, 32, 2, 0, (4, 2), 12, True),
    ("mnist-fitnet h4", 16, 48, 4, 3, None, 4, True),
    ("mnist-fitnet h5", 12, 48, 4, 0, (2, 2), 8, True),
    ("wrn-10-2 g1 conv1", 16, 32, 1, 1, None, 32, True),
    ("wrn-10-2 g1 conv2", 32, 32, 1, 1, None, 32, True),
    ("wrn-10-2 g2 conv2", 64, 64, 1, 1, None, 16, True),
    ("wrn-10-2 g3 conv2", 128, 128, 1, 1, None, 8, True),
]


def force(on):
    tuning.WINO_MIN_C, tuning.WINO_MIN_O, tuning.WINO_MIN_P = (0,) * 3 if on else (10**9,) * 3


def cnhw(a):
    return np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1)


def make(layer, rng):
    _, c, o, pieces, pad, pool, h, _ = layer
    x = cnhw(rng.standard_normal((BATCH, c, h, h), dtype=np.float32))
    w = rng.uniform(-0.05, 0.05, (o, c, 3, 3)).astype(np.float32)
    b = rng.uniform(-0.05, 0.05, (o,)).astype(np.float32) if pieces > 1 else None
    oh = h + 2 * pad - 2
    dy = cnhw(rng.standard_normal((BATCH, o, oh, oh), dtype=np.float32))
    return x, w, b, dy


def fwd(layer, x, w, b):
    _, c, o, pieces, pad, pool, h, _ = layer
    if pieces == 1:
        return cpu.conv2d_forward(x, w, b, 1, pad)
    return cpu.conv2d_maxout_forward(x, w, b, 1, pad, pieces, pool, pool, True)


def bwd(layer, x, w, dy):
    return cpu.conv2d_backward(dy, x, w, 1, layer[4], layer[7])


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(f, clock):
    t = clock()
    f()
    return (clock() - t) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--only", default="")
    ap.add_argument("--chunk", default="")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    variants = ([("on", True, None), ("off", False, None)] if not a.chunk else
                [(f"chunk {v}", True, int(v)) for v in a.chunk.split(",")])
    print(f"batch {BATCH}, float32, threads {cpu.runtime.NT}, {a.clock} clock, median of {a.repeat} "
          f"(variants alternating)")
    print(f"{'layer':22s} " + " ".join(f"{'fwd ' + v[0]:>14s}" for v in variants) + " "
          + " ".join(f"{'bwd ' + v[0]:>14s}" for v in variants) + "  fwd ratio  bwd ratio  f+b ratio")
    old = (tuning.WINO_MIN_C, tuning.WINO_MIN_O, tuning.WINO_MIN_P, tuning.WINO_CHUNK_ELEMS,
           tuning.WINO_ROWS_CHUNK_ELEMS)
    for layer in LAYERS:
        if a.only not in layer[0]:
            continue
        x, w, b, dy = make(layer, rng)
        tf = {v[0]: [] for v in variants}
        tb = {v[0]: [] for v in variants}
        for r in range(a.repeat + 1):
            for name, on, ch in variants:
                force(on)
                if ch:
                    tuning.WINO_CHUNK_ELEMS = tuning.WINO_ROWS_CHUNK_ELEMS = ch
                f = timed(lambda: fwd(layer, x, w, b), CLOCK[a.clock])
                g = timed(lambda: bwd(layer, x, w, dy), CLOCK[a.clock])
                if r:
                    tf[name].append(f)
                    tb[name].append(g)
        (tuning.WINO_MIN_C, tuning.WINO_MIN_O, tuning.WINO_MIN_P, tuning.WINO_CHUNK_ELEMS,
         tuning.WINO_ROWS_CHUNK_ELEMS) = old
        mf = [statistics.median(tf[v[0]]) for v in variants]
        mb = [statistics.median(tb[v[0]]) for v in variants]
        print(f"{layer[0]:22s} " + " ".join(f"{t:14.2f}" for t in mf) + " " + " ".join(f"{t:14.2f}" for t in mb)
              + f"  {mf[0] / mf[-1]:9.2f}  {mb[0] / mb[-1]:9.2f}  {(mf[0] + mb[0]) / (mf[-1] + mb[-1]):9.2f}",
              flush=True)


if __name__ == "__main__":
    main()
