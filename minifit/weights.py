"""Weights in and out: safetensors files (what PyTorch users hand over) and ``.npz``.

    state = weights.read("teacher.safetensors", rename={"layers.1.conv.weight": "h0.weight", ...})
    model.load_state_dict(state)          # the model's own checks: names and shapes
    weights.write("student.safetensors", model.state_dict(), metadata={"model": "mnist-fitnet"})

safetensors goes through the ``safetensors`` package's NumPy API (no torch); it is an
optional extra (``pip install -e '.[weights]'``). A safetensors file is an 8-byte
little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} (plus an
optional "__metadata__" of strings) and the raw tensor bytes; the header is checked here
first, so a truncated or corrupt file, or a dtype NumPy cannot hold, is named with its
tensor before any data is read.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

# safetensors dtype codes NumPy holds, and those it does not (with what to do instead)
_NUMPY_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "I64": "int64", "I32": "int32",
                 "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16",
                 "U8": "uint8", "BOOL": "bool"}
_NPZ_METADATA = "__metadata__"   # an .npz's metadata: a JSON string stored under this name


class WeightsError(ValueError):
    """A weights file that cannot be used as it is; the message names the file (and the
    tensor) and says what to do."""


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".npz":
        return "npz"
    raise WeightsError(f"{path}: unknown weights format {suffix or '(no suffix)'!r}; "
                       f"use a .safetensors or .npz file")


def _need_safetensors():
    try:
        import safetensors.numpy  # noqa: F401
    except ModuleNotFoundError:
        raise WeightsError("reading and writing .safetensors files needs the safetensors package: "
                           "pip install -e '.[weights]' (or pip install safetensors)") from None
    import safetensors.numpy
    return safetensors.numpy


def _safetensors_header(path: Path) -> tuple[dict, dict]:
    """({name: {dtype, shape, data_offsets}}, metadata) from the file's header, checked
    against the file's size: every problem is a WeightsError naming the file (and tensor)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightsError(f"{path}: truncated or not a safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 << 20:
            raise WeightsError(f"{path}: corrupt or truncated safetensors file (its header claims {n:,} bytes, "
                               f"the file has {size:,})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightsError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    data = size - 8 - n
    for name, t in header.items():
        if not isinstance(t, dict) or not {"dtype", "shape", "data_offsets"} <= set(t):
            raise WeightsError(f"{path}: corrupt safetensors header entry for tensor {name!r}")
        dt = t["dtype"]
        if dt not in _NUMPY_DTYPES:
            hint = (" Convert it on the PyTorch side before saving, e.g. "
                    "save_file({k: v.float() for k, v in model.state_dict().items()}, path)")
            raise WeightsError(f"{path}: tensor {name!r} is {'bfloat16' if dt == 'BF16' else dt}, which NumPy cannot "
                               f"hold.{hint}")
        begin, end = t["data_offsets"]
        want = int(np.prod(t["shape"], dtype=np.int64)) * np.dtype(_NUMPY_DTYPES[dt]).itemsize
        if end - begin != want:
            raise WeightsError(f"{path}: corrupt safetensors file: tensor {name!r} {dt} {tuple(t['shape'])} "
                               f"needs {want:,} bytes, its offsets give {end - begin:,}")
        if end > data:
            raise WeightsError(f"{path}: truncated safetensors file: tensor {name!r} ends at byte {end:,} of the data, "
                               f"the file holds {data:,}; copy or download it again")
    return header, metadata


def _npz_open(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise WeightsError(f"{path}: truncated or corrupt .npz file ({e}); copy or write it again") from None


def read(path, rename: dict | None = None) -> dict[str, np.ndarray]:
    """{name: array} from a .safetensors or .npz file. ``rename`` maps the file's names to
    minifit's ({"layers.1.conv.weight": "h0.weight", ...}); names it does not mention are
    kept. A rename entry naming no tensor of the file is an error (a typo would otherwise
    surface later as a "missing" parameter)."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist")
    kind = _kind(path)
    if kind == "safetensors":
        header, _ = _safetensors_header(path)
        try:
            state = _need_safetensors().load_file(str(path))
        except Exception as e:   # the header was fine: the package found something else wrong
            if isinstance(e, WeightsError):
                raise
            raise WeightsError(f"{path}: cannot read the safetensors file ({type(e).__name__}: {e})") from None
        assert set(state) == set(header)
    else:
        with _npz_open(path) as z:
            state = {}
            for name in z.files:
                if name == _NPZ_METADATA:
                    continue
                try:
                    state[name] = z[name]
                except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
                    raise WeightsError(f"{path}: tensor {name!r} is corrupt ({e}); copy or write the file again") from None
    if rename:
        absent = [k for k in rename if k not in state]
        if absent:
            raise WeightsError(f"{path}: rename names {', '.join(map(repr, absent))}, not in the file; "
                               f"its tensors: {', '.join(sorted(state))}")
        targets = [rename.get(k, k) for k in state]
        dup = sorted({t for t in targets if targets.count(t) > 1})
        if dup:
            raise WeightsError(f"{path}: rename maps two tensors to {', '.join(map(repr, dup))}")
        state = {rename.get(k, k): v for k, v in state.items()}
    return state


def load(model, path, rename: dict | None = None):
    """``model.load_state_dict(read(path, rename))``, its errors (a missing or unexpected
    name, a wrong shape) naming the file too. Returns the model."""
    state = read(path, rename)
    try:
        return model.load_state_dict(state)
    except ValueError as e:
        hint = "" if rename else " (names differ? give a rename table from the file's names to the model's)"
        raise WeightsError(f"{path}: {e}{hint}") from None


def write(path, state: dict, metadata: dict | None = None):
    """Write {name: array} to a .safetensors or .npz file (atomically: a temporary file in
    the same folder, then renamed). ``metadata``: {str: str}, stored in the file's header
    (safetensors) or as a JSON string under "__metadata__" (npz)."""
    path = Path(path)
    kind = _kind(path)
    metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
    arrays = {}
    for k, v in state.items():
        a = np.ascontiguousarray(np.asarray(v))
        if a.dtype.kind not in "fiub":
            raise WeightsError(f"{path}: tensor {k!r} has dtype {a.dtype}, not a number array")
        arrays[str(k)] = a
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        if kind == "safetensors":
            _need_safetensors().save_file(arrays, str(tmp), metadata=metadata or None)
        else:
            extra = {_NPZ_METADATA: np.array(json.dumps(metadata))} if metadata else {}
            with open(tmp, "wb") as f:
                np.savez(f, **arrays, **extra)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def describe(path) -> tuple[list[tuple[str, tuple, str]], dict]:
    """([(name, shape, dtype)], metadata) of a weights file, without reading the tensors'
    data (safetensors) or reading each once (npz)."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist")
    if _kind(path) == "safetensors":
        header, metadata = _safetensors_header(path)
        return [(k, tuple(t["shape"]), _NUMPY_DTYPES[t["dtype"]]) for k, t in sorted(header.items())], metadata
    with _npz_open(path) as z:
        metadata = json.loads(str(z[_NPZ_METADATA])) if _NPZ_METADATA in z.files else {}
        rows = []
        for k in sorted(z.files):
            if k != _NPZ_METADATA:
                a = z[k]
                rows.append((k, a.shape, str(a.dtype)))
    return rows, metadata


def sha256(path) -> str:
    """Hex SHA-256 of a file (reported beside a loaded teacher, so a run names its weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_model_state(path) -> tuple[dict, dict]:
    """(model state, meta) of a minifit training checkpoint (RUN_DIR/.../best.npz or
    last.npz): the trained networks' parameters and buffers without the optimizer's slots.
    A checkpoint of one network ("model:h0.weight") gives plain names ("h0.weight"); a
    FitNets hint stage keeps its parts' prefixes ("guided:h0.weight", "regressor:r.weight")."""
    from . import checkpoint
    try:
        ckpt = checkpoint.read(path)
    except ValueError as e:
        raise WeightsError(str(e)) from None
    model = ckpt["model"]
    if not model:
        raise WeightsError(f"{path}: a minifit checkpoint with no model state in it")
    if all(k.startswith("model:") for k in model):
        model = {k[len("model:"):]: v for k, v in model.items()}
    return model, ckpt["meta"]


# -- minifit weights show | export ------------------------------------------------------
def register(sub):
    p = sub.add_parser("weights", help="list or export weights files (.safetensors, .npz)",
                       description="Inspect a weights file, or export a training checkpoint's model to "
                                   ".safetensors / .npz for use elsewhere.")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    show = wsub.add_parser("show", help="names, shapes, dtypes and metadata of a weights file")
    show.add_argument("file", help="a .safetensors or .npz file")
    show.set_defaults(func=_show)
    exp = wsub.add_parser("export", help="a checkpoint's model (RUN_DIR/.../best.npz) to a weights file",
                          description="Write the model state of a minifit checkpoint (parameters and buffers, "
                                      "no optimizer state) to OUT (.safetensors or .npz), named as "
                                      "model.state_dict() names them.")
    exp.add_argument("checkpoint", help="a minifit checkpoint, e.g. runs/mnist-fitnets/teacher/best.npz")
    exp.add_argument("out", help="the file to write: NAME.safetensors or NAME.npz")
    exp.set_defaults(func=_export)


def _show(args):
    rows, metadata = describe(args.file)
    total = sum(int(np.prod(s, dtype=np.int64)) for _, s, _ in rows)
    print(f"{args.file}: {len(rows)} tensors, {total:,} values")
    width = max([len(n) for n, _, _ in rows] + [4])
    for name, shape, dtype in rows:
        print(f"  {name:<{width}}  {str(tuple(shape)):<18} {dtype}")
    for k, v in sorted(metadata.items()):
        print(f"  metadata {k}: {v}")
    return 0


def _export(args):
    from . import __version__
    state, meta = checkpoint_model_state(args.checkpoint)
    info = {"source": str(args.checkpoint), "minifit": __version__,
            **{k: meta[k] for k in ("epoch",) if k in meta}}
    write(args.out, state, info)
    print(f"wrote {args.out}: {len(state)} tensors from {args.checkpoint} (epoch {meta.get('epoch', '?')})")
    return 0
