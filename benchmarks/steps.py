"""The whole-network steps the A/B scripts time (ab_paths.py, ab_fft.py, ab_small.py,
ab_winograd_models.py): a minifit network on fixed random inputs, batch 128, float32."""
from __future__ import annotations

import numpy as np


def network_steps(name, bias=None, lr=0.01, momentum=0.9, seed=0, batch=128):
    """-> (net, train, infer): train() runs one training step (forward, cross-entropy,
    backward, SGD with momentum and the max-norm constraints), infer() one evaluation-mode
    forward without a graph. ``bias``: the maxout convs' ("tied" / "untied"; None: the
    model's default)."""
    from minifit import functional as F
    from minifit import optim
    from minifit import random as mrandom
    from minifit.models import build
    from minifit.tensor import Tensor, no_grad
    mrandom.manual_seed(seed)
    net = build(name) if bias is None else build(name, bias=bias)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + tuple(net.input_shape), dtype=np.float32)
    y = rng.integers(0, net.num_classes, batch).astype(np.int64)
    opt = optim.SGD(net.parameters(), lr=lr, momentum=momentum)

    def train():
        net.train()
        opt.zero_grad()
        loss = F.cross_entropy(net(Tensor(x)), y)
        loss.backward()
        opt.step()
        return loss

    def infer():
        net.eval()
        with no_grad():
            return net(Tensor(x))
    return net, train, infer
