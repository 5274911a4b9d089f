"""A small maxout conv net drives the training loss near zero on 256 real MNIST images:
the whole engine (kernels, ops, backward, optimizer, constraints) working together."""
import numpy as np

import minifit
import minifit.functional as F
import minifit.nn as nn
from minifit import Tensor
from minifit.data import load


def test_small_maxout_net_overfits_256_mnist_images(data_root):
    ds = load("mnist", "train", data_root)
    x = ds.images[:256].astype(np.float32) / 255
    y = ds.labels[:256]
    minifit.manual_seed(0)
    net = nn.Sequential(
        ("h0", nn.MaxoutConv2d(1, 16, 2, 5, pool=4, pool_stride=2, irange=0.05)),
        ("h1", nn.MaxoutConv2d(16, 16, 2, 3, padding=1, pool=2, pool_stride=2, irange=0.05)),
        ("h2", nn.MaxoutLinear(16 * 6 * 6, 32, 2, irange=0.05)),
        ("y", nn.Linear(32, 10, irange=0.05)))
    opt = minifit.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for epoch in range(45):
        for i in range(0, 256, 64):
            loss = F.cross_entropy(net(Tensor(x[i:i + 64])), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
            first = loss.item() if first is None else first
    final = F.cross_entropy(net.eval()(Tensor(x)), y).item()
    assert first > 2.0 and final < 0.05, (first, final)
