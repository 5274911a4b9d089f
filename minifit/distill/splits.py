"""A data split as the training loop sees it: batches carrying the examples' indices, so a
teacher's outputs computed once can be served per batch by index."""
from __future__ import annotations

import numpy as np

from ..data.batches import BatchIterator


class Split:
    """images uint8 (N, C, H, W) and labels (N,), a fitted preprocessing ``transform``
    (applied per batch) and training-time ``augment`` callables (x, rng) -> x.

    ``batches(epoch)`` yields (idx, x, y), shuffled with a seed derived from (seed, epoch),
    so epoch e is the same whether or not the run was interrupted before it; with
    ``drop_last`` a last partial batch is skipped.
    """

    def __init__(self, images, labels, batch_size=128, transform=None, augment=(), seed=0, title="",
                 drop_last=False):
        self.images, self.labels = images, np.asarray(labels, np.int64)
        self.transform, self.augment, self.batch_size, self.seed = transform, tuple(augment), batch_size, seed
        self.title = title
        # BatchIterator yields (x, "labels"); passing example indices as the labels gives us idx
        self._train = BatchIterator((images, np.arange(len(self.labels))), batch_size, shuffle=True,
                                    seed=seed, transform=transform, augment=self.augment, drop_last=drop_last)

    def __len__(self):
        return len(self.labels)

    @property
    def num_batches(self) -> int:
        return len(self._train)

    def batches(self, epoch: int):
        self._train.epoch = epoch
        for x, idx in self._train:
            yield idx, x, self.labels[idx]

    def indexed_eval_batches(self, batch_size=500, rows=None):
        """In order, no augmentation: (idx, x, y); ``rows = (lo, hi)``: only examples lo..hi-1
        (a data-parallel rank's share)."""
        lo, hi = rows if rows is not None else (0, len(self.labels))
        if hi <= lo:
            return
        it = BatchIterator((self.images[lo:hi], np.arange(lo, hi)), batch_size, transform=self.transform)
        for x, idx in it:
            yield idx, x, self.labels[idx]

    def eval_batches(self, batch_size=500, rows=None):
        for _, x, y in self.indexed_eval_batches(batch_size, rows):
            yield x, y
