"""Layers. A Module owns Parameters, buffers and child modules; Sequential keeps named
layers in order, so "run up to the hint layer" is a slice by name."""
from __future__ import annotations

import math

import numpy as np

import kernels as K

from . import functional as F
from .device import DEVICES, device_of, move, resolve, to_host
from . import random as mrandom
from .tensor import Tensor, as_tensor


class Parameter(Tensor):
    """A trainable tensor.

    lr_scale: multiplies the optimizer's learning rate for this parameter.
    max_norm: after each update, every slice along axis 0 (one output unit's kernel or
    weight row, all inputs x kh x kw) is rescaled to L2 norm <= max_norm (None: off).
    """

    __slots__ = ("lr_scale", "max_norm")

    def __init__(self, data, lr_scale: float = 1.0, max_norm: float | None = None):
        super().__init__(data, requires_grad=True)
        self.lr_scale = lr_scale
        self.max_norm = max_norm

    def apply_max_norm(self):
        if self.max_norm is None:
            return
        K.max_norm_(self.data, self.max_norm)   # in place, on the parameter's device


def uniform(shape, irange, dtype=np.float32):
    """U(-irange, irange), as the paper's configs initialise every layer."""
    return mrandom.generator().uniform(-irange, irange, size=shape).astype(dtype)


def he_normal(shape, fan_in, dtype=np.float32):
    """N(0, 2 / fan_in): He et al. init for ReLU networks."""
    return (mrandom.generator().standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


class Module:
    """Base class: assigning a Parameter, a Module or (via register_buffer) an array to an
    attribute registers it, in order."""

    def __init__(self):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._params[name] = value
        elif isinstance(value, Module):
            self._children[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        self._buffers[name] = name
        object.__setattr__(self, name, array)

    def forward(self, x):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    # -- traversal ---------------------------------------------------------
    def children(self):
        return list(self._children.values())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix=""):
        for mod_name, mod in self.named_modules(prefix):
            for name, p in mod._params.items():
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for mod_name, mod in self.named_modules():
            for name in mod._buffers:
                yield (f"{mod_name}.{name}" if mod_name else name), mod, name

    def num_params(self, which: str = "all") -> int:
        """Number of parameters: "all", or "conv-bias" (the conv layers' biases only: per map
        when tied, per map and position when untied)."""
        if which == "all":
            return int(sum(p.size for p in self.parameters()))
        if which == "conv-bias":
            return int(sum(m.bias.size for _, m in self.named_modules()
                           if isinstance(m, Conv2d) and "bias" in m._params))
        raise ValueError(f"num_params: which must be 'all' or 'conv-bias', got {which!r}")

    # -- modes and state ---------------------------------------------------
    def train(self, mode: bool = True):
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self) -> dict:
        state = {name: to_host(p.data) for name, p in self.named_parameters()}
        for name, mod, attr in self.named_buffers():
            state[name] = to_host(getattr(mod, attr))
        return state

    def load_state_dict(self, state: dict, strict: bool = True):
        own = dict(self.named_parameters())
        buffers = {name: (mod, attr) for name, mod, attr in self.named_buffers()}
        missing = [k for k in list(own) + list(buffers) if k not in state]
        unexpected = [k for k in state if k not in own and k not in buffers]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: the state does not fit this model: missing {missing[:5]}"
                             f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                             f"{'...' if len(unexpected) > 5 else ''}")
        for name, p in own.items():
            if name in state:
                value = np.asarray(state[name])
                if value.shape != p.shape:
                    raise ValueError(f"load_state_dict: {name} has shape {p.shape} in the model "
                                     f"but {value.shape} in the state")
                p.data = move(value.astype(p.dtype, copy=True), p.device)
        for name, (mod, attr) in buffers.items():
            if name in state:
                old = getattr(mod, attr)
                object.__setattr__(mod, attr, move(np.array(state[name], copy=True), device_of(old)))
        return self

    def to(self, dtype=None, device=None):
        """In place: cast every parameter and buffer to ``dtype`` (e.g. np.float64 for
        checks) and/or move them to ``device`` ("cpu", "cuda", "auto"). ``model.to("cuda")``
        moves; ``model.to(np.float64)`` casts. Gradients are dropped. Build optimizers
        after moving (their slots are created where the parameters are)."""
        if isinstance(dtype, str) and dtype.lower() in DEVICES:
            dtype, device = None, dtype
        target = None if device is None else resolve(device)
        for p in self.parameters():
            if dtype is not None:
                p.data = K.astype(p.data, dtype)
            if target is not None:
                p.data = move(p.data, target)
            p.grad = None
        for _, mod, attr in self.named_buffers():
            buf = getattr(mod, attr)
            if dtype is not None:
                buf = K.astype(buf if K.is_device_array(buf) else np.asarray(buf), dtype)
            if target is not None:
                buf = move(buf, target)
            object.__setattr__(mod, attr, buf)
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def apply_constraints(self):
        for p in self.parameters():
            p.apply_max_norm()

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._children.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + ")" if len(lines) > 1 else lines[0] + ")"


