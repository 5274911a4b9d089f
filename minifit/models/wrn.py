"""Wide residual networks WRN-D-M (Zagoruyko & Komodakis 2016) as the conditional
adversarial KD paper uses them (Xu, Hsu & Huang 2017, arXiv 1709.00513), and that paper's
discriminator over logits.

``wrn-D-M`` (D = 6n + 4, M the widen factor), for 3x32x32 inputs:

    conv0   3x3 conv, 16 filters
    g1b1 .. g1bn   n pre-activation blocks, 16M filters, 32x32
    g2b1 .. g2bn   n blocks, 32M filters, the first with stride 2 (16x16)
    g3b1 .. g3bn   n blocks, 64M filters, the first with stride 2 (8x8)
    bn, relu, pool (global average), fc (linear to the classes; softmax is in the loss)

A block is BN, ReLU, conv3x3 (stride s), BN, ReLU, dropout, conv3x3, plus the identity,
or a 1x1 conv with stride s where the shape changes (channels or resolution). As in the
WRN authors' code, the projection reads the block's pre-activated input BN-ReLU(x) (the
parameter count is the same either way). Convolutions have no bias (each is followed by
a batch norm); He-normal init for every conv; the classifier is U(-1/sqrt(in), 1/sqrt(in))
with a zero bias. ``num_params()`` counts conv weights, BN scale and shift, and the
classifier's weights and bias: for 100 classes this gives the paper's Table 5 sizes.
"""
from __future__ import annotations

import math

import numpy as np

from ..nn import (BatchNorm1d, BatchNorm2d, Conv2d, Dropout, GlobalAvgPool2d, Linear, Module, ReLU,
                  Sequential)
from .. import functional as F
from . import Network, register_pattern

DROPOUT = 0.3   # the reference: "dropout 0.3" inside every block


class WideBlock(Module):
    """Pre-activation residual block: BN, ReLU, conv3x3/s, BN, ReLU, dropout, conv3x3, + shortcut."""

    def __init__(self, in_channels, out_channels, stride=1, dropout=DROPOUT, dtype=np.float32):
        super().__init__()
        self.in_channels, self.out_channels, self.stride, self.p = in_channels, out_channels, stride, dropout
        self.bn1 = BatchNorm2d(in_channels, dtype=dtype)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride, 1, bias=False, init="he", dtype=dtype)
        self.bn2 = BatchNorm2d(out_channels, dtype=dtype)
        self.drop = Dropout(dropout)
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, init="he", dtype=dtype)
        self.projects = in_channels != out_channels or stride != 1
        if self.projects:
            self.shortcut = Conv2d(in_channels, out_channels, 1, stride, 0, bias=False, init="he", dtype=dtype)

    def forward(self, x):
        if not self.training:
            # evaluation: each BN is a fixed per-channel map, folded with its ReLU into the
            # read of the conv after it (the activated maps are never stored)
            shortcut = _bn_relu_conv(self.bn1, self.shortcut, x) if self.projects else x
            return _bn_relu_conv(self.bn2, self.conv2, _bn_relu_conv(self.bn1, self.conv1, x), shortcut)
        a = _bn_relu(self.bn1, x)
        h = self.conv1(a)
        h = self.conv2(_bn_relu(self.bn2, h, self.drop.p))   # (BN, ReLU and self.drop as one op)
        return F.add(h, self.shortcut(a) if self.projects else x)

    def num_mults(self, in_shape, out_shape):
        """The three convolutions' multiplications (BN, ReLU and the addition count 0)."""
        mid = (self.out_channels,) + tuple(out_shape[1:])
        n = self.conv1.num_mults(in_shape, mid) + self.conv2.num_mults(mid, out_shape)
        if self.projects:
            n += self.shortcut.num_mults(in_shape, out_shape)
        return n

    def extra_repr(self):
        proj = ", 1x1 projection" if self.projects else ""
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}, dropout={self.p}{proj}"


