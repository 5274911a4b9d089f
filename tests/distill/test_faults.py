"""The fault suite: a small run (teacher, then a FitNets student: hint stage and KD stage)
killed with SIGKILL and stopped with SIGTERM at random steps, resumed each time, ends
bitwise equal to an uninterrupted run; corrupt and truncated checkpoints and data files,
a full disk and an unwritable folder each give one line naming the file, never a traceback."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from faultkit import write_experiment, write_mnist
from minifit import checkpoint

# the same kernel thread count in every process: results depend on it (README)
ENV = {**os.environ, "MINIFIT_NUM_THREADS": "2"}


def start(cfg, out, root, resume=False):
    cmd = [sys.executable, "-m", "minifit.cli", "run", str(cfg), "--out", str(out), "--data-dir", str(root),
           "--no-progress"] + (["--resume"] if resume else [])
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def arrays(out: Path) -> dict:
    """Every array of every checkpoint a run leaves (models, optimizers, batch orders)."""
    got = {}
    for f in sorted(out.rglob("*.npz")):
        if f.name.endswith(".prev.npz") or f.name == "preprocess.npz" or f.name.startswith(".tmp-"):
            continue
        ck = checkpoint.read(f)
        for group in ("model", "optim"):
            for k, v in ck[group].items():
                got[f"{f.relative_to(out)}:{group}/{k}"] = v
    return got


def metrics(out: Path) -> list:
    return [{k: r[k] for k in ("label", "test_err", "valid_err", "best_epoch", "curve")}
            for r in json.loads((out / "results.json").read_text())["results"]]


def where(out: Path) -> str:
    """The newest checkpoint's position, for the report of a kill."""
    files = sorted(out.rglob("last.npz"), key=lambda f: f.stat().st_mtime)
    if not files:
        return "before the first checkpoint"
    meta = checkpoint.read_latest(files[-1], log=lambda s: None)["meta"]
    pos = meta.get("position") or {}
    return (f"{files[-1].parent.relative_to(out)} epoch {pos.get('epoch', meta['epoch'])} "
            f"batch {pos.get('batch', 'end')}")


def wait_steps(p, out: Path, k: int, since_ns: int) -> bool:
    """Wait until process p has written k checkpoints (steps) under out; False if it ended."""
    seen = set()
    while p.poll() is None:
        for f in out.rglob("last.npz"):
            try:
                m = f.stat().st_mtime_ns
            except FileNotFoundError:   # between the two renames of a write
                continue
            if m > since_ns:
                seen.add((f, m))
        if len(seen) >= k:
            return True
        time.sleep(0.005)
    return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    root = write_mnist(folder / "data")
    cfg = write_experiment(folder / "tiny.toml")
    t0 = time.monotonic()
    p = start(cfg, folder / "ref", root)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    return folder, root, cfg, time.monotonic() - t0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_killed_and_resumed_runs_end_bitwise_equal(reference, sig, capsys):
    """Three stops at random steps of one run, each followed by --resume: the final
    weights, optimizer states and metrics equal the uninterrupted run's, bit for bit."""
    folder, root, cfg, _ = reference
    out = folder / f"chain-{sig.name}"
    rng = random.Random(16 + sig)
    kills, hits, resumed = 3, [], False
    for _ in range(kills):
        since = time.time_ns()
        p = start(cfg, out, root, resume=resumed)
        # the run checkpoints after every step (30 in all): stop it after a random number of them
        if not wait_steps(p, out, rng.randint(2, 12), since):
            break   # it finished first: nothing left to interrupt
        p.send_signal(sig)
        _, err = p.communicate(timeout=300)
        if sig == signal.SIGTERM:
            assert p.returncode == 128 + signal.SIGTERM, err
            assert "stopped by SIGTERM" in err and "Continue with: minifit run" in err and "--resume" in err, err
            assert "Traceback" not in err
        else:
            assert p.returncode == -signal.SIGKILL
        hits.append(where(out))
        resumed = True
    p = start(cfg, out, root, resume=True)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    ref, got = arrays(folder / "ref"), arrays(out)
    assert got.keys() == ref.keys()
    differ = [k for k in ref if not np.array_equal(ref[k], got[k])]
    assert not differ, differ
    assert metrics(out) == metrics(folder / "ref")
    assert not [f for f in out.rglob(".tmp-*")], "a killed write's temporary file was left behind"
    with capsys.disabled():   # the suite's counts, for the record
        print(f"\n[fault suite] {sig.name}: {len(hits)} stops ({'; '.join(hits)}), "
              f"resumed run bitwise equal ({len(ref)} arrays)")
    assert len(hits) == kills, f"only {len(hits)} of {kills} stops landed inside the run"


def test_two_runs_are_bitwise_equal(reference):
    folder, root, cfg, _ = reference
    p = start(cfg, folder / "again", root)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    ref, got = arrays(folder / "ref"), arrays(folder / "again")
    assert [k for k in ref if not np.array_equal(ref[k], got[k])] == []
    assert metrics(folder / "again") == metrics(folder / "ref")


