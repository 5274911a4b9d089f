"""minifit.data.fetch against a local HTTP server on 127.0.0.1: good and bad checksums,
an interrupted download resumed with a Range request, offline failure."""
import gzip
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import time

import numpy as np
import pytest

from minifit import data
from minifit.cli import main
from minifit.data import DataFileError
from minifit.data import registry
from minifit.data.fetch import DownloadError, fetch
from minifit.data.registry import Content, Download, Source

from datafakes import cifar_records, idx_bytes, random_images


class FileServer:
    """Serves ``files`` (name -> bytes). Honours Range requests unless told not to; drops
    the connection after ``drop_after`` bytes on the first ``drops`` requests."""

    def __init__(self, files, drop_after=None, drops=1, honor_range=True):
        self.files, self.drop_after, self.drops, self.honor_range = files, drop_after, drops, honor_range
        self.requests = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                owner.requests.append((name, rng))
                if name not in owner.files:
                    self.send_error(404)
                    return
                body, start = owner.files[name], 0
                if rng and owner.honor_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if owner.drop_after is not None and owner.drops > 0:
                    owner.drops -= 1
                    payload = payload[:owner.drop_after]
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(files, **kw):
        servers.append(FileServer(files, **kw))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def _sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def tiny_cifar_archive(rng, n=3):
    """A cifar-10-binary.tar.gz look-alike: cifar-10-batches-bin/ with 5 train batches and a
    test batch of ``n`` records each. Returns (archive bytes, {file name: content})."""
    files = {f"data_batch_{i}.bin": cifar_records(random_images(rng, n), rng.integers(0, 10, n))
             for i in range(1, 6)}
    files["test_batch.bin"] = cifar_records(random_images(rng, n), rng.integers(0, 10, n))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue(), files


def tiny_source(url, archive, files, archive_digest=None, content_digest=None):
    return Source("tiny", "cifar10", "cifar-10-batches-bin",
                  downloads=(Download((url,), "tiny.tar.gz", archive_digest or _sha(archive), unpack=True),),
                  files=tuple(Content(n, content_digest or _sha(c)) for n, c in files.items()))


def test_fetch_good_archive_then_load(serve, tmp_path, rng, capsys):
    archive, files = tiny_cifar_archive(rng)
    srv = serve({"a.tgz": archive})
    src = tiny_source(srv.url("a.tgz"), archive, files)
    folder = fetch("tiny", tmp_path, sources={"tiny": src})
    assert folder == tmp_path / "cifar-10-batches-bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-bin"]  # archive, temp gone
    assert "100.0%" in capsys.readouterr().err  # the progress line
    ds = data.load("cifar10", "train", tmp_path)
    assert len(ds) == 15 and ds.source_files[0].parent == folder
    fetch("tiny", tmp_path, sources={"tiny": src})  # already present: no second download
    assert len(srv.requests) == 1 and "already present" in capsys.readouterr().err


def test_fetch_bad_archive_checksum_leaves_nothing(serve, tmp_path, rng):
    archive, files = tiny_cifar_archive(rng)
    srv = serve({"a.tgz": archive})
    src = tiny_source(srv.url("a.tgz"), archive, files, archive_digest="md5:" + "0" * 32)
    with pytest.raises(DataFileError, match="does not match the published md5:0000") as e:
        fetch("tiny", tmp_path, sources={"tiny": src}, progress=False)
    assert srv.url("a.tgz") in str(e.value) and "Fix:" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_fetch_bad_content_checksum_moves_nothing_into_place(serve, tmp_path, rng):
    archive, files = tiny_cifar_archive(rng)
    srv = serve({"a.tgz": archive})
    src = tiny_source(srv.url("a.tgz"), archive, files, content_digest="sha256:" + "1" * 64)
    with pytest.raises(DataFileError, match="data_batch_1.bin: content does not match"):
        fetch("tiny", tmp_path, sources={"tiny": src}, progress=False)
    assert not (tmp_path / "cifar-10-batches-bin").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".unpack")]


