"""Mini-batches with seeded shuffling; float conversion, preprocessing and augmentation
happen per batch, so the whole set stays uint8 in memory."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .loaders import Dataset


class BatchIterator:
    """Iterate ``(x, y)`` batches over a dataset: x ``dtype`` (B, C, H, W), y int64 (B,).

    data: a ``Dataset`` or an ``(images, labels)`` pair (images uint8, or float when
    preprocessed in advance with ``Pipeline.apply``). Each batch is converted to ``dtype``,
    then ``transform`` (e.g. a fitted ``Pipeline``; None: plain conversion) is applied. augment: callables
    ``(x, rng) -> x`` applied after the transform (training only). Each ``iter()`` is one
    epoch; epoch e shuffles and augments with ``numpy.random.default_rng([seed, e])``, so a
    run is reproducible and can resume at any epoch by setting ``.epoch``."""

    def __init__(self, data: Dataset | tuple[np.ndarray, np.ndarray], batch_size: int, *,
                 shuffle: bool = False, seed: int = 0, transform: Callable | None = None,
                 augment: Sequence[Callable] = (), dtype=np.float32, drop_last: bool = False):
        images, labels = (data.images, data.labels) if isinstance(data, Dataset) else data
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.images, self.labels = images, np.asarray(labels, np.int64)
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, seed
        self.transform, self.augment, self.dtype = transform, tuple(augment), np.dtype(dtype)
        self.drop_last = drop_last
        self.epoch = 0

    def __len__(self) -> int:
        n, b = len(self.labels), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.iterate()

    def iterate(self, start: int = 0, order=None, rng_state=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch from batch ``start``. Resuming inside an epoch passes the ``order`` and
        the generator state ``rng_state`` that ``position()`` recorded after batch start - 1,
        so the remaining batches (and their augmentation) are those of an uninterrupted epoch."""
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        n = len(self.labels)
        if order is None:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        if rng_state is not None:
            rng.bit_generator.state = rng_state
        self._order, self._rng = order, rng
        for i in range(start, len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            if not self.shuffle:
                idx = slice(idx[0], idx[-1] + 1)  # contiguous: a view, no gather
            x = self.images[idx].astype(self.dtype)  # the only float copy: this batch
            if self.transform is not None:
                x = self.transform(x)
            for aug in self.augment:
                x = aug(x, rng)
            yield x, self.labels[idx]

    def position(self) -> tuple[np.ndarray, dict]:
        """(the current epoch's example order, its generator state): what ``iterate`` needs
        to continue after the last batch yielded."""
        return self._order, self._rng.bit_generator.state
