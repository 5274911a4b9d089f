"""Preprocessing fitted on the training split and saved with the experiment, and random
augmentation applied per batch.

Transforms map a float batch (B, C, H, W) to a float batch of the same shape and dtype:
``Scale01``, ``Standardize`` (per channel), ``GCN`` (pylearn2's global contrast
normalisation) and ``ZCA`` (pylearn2's ZCA whitening). A ``Pipeline`` chains them, fits them
on uint8 training images chunk by chunk (never a float copy of the whole set), converts each
batch to float and applies them, and saves to a dict of arrays / ``.npz``:

    pipe = Pipeline(GCN(scale=55.0), ZCA(filter_bias=0.1)).fit(train.images)  # maxout/FitNets
    pipe.save("experiment/preprocess.npz")
    x = Pipeline.load("experiment/preprocess.npz")(test.images[:128])  # float32 (128, 3, 32, 32)

Augmentations take a batch and a ``numpy.random.Generator``: ``RandomTranslate(pad)`` (zero
padding then a random crop of the original size) and ``RandomFlip()`` (horizontal). They run
after the pipeline, on the preprocessed batch, as pylearn2 did for the maxout/FitNets CIFAR
runs (padding zeros = the mean after GCN/ZCA/standardisation).
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np


class Transform:
    """Base class. ``params`` are hyperparameters, ``fitted`` the arrays set by fitting;
    both are saved by ``state()``. Fitting is streamed: ``fit_update(x)`` per float64 chunk
    (B, C, H, W), then ``fit_finish()``."""
    kind: ClassVar[str]
    params: ClassVar[tuple[str, ...]] = ()
    fitted: ClassVar[tuple[str, ...]] = ()
    _kinds: ClassVar[dict[str, type]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        Transform._kinds[cls.kind] = cls

    @property
    def needs_fit(self) -> bool:
        return bool(self.fitted)

    def fit_update(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def fit_finish(self) -> None:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """Hyperparameters and fitted arrays as a dict of numpy arrays."""
        out = {k: np.asarray(getattr(self, k)) for k in self.params}
        for k in self.fitted:
            v = getattr(self, k, None)
            if v is None:
                raise ValueError(f"{self.kind} is not fitted: call Pipeline.fit on the train images")
            out[k] = v
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "Transform":
        t = cls(**{k: state[k].item() for k in cls.params})
        for k in cls.fitted:
            setattr(t, k, np.asarray(state[k]))
        return t

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in self.params)})"


class Scale01(Transform):
    """x / 255: uint8 pixel values to [0, 1]."""
    kind = "scale01"

    def __call__(self, x):
        return x * x.dtype.type(1 / 255)


class Standardize(Transform):
    """Per-channel (x - mean[c]) / std[c], mean and std over the training set."""
    kind = "standardize"
    fitted = ("mean", "std")

    def __init__(self):
        self.mean = self.std = None
        self._acc = None

    def fit_update(self, x):
        s = [x.sum(axis=(0, 2, 3)), (x * x).sum(axis=(0, 2, 3)), x.size / x.shape[1]]
        self._acc = s if self._acc is None else [a + b for a, b in zip(self._acc, s)]

    def fit_finish(self):
        total, sq, n = self._acc
        self.mean = total / n
        std = np.sqrt(np.maximum(sq / n - self.mean ** 2, 0.0))
        self.std = np.where(std < 1e-8, 1.0, std)
        self._acc = None

    def __call__(self, x):
        m = self.mean.astype(x.dtype)[None, :, None, None]
        s = self.std.astype(x.dtype)[None, :, None, None]
        return (x - m) / s


class GCN(Transform):
    """Global contrast normalisation per example, pylearn2's ``global_contrast_normalize``
    on the flattened example v (C*H*W values): v -= mean(v) (if subtract_mean); then
    v /= sqrt(sqrt_bias + sum(v**2)) / scale (use_std=False) or sqrt(sqrt_bias + var(v, ddof=1))
    / scale (use_std=True); divisors below min_divisor are replaced by 1. Needs no fitting."""
    kind = "gcn"
    params = ("scale", "subtract_mean", "use_std", "sqrt_bias", "min_divisor")

    def __init__(self, scale=55.0, subtract_mean=True, use_std=False, sqrt_bias=0.0, min_divisor=1e-8):
        self.scale, self.subtract_mean, self.use_std = float(scale), bool(subtract_mean), bool(use_std)
        self.sqrt_bias, self.min_divisor = float(sqrt_bias), float(min_divisor)

    def __call__(self, x):
        v = x.reshape(len(x), -1)
        if self.subtract_mean:
            v = v - v.mean(axis=1, keepdims=True)
        if self.use_std:
            ddof = 1 if v.shape[1] > 1 else 0
            norm = np.sqrt(self.sqrt_bias + v.var(axis=1, ddof=ddof, keepdims=True)) / self.scale
        else:
            norm = np.sqrt(self.sqrt_bias + (v * v).sum(axis=1, keepdims=True)) / self.scale
        norm[norm < self.min_divisor] = 1.0
        return (v / norm.astype(x.dtype)).reshape(x.shape)


class ZCA(Transform):
    """ZCA whitening as pylearn2's ``ZCA`` (default filter_bias 0.1): on flattened examples
    v (D = C*H*W), mean = E[v], eigen-decompose cov = E[(v-mean)(v-mean)^T] + filter_bias*I
    = U diag(e) U^T, P = U diag(1/sqrt(e)) U^T; apply (v - mean) @ P. Fitting accumulates
    sum(v) and v^T v in float64 chunk by chunk; P (D, D) is stored as float32. On CIFAR
    (D = 3072) the eigendecomposition alone takes ~20 s on 2 cores: fit once, save it."""
    kind = "zca"
    params = ("filter_bias",)
    fitted = ("mean", "P")

    def __init__(self, filter_bias=0.1):
        self.filter_bias = float(filter_bias)
        self.mean = self.P = None
        self._acc = None

    def fit_update(self, x):
        v = x.reshape(len(x), -1).astype(np.float64, copy=False)
        s = [v.sum(axis=0), v.T @ v, len(v)]
        if self._acc is None:
            self._acc = s
        else:
            self._acc[0] += s[0]
            self._acc[1] += s[1]
            self._acc[2] += s[2]

    def fit_finish(self):
        total, vtv, n = self._acc
        self._acc = None
        mean = total / n
        cov = vtv / n - np.outer(mean, mean)
        cov[np.diag_indices_from(cov)] += self.filter_bias
        e, u = np.linalg.eigh(cov)
        if not e.min() > 0:
            raise ValueError(f"ZCA: covariance has eigenvalue {e.min():.3g} <= 0; raise filter_bias")
        self.mean = mean.astype(np.float32)
        self.P = ((u / np.sqrt(e)) @ u.T).astype(np.float32)

    def __call__(self, x):
        v = x.reshape(len(x), -1)
        return ((v - self.mean.astype(x.dtype)) @ self.P.astype(x.dtype)).reshape(x.shape)


class Pipeline:
    """Transforms applied in order to batches of images (B, C, H, W)."""

    def __init__(self, *steps: Transform):
        self.steps = list(steps)

    def fit(self, images: np.ndarray, chunk: int = 1000) -> "Pipeline":
        """Fit every step that needs it on ``images`` (the TRAINING split, uint8 or float,
        (N, C, H, W)), in order, each on the output of the steps before it. Works through
        ``chunk`` examples at a time in float64: no float copy of the whole set."""
        for i, step in enumerate(self.steps):
            if not step.needs_fit:
                continue
            for s in range(0, len(images), chunk):
                x = images[s:s + chunk].astype(np.float64)
                for prev in self.steps[:i]:
                    x = prev(x)
                step.fit_update(x)
            step.fit_finish()
        return self

    def __call__(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        """A batch (B, C, H, W) -> preprocessed float batch (B, C, H, W): integer input is
        converted to ``dtype`` first, float input keeps its dtype."""
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(dtype)
        for step in self.steps:
            x = step(x)
        return x

    def apply(self, images: np.ndarray, chunk: int = 1000, dtype=np.float32) -> np.ndarray:
        """Preprocess a whole set into one new ``dtype`` array (N, C, H, W), chunk by chunk.
        Use it to cache, e.g., ZCA-whitened CIFAR (a (D, D) product per example is too slow
        to redo every epoch) when the float copy fits in memory (CIFAR-10 train: 614 MB)."""
        out = np.empty(images.shape, dtype)
        for s in range(0, len(images), chunk):
            out[s:s + chunk] = self(images[s:s + chunk], dtype)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild the fitted pipeline, as a flat dict of arrays:
        ``steps`` (kind names) and ``<i>.<name>`` per step."""
        out = {"steps": np.array([s.kind for s in self.steps], dtype=str)}
        for i, s in enumerate(self.steps):
            out.update({f"{i}.{k}": v for k, v in s.state().items()})
        return out

    @classmethod
    def from_state_dict(cls, state) -> "Pipeline":
        steps = []
        for i, kind in enumerate(np.asarray(state["steps"]).tolist()):
            prefix = f"{i}."
            own = {k[len(prefix):]: np.asarray(state[k]) for k in state if k.startswith(prefix)}
            steps.append(Transform._kinds[kind].from_state(own))
        return cls(*steps)

    def save(self, path) -> None:
        """Write the fitted pipeline to ``path`` (.npz)."""
        with open(path, "wb") as f:
            np.savez(f, **self.state_dict())

    @classmethod
    def load(cls, path) -> "Pipeline":
        with np.load(Path(path), allow_pickle=False) as z:
            return cls.from_state_dict({k: z[k] for k in z.files})

    def __repr__(self):
        return f"Pipeline({', '.join(map(repr, self.steps))})"


class RandomTranslate:
    """Zero-pad each image by ``pad`` pixels and crop a random window of the original size:
    a random shift of -pad..pad pixels in each direction. (B, C, H, W) -> same."""

    def __init__(self, pad: int = 4):
        self.pad = int(pad)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.pad
        if p == 0:
            return x
        b, c, h, w = x.shape
        padded = np.zeros((b, c, h + 2 * p, w + 2 * p), x.dtype)
        padded[:, :, p:p + h, p:p + w] = x
        dy, dx = rng.integers(0, 2 * p + 1, size=(2, b))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
        return windows[np.arange(b), :, dy, dx]  # (B, C, H, W)

    def __repr__(self):
        return f"RandomTranslate(pad={self.pad})"


class RandomFlip:
    """Mirror each image left-right with probability ``p``. (B, C, H, W) -> same."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        flip = rng.random(len(x)) < self.p
        x = x.copy()
        x[flip] = x[flip, :, :, ::-1]
        return x

    def __repr__(self):
        return f"RandomFlip(p={self.p})"
