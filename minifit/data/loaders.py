"""Dataset loaders: ``load(name, split)`` returns a ``Dataset`` of uint8 images (N, C, H, W)
and int64 labels (N,), read from the files users actually have.

Formats: IDX (MNIST, Fashion-MNIST), CIFAR binary records and python pickles (CIFAR-10,
CIFAR-100), SVHN's cropped-digit ``.mat`` files, and image folders. IDX and CIFAR binary
files may be gzipped (``NAME.gz``). Every problem with a file raises ``DataFileError``
(a ``ValueError``) or ``MissingDataError`` (also a ``FileNotFoundError``) naming the file and
the fix; nothing is returned then.

Memory: images are read into one preallocated array (the gzip size field gives each file's
length up front), so loading CIFAR-10 binary peaks at about one copy of the data plus one
file; the python pickle format peaks at about two copies.
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import DataFileError, MissingDataError
from .registry import DATASETS, data_root, dataset_dirs, fetch_hint, replace_hint
from ..errors import UnknownNameError

SPLITS = ("train", "test")
# size of the fixed validation split taken from the END of the training set
VALIDATION_SIZE = {"mnist": 10_000, "fashion-mnist": 10_000, "cifar10": 10_000, "cifar100": 10_000}

_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
           "cifar100": "CIFAR-100", "svhn": "SVHN", "folder": "folder"}
MNIST_CLASSES = tuple("0123456789")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CIFAR100_FINE_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp
lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree
orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum
rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider
squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train
trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())
CIFAR100_COARSE_CLASSES = tuple("""
aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices
household_furniture insects large_carnivores large_man-made_outdoor_things
large_natural_outdoor_scenes large_omnivores_and_herbivores medium_mammals
non-insect_invertebrates people reptiles small_mammals trees vehicles_1 vehicles_2""".split())

# CIFAR-10 test files in order of preference when none is named: exact data only. The lossy
# JPEG copy is read only when asked for by name (test_file="test_batch_from_jpeg_LOSSY.bin").
CIFAR10_TEST_FILES = ("test_batch.bin", "test_batch_first1000.bin")
CIFAR10_LOSSY_TEST_FILE = "test_batch_from_jpeg_LOSSY.bin"
_CIFAR10_TEST_TITLES = {"test_batch.bin": "CIFAR-10 test",
                        "test_batch_first1000.bin": "CIFAR-10 test[:1000]",
                        CIFAR10_LOSSY_TEST_FILE: "CIFAR-10 test (JPEG copy)"}


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a dataset.

    images: uint8 (N, C, H, W); labels: int64 (N,); classes: names, ``classes[label]``;
    source_files: the files read; test_file: the test-set file read (test split, else None);
    title: how to name this data in a report, e.g. ``"CIFAR-10 test[:1000]"``."""
    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    source_files: tuple[Path, ...]
    test_file: Path | None = None
    title: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load(name: str, split: str, root=None, **options) -> Dataset:
    """Load split ``split`` ('train' or 'test'; svhn also 'extra'; folder: any sub-folder)
    of dataset ``name`` (one of ``DATASETS``) from ``root`` (default: ``$MINIFIT_DATA``,
    else ``./data``).

    Options: cifar10 ``format`` ('binary' | 'python' | None = whichever is found, binary
    first) and ``test_file`` (a binary test file name, e.g. 'test_batch_first1000.bin';
    default: test_batch.bin if present, else test_batch_first1000.bin; the lossy JPEG copy
    only by name); cifar100 ``format`` and ``labels`` ('fine' | 'coarse');
    folder ``channels`` (1 | 3 | None = 1 if every image is grayscale, else 3)."""
    if name not in _LOADERS:
        raise UnknownNameError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    root = data_root(root)
    if name != "folder":
        allowed = SPLITS + (("extra",) if name == "svhn" else ())
        if split not in allowed:
            raise UnknownNameError(f"unknown split {split!r} for {name}: choose one of {', '.join(allowed)}")
    return _LOADERS[name](root, split, **options)


