"""The CPU kernels' process settings: glibc keeps freed memory for the next step."""
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
