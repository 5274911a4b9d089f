"""``minifit data check`` and ``minifit data`` wiring, and data/MANIFEST.txt."""
import gzip
import hashlib
from pathlib import Path

import pytest

from minifit.cli import main
from minifit.data import registry
from minifit.data.fetch import check
from minifit.data.registry import Content, Source

REPO = Path(__file__).resolve().parents[2]


def test_check_real_mnist(real_root, capsys):
    if not (real_root / "mnist").is_dir():
        pytest.skip(f"{real_root / 'mnist'} absent")
    assert main(["data", "check", "mnist", "--data-dir", str(real_root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"dataset root: {real_root}" and lines[1].split()[:3] == ["SOURCE", "FILE", "STATUS"]
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == 4 and all(r[0] == "mnist" and r[2] == "ok" for r in rows)


def test_check_statuses(tmp_path, monkeypatch, capsys):
    good, other = b"good bytes", b"other"
    folder = tmp_path / "cifar10"
    folder.mkdir()
    (folder / "a.bin.gz").write_bytes(gzip.compress(good))       # ok: compared uncompressed
    (folder / "b.bin").write_bytes(other)                          # MISMATCH
    (folder / "c.bin.gz").write_bytes(gzip.compress(good)[:-12])   # CORRUPT (truncated)
    (folder / "e.bin").write_bytes(good)                           # no published checksum
    sha = "sha256:" + hashlib.sha256(good).hexdigest()
    src = Source("tiny", "cifar10", "cifar-10-batches-bin", downloads=(),
                 files=(Content("a.bin", sha), Content("b.bin", sha), Content("c.bin", sha),
                        Content("d.bin", sha), Content("e.bin", None),
                        Content("f.bin", sha, optional=True)))
    rows = {r.file: r.status for r in check(tmp_path, "tiny", sources={"tiny": src})}
    assert rows == {"a.bin": "ok", "b.bin": "MISMATCH", "c.bin": "CORRUPT (EOFError)",
                    "d.bin": "missing", "e.bin": "present (no published checksum)"}
    monkeypatch.setitem(registry.SOURCES, "tiny", src)
    assert main(["data", "check", "tiny", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "MISMATCH" in out.out and "do not match" in out.err


def test_check_unknown_name(tmp_path, capsys):
    assert main(["data", "check", "imagenet", "--data-dir", str(tmp_path)]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err


def test_data_command_registered(capsys):
    assert main(["data"]) == 0
    assert "fetch" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["data", "fetch", "imagenet"])  # argparse rejects unknown names


def test_manifest_is_current():
    assert (REPO / "data" / "MANIFEST.txt").read_text() == registry.manifest_text(), \
        "regenerate: python -c 'from minifit.data.registry import manifest_text; " \
        "open(\"data/MANIFEST.txt\", \"w\").write(manifest_text())'"