def train_val_split(ds: Dataset, n_val: int | None = None) -> tuple[Dataset, Dataset]:
    """The fixed train/validation split: the LAST ``n_val`` training examples are the
    validation set (default ``VALIDATION_SIZE[ds.name]``: MNIST 50k/10k, CIFAR 40k/10k).
    Both parts are views of ``ds`` (no copy)."""
    if ds.split != "train":
        raise ValueError(f"train_val_split needs the train split, got {ds.split!r}")
    if n_val is None:
        if ds.name not in VALIDATION_SIZE:
            raise ValueError(f"no standard validation size for {ds.name}: pass n_val")
        n_val = VALIDATION_SIZE[ds.name]
    if not 0 < n_val < len(ds):
        raise ValueError(f"n_val={n_val} must be between 1 and {len(ds) - 1}")
    k = len(ds) - n_val
    base = ds.title or f"{_TITLES[ds.name]} train"
    train = replace(ds, images=ds.images[:k], labels=ds.labels[:k], title=f"{base}[:{k}]")
    val = replace(ds, split="val", images=ds.images[k:], labels=ds.labels[k:],
                  title=f"{base}[{k}:] (validation)")
    return train, val


# ----------------------------------------------------------------------------- files

def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists (plain first), else None."""
    for p in (folder / name, folder / (name + ".gz")):
        if p.is_file():
            return p
    return None


def open_content(path: Path):
    """A binary file object over the uncompressed content of ``path`` (gunzipped if .gz)."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def content_size(path: Path) -> int:
    """Length of the uncompressed content: the file size, or a gzip file's size field."""
    size = path.stat().st_size
    if path.suffix != ".gz":
        return size
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b" or size < 18:
            raise DataFileError(path, "not a gzip file", "gunzip-compatible file expected; "
                                "remove the .gz suffix if it is not compressed")
        f.seek(-4, 2)
        return struct.unpack("<I", f.read(4))[0]


def read_content(path: Path, fix: str) -> np.ndarray:
    """The uncompressed bytes of ``path`` as a writable uint8 array (N,), read into one
    preallocated buffer. Truncated or corrupt files raise DataFileError."""
    size = content_size(path)
    if path.suffix == ".gz" and size > 1100 * path.stat().st_size + 1024:
        raise DataFileError(path, "truncated or corrupt gzip file (impossible size field)", fix)
    buf = np.empty(size, np.uint8)
    try:
        with open_content(path) as f:
            view, n = memoryview(buf), 0
            while n < size:
                got = f.readinto(view[n:n + (1 << 20)])  # small steps: no big temporaries
                if not got:
                    break
                n += got
            extra = f.read(1)
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataFileError(path, f"truncated or corrupt gzip file ({e})", fix) from None
    if n != size or extra:
        raise DataFileError(path, "gzip size field disagrees with the content (truncated, corrupt "
                            "or several gzip members)", fix + "; or decompress it with gunzip")
    return buf


