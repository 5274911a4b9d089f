"""CUDA kernels (numba-cuda ``@cuda.jit``) for CUDA device arrays.

The same API as ``kernels.cpu`` (every name of ``kernels.API``): the layer kernels of
``kernels.reference`` (same signatures and encodings), the fused forwards of
``kernels.FUSED_API`` and the engine's array ops of ``kernels.ENGINE_API`` (elementwise
arithmetic with broadcasting, reductions, matmul, softmax / cross-entropy / KD and hint
losses, optimizer updates, max-norm). Arguments and results are numba device arrays;
results are always C-contiguous.

Importing this package never fails on a machine without CUDA: numba.cuda is imported on
first use of a kernel. ``available()`` says whether a GPU (or numba-cuda's simulator,
``NUMBA_ENABLE_CUDASIM=1``) is usable, and if not, why, in one line.

Layout of the package:
  _common     launch helpers, allocation, argument checks, the kernel registry
  elementwise binary/unary/scalar ops with broadcasting, casts, relu, dropout
  reduce      sums over axes, global average pooling, max-norm
  gemm        the tiled shared-memory GEMM, im2col / col2im, conv2d, matmul, linear
  pool        maxout, max pooling, fused maxout + pool
  norm        batch norm
  losses      softmax / log-softmax and their gradients, cross-entropy, KD and hint losses
  optim       SGD (momentum, Nesterov, weight decay), RMSProp (pylearn2), Adam updates
  fused       the fused forwards of kernels.FUSED_API, as compositions of the above
"""
from __future__ import annotations

import importlib
import importlib.util
import os

INSTALL_HINT = ('pip install "numba-cuda[cu12]" (CUDA 12) or "numba-cuda[cu13]" (CUDA 13), '
                'with an NVIDIA driver that supports that CUDA version')

# public name -> submodule defining it
_WHERE = {
    # kernels._API
    "im2col": "gemm", "col2im": "gemm", "conv2d_forward": "gemm", "conv2d_backward": "gemm",
    "maxout_forward": "pool", "maxout_backward": "pool",
    "maxpool2d_forward": "pool", "maxpool2d_backward": "pool",
    "maxout_pool_forward": "pool", "maxout_pool_backward": "pool",
    "global_avg_pool_forward": "reduce", "global_avg_pool_backward": "reduce",
    "batch_norm_forward": "norm", "batch_norm_backward": "norm", "batch_norm_inference": "norm",
    "relu_forward": "elementwise", "relu_backward": "elementwise", "dropout_mask": "elementwise",
    # kernels.FUSED_API
    "conv2d_maxout_forward": "fused", "conv2d_maxout_backward": "fused", "bn_relu_conv2d_forward": "fused", "batch_norm_relu_forward": "fused",
    "batch_norm_relu_backward": "fused",
    # kernels.ENGINE_API
    "add": "elementwise", "sub": "elementwise", "mul": "elementwise", "div": "elementwise",
    "neg": "elementwise", "absolute": "elementwise", "sign": "elementwise",
    "exp": "elementwise", "log": "elementwise",
    "astype": "elementwise", "zeros_like": "elementwise", "broadcast_to": "elementwise",
    "reduce_sum": "reduce", "unbroadcast": "reduce", "max_norm_": "reduce",
    "matmul": "gemm", "linear_forward": "gemm",
    "softmax": "losses", "log_softmax": "losses",
    "softmax_backward": "losses", "log_softmax_backward": "losses",
    "cross_entropy_forward": "losses", "cross_entropy_backward": "losses",
    "batch_norm_update_running": "norm", "batch_norm_eval_backward": "norm",
    "sgd_update": "optim", "rmsprop_update": "optim", "adam_update": "optim",
    "kd_loss_value_and_grad": "losses", "hint_loss_value_and_grad": "losses",
    # host <-> device
    "to_device": "_common", "to_host": "_common",
}
__all__ = sorted(_WHERE) + ["available", "simulator", "Availability", "INSTALL_HINT"]


def __getattr__(name):
    """Load the kernel modules (and numba.cuda) on first use of a kernel name."""
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'kernels.cuda' has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{mod}")
    except ImportError as e:
        raise ImportError(f"kernels.cuda.{name}: numba-cuda cannot be imported ({e}); "
                          f"{INSTALL_HINT}") from e
    for other, where in _WHERE.items():   # every name of that module, at once
        if where == mod:
            globals()[other] = getattr(module, other)
    return globals()[name]


class Availability:
    """Truthy when CUDA kernels can run here. ``reason``: one line saying what runs them
    (GPU name / simulator) or what is missing and how to install it."""

    __slots__ = ("ok", "reason", "simulator")

    def __init__(self, ok: bool, reason: str, simulator: bool = False):
        self.ok, self.reason, self.simulator = bool(ok), reason, bool(simulator)

    def __bool__(self):
        return self.ok

    def __str__(self):
        return self.reason

    def __repr__(self):
        return f"Availability(ok={self.ok}, reason={self.reason!r}, simulator={self.simulator})"


_cached: Availability | None = None


def _first_line(e: BaseException) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip() and s.strip() != ":"]
    return (lines[0] if lines else type(e).__name__).rstrip(":.")


def available(refresh: bool = False) -> Availability:
    """Can CUDA kernels run in this process? Checks, in order: numba-cuda importable; the
    simulator enabled (NUMBA_ENABLE_CUDASIM=1: usable, slow); an NVIDIA driver and GPU;
    the CUDA toolkit libraries numba-cuda compiles with (a one-thread kernel is compiled,
    launched and read back). The result is cached (``refresh=True`` re-checks)."""
    global _cached
    if _cached is not None and not refresh:
        return _cached
    _cached = _probe()
    return _cached


def simulator() -> bool:
    """True when numba.cuda is numba-cuda's simulator (NUMBA_ENABLE_CUDASIM=1 at import)."""
    from numba import cuda
    return "simulator" in getattr(cuda.device_array, "__module__", "")


def _probe() -> Availability:
    try:
        spec = importlib.util.find_spec("numba_cuda")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return Availability(False, f"numba-cuda is not installed: {INSTALL_HINT}")
    try:
        from numba import cuda
    except Exception as e:  # noqa: BLE001 - any import failure means: not usable
        return Availability(False, f"numba-cuda failed to import ({_first_line(e)}): {INSTALL_HINT}")
    if simulator():
        return Availability(True, "numba-cuda simulator (NUMBA_ENABLE_CUDASIM=1): correct but very slow, "
                                  "for tests only", simulator=True)
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return Availability(False, "NUMBA_ENABLE_CUDASIM was set after numba.cuda was imported; "
                                   "set it before starting Python")
    try:
        cuda.current_context()
    except Exception as e:  # noqa: BLE001
        msg = _first_line(e)
        if "driver" in msg.lower() and ("cannot be found" in msg or "not found" in msg):
            return Availability(False, f"no NVIDIA driver found ({msg}): install an NVIDIA driver and a GPU, "
                                       f"then {INSTALL_HINT}")
        return Availability(False, f"no usable CUDA GPU ({msg}); needs an NVIDIA GPU and driver, and {INSTALL_HINT}")
    try:
        from . import _common
        _common.smoke_test()
    except Exception as e:  # noqa: BLE001
        return Availability(False, f"a GPU is present but a test kernel failed ({_first_line(e)}); "
                                   f"the CUDA toolkit libraries may be missing: {INSTALL_HINT}")
    try:
        name = cuda.get_current_device().name
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001
        name = "CUDA GPU"
    return Availability(True, f"{name} (numba-cuda)")
