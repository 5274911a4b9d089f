"""Compile recorded kernel launches to PTX with numba-cuda's real (non-simulator) pipeline.

usage: python ptx_check.py LAUNCHES.pkl   (a pickled list of (kernel name, numba arg types))

Run by tests/kernels/test_cuda.py in a subprocess without NUMBA_ENABLE_CUDASIM and with
NUMBA_FORCE_CUDA_CC=7.5. Needs NVVM and libdevice (a CUDA toolkit, or the numba-cuda
[cu12]/[cu13] wheels), not a GPU. Exit 0: all compiled; 3: the toolchain is missing (the
test skips, printing why); anything else: a kernel failed to compile.
"""
import pickle
import sys


def main(path):
    from numba.cuda import cuda_paths
    try:
        cuda_paths._get_nvrtc_path()
    except Exception:  # noqa: BLE001
        # NVRTC is only used to list architectures and to link C++ sources, neither needed
        # for PTX generation with a forced compute capability; NVVM + libdevice suffice.
        cuda_paths._get_nvrtc_path = lambda: cuda_paths._env_path_tuple("absent (PTX only)", None)
    from numba import cuda
    from numba.cuda.cudadrv import nvvm
    if not cuda.is_available():
        # Device functions (called from kernels) are compiled for the current device's
        # compute capability; without a GPU, say it is the target's.
        from numba.cuda import dispatcher

        class _Target:
            compute_capability = (7, 5)
        dispatcher.get_current_device = _Target
    try:
        nvvm.NVVM()
        from numba.cuda.cudadrv import libs
        libs.get_libdevice()
    except Exception as e:  # noqa: BLE001
        print(f"NVVM/libdevice not available, PTX compilation not checked: {str(e).splitlines()[0]}")
        return 3
    import kernels.cuda as kc
    from kernels.cuda import _common
    for name in kc._WHERE:
        getattr(kc, name)   # import every kernel module
    records = pickle.loads(open(path, "rb").read())
    failures = []
    for name, argtypes in records:
        try:
            ptx, _ = cuda.compile_ptx(_common.KERNELS[name].py_func, argtypes, cc=(7, 5))
            assert ".entry" in ptx
        except Exception as e:  # noqa: BLE001
            failures.append(f"{name}{argtypes}: {type(e).__name__}: {str(e)[:2000]}")
    for f in failures:
        print("FAILED", f)
    print(f"compiled {len(records) - len(failures)} of {len(records)} launch signatures to PTX (sm_75)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
