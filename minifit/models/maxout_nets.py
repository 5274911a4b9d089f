"""The maxout networks of the FitNets paper (Romero et al., ICLR 2015, arXiv 1412.6550) as
the paper and the authors' released training configurations give them: the MNIST,
CIFAR-10 and SVHN teachers, the MNIST FitNet, CIFAR FitNets 1-4 and the depth-experiment
networks (the teachers are the maxout paper's, Goodfellow et al. 2013). Layer names are h0,
h1, ... (0-based, as the released configs) and y for the softmax layer; dropout layers are
named d0, d1, ... before the layer they feed.

Conv biases: ``bias="tied"`` (default) keeps one per conv map, as the CIFAR configs;
``bias="untied"`` one per map and detector position, pylearn2's default and the MNIST
configs' choice (the MNIST experiments use it)."""
from __future__ import annotations

import kernels as K

from ..nn import Dropout, Flatten, Linear, MaxoutConv2d, MaxoutLinear
from . import Network, register

IRANGE = 0.005          # every layer's U(-irange, irange) init in the configs
FIRST_NORM, NORM = 0.9, 1.9365   # max kernel norm: first layer, later layers
DENSE_NORM = 1.9        # teachers' dense maxout layer max column norm


def maxout_net(input_shape, convs, dense=None, num_classes=10, input_drop=0.0, hidden_drop=0.0,
               hint=None, irange=IRANGE, bias="tied", max_norms=None):
    """convs: [(channels, pieces, kernel, pad, pool, pool_stride)], dense: (units, pieces) or None.

    ``hint``: the layer name a FitNet's hint/guided layer defaults to (metadata only).
    ``irange``: U(-irange, irange) init of every layer (the configs' .005 by default).
    ``bias``: "tied" or "untied" conv biases (see the module docstring).
    ``max_norms``: {layer name: max kernel / column norm} overriding the configs' .9 (h0) and
    1.9365 (later layers), e.g. {"h1": 0.9}."""
    if bias not in ("tied", "untied"):
        raise ValueError(f"bias must be 'tied' or 'untied', got {bias!r}")
    max_norms = dict(max_norms or {})
    names = {f"h{i}" for i in range(len(convs) + (dense is not None))} | {"y"}
    unknown = sorted(set(max_norms) - names)
    if unknown:
        raise ValueError(f"max_norms: no layer named {', '.join(unknown)} in this network (layers: "
                         f"{', '.join(sorted(names))})")
    layers = []
    c, hw = input_shape[0], tuple(input_shape[1:])
    for i, (ch, pieces, k, pad, pool, pstride) in enumerate(convs):
        drop = input_drop if i == 0 else hidden_drop
        if drop:
            layers.append((f"d{i}", Dropout(drop)))
        norm = max_norms.get(f"h{i}", FIRST_NORM if i == 0 else NORM)
        layers.append((f"h{i}", MaxoutConv2d(c, ch, pieces, k, padding=pad, pool=pool, pool_stride=pstride,
                                             irange=irange, max_kernel_norm=norm, bias=bias, input_size=hw)))
        c = ch
        hw = tuple(K.pool_output_size(K.conv_output_size(s, k, 1, pad), pool, pstride, True) for s in hw)
    layers.append(("flat", Flatten()))
    net = Network(*layers, input_shape=input_shape, num_classes=num_classes)
    flat = net.output_shape()[0]
    i = len(convs)
    if dense is not None:
        if hidden_drop:
            layers.append((f"d{i}", Dropout(hidden_drop)))
        layers.append((f"h{i}", MaxoutLinear(flat, dense[0], dense[1], irange=irange,
                                             max_col_norm=max_norms.get(f"h{i}", DENSE_NORM))))
        flat, i = dense[0], i + 1
    if hidden_drop:
        layers.append((f"d{i}", Dropout(hidden_drop)))
    layers.append(("y", Linear(flat, num_classes, irange=irange, max_col_norm=max_norms.get("y", NORM))))
    net = Network(*layers, input_shape=input_shape, num_classes=num_classes)
    net.hint = hint
    net.bias_kind = bias
    return net


