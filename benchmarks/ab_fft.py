"""A/B of conv2d_backward's two paths (im2col vs FFT, kernels/cpu/conv_fft.py) on the
large-kernel layers of mnist-teacher and cifar-teacher, in one process, interleaved.

batch 128, float32, x and dy in the CNHW layout the network gives them (x of a first
layer NCHW), both gradients (need_dx True) and dw only (need_dx False); median of
--repeats calls each, the two paths alternating call by call.

  env -u OPENBLAS_CORETYPE MINIFIT_NUM_THREADS=2 .venv/bin/python benchmarks/ab_fft.py

--step NET: whole training steps of minifit.models.build(NET) (as bench_models.py's: forward,
cross-entropy, backward, SGD with momentum; batch 128, random inputs), the FFT backward
forced off / as tuned (use_fft_backward; the forward as tuned), alternating step by step.
--rss NET --path P: one fresh process doing --repeats steps on path P (im2col: the FFT
backward off; tuned; fft: forced on every layer), printing its peak resident memory
(ru_maxrss). --clock cpu times the process's CPU time (both threads) instead of wall
time: on a loaded machine, less sensitive to other jobs. --bound K: the error of the FFT
paths against kernels.reference over K random cases (tests/kernels/test_conv_fft.py). --forward: the forward's two paths instead (conv2d_maxout_forward with
the layer's maxout and pool, im2col vs FFT; training layout, and channels_last as in
evaluation passes).
"""
from __future__ import annotations

import argparse
import resource
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
         "tuned": {},   # the rule as tuning.py has it
         "fft": dict(FFT_BWD_MIN_TAPS=1, FFT_BWD_MIN_C=1, FFT_BWD_MIN_P=1),
         # the forward's rule (conv2d_maxout_forward)
         "fwd-im2col": dict(FFT_MIN_TAPS=10**9),
         "fwd-fft": dict(FFT_MIN_TAPS=1, FFT_MIN_C=1, FFT_MIN_P=1, FFT_MIN_P_NHWC=1)}
# (pieces, pool) of each layer, for --forward
MAXOUT = {"mnist-teacher h0": (2, 4, 2), "mnist-teacher h1": (2, 4, 2), "mnist-teacher h2": (4, 2, 2),
          "cifar-teacher h0": (2, 4, 2), "cifar-teacher h1": (2, 4, 2), "cifar-teacher h2": (2, 2, 2)}


CLOCK = {"clock": time.perf_counter}


def run(path, fn):
    saved = {k: getattr(tuning, k) for k in FORCE[path]}
    for k, v in FORCE[path].items():
        setattr(tuning, k, v)
    try:
        t = CLOCK["clock"]()
        out = fn()
        return CLOCK["clock"]() - t, out
    finally:
        for k, v in saved.items():
            setattr(tuning, k, v)


def training_step(name, batch):
    from steps import network_steps
    return network_steps(name, batch=batch)[1]


