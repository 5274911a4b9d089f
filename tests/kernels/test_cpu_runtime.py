"""The CPU kernels' process settings: glibc keeps freed memory for the next step; every conv
GEMM runs with numpy's OpenBLAS at one thread."""
import os
import subprocess
import sys

import pytest

from kernels import cpu

PROBE = """
import numpy as np
from kernels import cpu
def rss():
    for ln in open('/proc/self/status'):
        if ln.startswith('VmRSS:'):
            return int(ln.split()[1]) << 10
a = np.ones(40 << 18, np.float32)   # 40 MB, touched
r0 = rss()
del a
print(cpu.MALLOC_TUNED, r0 - rss() < 20 << 20)   # still resident after the free?
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/self/maps"),
                    reason="glibc's malloc on Linux only")
@pytest.mark.parametrize("setting, want", [(None, "True True"), ("system", "False False")])
def test_freed_memory_stays_in_the_heap(setting, want):
    """With the tuning a freed 40 MB array stays in the process for the next one; with
    MINIFIT_MALLOC=system glibc unmaps it (its default above 128 KB .. 32 MB)."""
    if not cpu.MALLOC_TUNED:
        pytest.skip("not glibc: mallopt is unavailable")
    env = {k: v for k, v in os.environ.items() if k != "MINIFIT_MALLOC"}
    if setting:
        env["MINIFIT_MALLOC"] = setting
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == want.split()


# ------------------------------------------------------------------ BLAS threads
BLAS_PROBE = """
import os, threading
import numpy as np
# OpenBLAS starts its worker threads when numpy loads it: every thread but this one now is
# OpenBLAS's (the kernel pool and scipy's FFT workers start later)
blas = [int(t) for t in os.listdir('/proc/self/task') if int(t) != threading.get_native_id()]
def ticks():
    tot = 0
    for t in blas:
        f = open('/proc/self/task/%d/stat' % t).read().rsplit(')', 1)[1].split()
        tot += int(f[11]) + int(f[12])   # utime + stime
    return tot
from kernels import cpu
rng = np.random.default_rng(0)
layers = [((32, 48, 10, 10), (96, 48, 8, 8), 3, (4, 4)),   # FFT forward and backward
          ((32, 48, 4, 4), (96, 48, 5, 5), 3, (2, 2)),     # small padded maps
          ((32, 16, 12, 12), (32, 16, 3, 3), 1, None),     # Winograd
          ((32, 3, 8, 8), (16, 3, 3, 3), 1, None),         # im2col
          ((32, 16, 8, 8), (16, 16, 3, 3), 1, None)]       # rows (thin layers)
data = [(rng.standard_normal(xs, dtype=np.float32), rng.standard_normal(ws, dtype=np.float32),
         rng.standard_normal(ws[0], dtype=np.float32), pad, pool) for xs, ws, pad, pool in layers]
def run():
    for x, w, b, pad, pool in data:
        for last in (False, True):
            y, arg = cpu.conv2d_maxout_forward(x, w, b, 1, pad, 2, pool, pool, True, channels_last=last)
        cpu.conv2d_maxout_backward(np.ones(y.shape, np.float32), arg, x, w, 1, pad, 2, pool, pool)
        z = cpu.conv2d_forward(x, w, b, 1, pad)
        cpu.conv2d_backward(np.ones(z.shape, np.float32), x, w, 1, pad)
run()   # (compiles)
t0 = ticks()
for _ in range(5):
    run()
print(len(blas), ticks() - t0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_no_conv_gemm_lets_openblas_thread_itself():
    """The pool's threads each run a single-threaded GEMM; a GEMM with OpenBLAS threading
    itself leaves its worker threads spinning against the pool's (conv_fft._inverse_rows
    did: mnist-teacher's training step took 1.6x its time). With OpenBLAS at 2 threads
    outside the kernels, its worker threads must stay idle through the forward and backward
    of every conv path (im2col, rows, small maps, FFT, Winograd): at most 2 clock ticks of
    CPU time in all (a threaded call, and the spin after it, costs tens)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", MINIFIT_NUM_THREADS="2")
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", BLAS_PROBE], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    nthreads, ticks = map(int, out.stdout.split())
    if nthreads == 0:
        pytest.skip("numpy's BLAS started no worker threads")
    assert ticks <= 2, (f"OpenBLAS's {nthreads} worker thread(s) ran {ticks} clock ticks inside the "
                        "conv kernels")
