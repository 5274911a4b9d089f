import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from minifit import data

REPO = Path(__file__).resolve().parents[2]


def _real_root() -> Path | None:
    """$MINIFIT_DATA if set, else ../shared/data beside the repository, if it exists."""
    env = os.environ.get("MINIFIT_DATA")
    cand = Path(env) if env else REPO.parent / "shared" / "data"
    return cand if cand.is_dir() else None


@pytest.fixture(scope="session")
def real_root() -> Path:
    root = _real_root()
    if root is None:
        tried = os.environ.get("MINIFIT_DATA") or REPO.parent / "shared" / "data"
        pytest.skip(f"real datasets absent ({tried} not found): set MINIFIT_DATA to a folder "
                    "holding mnist/ and cifar10/ (e.g. ../shared/data)")
    return root


def _need(root: Path, name: str) -> None:
    if not (root / name).is_dir():
        pytest.skip(f"{root / name} absent: the real {name} files are needed")


@pytest.fixture(scope="session")
def mnist_train(real_root):
    _need(real_root, "mnist")
    return data.load("mnist", "train", real_root)


@pytest.fixture(scope="session")
def cifar10_train(real_root):
    """CIFAR-10 train, read once per session; ``peak_bytes`` is the traced memory peak of
    the load (numpy and Python allocations)."""
    _need(real_root, "cifar10")
    tracemalloc.start()
    try:
        ds = data.load("cifar10", "train", real_root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return ds, peak


@pytest.fixture
def rng():
    return np.random.default_rng(0)
