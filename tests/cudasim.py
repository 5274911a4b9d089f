"""CUDA tests run on numba-cuda's simulator unless MINIFIT_CUDA_TESTS=gpu.

Shared by the conftest.py of tests/kernels (the kernels) and tests/cuda (the engine on the
CUDA target), which import it. The simulator is chosen on that import, before any test
module of those directories imports
numba.cuda: NUMBA_ENABLE_CUDASIM=1 and a reload of numba's configuration (numba may already
be imported by kernels.cpu, which never imports numba.cuda, so the CPU kernel tests are
unaffected). If numba.cuda was already imported for real by something else in this
process, the CUDA tests are skipped with that reason rather than run on the wrong target.

The simulator's device array (FakeCUDAArray) is a thin wrapper over a NumPy array that
also forwards NumPy methods and operators, so host-side NumPy code "works" on it although
it would fail (or silently copy to the host) on a real GPU. ``_strict_simulator`` removes
everything a real numba DeviceNDArray does not have (arithmetic and comparison operators,
forwarded NumPy attributes, implicit conversion by NumPy), so code that passes these tests
uses only the device-array interface a GPU provides.
"""
import os
import sys

import pytest

ON_GPU = os.environ.get("MINIFIT_CUDA_TESTS", "").lower() == "gpu"
_SKIP_REASON = None

if not ON_GPU:
    if "numba.cuda" in sys.modules:
        import numba.cuda as _c
        if "simulator" not in getattr(_c.device_array, "__module__", ""):
            _SKIP_REASON = ("numba.cuda was imported without the simulator before the CUDA tests were "
                            "collected; run them on their own: pytest -m cuda tests/kernels tests/cuda")
    else:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        if "numba" in sys.modules:
            import numba.core.config
            numba.core.config.reload_config()


# attributes a real numba DeviceNDArray has that FakeCUDAArray forwards to its NumPy array
_REAL_ATTRS = {"strides", "dtype", "size", "ndim", "flags", "itemsize"}


def _strict_simulator():
    from numba.cuda.simulator.cudadrv import devicearray as da
    cls = da.FakeCUDAArray
    if getattr(cls, "_minifit_strict", False):
        return

    def _getattr(self, name):
        if name in _REAL_ATTRS:
            return getattr(self._ary, name)
        raise AttributeError(f"a CUDA device array has no attribute {name!r} "
                             f"(the simulator's NumPy forwarding is disabled in these tests)")

    def _no_op(self, *args, **kwargs):
        raise TypeError("a CUDA device array has no arithmetic/comparison operators; "
                        "use the kernels (kernels.add, ...)")

    def _no_array(self, *args, **kwargs):
        raise TypeError("implicit device-to-host conversion of a CUDA device array (np.asarray / "
                        "a NumPy function on it); use copy_to_host()")

    cls.__getattr__ = _getattr
    for op in ("__add__", "__sub__", "__mul__", "__truediv__", "__floordiv__", "__mod__", "__pow__",
               "__lt__", "__le__", "__gt__", "__ge__", "__radd__", "__rsub__", "__rmul__",
               "__rtruediv__", "__neg__", "__matmul__"):
        setattr(cls, op, _no_op)
    cls.__eq__ = object.__eq__
    cls.__ne__ = object.__ne__
    cls.__hash__ = object.__hash__
    cls.__array__ = _no_array
    cls.__array_ufunc__ = None   # ufuncs (np.exp(d), d * ndarray, ...) raise TypeError
    cls._minifit_strict = True


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("cuda") is None:
            continue
        if _SKIP_REASON:
            item.add_marker(pytest.mark.skip(reason=_SKIP_REASON))


@pytest.fixture(scope="session")
def cuda_target():
    """The kernels.cuda module, on the simulator (strict) or, with MINIFIT_CUDA_TESTS=gpu,
    a real GPU; skips with the one-line reason when neither works."""
    if _SKIP_REASON:
        pytest.skip(_SKIP_REASON)
    import kernels.cuda as kc
    avail = kc.available()
    if not avail:
        pytest.skip(f"CUDA not usable: {avail.reason}")
    if avail.simulator:
        _strict_simulator()
    return kc
