"""Download the official files of a dataset (``minifit data fetch``) and check what is present
(``minifit data check``).

A download goes to ``<file>.part`` and resumes it with an HTTP Range request after an
interruption (within a run, up to ``attempts`` tries, and across runs); the finished file
is checked against the published checksum, archives are unpacked into a temporary folder,
the unpacked files checked against theirs, and only then moved into place: a failed fetch
leaves no partial dataset behind (only the ``.part`` file of an interrupted download).
"""
from __future__ import annotations

import hashlib
import http.client
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import DataFileError
from .loaders import content_digest, find_file
from .registry import SOURCES, Content, Source, data_root, dataset_dirs
from ..errors import UnknownNameError, UserError

DEFAULT_TIMEOUT = 10.0  # seconds to connect / between bytes: fail fast when offline
_CHUNK = 1 << 16


class DownloadError(UserError, ConnectionError):
    """No URL of a file could be reached. The message names the URLs tried and where to put
    the file by hand."""


def digest_matches(path: Path, digest: str | None, uncompressed: bool) -> bool | None:
    """Whether ``path`` (its uncompressed content if ``uncompressed``) has ``digest``
    ("md5:<hex>" / "sha256:<hex>"); None when there is no digest to compare with."""
    if digest is None:
        return None
    algo, want = digest.split(":")
    if uncompressed:
        got = content_digest(path, algo)
    else:
        h = hashlib.new(algo)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        got = h.hexdigest()
    return got == want


class _Progress:
    """One updating line on stderr: name, percent, MB done / total, rate."""

    def __init__(self, label: str, total: int | None, done: int, stream=None):
        self.label, self.total, self.done, self.start_done = label, total, done, done
        self.stream = stream or sys.stderr
        self.t0 = self.last = time.monotonic()

    def update(self, n: int, final: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if not final and now - self.last < 0.1:
            return
        self.last = now
        rate = (self.done - self.start_done) / max(now - self.t0, 1e-6) / 1e6
        if self.total:
            pct = 100 * self.done / self.total
            bar = "#" * int(pct / 5)
            text = f"{self.label} [{bar:<20}] {pct:5.1f}% {self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
        else:
            text = f"{self.label} {self.done / 1e6:.1f} MB"
        self.stream.write(f"\r{text} {rate:.1f} MB/s" + ("\n" if final else ""))
        self.stream.flush()


def download(urls: tuple[str, ...], dest: Path, *, timeout: float = DEFAULT_TIMEOUT,
             attempts: int = 3, progress: bool = True, manual_hint: str = "") -> Path:
    """Download ``dest`` from the first reachable URL, resuming ``dest.part``. Returns
    ``dest``. Raises DownloadError when no URL can be reached (no retry: offline fails fast)."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        try:
            _download_one(url, part, timeout, attempts, progress)
        except _Unreachable as e:
            failures.append(f"{url} ({e})")
            continue
        part.replace(dest)
        return dest
    raise DownloadError(f"cannot download {dest.name}: tried " + "; ".join(failures)
                        + (f". {manual_hint}" if manual_hint else ""))


class _Unreachable(Exception):
    pass


def _download_one(url: str, part: Path, timeout: float, attempts: int, progress: bool) -> None:
    for attempt in range(attempts):
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "minifit-data-fetch"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # asked past the end: start over
                part.unlink()
                continue
            raise _Unreachable(f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:  # refused, no DNS, timeout: offline
            raise _Unreachable(getattr(e, "reason", e)) from None
        with resp:
            if have and resp.status != 206:  # server ignored the Range: start over
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            bar = _Progress(part.name.removesuffix(".part"), total, have) if progress else None
            try:
                with open(part, "ab" if have else "wb") as f:
                    while True:
                        block = resp.read(_CHUNK)
                        if not block:
                            break
                        f.write(block)
                        if bar:
                            bar.update(len(block))
            except (http.client.HTTPException, OSError, socket.timeout):
                pass  # connection dropped: the size check below decides
            if bar:
                bar.update(0, final=True)
        size = part.stat().st_size
        if total is None or size >= total:
            return
        if attempt + 1 < attempts and progress:
            sys.stderr.write(f"connection dropped at {size}/{total} B; resuming\n")
    raise _Unreachable(f"connection dropped {attempts} times; run again to resume from {part}")


def _manual_hint(source: Source, root: Path) -> str:
    names = ", ".join(d.filename for d in source.downloads)
    where = root if all(d.unpack for d in source.downloads) else root / source.folder
    after = " (then unpack it there)" if any(d.unpack for d in source.downloads) else ""
    return (f"If this machine is offline, download {names} elsewhere and put it in {where}{after}; "
            f"then `minifit data check {source.key} --data-dir {root}`")


def _check_files(source: Source, folder: Path, fix: str) -> None:
    """Raise DataFileError if a file of ``source`` in ``folder`` is missing or mismatches."""
    for c in source.files:
        path = find_file(folder, c.name)
        if path is None:
            if not c.optional:
                raise DataFileError(folder / c.name, "missing after unpacking", fix)
        elif digest_matches(path, c.digest, uncompressed=True) is False:
            raise DataFileError(path, f"content does not match the published {c.digest}", fix)


def present(source: Source, root: Path) -> bool:
    """Whether every required file of ``source`` is in ``<root>/<folder>`` with a matching checksum."""
    folder = root / source.folder
    try:
        _check_files(source, folder, "")
    except (DataFileError, OSError, EOFError, zlib.error):
        return False
    return True


def fetch(key: str, root=None, *, timeout: float = DEFAULT_TIMEOUT, progress: bool = True,
          sources: dict[str, Source] | None = None) -> Path:
    """Download, verify and unpack source ``key`` (a ``SOURCES`` key, e.g. 'cifar10') into
    the data root; returns the folder holding its files. Skips files already present."""
    sources = SOURCES if sources is None else sources
    if key not in sources:
        raise UnknownNameError(f"unknown dataset {key!r}: choose one of {', '.join(sources)}")
    source, root = sources[key], data_root(root)
    folder = root / source.folder
    if present(source, root):
        if progress:
            print(f"{key}: already present in {folder}", file=sys.stderr)
        return folder
    root.mkdir(parents=True, exist_ok=True)
    hint = _manual_hint(source, root)
    for d in source.downloads:
        dest = (root if d.unpack else folder) / d.filename
        if not d.unpack and dest.exists() and _content_ok(source, dest, None):
            continue
        fix = (f"the download is corrupt or the file changed upstream: run `minifit data fetch "
               f"{key}` again, or download {d.urls[0]} by hand, check its {(d.digest or 'md5:').split(':')[0]} "
               f"and put it in {dest.parent}")
        # an archive verified in an earlier run (that failed later) is unpacked again
        if not (d.unpack and dest.exists() and digest_matches(dest, d.digest, uncompressed=False)):
            download(d.urls, dest, timeout=timeout, progress=progress, manual_hint=hint)
            if digest_matches(dest, d.digest, uncompressed=False) is False:
                dest.unlink()
                raise DataFileError(dest, f"downloaded from {d.urls[0]} but does not match the "
                                    f"published {d.digest}", fix)
        if d.unpack:
            _unpack(dest, root, source, fix)
        elif not _content_ok(source, dest, d.digest):
            dest.unlink()
            raise DataFileError(dest, "content does not match the published checksum", fix)
    return folder


def _content_ok(source: Source, path: Path, verified: str | None) -> bool:
    """Whether the uncompressed content of downloaded ``path`` matches ``source``'s checksum
    (not hashed again when it is the ``verified`` download digest)."""
    name = path.name.removesuffix(".gz")
    for c in source.files:
        if c.name == name and c.digest != verified:
            try:
                return digest_matches(path, c.digest, uncompressed=True) is not False
            except (OSError, EOFError, zlib.error):
                return False
    return True


def _unpack(archive: Path, root: Path, source: Source, fix: str) -> None:
    """Unpack ``archive`` (tar, any compression) into a temporary folder in ``root``, check
    ``source``'s files, then move its folder into place and delete the archive."""
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=root) as tmp:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataFileError(archive, f"cannot unpack ({e})", fix) from None
        unpacked = Path(tmp) / source.folder
        if not unpacked.is_dir():
            raise DataFileError(archive, f"archive has no {source.folder}/ folder", fix)
        _check_files(source, unpacked, fix)
        target = root / source.folder
        if target.exists():
            target.rename(Path(tmp) / ".old")  # removed with tmp
        unpacked.rename(target)
    archive.unlink()