# -- corrupt files: one line naming the file --------------------------------------------
def run_cli(args, capsys):
    from minifit.cli import main
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def test_truncated_latest_checkpoint_resumes_from_the_previous(reference, tmp_path):
    import shutil
    folder, root, cfg, _ = reference
    out = tmp_path / "out"
    p = start(cfg, out, root)
    while p.poll() is None and not (out / "teacher" / "last.prev.npz").exists():
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=300)
    last = out / "teacher" / "last.npz"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    p = start(cfg, out, root, resume=True)
    printed, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert f"checkpoint {last} is corrupt" in printed and "resuming from the previous good checkpoint" in printed
    assert [k for k, v in arrays(folder / "ref").items() if not np.array_equal(v, arrays(out)[k])] == []
    shutil.rmtree(out)


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "not a zip"])
def test_corrupt_checkpoint_without_a_good_previous_is_one_line(reference, tmp_path, capsys, damage):
    folder, root, cfg, _ = reference
    import shutil
    out = tmp_path / "out"
    shutil.copytree(folder / "ref", out)
    last = out / "student-fitnets" / "stage2" / "last.npz"
    data = bytearray(last.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip a byte":
        data[len(data) // 3] ^= 0xFF
    else:
        data = b"not a zip file"
    last.write_bytes(bytes(data))
    checkpoint.previous(last) and Path(checkpoint.previous(last)).unlink()
    code, err = run_cli(["run", str(cfg), "--out", str(out), "--data-dir", str(root), "--resume", "--no-progress"],
                        capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minifit: error: checkpoint ") and str(last) in lines[0], err
    assert "delete it" in lines[0]


@pytest.mark.parametrize("damage", ["truncate", "bad magic"])
def test_corrupt_data_file_is_one_line(tmp_path, capsys, damage):
    root = write_mnist(tmp_path / "data", n_train=160)
    cfg = write_experiment(tmp_path / "t.toml")
    f = root / "mnist" / "train-images-idx3-ubyte"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00\x00\x09\x03" + data[4:])
    code, err = run_cli(["run", str(cfg), "--out", str(tmp_path / "o"), "--data-dir", str(root), "--no-progress"],
                        capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(f) in lines[0] and "Fix:" in lines[0], err


def test_missing_data_offline_is_one_line(tmp_path, capsys, monkeypatch):
    """No data and no network: the download advice, without a traceback."""
    from minifit.data import fetch as F

    def offline(*a, **k):
        raise F.DownloadError("cannot download train-images-idx3-ubyte.gz: tried https://example (offline). "
                              "If this machine is offline, download ... elsewhere")
    monkeypatch.setattr(F, "download", offline)
    cfg = write_experiment(tmp_path / "t.toml")
    code, err = run_cli(["run", str(cfg), "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "empty"),
                         "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()] and "cannot download" in err


def test_internal_errors_say_so_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    from minifit.distill import experiment
    root = write_mnist(tmp_path / "data", n_train=160)
    cfg = write_experiment(tmp_path / "t.toml")

    def bug(*a, **k):
        raise TypeError("an internal bug")
    monkeypatch.setattr(experiment, "prepare_data", bug)
    args = ["run", str(cfg), "--out", str(tmp_path / "o"), "--data-dir", str(root), "--no-progress"]
    code, err = run_cli(args, capsys)
    assert code == 3 and "internal error: TypeError: an internal bug" in err and "Traceback" not in err
    assert "--debug" in err
    code, err = run_cli(args + ["--debug"], capsys)
    assert code == 3 and "Traceback" in err


# -- a full disk, an unwritable folder ---------------------------------------------------
def test_full_disk_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """ENOSPC while writing: a CheckpointError naming the file and the fix; the old file
    is untouched and no temporary file is left."""
    import errno
    import minifit.nn as nn
    m = nn.Sequential(("y", nn.Linear(3, 2)))
    path = tmp_path / "last.npz"
    checkpoint.save(path, m, keep_previous=True, epoch=1)
    before = path.read_bytes()

    def full(f, **arrays):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(checkpoint.CheckpointError, match=r"cannot write checkpoint .*last.npz: No space left on "
                                                         r"device; the last good checkpoint is kept.*--resume"):
        checkpoint.save(path, m, keep_previous=True, epoch=2)
    assert path.read_bytes() == before and checkpoint.read(path)["meta"]["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                           capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def test_full_tmpfs_run_is_one_line_and_keeps_the_checkpoint(reference, tmp_path, capsys):
    """A real full disk: a 1.5 MB tmpfs as the output folder (skipped where mounting is
    not allowed)."""
    folder, root, cfg, _ = reference
    disk = tmp_path / "small"
    if not _mount_tmpfs(disk, "1500k"):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN); the ENOSPC path is covered by "
                    "test_full_disk_keeps_the_last_good_checkpoint")
    try:
        code, err = run_cli(["run", str(cfg), "--out", str(disk / "o"), "--data-dir", str(root), "--no-progress"],
                            capsys)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0] and "--resume" in lines[0], err
        for f in (disk / "o").rglob("last.npz"):
            checkpoint.read(f)   # whatever checkpoint is there is a good one
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_unwritable_output_folder_is_one_line(tmp_path, capsys):
    cfg = write_experiment(tmp_path / "t.toml")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should go")
    code, err = run_cli(["run", str(cfg), "--out", str(blocker / "o"), "--no-progress"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(blocker) in err, err
