import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("minifit", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("minifit")

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    """MINIFIT_DATA if set, else ../shared/data beside the repository, else None."""
    env = os.environ.get("MINIFIT_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def data_root():
    root = shared_data_root()
    if root is None:
        pytest.skip("real datasets not found: set MINIFIT_DATA=../shared/data (or place shared/ beside the repo)")
    return root


@pytest.fixture
def rng():
    return np.random.default_rng(0)