def content_digest(path: Path, algorithm: str) -> str:
    """Hex digest (``algorithm``: 'md5' or 'sha256') of the uncompressed content of ``path``."""
    h = hashlib.new(algorithm)
    with open_content(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _locate(dataset: str, root: Path, candidates: list[list[str]], fix: str,
            also: str = "") -> tuple[int, list[Path]]:
    """Find the first name list in ``candidates`` whose files all exist in one folder of
    ``dataset_dirs``. Returns (its index in candidates, paths); else raises MissingDataError."""
    dirs = dataset_dirs(dataset, root)
    for i, names in enumerate(candidates):
        for d in dirs:
            paths = [find_file(d, n) for n in names]
            if all(paths):
                return i, paths
    # say what is missing where: in the first folder holding part of a set, else everywhere
    for names in candidates:
        for d in dirs:
            missing = [n for n in names if not find_file(d, n)]
            if len(missing) < len(names):
                raise MissingDataError(d / missing[0], "missing (needed: " + ", ".join(missing)
                                       + "; each may be gzipped as NAME.gz)", fix)
    wanted = " or ".join(", ".join(names) for names in candidates)
    raise MissingDataError(dirs[0], f"no {dataset} files found (looked for {wanted}[.gz] in "
                           + ", ".join(str(d) for d in dirs) + f"){also}", fix)


# ----------------------------------------------------------------------------- formats

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path, ndim: int, fix: str) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array of its header's shape; it must hold
    ``ndim`` dimensions (3 for images, 1 for labels)."""
    raw = read_content(path, fix)
    expected = f"0x{0x800 + ndim:08X}"
    if len(raw) < 4 + 4 * ndim or raw[0] or raw[1] or raw[2] not in _IDX_TYPES or raw[3] != ndim:
        magic = raw[:4].tobytes().hex().upper()
        raise DataFileError(path, f"wrong IDX magic number 0x{magic} (expected {expected}): not an "
                            f"IDX file of {ndim} dimension(s)", fix)
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header].tobytes())
    need = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != need:
        raise DataFileError(path, f"header says shape {dims} ({need} data bytes) but the file has "
                            f"{len(raw) - header} (truncated or not an IDX file)", fix)
    return raw[header:].view(dtype).reshape(dims)


def read_cifar_binary(paths: list[Path], label_bytes: int, label_index: int, n_classes: int,
                      fix: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary records (``label_bytes`` label bytes, then 3072 bytes R, G, B planes of
    32x32) from ``paths`` in order -> (images uint8 (N, 3, 32, 32), labels int64 (N,)), using
    label byte ``label_index``. Read straight into one preallocated array."""
    rec = label_bytes + 3072
    counts = []
    for p in paths:
        size = content_size(p)
        if size == 0 or size % rec:
            raise DataFileError(p, f"size {size} B is not a whole number of {rec}-byte records "
                                f"(truncated, or not a CIFAR file of this kind)", fix)
        counts.append(size // rec)
    images = np.empty((sum(counts), 3, 32, 32), np.uint8)
    labels = np.empty(sum(counts), np.int64)
    start = 0
    for p, n in zip(paths, counts):
        records = read_content(p, fix).reshape(n, rec)
        lab = records[:, label_index]
        if lab.max() >= n_classes:
            raise DataFileError(p, f"label {int(lab.max())} out of range 0..{n_classes - 1} "
                                "(not a file of this dataset or format?)", fix)
        labels[start:start + n] = lab
        images[start:start + n] = records[:, label_bytes:].reshape(n, 3, 32, 32)
        start += n
        del records, lab  # free this file's buffer before reading the next
    return images, labels


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's python batches, refusing anything but numpy arrays and builtins."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"),
                ("_codecs", "encode")}  # bytes pickled by Python 3 at protocol 2

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if module.startswith("numpy.core"):  # numpy >= 2 moved numpy.core to numpy._core
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def read_cifar_pickle(path: Path, keys: tuple[str, ...], fix: str) -> list:
    """The values of ``keys`` from a CIFAR python-format pickle (a dict with bytes keys)."""
    try:
        with open_content(path) as f:
            d = _NumpyUnpickler(f, encoding="bytes").load()
        return [d[k.encode()] if k.encode() in d else d[k] for k in keys]
    except (pickle.UnpicklingError, EOFError, OSError, zlib.error, KeyError, TypeError,
            AttributeError, ValueError, IndexError) as e:
        raise DataFileError(path, f"not a readable CIFAR python batch ({type(e).__name__}: {e})",
                            fix) from None


