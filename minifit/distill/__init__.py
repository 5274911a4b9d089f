"""Training and distillation: the loop, the methods (backprop, KD, FitNets stages) and
experiments from TOML files."""
from .loop import FitResult, NonFiniteError, StopRequested, fit, graceful_stop, locate_nonfinite  # noqa: F401
from .methods import KD, Backprop, Hints, LinearAnneal, Method, TeacherOutputs, error_rate, predict  # noqa: F401
from .splits import Split  # noqa: F401
