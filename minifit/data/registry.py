"""Where datasets come from and what their files must hash to.

One table, ``SOURCES``, drives ``minifit data fetch`` (URLs, archive checksums), ``minifit
data check`` (checksums of the uncompressed files), the folders the loaders search, and
``data/MANIFEST.txt`` (``manifest_text()``).

Checksums are the publishers' own where they publish one (CIFAR and Fashion-MNIST publish
md5s of their archives; SVHN's md5s are the ones torchvision has verified against the
publisher's files for years). Where no checksum is published the entry is ``None`` and the
note says so: nothing here is guessed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "MINIFIT_DATA"


@dataclass(frozen=True)
class Download:
    """One file to download: tried at each URL in turn, checked against ``digest``
    (``"md5:<hex>"`` or ``"sha256:<hex>"``, or None when none is published)."""
    urls: tuple[str, ...]
    filename: str
    digest: str | None
    unpack: bool = False  # a .tar.gz unpacked into the data root, then deleted


@dataclass(frozen=True)
class Content:
    """A file the loaders read, by its uncompressed name (it may be stored ``.gz``), with the
    checksum of its uncompressed bytes. ``optional`` files are listed only when present."""
    name: str
    digest: str | None
    note: str = ""
    optional: bool = False


@dataclass(frozen=True)
class Source:
    """One downloadable form of a dataset: ``minifit data fetch <key>``.
    ``folder`` is where its files live under the data root."""
    key: str
    dataset: str
    folder: str
    downloads: tuple[Download, ...]
    files: tuple[Content, ...]
    note: str = ""


def _sha(h): return f"sha256:{h}"
def _md5(h): return f"md5:{h}"


_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_source(key, base_urls, gz_md5s, content_sha256s, note, content_note):
    return Source(
        key=key, dataset=key, folder=key, note=note,
        downloads=tuple(Download(tuple(u + n + ".gz" for u in base_urls), n + ".gz", _md5(m))
                        for n, m in zip(_IDX_NAMES, gz_md5s)),
        files=tuple(Content(n, _sha(s), content_note) for n, s in zip(_IDX_NAMES, content_sha256s)))


SOURCES: dict[str, Source] = {s.key: s for s in (
    _idx_source(
        "mnist", _MNIST_URLS,
        ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
         "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
        ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
         "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
         "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
         "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        note="LeCun's page publishes no checksum: the .gz md5s are the ones torchvision uses "
             "for these exact files",
        content_note="sha256 of the original uncompressed file"),
    _idx_source(
        "fashion-mnist", (_FASHION_URL,),
        ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
         "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
        ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
         "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
         "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
         "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        note="the .gz md5s are published in Zalando's README; apt-get install "
             "dataset-fashion-mnist puts the same data in /usr/share/datasets/fashion-mnist",
        content_note="sha256 of the uncompressed file, not published upstream: computed from "
                     "Debian's dataset-fashion-mnist package"),
    Source(
        "cifar10", "cifar10", "cifar-10-batches-bin",
        downloads=(Download((_CIFAR_URL + "cifar-10-binary.tar.gz",), "cifar-10-binary.tar.gz",
                            _md5("c32a1d4ab5d03f1284b67883e8d87530"), unpack=True),),
        files=tuple(Content(f"data_batch_{i}.bin", _sha(h), "sha256 of the original file") for i, h in
                    enumerate(("cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
                               "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
                               "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
                               "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
                               "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add"),
                              start=1))
        + (Content("test_batch.bin", _md5("803d5f7f4d78ea53de84dbe85f74fb6d"),
                   "md5 of the original file"),
           Content("test_batch_first1000.bin",
                   _sha("8314c96d7cd65618193bab23acdd5d4c4af15bf6dd00a1781d55beedf3be1ef5"),
                   "the first 1,000 official test images, bit-exact (shared copy)", optional=True),
           Content("test_batch_from_jpeg_LOSSY.bin",
                   _sha("0ce179d0c0a5220739d6223197952896644ceabb648dacfdebd7f06789af543f"),
                   "all 10,000 test images from a JPEG copy: NOT the original pixels (shared copy)",
                   optional=True)),
        note="the archive md5 is published on the CIFAR page"),
    Source(
        "cifar10-python", "cifar10", "cifar-10-batches-py",
        downloads=(Download((_CIFAR_URL + "cifar-10-python.tar.gz",), "cifar-10-python.tar.gz",
                            _md5("c58f30108f718f92721af3b95e74349a"), unpack=True),),
        files=tuple(Content(n, _md5(h), "md5 of the original file (as torchvision checks it)") for n, h in (
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            ("test_batch", "40351d587109b95175f43aff81a1287e"),
            ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"))),
        note="the archive md5 is published on the CIFAR page; python pickles: load only "
             "archives you trust (minifit unpickles numpy arrays only)"),
    Source(
        "cifar100", "cifar100", "cifar-100-binary",
        downloads=(Download((_CIFAR_URL + "cifar-100-binary.tar.gz",), "cifar-100-binary.tar.gz",
                            _md5("03b5dce01913d631647c71ecec9e9cb8"), unpack=True),),
        files=(Content("train.bin", None, "no published checksum"),
               Content("test.bin", None, "no published checksum")),
        note="the archive md5 is published on the CIFAR page; its files have none"),
    Source(
        "cifar100-python", "cifar100", "cifar-100-python",
        downloads=(Download((_CIFAR_URL + "cifar-100-python.tar.gz",), "cifar-100-python.tar.gz",
                            _md5("eb9058c3a382ffc7106e4002c42a8d85"), unpack=True),),
        files=tuple(Content(n, _md5(h), "md5 of the original file (as torchvision checks it)") for n, h in (
            ("train", "16019d7e3df5f24257cddd939b257f8d"),
            ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
            ("meta", "7973b15100ade9c7d40fb424638fde48"))),
        note="the archive md5 is published on the CIFAR page"),
    Source(
        "svhn", "svhn", "svhn",
        downloads=(Download((_SVHN_URL + "train_32x32.mat",), "train_32x32.mat",
                            _md5("e26dedcc434d2e4c54c9b2d4a06d8373")),
                   Download((_SVHN_URL + "test_32x32.mat",), "test_32x32.mat",
                            _md5("eb5a983be6a315427106f1b164d9cef3"))),
        files=(Content("train_32x32.mat", _md5("e26dedcc434d2e4c54c9b2d4a06d8373"), "md5 (torchvision)"),
               Content("test_32x32.mat", _md5("eb5a983be6a315427106f1b164d9cef3"), "md5 (torchvision)")),
        note="the publisher gives no checksum: these md5s are the ones torchvision checks"),
    Source(
        "svhn-extra", "svhn", "svhn",
        downloads=(Download((_SVHN_URL + "extra_32x32.mat",), "extra_32x32.mat",
                            _md5("a93ce644f1a588dc4d68dda5feec44a7")),),
        files=(Content("extra_32x32.mat", _md5("a93ce644f1a588dc4d68dda5feec44a7"), "md5 (torchvision)"),),
        note="531,131 extra training digits, 1.3 GB"),
)}

DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "folder")


def data_root(root=None) -> Path:
    """The dataset root: ``root`` if given, else ``$MINIFIT_DATA``, else ``./data``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path("data")