def _cifar_from_pickles(paths: list[Path], label_key: str, n_classes: int, fix: str):
    images, labels = [], []
    for p in paths:
        data, lab = read_cifar_pickle(p, ("data", label_key), fix)
        data, lab = np.asarray(data), np.asarray(lab, np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise DataFileError(p, f"data {data.dtype} {data.shape} with {len(lab)} labels: expected "
                                "uint8 (N, 3072) and N labels", fix)
        if len(lab) and (lab.min() < 0 or lab.max() >= n_classes):
            raise DataFileError(p, f"labels out of range 0..{n_classes - 1}", fix)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


# ----------------------------------------------------------------------------- datasets

def _load_idx_dataset(name: str, classes: tuple[str, ...]):
    def loader(root: Path, split: str) -> Dataset:
        fix = replace_hint(name, root)
        prefix = "train" if split == "train" else "t10k"
        _, (img_path, lab_path) = _locate(name, root, [[f"{prefix}-images-idx3-ubyte",
                                                        f"{prefix}-labels-idx1-ubyte"]],
                                          fetch_hint(name, root))
        images = read_idx(img_path, 3, fix)
        labels = read_idx(lab_path, 1, fix)
        if len(images) != len(labels):
            raise DataFileError(lab_path, f"{len(labels)} labels for {len(images)} images in "
                                f"{img_path.name}", fix)
        if images.dtype != np.uint8:
            raise DataFileError(img_path, f"images are {images.dtype}, not uint8 (wrong IDX type byte)", fix)
        if labels.max(initial=0) >= len(classes):
            raise DataFileError(lab_path, f"labels out of range 0..{len(classes) - 1}", fix)
        return Dataset(name, split, images[:, None], labels.astype(np.int64), classes,
                       (img_path, lab_path), img_path if split == "test" else None,
                       f"{_TITLES[name]} {split}")
    return loader


def _load_cifar10(root: Path, split: str, format: str | None = None,
                  test_file: str | None = None) -> Dataset:
    if format not in (None, "binary", "python"):
        raise ValueError(f"format must be 'binary' or 'python', not {format!r}")
    if test_file is not None:
        if format == "python":
            raise ValueError("test_file applies to the binary format only")
        test_file = test_file.removesuffix(".gz")
    fix = replace_hint("cifar10", root)
    plans = []  # (format, file names) in order of preference
    if format in (None, "binary"):
        if split == "train":
            plans.append(("binary", [f"data_batch_{i}.bin" for i in range(1, 6)]))
        else:
            plans += [("binary", [t]) for t in ([test_file] if test_file else CIFAR10_TEST_FILES)]
    if format in (None, "python") and test_file is None:
        plans.append(("python", [f"data_batch_{i}" for i in range(1, 6)] if split == "train"
                      else ["test_batch"]))
    also = ""
    if split == "test" and test_file is None and any(
            find_file(d, CIFAR10_LOSSY_TEST_FILE) for d in dataset_dirs("cifar10", root)):
        also = (f"; only the lossy JPEG copy {CIFAR10_LOSSY_TEST_FILE} is there: pass "
                f"test_file='{CIFAR10_LOSSY_TEST_FILE}' to use it knowingly")
    i, paths = _locate("cifar10", root, [names for _, names in plans], fetch_hint("cifar10", root), also)
    if plans[i][0] == "binary":
        images, labels = read_cifar_binary(paths, 1, 0, 10, fix)
    else:
        images, labels = _cifar_from_pickles(paths, "labels", 10, fix)
    title = "CIFAR-10 train"
    if split == "test":
        name = paths[0].name.removesuffix(".gz")
        title = _CIFAR10_TEST_TITLES.get(name, f"CIFAR-10 test ({name})")
    return Dataset("cifar10", split, images, labels, CIFAR10_CLASSES, tuple(paths),
                   paths[0] if split == "test" else None, title)


def _load_cifar100(root: Path, split: str, format: str | None = None,
                   labels: str = "fine") -> Dataset:
    if format not in (None, "binary", "python"):
        raise ValueError(f"format must be 'binary' or 'python', not {format!r}")
    if labels not in ("fine", "coarse"):
        raise ValueError(f"labels must be 'fine' or 'coarse', not {labels!r}")
    classes = CIFAR100_FINE_CLASSES if labels == "fine" else CIFAR100_COARSE_CLASSES
    fix = replace_hint("cifar100", root)
    plans = [(f, [split + ".bin" if f == "binary" else split])
             for f in ("binary", "python") if format in (None, f)]
    i, paths = _locate("cifar100", root, [names for _, names in plans], fetch_hint("cifar100", root))
    if plans[i][0] == "binary":
        images, labs = read_cifar_binary(paths, 2, 0 if labels == "coarse" else 1, len(classes), fix)
    else:
        images, labs = _cifar_from_pickles(paths, labels + "_labels", len(classes), fix)
    return Dataset("cifar100", split, images, labs, classes, tuple(paths),
                   paths[0] if split == "test" else None, f"CIFAR-100 {split} ({labels} labels)")


def _load_svhn(root: Path, split: str) -> Dataset:
    import scipy.io
    fix = replace_hint("svhn", root)
    _, (path,) = _locate("svhn", root, [[f"{split}_32x32.mat"]], fetch_hint("svhn", root))
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
        x, y = mat["X"], mat["y"]
    except Exception as e:  # scipy raises many types on damaged files
        raise DataFileError(path, f"not a readable SVHN .mat file ({type(e).__name__}: {e})", fix) from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3 or y.size != x.shape[3]:
        raise DataFileError(path, f"X is {x.dtype} {x.shape}, y has {y.size} labels: expected uint8 "
                            "(32, 32, 3, N) and N labels", fix)
    labels = y.reshape(-1).astype(np.int64)
    if labels.min(initial=1) < 1 or labels.max(initial=1) > 10:
        raise DataFileError(path, "labels outside 1..10", fix)
    labels[labels == 10] = 0  # SVHN writes digit 0 as label 10
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return Dataset("svhn", split, images, labels, MNIST_CLASSES, (path,),
                   path if split == "test" else None, f"SVHN {split}")


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GRAY_MODES = ("1", "L", "I", "I;16", "F")


def _load_folder(root: Path, split: str, channels: int | None = None) -> Dataset:
    """``<root>/<split>/<class>/*.png|jpg|jpeg``; classes are the sorted sub-folder names."""
    from PIL import Image, UnidentifiedImageError
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, not {channels!r}")
    base = root / split
    layout = "expected one sub-folder of PNG/JPEG images per class"
    if not base.is_dir():
        raise MissingDataError(base, f"no such folder ({layout})",
                               f"create it, or pass the folder holding {split}/ as root / --data-dir")
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for k, c in enumerate(classes):
        found = sorted(p for p in (base / c).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not found:
            raise DataFileError(base / c, "class folder holds no PNG/JPEG images",
                                "add images to it or remove it")
        files += found
        labels += [k] * len(found)
    if not files:
        raise MissingDataError(base, f"no images found ({layout})", "add class folders of images")
    fix = replace_hint("folder", root)
    size, gray = None, True
    for p in files:  # headers only: sizes and modes
        try:
            with Image.open(p) as im:
                s, mode = im.size, im.mode
        except (UnidentifiedImageError, OSError) as e:
            raise DataFileError(p, f"not a readable image ({e})", fix) from None
        if size is None:
            size = s
        elif s != size:
            raise DataFileError(p, f"image is {s[0]}x{s[1]} but {files[0].name} is "
                                f"{size[0]}x{size[1]}", "resize all images to one size")
        gray = gray and mode in _GRAY_MODES
    c = channels or (1 if gray else 3)
    images = np.empty((len(files), c, size[1], size[0]), np.uint8)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                a = np.asarray(im.convert("L" if c == 1 else "RGB"))
        except OSError as e:
            raise DataFileError(p, f"truncated or corrupt image ({e})", fix) from None
        images[i] = a[None] if c == 1 else a.transpose(2, 0, 1)
    return Dataset("folder", split, images, np.asarray(labels, np.int64), tuple(classes),
                   tuple(files), None, f"folder {base}")


_LOADERS = {
    "mnist": _load_idx_dataset("mnist", MNIST_CLASSES),
    "fashion-mnist": _load_idx_dataset("fashion-mnist", FASHION_MNIST_CLASSES),
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "svhn": _load_svhn,
    "folder": _load_folder,
}