@dataclass(frozen=True)
class CheckRow:
    """One line of ``minifit data check``."""
    source: str
    file: str
    status: str  # ok | MISMATCH | CORRUPT | missing | present (no published checksum)
    path: Path | None
    note: str
    optional: bool = False  # a known non-official copy (e.g. a partial CIFAR-10 test set)


def check(root=None, name: str | None = None, sources: dict[str, Source] | None = None) -> list[CheckRow]:
    """Look for every file of every source (or of dataset / source ``name``) in the folders
    the loaders search, and compare the checksum of its uncompressed content."""
    sources = SOURCES if sources is None else sources
    root = data_root(root)
    chosen = [s for s in sources.values() if name in (None, s.key, s.dataset)]
    if not chosen:
        names = sorted(set(sources) | {s.dataset for s in sources.values()})
        raise UnknownNameError(f"unknown dataset {name!r}: choose one of {', '.join(names)}")
    rows = []
    for s in chosen:
        dirs = [root / s.folder] + [d for d in dataset_dirs(s.dataset, root) if d != root / s.folder]
        for c in s.files:
            path = next((p for p in (find_file(d, c.name) for d in dirs) if p), None)
            if path is None:
                if not c.optional:
                    rows.append(CheckRow(s.key, c.name, "missing", None, c.note))
                continue
            rows.append(CheckRow(s.key, c.name, _status(path, c), path, c.note, c.optional))
    return rows


def _status(path: Path, c: Content) -> str:
    try:
        ok = digest_matches(path, c.digest, uncompressed=True)
    except (OSError, EOFError, zlib.error) as e:
        return f"CORRUPT ({type(e).__name__})"
    return {True: "ok", False: "MISMATCH", None: "present (no published checksum)"}[ok]
