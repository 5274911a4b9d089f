"""A/B of kernels/cpu/conv_small.py (small padded maps, the transposed formulation) and of
the fused conv2d_maxout_backward, in one process, calls interleaved (old, new, old, ...),
medians: per layer (one training layer step: conv2d_maxout_forward, then the maxout (+ pool)
backward and conv2d_backward, as the network runs them: CNHW inputs, batch 128) and whole
networks (a training step: forward, cross-entropy, backward, SGD with momentum; and an
inference pass). --what small: the small-map path forced off (its tuning thresholds out
of reach) against on (the committed thresholds); fused: kernels.conv2d_maxout_backward
replaced by its composition (maxout(_pool)_backward, then conv2d_backward) against the
fused kernel; both: both off against both on.

  env -u OPENBLAS_CORETYPE MINIFIT_NUM_THREADS=2 python benchmarks/ab_small.py [--repeats 9]
      [--clock wall|cpu] [--models mnist-fitnet,mnist-teacher] [--no-layers] [--what both]
(--clock cpu: the process CPU time of each call, less sensitive to other jobs' load.)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

# (name, C in, conv maps, pieces, kernel, pad, pool (k, s) or None, H = W in)
LAYERS = [
    ("mnist-fitnet h1", 16, 32, 2, 3, 0, (4, 2), 24),
    ("mnist-fitnet h2", 16, 32, 2, 5, 3, None, 10),
    ("mnist-fitnet h3", 16, 32, 2, 3, 0, (4, 2), 12),
    ("mnist-fitnet h4", 16, 48, 4, 3, 3, None, 4),
    ("mnist-fitnet h5", 12, 48, 4, 3, 0, (2, 2), 8),
    ("mnist-teacher h2", 48, 96, 4, 5, 3, (2, 2), 4),
]
BATCH = 128
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this tree's kernels


def composed_backward(dy, arg, x, w, stride, pad, pieces, pool=None, pool_stride=None, ceil_mode=True,
                      need_dx=True, untied_bias=False):
    """conv2d_maxout_backward as the two kernels it fuses."""
    from kernels import cpu as K
    from kernels.shapes import pair
    n, o, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    (sh, sw), (ph, pw) = pair(stride, "stride"), pair(pad, "pad")
    if pool is None:
        dz = K.maxout_backward(dy, arg, pieces)
    else:
        oh, ow = (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1
        dz = K.maxout_pool_backward(dy, arg, (n, o, oh, ow), pieces)
    return K.conv2d_backward(dz, x, w, stride, pad, need_dx, untied_bias)


WHAT = "small"


def modes():
    import kernels
    from kernels.cpu import tuning
    on = (tuning.SMALL_FWD_MIN_GROWTH, tuning.SMALL_BWD_MIN_GROWTH)
    fused = kernels.conv2d_maxout_backward

    def old():
        if WHAT in ("small", "both"):
            tuning.SMALL_FWD_MIN_GROWTH = tuning.SMALL_BWD_MIN_GROWTH = 1e9
        if WHAT in ("fused", "both"):
            kernels.conv2d_maxout_backward = composed_backward

    def new():
        tuning.SMALL_FWD_MIN_GROWTH, tuning.SMALL_BWD_MIN_GROWTH = on
        kernels.conv2d_maxout_backward = fused
    return old, new


def ab(fn, repeats, clock, warmup=2):
    """fn() in the 'old' / 'new' modes interleaved -> (median old, median new) seconds."""
    old, new = modes()
    sets = {"old": old, "new": new}
    for _ in range(warmup):
        for m, s in sets.items():
            s()
            fn()
    ts = {"old": [], "new": []}
    for _ in range(repeats):
        for m, s in sets.items():
            s()
            t0 = clock()
            fn()
            ts[m].append(clock() - t0)
    new()
    return float(np.median(ts["old"])), float(np.median(ts["new"]))


def layer_step(name, c, o, pieces, k, pad, pool, h):
    from kernels import cpu as K
    rng = np.random.default_rng(0)

    def cnhw(a):
        return np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1)
    x = cnhw(rng.standard_normal((BATCH, c, h, h), dtype=np.float32))
    w = rng.uniform(-0.05, 0.05, (o, c, k, k)).astype(np.float32)
    b = rng.uniform(-0.05, 0.05, o).astype(np.float32)
    oh = h + 2 * pad - k + 1
    y, _ = K.conv2d_maxout_forward(x, w, b, 1, pad, pieces, pool and pool[0], pool and pool[1])
    dy = cnhw(rng.standard_normal(y.shape, dtype=np.float32))

    def step():   # (kernels.conv2d_maxout_backward: the fused kernel, or in 'old' its composition)
        import kernels
        y, arg = K.conv2d_maxout_forward(x, w, b, 1, pad, pieces, pool and pool[0], pool and pool[1])
        return kernels.conv2d_maxout_backward(dy, arg, x, w, 1, pad, pieces, pool and pool[0],
                                              pool and pool[1], True, True)
    return step


def model_steps(name):
    from steps import network_steps
    return network_steps(name, seed=1)[1:]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--models", default="mnist-fitnet")
    ap.add_argument("--no-layers", action="store_true")
    ap.add_argument("--what", choices=("small", "fused", "both"), default="both")
    a = ap.parse_args(argv)
    global WHAT
    WHAT = a.what
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    from kernels.cpu import runtime
    print(f"--what {a.what}: threads {runtime.NT}, batch {BATCH}, {a.repeats} interleaved repeats, "
          f"clock {a.clock}; ms old -> new (new / old)")
    if not a.no_layers:
        for spec in LAYERS:
            o, n = ab(layer_step(*spec), a.repeats, clock)
            print(f"  layer {spec[0]:18s} {o * 1e3:8.2f} -> {n * 1e3:8.2f}  ({n / o:.2f})", flush=True)
    for name in filter(None, a.models.split(",")):
        train, infer = model_steps(name)
        for kind, fn in (("train step", train), ("inference", infer)):
            o, n = ab(fn, a.repeats, clock)
            print(f"  {name} {kind:11s} {o * 1e3:8.2f} -> {n * 1e3:8.2f}  ({n / o:.2f})", flush=True)


if __name__ == "__main__":
    main()