class Sequential(Module):
    """Named layers run in order. Sequential(("h0", layer), ("h1", layer), ...) or
    Sequential(layer, layer) (named "0", "1", ...).

    forward(x, upto="h3") stops after layer h3; ``seq[:"h3"]`` (inclusive) and
    ``seq["h4":]`` are Sequentials sharing the same layer objects.
    """

    def __init__(self, *layers):
        super().__init__()
        for i, item in enumerate(layers):
            name, layer = item if isinstance(item, tuple) else (str(i), item)
            if not isinstance(layer, Module):
                raise ValueError(f"Sequential: layer {name!r} is a {type(layer).__name__}, not a Module")
            if name in self._children:
                raise ValueError(f"Sequential: duplicate layer name {name!r}")
            setattr(self, name, layer)

    @property
    def names(self):
        return list(self._children)

    def index(self, name) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"no layer named {name!r}; layers are {self.names}") from None

    def __getitem__(self, key):
        if isinstance(key, slice):
            names = self.names
            start = 0 if key.start is None else (self.index(key.start) if isinstance(key.start, str) else key.start)
            # a string stop is inclusive: model[:"h3"] is the layers up to and with h3
            stop = len(names) if key.stop is None else (
                self.index(key.stop) + 1 if isinstance(key.stop, str) else key.stop)
            return Sequential(*[(n, self._children[n]) for n in names[start:stop]])
        if isinstance(key, int):
            return self._children[self.names[key]]
        self.index(key)
        return self._children[key]

    def __len__(self):
        return len(self._children)

    def __iter__(self):
        return iter(self._children.items())

    def forward(self, x, upto: str | None = None):
        if upto is not None:
            self.index(upto)
        for name, layer in self._children.items():
            x = layer(x)
            if name == upto:
                break
        return x


class Linear(Module):
    """y = x W^T + b, W: (out, in). init: 'uniform' (U(-irange, irange)) or 'he'."""

    def __init__(self, in_features, out_features, bias=True, irange=0.005, init="uniform",
                 max_col_norm=None, dtype=np.float32):
        super().__init__()
        shape = (out_features, in_features)
        w = he_normal(shape, in_features, dtype) if init == "he" else uniform(shape, irange, dtype)
        self.weight = Parameter(w, max_norm=max_col_norm)
        if bias:
            self.bias = Parameter(np.zeros(out_features, dtype))
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x):
        return F.linear(x, self.weight, self._params.get("bias"))

    def num_mults(self, in_shape, out_shape):
        """in * out (for maxout: pieces * in * units), per example."""
        return self.in_features * self.out_features

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}"


class MaxoutLinear(Linear):
    """Fully-connected maxout: units*pieces linear outputs, max over each group of pieces."""

    def __init__(self, in_features, units, pieces, irange=0.005, max_col_norm=None, dtype=np.float32):
        super().__init__(in_features, units * pieces, irange=irange, max_col_norm=max_col_norm, dtype=dtype)
        self.units, self.pieces = units, pieces

    def forward(self, x):
        x = as_tensor(x)
        if x.ndim > 2:
            x = F.flatten(x)
        return F.maxout(super().forward(x), self.pieces)

    def extra_repr(self):
        return f"{self.in_features}, units={self.units}, pieces={self.pieces}"


