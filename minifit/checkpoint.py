"""Checkpoints: model and optimizer state in one ``.npz``, written atomically.

The file is written to a temporary name in the same folder, flushed to disk, then renamed
over the target (``os.replace`` is atomic), so an interrupted write leaves the previous
checkpoint intact.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np


def save(path, model=None, optimizer=None, **meta):
    """Write ``model.state_dict()`` (keys ``model/...``), ``optimizer.state_dict()``
    (``optim/...``) and JSON-serialisable ``meta`` to ``path``."""
    arrays = {}
    if model is not None:
        arrays.update({f"model/{k}": v for k, v in model.state_dict().items()})
    if optimizer is not None:
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path) -> dict:
    """{'model': {...}, 'optim': {...}, 'meta': {...}} from a checkpoint file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {"model": {}, "optim": {}, "meta": {}}
            for key in z.files:
                if key == "meta":
                    out["meta"] = json.loads(z[key].tobytes().decode())
                else:
                    group, name = key.split("/", 1)
                    out[group][name] = z[key]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"checkpoint {path} is corrupt or not a minifit checkpoint ({e}); "
                         "delete it to start over") from None
    return out


def load(path, model=None, optimizer=None) -> dict:
    """Load a checkpoint into a freshly built ``model`` / ``optimizer``; returns its meta."""
    ckpt = read(path)
    if model is not None:
        model.load_state_dict(ckpt["model"])
    if optimizer is not None and ckpt["optim"]:
        optimizer.load_state_dict(ckpt["optim"])
    return ckpt["meta"]
