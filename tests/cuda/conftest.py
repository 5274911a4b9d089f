"""Tests of minifit's engine on the CUDA target; the CUDA ones on numba-cuda's simulator
(see tests/cudasim.py, imported here before any test module imports numba.cuda)."""
from cudasim import cuda_target, pytest_collection_modifyitems  # noqa: F401