def _bn_relu(bn, x, dropout=0.0):
    return F.batch_norm_relu(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.training,
                             bn.momentum, bn.eps, bn.group, dropout)


def _bn_relu_conv(bn, conv, x, residual=None):
    return F.bn_relu_conv2d(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, conv.weight,
                            conv._params.get("bias"), conv.stride, conv.padding, bn.eps, residual)


def wide_resnet(depth: int, widen: int, num_classes: int = 10, dropout: float = DROPOUT,
                input_shape=(3, 32, 32), dtype=np.float32) -> Network:
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"wrn: depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, ...), got {depth}")
    if widen < 1:
        raise ValueError(f"wrn: the widen factor must be >= 1, got {widen}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"wrn: dropout must be in [0, 1), got {dropout}")
    n = (depth - 4) // 6
    widths = [16 * widen, 32 * widen, 64 * widen]
    layers = [("conv0", Conv2d(input_shape[0], 16, 3, 1, 1, bias=False, init="he", dtype=dtype))]
    c = 16
    for g, w in enumerate(widths, start=1):
        for b in range(1, n + 1):
            stride = 2 if (g > 1 and b == 1) else 1
            layers.append((f"g{g}b{b}", WideBlock(c, w, stride, dropout, dtype)))
            c = w
    fc = Linear(c, num_classes, irange=1.0 / math.sqrt(c), dtype=dtype)
    layers += [("bn", BatchNorm2d(c, dtype=dtype)), ("relu", ReLU()), ("pool", GlobalAvgPool2d()), ("fc", fc)]
    net = Network(*layers, input_shape=input_shape, num_classes=num_classes)
    net.depth, net.widen, net.hint = depth, widen, None
    return net


@register_pattern(r"wrn-(\d+)-(\d+)", "wrn-D-M")
def build_wrn(match, num_classes=10, **options):
    """wrn-D-M: wide residual network, depth D = 6n + 4, widen factor M (options: dropout)."""
    return wide_resnet(int(match.group(1)), int(match.group(2)), num_classes, **options)


# -- the discriminator ---------------------------------------------------------------------
class ResidualMLPBlock(Module):
    """x + dropout(linear(ReLU(BN(x)))), width C -> C."""

    def __init__(self, width, dropout=DROPOUT, dtype=np.float32):
        super().__init__()
        self.width, self.p = width, dropout
        self.bn = BatchNorm1d(width, dtype=dtype)
        self.fc = Linear(width, width, init="he", dtype=dtype)
        self.drop = Dropout(dropout)

    def forward(self, x):
        return F.add(x, self.drop(self.fc(F.relu(self.bn(x)))))

    def num_mults(self, in_shape, out_shape):
        return self.width * self.width

    def extra_repr(self):
        return f"{self.width}, dropout={self.p}"


class Discriminator(Sequential):
    """D over logits (N, C): BN on the logits, ``depth`` residual MLP blocks of width C
    (BN, ReLU, linear, dropout), then a linear output of C + 2 units: columns 0..C-1 are
    the class scores (L_DS), columns C, C+1 the real/fake head (real = C, fake = C + 1).

    The reference gives the blocks and the C + 2 outputs; how the last block reaches the
    C + 2 outputs is not printed: here one linear layer C -> C + 2 after the blocks.
    """

    def __init__(self, num_classes, depth=3, dropout=DROPOUT, dtype=np.float32):
        if depth < 0:
            raise ValueError(f"Discriminator: depth must be >= 0, got {depth}")
        C = num_classes
        layers = [("bn0", BatchNorm1d(C, dtype=dtype))]
        layers += [(f"b{i}", ResidualMLPBlock(C, dropout, dtype)) for i in range(1, depth + 1)]
        layers.append(("out", Linear(C, C + 2, init="he", dtype=dtype)))
        super().__init__(*layers)
        self.num_classes, self.depth = C, depth
        self.name = f"discriminator-{depth}"

    def forward(self, x, upto=None):
        return super().forward(x, upto)