def test_interrupted_download_resumes_with_range(serve, tmp_path, rng, capsys):
    archive, files = tiny_cifar_archive(rng)
    srv = serve({"a.tgz": archive}, drop_after=1000)
    fetch("tiny", tmp_path, sources={"tiny": tiny_source(srv.url("a.tgz"), archive, files)})
    assert srv.requests == [("a.tgz", None), ("a.tgz", "bytes=1000-")]
    assert "resuming" in capsys.readouterr().err
    assert len(data.load("cifar10", "test", tmp_path)) == 3


def test_partial_file_resumes_in_a_later_run(serve, tmp_path, rng):
    archive, files = tiny_cifar_archive(rng)
    srv = serve({"a.tgz": archive}, drop_after=700, drops=3)
    src = tiny_source(srv.url("a.tgz"), archive, files)
    with pytest.raises(DownloadError, match="run again to resume"):
        fetch("tiny", tmp_path, sources={"tiny": src}, progress=False)  # 3 drops: 2100 bytes
    part = tmp_path / "tiny.tar.gz.part"
    assert part.stat().st_size == 2100
    fetch("tiny", tmp_path, sources={"tiny": src}, progress=False)
    assert srv.requests[-1] == ("a.tgz", "bytes=2100-") and not part.exists()
    assert (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").read_bytes() == files["test_batch.bin"]


def test_server_ignoring_range_restarts_cleanly(serve, tmp_path, rng):
    archive, files = tiny_cifar_archive(rng)
    srv = serve({"a.tgz": archive}, drop_after=500, honor_range=False)
    fetch("tiny", tmp_path, sources={"tiny": tiny_source(srv.url("a.tgz"), archive, files)},
          progress=False)
    assert srv.requests[1] == ("a.tgz", "bytes=500-")  # asked, got 200: started over
    assert (tmp_path / "cifar-10-batches-bin" / "data_batch_5.bin").read_bytes() == files["data_batch_5.bin"]


def test_plain_file_checked_by_uncompressed_sha256(serve, tmp_path, rng):
    content = idx_bytes(rng.integers(0, 10, 20).astype(np.uint8))
    gz = gzip.compress(content)
    srv = serve({"l.gz": gz, "bad.gz": gzip.compress(content + b"x")})

    def src(name):
        return Source("tiny", "mnist", "mnist",
                      downloads=(Download((srv.url(name),), "t10k-labels-idx1-ubyte.gz", None),),
                      files=(Content("t10k-labels-idx1-ubyte", _sha(content)),))
    fetch("tiny", tmp_path, sources={"tiny": src("l.gz")}, progress=False)
    assert (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes() == gz
    with pytest.raises(DataFileError, match="content does not match"):
        fetch("tiny", tmp_path / "other", sources={"tiny": src("bad.gz")}, progress=False)
    assert not (tmp_path / "other" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_offline_fails_fast_with_url_and_manual_steps(tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/cifar-10-binary.tar.gz"
    src = Source("tiny", "cifar10", "cifar-10-batches-bin",
                 downloads=(Download((url,), "cifar-10-binary.tar.gz", None, unpack=True),),
                 files=(Content("data_batch_1.bin", None),))
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as e:
        fetch("tiny", tmp_path, sources={"tiny": src}, timeout=2)
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert url in msg and f"put it in {tmp_path}" in msg and "offline" in msg
    # through the CLI: one line, exit status 2
    monkeypatch.setitem(registry.SOURCES, "tiny", src)
    assert main(["data", "fetch", "tiny", "--data-dir", str(tmp_path), "--timeout", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minifit: error: cannot download") and url in err[0]


def test_cli_fetch(serve, tmp_path, rng, monkeypatch, capsys):
    archive, files = tiny_cifar_archive(rng)
    srv = serve({"a.tgz": archive})
    monkeypatch.setitem(registry.SOURCES, "tiny", tiny_source(srv.url("a.tgz"), archive, files))
    assert main(["data", "fetch", "tiny", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "ready in" in out.out and "\r" in out.err
    assert (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").exists()
