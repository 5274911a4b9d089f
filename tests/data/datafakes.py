"""Writers of small dataset files in the official formats, for the data tests."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def _write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def idx_bytes(a: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, data."""
    assert a.dtype == np.uint8
    return bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_idx(path: Path, a: np.ndarray) -> Path:
    return _write(path, idx_bytes(a))


def write_idx_pair(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray,
                   gz: bool) -> None:
    """``<prefix>-images-idx3-ubyte[.gz]`` and ``<prefix>-labels-idx1-ubyte[.gz]``."""
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels.astype(np.uint8))


def cifar_records(images: np.ndarray, *label_arrays: np.ndarray) -> bytes:
    """CIFAR binary records: the label bytes, then 3072 pixel bytes (R, G, B planes)."""
    labels = np.stack([np.asarray(a, np.uint8) for a in label_arrays], axis=1)
    return np.concatenate([labels, images.reshape(len(images), -1)], axis=1).tobytes()


def write_cifar_bin(path: Path, images: np.ndarray, *label_arrays: np.ndarray) -> Path:
    return _write(path, cifar_records(images, *label_arrays))


def write_pickle(path: Path, obj: dict) -> Path:
    """A CIFAR python batch: a dict with bytes keys, pickled with protocol 2."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


def random_images(rng, n, c=3, h=32, w=32) -> np.ndarray:
    return rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
