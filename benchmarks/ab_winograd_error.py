"""Float32 error of the Winograd paths against the float64 reference, on real activations.

Builds fitnet-1 and fitnet-4 (minifit.models.build, their initial weights), runs a batch
of CIFAR-10 training images (x / 255 - 0.5; MINIFIT_DATA or --data) through them in
evaluation mode and captures the input of every stride-1 3x3 conv (the previous layer's
post-maxout activations). For each such layer: max |y - y64| / max |y64| of the forward
for the im2col path (kernels.cpu, Winograd off), the F(2x2, 3x3) kernels
(kernels.cpu.conv_winograd) and a float32 NumPy emulation of F(4x4, 3x3) (Lavin & Gray's
points 0, +-1, +-2, inf; the transforms and the GEMMs in float32); and for the backward
(dy standard normal) the same for dx and dw, im2col vs F(2x2, 3x3). The bound the tests
hold the kernels to is printed beside it: eps * sqrt(K), K = 9 C.

  MINIFIT_DATA=/work/shared/data /work/main/.venv/bin/python benchmarks/ab_winograd_error.py [--n 64]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernels  # noqa: E402
from kernels import reference as ref  # noqa: E402
from kernels.cpu import conv as cpu_conv, tuning  # noqa: E402

# F(m x m, 3 x 3): (B^T, G, A^T)
F2 = (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
      np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]),
      np.array([[1, 1, 1, 0], [0, 1, -1, -1]]))
F4 = (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
      np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
      np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]))


def winograd_emulated(x, w, pad, mats, dt=np.float32):
    """conv2d_forward(x, w, None, 1, pad) by F(m x m, 3 x 3) in ``dt`` arithmetic: every
    transform and product rounded to dt (the matrices too)."""
    bt, g, at = (np.asarray(a, dtype=dt) for a in mats)
    m, alpha = at.shape
    n, c, h, wd = x.shape
    o = w.shape[0]
    oh, ow = h + 2 * pad - 2, wd + 2 * pad - 2
    th, tw = -(-oh // m), -(-ow // m)
    xp = np.zeros((n, c, th * m + 2, tw * m + 2), dtype=dt)
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    s = xp.strides
    d = np.lib.stride_tricks.as_strided(xp, (n, c, th, tw, alpha, alpha),
                                        (s[0], s[1], m * s[2], m * s[3], s[2], s[3]))
    v = np.matmul(np.matmul(bt, d), bt.T)                      # (n, c, th, tw, a, a)
    v = v.transpose(4, 5, 1, 0, 2, 3).reshape(alpha * alpha, c, -1)
    u = np.matmul(np.matmul(g, w.astype(dt)), g.T)             # (o, c, a, a)
    u = u.transpose(2, 3, 0, 1).reshape(alpha * alpha, o, c)
    mm = np.matmul(u, v).reshape(alpha, alpha, o, n, th, tw).transpose(3, 2, 4, 5, 0, 1)
    y = np.matmul(np.matmul(at, mm), at.T)                     # (n, o, th, tw, m, m)
    y = y.transpose(0, 1, 2, 4, 3, 5).reshape(n, o, th * m, tw * m)
    return y[:, :, :oh, :ow]


def rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def force(on):
    tuning.WINO_MIN_C, tuning.WINO_MIN_O, tuning.WINO_MIN_P = (0,) * 3 if on else (10**9,) * 3


def capture(name, images):
    from minifit.models import build
    from minifit.tensor import Tensor
    net = build(name)
    net.eval()
    got = []
    orig = kernels.conv2d_maxout_forward

    def spy(x, w, b, stride, pad, *args, **kw):
        if w.shape[2:] == (3, 3) and tuple(stride) == (1, 1):
            got.append((np.ascontiguousarray(x), np.array(w), np.array(b), pad[0]))
        return orig(x, w, b, stride, pad, *args, **kw)
    kernels.conv2d_maxout_forward = spy
    try:
        net(Tensor(images))
    finally:
        kernels.conv2d_maxout_forward = orig
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--data", default=None)
    a = ap.parse_args()
    from minifit.data import load
    ds = load("cifar10", "train", a.data)
    images = (ds.images[:a.n].astype(np.float32) / 255 - 0.5).astype(np.float32)
    rng = np.random.default_rng(0)
    eps = np.finfo(np.float32).eps
    print(f"CIFAR-10 train[:{a.n}], x / 255 - 0.5; max |err| / max |y64| (and / eps sqrt(9C))")
    print(f"{'layer':14s} {'C x H x W -> O':>18s} {'fwd im2col':>11s} {'fwd F(2,3)':>11s} {'fwd F(4,3)':>11s} "
          f"{'emu F(2,3)':>11s} {'dx im2col':>10s} {'dx F(2,3)':>10s} {'dw im2col':>10s} {'dw F(2,3)':>10s}"
          f" {'eps sqrt(K)':>11s}")
    old = (tuning.WINO_MIN_C, tuning.WINO_MIN_O, tuning.WINO_MIN_P)
    try:
        for name in ("fitnet-1", "fitnet-4"):
            for i, (x, w, b, pad) in enumerate(capture(name, images)):
                if x.shape[1] < 8:
                    continue   # the input layer (3 maps: never Winograd)
                x64, w64 = x.astype(np.float64), w.astype(np.float64)
                y64 = ref.conv2d_forward(x64, w64, None, 1, pad)
                dy = rng.standard_normal(y64.shape).astype(np.float32)
                dx64, dw64, _ = ref.conv2d_backward(dy.astype(np.float64), x64, w64, 1, pad)
                row = {}
                for on in (False, True):
                    force(on)
                    key = "f23" if on else "im2col"
                    row["fwd " + key] = rel(cpu_conv.conv2d_forward(x, w, None, 1, pad), y64)
                    dx, dw, _ = cpu_conv.conv2d_backward(dy, x, w, 1, pad)
                    row["dx " + key], row["dw " + key] = rel(dx, dx64), rel(dw, dw64)
                row["f43"] = rel(winograd_emulated(x, w, pad, F4), y64)
                row["e23"] = rel(winograd_emulated(x, w, pad, F2), y64)
                k = 9 * x.shape[1]
                shape = f"{x.shape[1]}x{x.shape[2]}x{x.shape[3]}->{w.shape[0]}"
                vals = [row["fwd im2col"], row["fwd f23"], row["f43"], row["e23"], row["dx im2col"],
                        row["dx f23"], row["dw im2col"], row["dw f23"]]
                print(f"{name + ' #' + str(i):14s} {shape:>18s} " + " ".join(f"{v:11.2e}" if j < 4 else f"{v:10.2e}"
                                                                         for j, v in enumerate(vals))
                      + f" {eps * np.sqrt(k):11.2e}", flush=True)
    finally:
        tuning.WINO_MIN_C, tuning.WINO_MIN_O, tuning.WINO_MIN_P = old


if __name__ == "__main__":
    main()