class Conv2d(Module):
    """Convolution with one bias per output map. W: (out, in, k, k)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 irange=0.005, init="uniform", max_kernel_norm=None, dtype=np.float32):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        shape = (out_channels, in_channels, kh, kw)
        fan_in = in_channels * kh * kw
        w = he_normal(shape, fan_in, dtype) if init == "he" else uniform(shape, irange, dtype)
        self.weight = Parameter(w, max_norm=max_kernel_norm)
        if bias:
            self.bias = Parameter(np.zeros(out_channels, dtype))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding

    def forward(self, x):
        return F.conv2d(x, self.weight, self._params.get("bias"), self.stride, self.padding)

    def num_mults(self, in_shape, out_shape):
        """out_h * out_w * kh * kw * C_in * C_out before any pooling (for maxout:
        pieces * ... * channels), per example."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, K.pair(self.stride), K.pair(self.padding)
        oh = K.conv_output_size(in_shape[1], kh, sh, ph)
        ow = K.conv_output_size(in_shape[2], kw, sw, pw)
        return oh * ow * kh * kw * self.in_channels * self.out_channels

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class MaxoutConv2d(Conv2d):
    """pylearn2's maxout conv layer: zero-pad, convolve to channels*pieces maps, max over
    each group of ``pieces`` consecutive maps, then max-pool with a ``pool`` window and
    ``pool_stride`` (ceil rounding, as pylearn2; pool=1: none).

    bias="tied": one bias per conv map, shape (channels * pieces,) (the CIFAR configs);
    bias="untied": one per conv map and detector position, shape (channels * pieces, OH, OW)
    before maxout and pooling (pylearn2's default, the MNIST configs), which needs the
    input's ``input_size`` (H, W) to know OH, OW. Both start at 0."""

    def __init__(self, in_channels, channels, pieces, kernel_size, padding=0, pool=1, pool_stride=1,
                 irange=0.005, max_kernel_norm=None, ceil_mode=True, dtype=np.float32, bias="tied",
                 input_size=None):
        super().__init__(in_channels, channels * pieces, kernel_size, 1, padding, irange=irange,
                         max_kernel_norm=max_kernel_norm, dtype=dtype)
        self.channels, self.pieces = channels, pieces
        self.pool, self.pool_stride, self.ceil_mode = pool, pool_stride, ceil_mode
        if bias not in ("tied", "untied"):
            raise ValueError(f"MaxoutConv2d: bias must be 'tied' or 'untied', got {bias!r}")
        self.bias_kind = bias
        if bias == "untied":
            if input_size is None:
                raise ValueError("MaxoutConv2d: bias='untied' needs input_size=(H, W) of the layer's input, "
                                 "to size one bias per output position")
            (kh, kw), (ph, pw) = self.kernel_size, K.pair(padding)
            h, w = K.pair(input_size)
            oh, ow = K.conv_output_size(h, kh, 1, ph), K.conv_output_size(w, kw, 1, pw)
            if oh < 1 or ow < 1:
                raise ValueError(f"MaxoutConv2d: kernel {kh}x{kw} is larger than the padded input {h}x{w} "
                                 f"(padding {padding})")
            self.bias = Parameter(np.zeros((channels * pieces, oh, ow), dtype))

    def forward(self, x):
        # one fused op (conv, maxout, pool): the same values and gradients as
        # F.maxout_pool2d(F.conv2d(...)) / F.maxout(F.conv2d(...))
        pool = None if self.pool in (1, (1, 1)) else self.pool
        return F.maxout_conv2d(x, self.weight, self._params.get("bias"), self.pieces, self.stride,
                               self.padding, pool, self.pool_stride, self.ceil_mode)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.channels}x{self.pieces}, kernel_size={self.kernel_size}, "
                f"padding={self.padding}, pool={self.pool}/{self.pool_stride}, bias={self.bias_kind}")


class _BatchNorm(Module):
    group = None  # a data-parallel communicator when the statistics are synced over ranks

    def __init__(self, num_features, momentum=0.1, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.weight = Parameter(np.ones(num_features, dtype))
        self.bias = Parameter(np.zeros(num_features, dtype))
        self.register_buffer("running_mean", np.zeros(num_features, dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype))
        self.num_features, self.momentum, self.eps = num_features, momentum, eps

    def forward(self, x):
        return F.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                            self.training, self.momentum, self.eps, self.group)

    def extra_repr(self):
        return str(self.num_features)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W), statistics per channel."""


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C), statistics per feature."""


class Dropout(Module):
    """Inverted dropout with drop probability p (pylearn2's include_prob = 1 - p)."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.ceil_mode = kernel_size, stride, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.ceil_mode)


class GlobalAvgPool2d(Module):
    def forward(self, x):
        return F.global_avg_pool2d(x)


class Flatten(Module):
    def forward(self, x):
        return F.flatten(x)
