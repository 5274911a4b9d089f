"""Checkpoints: model and optimizer state in one ``.npz``, written atomically, with a checksum.

The file is written to a temporary name in the same folder, flushed to disk, then renamed
over the target (``os.replace`` is atomic), so an interrupted write, a full disk or a
read-only folder leaves the previous checkpoint intact. ``keep_previous=True`` also keeps
the file it replaces as ``<name>.prev.npz``, so a latest checkpoint found corrupt later
(a disk error, a file cut short by a copy) still has a good predecessor: ``read_latest``.

Every file carries ``checksum``: SHA-256 over the names, dtypes, shapes and bytes of all
its arrays (the JSON meta included), verified by ``read``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from .errors import UserError


class CheckpointError(UserError):
    """A checkpoint cannot be read (corrupt, cut short, not a checkpoint) or written;
    ``problem`` is the message without the advice."""

    def __init__(self, problem: str, fix: str):
        self.problem = problem
        super().__init__(f"{problem}; {fix}")


def _digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def previous(path) -> str:
    """The name the replaced checkpoint is kept under: last.npz -> last.prev.npz."""
    root, ext = os.path.splitext(os.fspath(path))
    return root + ".prev" + ext


def save(path, model=None, optimizer=None, arrays=None, keep_previous=False, **meta):
    """Write ``model.state_dict()`` (keys ``model/...``), ``optimizer.state_dict()``
    (``optim/...``), further named ``arrays`` (``data/...``) and JSON-serialisable
    ``meta`` to ``path``. Raises CheckpointError (the old file untouched) when the disk is
    full or the folder is not writable."""
    out = {}
    if model is not None:
        out.update({f"model/{k}": v for k, v in model.state_dict().items()})
    if optimizer is not None:
        out.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    out.update({f"data/{k}": v for k, v in (arrays or {}).items()})
    out["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    out["checksum"] = np.frombuffer(_digest(out).encode(), dtype=np.uint8)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **out)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and os.path.exists(path):
            os.replace(path, previous(path))
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}",
                              "the last good checkpoint is kept. Free space or make the folder writable (or choose "
                              "another --out), then run the same command with --resume") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def remove_partial(folder):
    """Delete the temporary files of writes a kill -9 cut short (``.tmp-*.npz``)."""
    for name in os.listdir(folder):
        if name.startswith(".tmp-") and name.endswith(".npz"):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def read(path) -> dict:
    """{'model': {...}, 'optim': {...}, 'data': {...}, 'meta': {...}} from a checkpoint
    file whose checksum matches (files written before checksums existed have none)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        stored = arrays.pop("checksum", None)
        if stored is not None and stored.tobytes().decode() != _digest(arrays):
            raise ValueError("checksum mismatch")
        out = {"model": {}, "optim": {}, "data": {}, "meta": {}}
        for key, a in arrays.items():
            if key == "meta":
                out["meta"] = json.loads(a.tobytes().decode())
            else:
                group, name = key.split("/", 1)
                out[group][name] = a
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a minifit checkpoint ({type(e).__name__}: {e})",
                              "delete it to start that stage over") from None
    return out


def read_latest(path, log=print) -> dict:
    """``read(path)``; when it is corrupt or missing and ``<name>.prev.npz`` is good, that
    one (saying so in ``log``)."""
    prev = previous(path)
    try:
        return read(path)
    except (CheckpointError, FileNotFoundError) as e:
        if not os.path.exists(prev):
            raise
        problem = getattr(e, "problem", e)
    ckpt = read(prev)
    log(f"warning: {problem}; resuming from the previous good checkpoint {prev}")
    return ckpt


def load(path, model=None, optimizer=None) -> dict:
    """Load a checkpoint into a freshly built ``model`` / ``optimizer``; returns its meta."""
    ckpt = read(path)
    if model is not None:
        model.load_state_dict(ckpt["model"])
    if optimizer is not None and ckpt["optim"]:
        optimizer.load_state_dict(ckpt["optim"])
    return ckpt["meta"]
