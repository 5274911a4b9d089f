"""``minifit run FILE.toml``: run an experiment and write its report."""
from __future__ import annotations

import shlex
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
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args):
    from .loop import graceful_stop
    with graceful_stop():   # first: a stop while the modules load is a clean stop too
        return _run(args)


def _run(args):
    from ..device import resolve
    from .experiment import run_experiment
    resolve(args.device)  # fail fast, before any data is read, when the device is unusable
    out = Path(args.out) if args.out else Path("runs") / Path(args.file).stem
    args.resume_command = resume_command(args, out)
    log_path = out / "log.txt"
    out.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log_file:
        def log(msg):
            print(msg, flush=True)
            log_file.write(msg + "\n")
            log_file.flush()
        summary = run_experiment(args.file, out, args.epochs_scale, args.resume, args.data_dir, log,
                                 progress=not args.no_progress, device=args.device)
    print((out / "results.md").read_text())
    print(f"written: {out / 'results.md'}, {out / 'results.json'}, {out / 'curves.png'}", file=sys.stderr)
    return 0 if summary["results"] else 1


def resume_command(args, out: Path) -> str:
    """The command that continues this run: the same options, with --resume."""
    parts = ["minifit", "run", shlex.quote(args.file), "--out", shlex.quote(str(out))]
    if args.epochs_scale != 1.0:
        parts += ["--epochs-scale", f"{args.epochs_scale:g}"]
    if args.data_dir:
        parts += ["--data-dir", shlex.quote(args.data_dir)]
    if args.device != "cpu":
        parts += ["--device", args.device]
    if args.no_progress:
        parts.append("--no-progress")
    return " ".join(parts + ["--resume"])