def bound(cases, seed=2):
    """max|err| / (eps (1 + log2(fh fw)) max|ref|) of conv_fft's y, dx, dw against
    kernels.reference (float64) over random small cases, float32 and float64: the measured
    side of tests/kernels/test_conv_fft.py's bound."""
    from kernels import reference as ref
    from kernels.cpu import conv_fft
    rng = np.random.default_rng(seed)
    f = lambda a: a.astype(np.float64)   # noqa: E731
    for dt in (np.float32, np.float64):
        eps, worst = np.finfo(dt).eps, {}
        for _ in range(cases):
            kh, kw = rng.integers(1, 9, 2)
            ph, pw = rng.integers(0, 5, 2)
            h, wd = int(rng.integers(max(1, kh - 2 * ph), 14)), int(rng.integers(max(1, kw - 2 * pw), 14))
            n, c, o = rng.integers(1, 7, 3)
            x, w = rng.standard_normal((n, c, h, wd)).astype(dt), rng.standard_normal((o, c, kh, kw)).astype(dt)
            oh, ow = h + 2 * ph - kh + 1, wd + 2 * pw - kw + 1
            dy = rng.standard_normal((n, o, oh, ow)).astype(dt)
            fh, fw, _, _ = conv_fft._grid(h, wd, ph, pw)
            got = conv_fft.fft_conv_backward(dy, x, w, (ph, pw), True)
            want = ref.conv2d_backward(f(dy), f(x), f(w), 1, (ph, pw), True)
            rows = []
            conv_fft.fft_conv_rows(x, w, None, (ph, pw), oh, ow, lambda z, n0: rows.append(z.copy()))
            y = np.concatenate(rows).reshape(n, oh, ow, o).transpose(0, 3, 1, 2)
            for name, g, e in (("y", y, ref.conv2d_forward(f(x), f(w), None, 1, (ph, pw))),
                               ("dx", got[0], want[0]), ("dw", got[1], want[1])):
                r = np.abs(g - e).max() / (eps * (1 + np.log2(fh * fw)) * np.abs(e).max())
                worst[name] = max(worst.get(name, 0.0), float(r))
        print(f"{dt.__name__}: max err / (eps (1 + log2(fh fw)) max|ref|) over {cases} cases:",
              {k: round(v, 3) for k, v in worst.items()})


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--layers", default="")
    ap.add_argument("--step", default="")
    ap.add_argument("--rss", default="")
    ap.add_argument("--path", default="tuned")
    ap.add_argument("--forward", action="store_true")
    ap.add_argument("--bound", type=int, default=0, help="measure the error bound over this many cases")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: the process's CPU time (both threads), less sensitive to other jobs")
    a = ap.parse_args(argv)
    CLOCK["clock"] = time.process_time if a.clock == "cpu" else time.perf_counter
    if a.bound:
        bound(a.bound)
        return
    if a.rss:
        step = training_step(a.rss, a.batch)
        for _ in range(a.repeats):
            run(a.path, step)
        print(f"{a.rss} {a.path}: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
              f"after {a.repeats} training steps")
        return
    if a.step:
        step = training_step(a.step, a.batch)
        for path in ("im2col", "tuned", "im2col", "tuned"):   # warm-up (compiles, allocator)
            run(path, step)
        times = {"im2col": [], "tuned": []}
        for _ in range(a.repeats):
            for path in ("im2col", "tuned"):
                times[path].append(run(path, step)[0])
        mi, mf = (1e3 * float(np.median(times[p])) for p in ("im2col", "tuned"))
        print(f"{a.step} training step: backward im2col {mi:.1f} ms, as tuned (FFT where use_fft_backward) "
              f"{mf:.1f} ms, ratio {mf / mi:.2f} (medians of {a.repeats}; im2col "
              f"{[round(1e3 * t) for t in times['im2col']]}, tuned {[round(1e3 * t) for t in times['tuned']]})")
        return
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
        if a.forward:
            pieces, pk, ps = MAXOUT[name]
            b = (0.1 * rng.standard_normal(o)).astype(np.float32)
            variants = [(f"fwd cl={cl}", (lambda cl=cl: cpu.conv2d_maxout_forward(
                x, w, b, 1, pad, pieces, (pk, pk), (ps, ps), True, channels_last=cl)[:1])) for cl in (False, True)]
            paths = ("fwd-im2col", "fwd-fft")
        else:
            variants = [(str(need_dx), (lambda need_dx=need_dx: cpu.conv2d_backward(dy, x, w, 1, pad, need_dx)))
                        for need_dx in ([False] if first else [True, False])]
            paths = ("im2col", "fft")
        for label, fn in variants:
            ta, oa = run(paths[0], fn)
            tb, ob = run(paths[1], fn)
            diff = max(float(np.abs(p - q).max() / np.abs(q).max()) for p, q in zip(ob, oa) if q is not None)
            times = {p: [] for p in paths}
            for _ in range(a.repeats):
                for path in paths:
                    times[path].append(run(path, fn)[0])
            mi, mf = (1e3 * float(np.median(times[p])) for p in paths)
            print(f"{name:18s} {label:7s} {mi:10.1f} {mf:8.1f} {mf / mi:10.2f} {diff:12.2e}", flush=True)


if __name__ == "__main__":
    main()
