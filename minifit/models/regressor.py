"""The FitNets regressor r: maps the student's guided-layer output to the shape of the
teacher's hint-layer output (stage 1 minimises L_HT = 1/2 ||u_h(x) - r(v_g(x))||^2)."""
from __future__ import annotations

import numpy as np

from ..nn import Flatten, Linear, MaxoutConv2d, Module, Sequential

REGRESSOR_IRANGE, REGRESSOR_NORM = 0.05, 0.9


class _Reshape(Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape((x.shape[0],) + self.shape)


def build_regressor(student_shape, teacher_shape, pieces: int = 2, kind: str = "conv",
                    dtype=np.float32, bias: str = "tied") -> Sequential:
    """student_shape / teacher_shape: (C, H, W) of the guided / hint outputs.

    kind="conv": a maxout conv layer with the hint layer's channels and ``pieces``, kernel
    (H_s - H_t + 1) x (W_s - W_t + 1), no padding, no pool, so its output is exactly the
    hint's shape; ``bias`` "tied" or "untied" (one per map and position), the hint layer's
    kind, as the authors' code builds it. kind="fc": a fully-connected layer (far more
    parameters, the paper's alternative).
    """
    student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
    if len(student_shape) != 3 or len(teacher_shape) != 3:
        raise ValueError(f"regressor: guided and hint outputs must be (C, H, W) maps, got student "
                         f"{student_shape} and teacher {teacher_shape}; use kind='fc' for flat layers")
    cs, hs, ws = student_shape
    ct, ht, wt = teacher_shape
    if kind == "fc":
        return Sequential(("flat", Flatten()),
                          ("fc", Linear(cs * hs * ws, ct * ht * wt, irange=REGRESSOR_IRANGE,
                                        max_col_norm=REGRESSOR_NORM, dtype=dtype)),
                          ("shape", _Reshape(teacher_shape)))
    if kind != "conv":
        raise ValueError(f"regressor: kind must be 'conv' or 'fc', got {kind!r}")
    if ht > hs or wt > ws:
        raise ValueError(f"regressor: the teacher's hint map {ht}x{wt} is larger than the student's "
                         f"guided map {hs}x{ws}; a convolutional regressor cannot enlarge it. Pick a "
                         f"deeper hint layer, an earlier guided layer, or kind='fc'")
    return Sequential(("r", MaxoutConv2d(cs, ct, pieces, (hs - ht + 1, ws - wt + 1), irange=REGRESSOR_IRANGE,
                                         max_kernel_norm=REGRESSOR_NORM, dtype=dtype, bias=bias,
                                         input_size=(hs, ws))))


def for_networks(student, guided: str, teacher, hint: str, kind: str = "conv") -> Sequential:
    """The regressor from ``student``'s layer ``guided`` to ``teacher``'s layer ``hint``."""
    hint_layer = teacher[hint]
    pieces = getattr(hint_layer, "pieces", 1)
    return build_regressor(student.output_shape(guided), teacher.output_shape(hint), pieces, kind,
                           bias=getattr(hint_layer, "bias_kind", "tied"))
