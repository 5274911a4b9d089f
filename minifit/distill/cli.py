"""``minifit run FILE.toml``: run an experiment and write its report."""
from __future__ import annotations

import sys
from pathlib import Path

from ..device import add_argument as add_device_argument


def register(sub):
    p = sub.add_parser("run", help="run an experiment file (teacher, then students) and write results.md",
                       description="Train the teacher and every student an experiment file lists, then write "
                                   "results.md, results.json and curves.png to the output folder.")
    p.add_argument("file", help="experiment file, e.g. experiments/mnist-fitnets.toml")
    p.add_argument("--epochs-scale", type=float, default=1.0,
                   help="multiply every epoch count (e.g. 10 for the paper-length MNIST run)")
    p.add_argument("--out", default=None, help="output folder (default runs/<file name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last checkpoints (finished stages are kept)")
    p.add_argument("--data-dir", default=None, help="dataset root (default $MINIFIT_DATA, else ./data)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar inside epochs")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="data parallelism on N local processes: starts mpirun -n N for you, with cores/N kernel "
                        "threads each (needs the mpi extra; for several machines run mpirun yourself, see README)")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args):
    from .. import parallel
    from ..cli import UserError
    from ..device import resolve
    from .experiment import run_experiment
    resolve(args.device)  # fail fast, before any data is read, when the device is unusable
    try:
        if args.workers < 1:
            raise UserError(f"--workers must be at least 1, got {args.workers}")
        if args.workers > 1 and not parallel.launched_by_mpi():
            return parallel.launch(args.workers, _argv(args))
        comm = parallel.world()
    except parallel.ParallelError as e:
        raise UserError(str(e)) from None
    if args.workers > 1 and args.workers != comm.size:
        raise UserError(f"--workers {args.workers} inside an MPI launch of {comm.size} processes: drop --workers "
                        "(mpirun -n already chose the number)")
    out = Path(args.out) if args.out else Path("runs") / Path(args.file).stem
    with comm.guard():
        out.mkdir(parents=True, exist_ok=True)
        log_file = open(out / "log.txt", "a") if comm.is_root else None  # rank 0 alone logs
        try:
            def log(msg):
                print(msg, flush=True)
                log_file.write(msg + "\n")
                log_file.flush()
            advice = parallel.thread_advice() if comm.size > 1 else None
            if advice and comm.is_root:
                log(f"[run] warning: {advice}")
            summary = run_experiment(args.file, out, args.epochs_scale, args.resume, args.data_dir, log,
                                     progress=not args.no_progress, device=args.device, comm=comm)
        finally:
            if log_file is not None:
                log_file.close()
    if not comm.is_root:
        return 0
    print((out / "results.md").read_text())
    print(f"written: {out / 'results.md'}, {out / 'results.json'}, {out / 'curves.png'}", file=sys.stderr)
    return 0 if summary["results"] else 1


def _argv(args) -> list[str]:
    """This command's arguments, less --workers, for each process mpirun starts."""
    argv = ["run", args.file, "--epochs-scale", repr(args.epochs_scale), "--device", args.device]
    for flag, value in (("--out", args.out), ("--data-dir", args.data_dir)):
        if value is not None:
            argv += [flag, value]
    return argv + ["--resume"] * args.resume + ["--no-progress"] * args.no_progress