def _fitnet_convs(spec: str, final_pool: int = 8):
    """'16,16,16|32,32,32|48,48,64' -> 3x3 pad 1 maxout convs (2 pieces), a 2x2 pool at
    each '|', and a global pool (``final_pool`` x ``final_pool``, stride 1) after the last."""
    groups = [g.split(",") for g in spec.split("|")]
    convs = []
    for gi, group in enumerate(groups):
        for li, ch in enumerate(group):
            last_in_group = li == len(group) - 1
            if last_in_group and gi < len(groups) - 1:
                pool = (2, 2)
            elif last_in_group:
                pool = (final_pool, 1)
            else:
                pool = (1, 1)
            convs.append((int(ch), 2, 3, 1) + pool)
    return convs


@register("mnist-teacher")
def mnist_teacher(num_classes=10, **options):
    """48/2 8x8 pool 4/2 -> 48/2 8x8 pad 3 pool 4/2 -> 24/4 5x5 pad 3 pool 2/2 -> softmax."""
    return maxout_net((1, 28, 28), [(48, 2, 8, 0, 4, 2), (48, 2, 8, 3, 4, 2), (24, 4, 5, 3, 2, 2)],
                      num_classes=num_classes, input_drop=0.2, hidden_drop=0.5, hint="h1", **options)


@register("mnist-fitnet")
def mnist_fitnet(num_classes=10, **options):
    """Six maxout conv layers (~30K params); guided layer h3 (mimics teacher h1)."""
    return maxout_net((1, 28, 28), [(16, 2, 5, 0, 1, 1), (16, 2, 3, 0, 4, 2), (16, 2, 5, 3, 1, 1),
                                    (16, 2, 3, 0, 4, 2), (12, 4, 3, 3, 1, 1), (12, 4, 3, 0, 2, 2)],
                      num_classes=num_classes, hint="h3", **options)


@register("cifar-teacher")
def cifar_teacher(num_classes=10, **options):
    """96/2 8x8 pad 4 pool 4/2 -> 192/2 8x8 pad 3 pool 4/2 -> 192/2 5x5 pad 3 pool 2/2 ->
    maxout 500x5 -> softmax (the maxout paper's CIFAR-10 network)."""
    return maxout_net((3, 32, 32), [(96, 2, 8, 4, 4, 2), (192, 2, 8, 3, 4, 2), (192, 2, 5, 3, 2, 2)],
                      dense=(500, 5), num_classes=num_classes, input_drop=0.2, hidden_drop=0.5, hint="h1", **options)


@register("svhn-teacher")
def svhn_teacher(num_classes=10, **options):
    """Maxout paper SVHN: 64/2 8x8 pad 4 pool 4/2 -> 128/2 8x8 pad 3 pool 4/2 ->
    128/2 5x5 pad 3 pool 2/2 -> maxout 400x5 -> softmax."""
    return maxout_net((3, 32, 32), [(64, 2, 8, 4, 4, 2), (128, 2, 8, 3, 4, 2), (128, 2, 5, 3, 2, 2)],
                      dense=(400, 5), num_classes=num_classes, input_drop=0.2, hidden_drop=0.5, hint="h1", **options)


# CIFAR FitNets (Table 7) and depth networks (Table 6): (conv spec, guided layer, 1-based)
FITNETS = {
    "fitnet-1": ("16,16,16|32,32,32|48,48,64", 6),
    "fitnet-2": ("16,32,32|48,64,80|96,96,128", 6),
    "fitnet-3": ("32,48,64,64|80,80,80,80|128,128,128", 8),
    "fitnet-4": ("32,32,32,48,48|80,80,80,80,80,80|128,128,128,128,128,128", 11),
    "depth-5-30m": ("64|64|64", 2), "depth-5-107m": ("128|128|128", 2),
    "depth-7-30m": ("16,32|32,64|64", 4), "depth-7-107m": ("32,64|80,80|128", 4),
    "depth-9-30m": ("16,32|32,32,32|48,64", 5), "depth-9-107m": ("32,32|64,80,80|96,128", 5),
    "depth-11-30m": ("16,16,16|32,32,32|48,48,64", 7), "depth-11-107m": ("16,32,32|48,64,80|96,96,128", 7),
}


def _register_fitnet(name, spec, guided):
    @register(name)
    def build(num_classes=10, **options):
        return maxout_net((3, 32, 32), _fitnet_convs(spec), dense=(500, 5), num_classes=num_classes,
                          hint=f"h{guided - 1}", **options)
    build.__doc__ = f"{name}: 3x3 maxout convs {spec} ('|' = 2x2 pool), dense maxout 500x5, softmax."


for _name, (_spec, _guided) in FITNETS.items():
    _register_fitnet(_name, _spec, _guided)
