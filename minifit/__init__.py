"""minifit: knowledge distillation for thin deep networks, from scratch on NumPy + Numba."""
__version__ = "0.1.0"

from .tensor import Tensor, as_tensor, is_grad_enabled, no_grad  # noqa: E402,F401
from . import functional, nn, optim, checkpoint  # noqa: E402,F401
from .random import manual_seed  # noqa: E402,F401