def dataset_dirs(dataset: str, root: Path) -> list[Path]:
    """Folders searched for ``dataset``, in order: ``<root>/<dataset>``, the official archives'
    folder names (``<root>/cifar-10-batches-bin`` ...) and those inside ``<root>/<dataset>``."""
    folders = [s.folder for s in SOURCES.values() if s.dataset == dataset and s.folder != dataset]
    dirs = [root / dataset] + [root / f for f in folders] + [root / dataset / f for f in folders]
    return list(dict.fromkeys(dirs))


def fetch_hint(dataset: str, root: Path) -> str:
    """How to get the files of ``dataset`` into ``root``: the fix in every missing-file error."""
    keys = [k for k, s in SOURCES.items() if s.dataset == dataset and not k.endswith("-extra")]
    if not keys:
        return f"put the files in {root / dataset}"
    cmds = " or ".join(f"`minifit data fetch {k} --data-dir {root}`" for k in keys)
    hint = (f"run {cmds}, or put the official files in {root / dataset}/ (or point --data-dir / "
            f"${ENV_VAR} at the folder holding {dataset}/)")
    if dataset == "fashion-mnist":
        hint += "; on Debian, `apt-get install dataset-fashion-mnist` and --data-dir /usr/share/datasets"
    return hint


def replace_hint(dataset: str, root: Path) -> str:
    """The fix for a damaged file of ``dataset``."""
    if dataset == "folder":
        return "delete or re-save that file"
    return f"replace it with an intact copy of the official file: delete it, then {fetch_hint(dataset, root)}"


def manifest_text() -> str:
    """The text of ``data/MANIFEST.txt``: every source, its downloads and expected files."""
    lines = ["# minifit datasets: what `minifit data fetch NAME` downloads and the files the loaders",
             "# read, with checksums (md5:/sha256:) of the UNCOMPRESSED content. Files may be stored",
             "# gzipped (NAME.gz). Generated from minifit/data/registry.py (manifest_text()).",
             "# Load names: " + ", ".join(DATASETS) + " (folder: one sub-folder of PNG/JPEG per class).",
             ""]
    for s in SOURCES.values():
        lines.append(f"[{s.key}]  load name: {s.dataset}  folder: <root>/{s.folder}/")
        if s.note:
            lines.append(f"  note: {s.note}")
        for d in s.downloads:
            lines.append(f"  download {d.filename}  {d.digest or 'no published checksum'}"
                         + ("  (unpacked into <root>)" if d.unpack else ""))
            for u in d.urls:
                lines.append(f"    {u}")
        for c in s.files:
            opt = "  [optional]" if c.optional else ""
            lines.append(f"  file {c.name}  {c.digest or 'none'}{opt}" + (f"  ({c.note})" if c.note else ""))
        lines.append("")
    return "\n".join(lines)
