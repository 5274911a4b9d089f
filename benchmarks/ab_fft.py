"""A/B of conv2d_backward's two paths (im2col vs FFT, kernels/cpu/conv_fft.py) on the
large-kernel layers of mnist-teacher and cifar-teacher, in one process, interleaved.

batch 128, float32, x and dy in the CNHW layout the network gives them (x of a first
layer NCHW), both gradients (need_dx True) and dw only (need_dx False); median of
--repeats calls each, the two paths alternating call by call.

  env -u OPENBLAS_CORETYPE MINIFIT_NUM_THREADS=2 .venv/bin/python benchmarks/ab_fft.py
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from kernels import cpu
from kernels.cpu import tuning

# (name, C in, O conv maps, H=W in, kernel, pad, first layer)
LAYERS = [
    ("mnist-teacher h0", 1, 96, 28, 8, 0, True),
    ("mnist-teacher h1", 48, 96, 10, 8, 3, False),
    ("mnist-teacher h2", 48, 96, 4, 5, 3, False),
    ("cifar-teacher h0", 3, 192, 32, 8, 4, True),
    ("cifar-teacher h1", 96, 384, 16, 8, 3, False),
    ("cifar-teacher h2", 192, 384, 7, 5, 3, False),
]

FORCE = {"im2col": dict(FFT_BWD_MIN_TAPS=10**9),
         "fft": dict(FFT_BWD_MIN_TAPS=1, FFT_BWD_MIN_C=1, FFT_BWD_MIN_P=1)}


def run(path, fn):
    saved = {k: getattr(tuning, k) for k in FORCE[path]}
    for k, v in FORCE[path].items():
        setattr(tuning, k, v)
    try:
        t = time.perf_counter()
        out = fn()
        return time.perf_counter() - t, out
    finally:
        for k, v in saved.items():
            setattr(tuning, k, v)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--layers", default="")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{'layer':18s} {'need_dx':7s} {'im2col ms':>10s} {'fft ms':>8s} {'fft/im2col':>10s} {'max rel diff':>12s}")
    for name, c, o, h, k, pad, first in LAYERS:
        if a.layers and not any(s in name for s in a.layers.split(",")):
            continue
        n = a.batch
        oh = h + 2 * pad - k + 1
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        if not first:
            x = np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)
        w = (0.05 * rng.standard_normal((o, c, k, k))).astype(np.float32)
        dy = np.ascontiguousarray(rng.standard_normal((o, n, oh, oh)).astype(np.float32)).swapaxes(0, 1)
        for need_dx in ([False] if first else [True, False]):
            def fn():
                return cpu.conv2d_backward(dy, x, w, 1, pad, need_dx)
            ta, oa = run("im2col", fn)
            tb, ob = run("fft", fn)
            diff = max(float(np.abs(p - q).max() / np.abs(q).max()) for p, q in zip(ob, oa) if q is not None)
            times = {"im2col": [], "fft": []}
            for _ in range(a.repeats):
                for path in ("im2col", "fft"):
                    times[path].append(run(path, fn)[0])
            mi, mf = (1e3 * float(np.median(times[p])) for p in ("im2col", "fft"))
            print(f"{name:18s} {str(need_dx):7s} {mi:10.1f} {mf:8.1f} {mf / mi:10.2f} {diff:12.2e}", flush=True)


if __name__ == "__main__":
    main()
