"""Devices: "cpu" (NumPy arrays, kernels.cpu) or "cuda" (numba device arrays, kernels.cuda).

A Tensor is on the device of its array (``Tensor.device``); ops run where their inputs
are (the dispatch is in ``kernels``). Move data with ``Tensor.to(device)``, models with
``Module.to("cuda")``; optimizers update where the parameters are.

``resolve`` turns a user's choice into a device or a one-line error:
  "cpu"  -> "cpu"
  "cuda" -> "cuda" if a GPU works (or numba-cuda's simulator is on), else DeviceUnavailable
            saying what is missing and how to install it
  "auto" -> "cuda" if a real GPU works, else "cpu" (the simulator never counts here)
"""
from __future__ import annotations

import numpy as np

import kernels as K

DEVICES = ("cpu", "cuda", "auto")


class DeviceUnavailable(ValueError):
    """The requested device cannot be used here (a one-line, user-fixable reason)."""


def resolve(device="cpu") -> str:
    name = str(device).strip().lower()
    if name == "cpu":
        return "cpu"
    if name not in DEVICES:
        raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    from kernels import cuda
    avail = cuda.available()
    if name == "auto":
        return "cuda" if avail and not avail.simulator else "cpu"
    if not avail:
        raise DeviceUnavailable(f"device 'cuda' is not usable: {avail.reason}")
    return "cuda"


def device_of(array) -> str:
    return "cuda" if K.is_device_array(array) else "cpu"


def move(array, device: str):
    """``array`` on ``device`` ("cpu" or "cuda"): itself if already there, else a copy."""
    if device == "cuda":
        if K.is_device_array(array):
            return array
        from kernels import cuda
        return cuda.to_device(np.asarray(array))
    if device == "cpu":
        return array.copy_to_host() if K.is_device_array(array) else array
    raise ValueError(f"move: device must be 'cpu' or 'cuda', got {device!r}")


def to_host(array) -> np.ndarray:
    """A new host (NumPy) copy of ``array``, wherever it lives."""
    return array.copy_to_host() if K.is_device_array(array) else np.array(array, copy=True)


def add_argument(parser, default: str = "cpu"):
    """The ``--device cpu|cuda|auto`` option of the command line."""
    parser.add_argument("--device", choices=DEVICES, default=default,
                        help="where to train: cpu, cuda (an NVIDIA GPU via numba-cuda) or auto "
                             f"(cuda if a GPU works, else cpu; default {default})")
    return parser
