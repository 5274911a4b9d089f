"""minifit.data.loaders: real data (skipped when absent), every format on small generated
files, root resolution, the train/validation split, and every bad-input case."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from minifit import data
from minifit.data import DataFileError, MissingDataError
from minifit.data.loaders import CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES, CIFAR10_CLASSES

from datafakes import (random_images, write_cifar_bin, write_idx, write_idx_pair,
                       write_pickle)

FASHION = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------ real data

def test_mnist_real(mnist_train, real_root):
    ds = mnist_train
    assert ds.images.shape == (60000, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    assert np.bincount(ds.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918,
                                               6265, 5851, 5949]
    assert ds.images.mean() == pytest.approx(33.3184, abs=1e-4)
    assert ds.classes == tuple("0123456789") and ds.title == "MNIST train"
    assert [p.name for p in ds.source_files] == ["train-images-idx3-ubyte.gz",
                                                 "train-labels-idx1-ubyte.gz"]
    test = data.load("mnist", "test", real_root)
    assert test.images.shape == (10000, 1, 28, 28) and test.test_file.name == "t10k-images-idx3-ubyte.gz"


def test_mnist_validation_split(mnist_train):
    train, val = data.train_val_split(mnist_train)
    assert (len(train), len(val)) == (50000, 10000)
    assert np.shares_memory(val.images, mnist_train.images)  # views, no copy
    assert (val.images == mnist_train.images[50000:]).all() and val.split == "val"
    assert "validation" in val.title


def test_cifar10_train_real(cifar10_train):
    ds, peak = cifar10_train
    assert ds.images.shape == (50000, 3, 32, 32) and ds.images.dtype == np.uint8
    means = ds.images.mean(axis=(0, 2, 3))
    assert means == pytest.approx([125.307, 122.950, 113.865], abs=1e-3)
    assert np.bincount(ds.labels).tolist() == [5000] * 10
    assert ds.classes == CIFAR10_CLASSES and ds.test_file is None
    # memory: one uint8 copy of the set plus one file's buffer, well under two copies
    assert peak < 1.5 * ds.images.nbytes


def test_cifar10_validation_is_last_batch(cifar10_train, real_root):
    ds, _ = cifar10_train
    train, val = data.train_val_split(ds)
    assert (len(train), len(val)) == (40000, 10000)
    raw = np.frombuffer(gzip.open(real_root / "cifar10" / "data_batch_5.bin.gz").read(), np.uint8)
    assert (val.labels == raw.reshape(10000, 3073)[:, 0]).all()


def test_cifar10_test_files_real(real_root):
    _skip_unless(real_root / "cifar10")
    exact = data.load("cifar10", "test", real_root)  # no test_batch.bin: the exact first 1,000
    assert len(exact) == 1000 and exact.test_file.name == "test_batch_first1000.bin.gz"
    assert exact.title == "CIFAR-10 test[:1000]"
    lossy = data.load("cifar10", "test", real_root, test_file="test_batch_from_jpeg_LOSSY.bin.gz")
    assert len(lossy) == 10000 and lossy.title == "CIFAR-10 test (JPEG copy)"
    assert lossy.test_file.name == "test_batch_from_jpeg_LOSSY.bin.gz"
    official = np.loadtxt(real_root / "cifar10" / "test_labels_original_order.txt", dtype=np.int64)
    assert (lossy.labels == official).all() and (exact.labels == official[:1000]).all()
    err = np.abs(lossy.images[:1000].astype(np.int16) - exact.images).mean()
    assert 3 < err < 9  # about 5.8/255: a lossy copy, not the original pixels
    with pytest.raises(MissingDataError, match="test_batch.bin"):
        data.load("cifar10", "test", real_root, test_file="test_batch.bin")


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"{FASHION} absent "
                    "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_real():
    train = data.load("fashion-mnist", "train", FASHION.parent)
    test = data.load("fashion-mnist", "test", FASHION.parent)
    assert len(train) + len(test) == 70000 and train.images.shape[1:] == (1, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert test.classes[0] == "T-shirt/top" and test.classes[9] == "Ankle boot"


def _skip_unless(path):
    if not path.exists():
        pytest.skip(f"{path} absent")


# ------------------------------------------------------------------ generated files

@pytest.mark.parametrize("gz", [False, True])
def test_idx_pair(tmp_path, rng, gz):
    images = random_images(rng, 7, 1, 28, 28)[:, 0]
    labels = rng.integers(0, 10, 7)
    write_idx_pair(tmp_path / "mnist", "t10k", images, labels, gz)
    ds = data.load("mnist", "test", tmp_path)
    assert ds.images.shape == (7, 1, 28, 28) and (ds.images[:, 0] == images).all()
    assert (ds.labels == labels).all() and ds.labels.dtype == np.int64
    assert ds.images.flags.writeable


def test_fashion_mnist_generated(tmp_path, rng):
    write_idx_pair(tmp_path / "fashion-mnist", "train", random_images(rng, 3, 1, 28, 28)[:, 0],
                   np.array([0, 9, 4]), gz=True)
    ds = data.load("fashion-mnist", "train", tmp_path)
    assert [ds.classes[k] for k in ds.labels] == ["T-shirt/top", "Ankle boot", "Coat"]


def _cifar10_bin(folder, rng, n=4, gz=False, test_name="test_batch.bin"):
    ext = ".gz" if gz else ""
    batches = []
    for i in range(1, 6):
        imgs, labs = random_images(rng, n), rng.integers(0, 10, n)
        write_cifar_bin(folder / f"data_batch_{i}.bin{ext}", imgs, labs)
        batches.append((imgs, labs))
    test = random_images(rng, n), rng.integers(0, 10, n)
    write_cifar_bin(folder / (test_name + ext), *test)
    return batches, test


@pytest.mark.parametrize("gz", [False, True])
def test_cifar10_binary_official_folder(tmp_path, rng, gz):
    batches, test = _cifar10_bin(tmp_path / "cifar-10-batches-bin", rng, gz=gz)
    ds = data.load("cifar10", "train", tmp_path)
    assert ds.images.shape == (20, 3, 32, 32)
    assert (ds.images == np.concatenate([b[0] for b in batches])).all()
    assert (ds.labels == np.concatenate([b[1] for b in batches])).all()
    t = data.load("cifar10", "test", tmp_path)
    assert (t.images == test[0]).all() and t.title == "CIFAR-10 test"
    assert t.test_file == tmp_path / "cifar-10-batches-bin" / ("test_batch.bin" + (".gz" if gz else ""))


def test_cifar10_prefers_exact_full_test_file(tmp_path, rng):
    folder = tmp_path / "cifar10"
    _cifar10_bin(folder, rng, test_name="test_batch_first1000.bin")
    write_cifar_bin(folder / "test_batch.bin", random_images(rng, 9), rng.integers(0, 10, 9))
    assert len(data.load("cifar10", "test", tmp_path)) == 9
    chosen = data.load("cifar10", "test", tmp_path, test_file="test_batch_first1000.bin")
    assert len(chosen) == 4 and chosen.title == "CIFAR-10 test[:1000]"


def test_cifar10_never_silently_lossy(tmp_path, rng):
    _cifar10_bin(tmp_path / "cifar10", rng, test_name="test_batch_from_jpeg_LOSSY.bin")
    with pytest.raises(MissingDataError, match="test_file='test_batch_from_jpeg_LOSSY.bin'"):
        data.load("cifar10", "test", tmp_path)


def test_cifar10_python(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-py"
    want = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        imgs, labs = random_images(rng, 3), rng.integers(0, 10, 3).tolist()
        write_pickle(folder / name, {b"data": imgs.reshape(3, 3072), b"labels": labs,
                                     b"batch_label": b"x", b"filenames": [b"a", b"b", b"c"]})
        want.append((imgs, labs))
    ds = data.load("cifar10", "train", tmp_path)
    assert (ds.images == np.concatenate([w[0] for w in want[:5]])).all()
    assert ds.labels.tolist() == sum((w[1] for w in want[:5]), [])
    t = data.load("cifar10", "test", tmp_path, format="python")
    assert (t.images == want[5][0]).all() and t.test_file.name == "test_batch"


def test_pickle_with_code_is_refused(tmp_path):
    import os
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    write_pickle(folder / "test_batch", {b"data": Evil(), b"labels": []})
    with pytest.raises(DataFileError, match="refusing to unpickle"):
        data.load("cifar10", "test", tmp_path)


@pytest.mark.parametrize("labels", ["fine", "coarse"])
def test_cifar100_binary(tmp_path, rng, labels):
    imgs, coarse, fine = random_images(rng, 6), rng.integers(0, 20, 6), rng.integers(0, 100, 6)
    write_cifar_bin(tmp_path / "cifar-100-binary" / "train.bin", imgs, coarse, fine)
    ds = data.load("cifar100", "train", tmp_path, labels=labels)
    assert (ds.images == imgs).all()
    assert (ds.labels == (fine if labels == "fine" else coarse)).all()
    assert ds.classes == (CIFAR100_FINE_CLASSES if labels == "fine" else CIFAR100_COARSE_CLASSES)
    assert len(CIFAR100_FINE_CLASSES) == 100 and len(CIFAR100_COARSE_CLASSES) == 20


def test_cifar100_python(tmp_path, rng):
    imgs, coarse, fine = random_images(rng, 5), rng.integers(0, 20, 5), rng.integers(0, 100, 5)
    write_pickle(tmp_path / "cifar100" / "test", {b"data": imgs.reshape(5, -1),
                                                  b"fine_labels": fine.tolist(),
                                                  b"coarse_labels": coarse.tolist()})
    ds = data.load("cifar100", "test", tmp_path, labels="coarse")
    assert (ds.images == imgs).all() and (ds.labels == coarse).all()
    assert data.load("cifar100", "test", tmp_path).labels.tolist() == fine.tolist()


def test_svhn_mat(tmp_path, rng):
    imgs = random_images(rng, 5)
    y = np.array([[10], [1], [2], [10], [9]], np.uint8)
    (tmp_path / "svhn").mkdir()
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": imgs.transpose(2, 3, 1, 0), "y": y})
    ds = data.load("svhn", "test", tmp_path)
    assert ds.images.shape == (5, 3, 32, 32) and (ds.images == imgs).all()
    assert ds.labels.tolist() == [0, 1, 2, 0, 9]  # 10 means digit 0


def test_image_folder(tmp_path, rng):
    base = tmp_path / "train"
    rgb = random_images(rng, 3, 3, 8, 6)
    for i, name in enumerate(["zebra", "ant", "ant"]):
        (base / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[i].transpose(1, 2, 0)).save(base / name / f"{i}.png")
    smooth = np.broadcast_to(np.arange(0, 240, 30, dtype=np.uint8)[None, :, None], (3, 8, 6))
    Image.fromarray(smooth.transpose(1, 2, 0)).save(base / "zebra" / "x.jpg", quality=95)
    (base / "zebra" / "notes.txt").write_text("ignored")
    ds = data.load("folder", "train", tmp_path)
    assert ds.classes == ("ant", "zebra")  # sorted
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.images.shape == (4, 3, 8, 6)
    assert (ds.images[0] == rgb[1]).all() and (ds.images[2] == rgb[0]).all()
    assert np.abs(ds.images[3].astype(int) - smooth).mean() < 8  # the JPEG, lossy


def test_image_folder_grayscale(tmp_path, rng):
    for k in range(2):
        (tmp_path / "test" / str(k)).mkdir(parents=True)
        Image.fromarray(random_images(rng, 1, 1, 5, 5)[0, 0]).save(tmp_path / "test" / str(k) / "a.png")
    ds = data.load("folder", "test", tmp_path)
    assert ds.images.shape == (2, 1, 5, 5)
    assert data.load("folder", "test", tmp_path, channels=3).images.shape == (2, 3, 5, 5)


def test_root_resolution(tmp_path, rng, monkeypatch):
    for where in ("explicit", "env", "cwd"):
        write_idx_pair(tmp_path / where / "data" / "mnist", "t10k",
                       random_images(rng, {"explicit": 1, "env": 2, "cwd": 3}[where], 1, 4, 4)[:, 0],
                       np.zeros({"explicit": 1, "env": 2, "cwd": 3}[where], np.uint8), gz=False)
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("MINIFIT_DATA", raising=False)
    assert len(data.load("mnist", "test")) == 3  # ./data
    monkeypatch.setenv("MINIFIT_DATA", str(tmp_path / "env" / "data"))
    assert len(data.load("mnist", "test")) == 2
    assert len(data.load("mnist", "test", tmp_path / "explicit" / "data")) == 1


# ------------------------------------------------------------------ bad input

def _mnist(tmp_path, rng, gz=True):
    write_idx_pair(tmp_path / "mnist", "t10k", random_images(rng, 10, 1, 28, 28)[:, 0],
                   rng.integers(0, 10, 10), gz=gz)
    return tmp_path / "mnist" / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))


def test_missing_files_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        data.load("mnist", "train", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "mnist") in msg and "minifit data fetch mnist" in msg
    assert isinstance(e.value, DataFileError)  # also a ValueError: one type for bad files


def test_missing_one_of_a_pair(tmp_path, rng):
    path = _mnist(tmp_path, rng)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MissingDataError, match="t10k-labels-idx1-ubyte"):
        data.load("mnist", "test", tmp_path)
    assert path.exists()


def test_truncated_gzip(tmp_path, rng):
    path = _mnist(tmp_path, rng)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFileError, match="truncated or corrupt") as e:
        data.load("mnist", "test", tmp_path)
    assert str(path) in str(e.value) and "Fix:" in str(e.value)


def test_corrupt_gzip(tmp_path, rng):
    path = _mnist(tmp_path, rng)
    raw = bytearray(path.read_bytes())
    raw[20:60] = bytes(40)  # damage the deflate stream
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match=str(path.name)):
        data.load("mnist", "test", tmp_path)


def test_not_gzip_at_all(tmp_path, rng):
    path = _mnist(tmp_path, rng)
    path.write_bytes(b"plain text, not gzip" * 10)
    with pytest.raises(DataFileError, match="not a gzip file"):
        data.load("mnist", "test", tmp_path)


def test_wrong_idx_magic(tmp_path, rng):
    path = _mnist(tmp_path, rng, gz=False)
    write_idx(path, rng.integers(0, 10, 10).astype(np.uint8))  # a labels file in its place
    with pytest.raises(DataFileError, match="wrong IDX magic number 0x00000801 .expected 0x00000803"):
        data.load("mnist", "test", tmp_path)


def test_idx_truncated_payload(tmp_path, rng):
    path = _mnist(tmp_path, rng, gz=False)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataFileError, match="header says shape"):
        data.load("mnist", "test", tmp_path)


def test_idx_count_mismatch(tmp_path, rng):
    _mnist(tmp_path, rng, gz=False)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", np.zeros(9, np.uint8))
    with pytest.raises(DataFileError, match="9 labels for 10 images"):
        data.load("mnist", "test", tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_record_size_does_not_divide(tmp_path, rng, gz):
    _cifar10_bin(tmp_path / "cifar10", rng, gz=gz)
    path = tmp_path / "cifar10" / ("data_batch_3.bin" + (".gz" if gz else ""))
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    write = (lambda b: path.write_bytes(gzip.compress(b))) if gz else path.write_bytes
    write(raw[:-100])
    with pytest.raises(DataFileError, match="not a whole number of 3073-byte records") as e:
        data.load("cifar10", "train", tmp_path)
    assert "data_batch_3.bin" in str(e.value)


def test_cifar100_file_read_as_cifar10(tmp_path, rng):
    # 3074-byte CIFAR-100 records whose size happens to divide by 3073: caught by the labels
    imgs = random_images(rng, 3073)
    write_cifar_bin(tmp_path / "cifar10" / "test_batch.bin", imgs, np.full(3073, 50), np.full(3073, 99))
    with pytest.raises(DataFileError, match="out of range"):
        data.load("cifar10", "test", tmp_path)


def test_corrupt_pickle(tmp_path):
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"\x80\x02}q\x00(U\x04data")
    with pytest.raises(DataFileError, match="not a readable CIFAR python batch"):
        data.load("cifar100", "train", tmp_path)


def test_corrupt_mat(tmp_path):
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(50))
    with pytest.raises(DataFileError, match="train_32x32.mat"):
        data.load("svhn", "train", tmp_path)


def test_folder_without_images(tmp_path):
    (tmp_path / "train" / "cats").mkdir(parents=True)
    (tmp_path / "train" / "cats" / "readme.txt").write_text("no images here")
    with pytest.raises(DataFileError, match="holds no PNG/JPEG images") as e:
        data.load("folder", "train", tmp_path)
    assert "cats" in str(e.value)
    (tmp_path / "train" / "cats" / "readme.txt").unlink()
    (tmp_path / "train" / "cats").rmdir()
    with pytest.raises(FileNotFoundError, match="no images found"):
        data.load("folder", "train", tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        data.load("folder", "test", tmp_path)


def test_folder_damaged_or_mixed_images(tmp_path, rng):
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.fromarray(random_images(rng, 1, 1, 4, 4)[0, 0]).save(tmp_path / "train" / "a" / "1.png")
    Image.fromarray(random_images(rng, 1, 1, 5, 4)[0, 0]).save(tmp_path / "train" / "a" / "2.png")
    with pytest.raises(DataFileError, match="2.png: image is 4x5"):
        data.load("folder", "train", tmp_path)
    (tmp_path / "train" / "a" / "2.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataFileError, match="2.png: not a readable image"):
        data.load("folder", "train", tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        data.load("imagenet", "train")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        data.load("mnist", "valid")
