"""``minifit data fetch NAME`` and ``minifit data check [NAME]``."""
from __future__ import annotations

import sys

from .fetch import DEFAULT_TIMEOUT, DownloadError, check, fetch
from .registry import ENV_VAR, SOURCES, data_root


def register(subparsers) -> None:
    """Add the ``data`` command to the top-level ``minifit`` sub-parsers."""
    p = subparsers.add_parser("data", help="download and check datasets",
                              description="Download the official dataset files and check them.")
    p.set_defaults(func=lambda args: p.print_help())
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dir_help = f"dataset root (default: ${ENV_VAR}, else ./data)"

    f = sub.add_parser("fetch", help="download, verify and unpack a dataset",
                       description="Download the official files of NAME with a progress bar, "
                                   "resume a partial download, verify checksums, unpack into "
                                   "the dataset root.")
    f.add_argument("name", choices=sorted(SOURCES), metavar="NAME",
                   help="one of: " + ", ".join(SOURCES))
    f.add_argument("--data-dir", help=dir_help)
    f.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds to wait for the server (default {DEFAULT_TIMEOUT:g})")
    f.set_defaults(func=_fetch)

    c = sub.add_parser("check", help="list dataset files present and whether checksums match",
                       description="Print a table of the dataset files present and whether the "
                                   "checksums of their uncompressed content match the published "
                                   "ones. Exit status 1 if any file mismatches.")
    c.add_argument("name", nargs="?", metavar="NAME",
                   help="a dataset or fetch name (default: all)")
    c.add_argument("--data-dir", help=dir_help)
    c.set_defaults(func=_check)


def _fetch(args) -> int:
    from ..errors import UserError
    try:
        folder = fetch(args.name, args.data_dir, timeout=args.timeout)
    except DownloadError as e:
        raise UserError(str(e)) from None
    print(f"{args.name}: ready in {folder}")
    return 0


def _check(args) -> int:
    root = data_root(args.data_dir)
    rows = check(root, args.name)
    table = [("SOURCE", "FILE", "STATUS", "PATH")] + [
        (r.source, r.file, r.status, (str(r.path) if r.path else "-")
         + (f"  ({r.note})" if r.optional else "")) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    print(f"dataset root: {root}")
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    bad = [r for r in rows if r.status.startswith(("MISMATCH", "CORRUPT"))]
    if bad:
        print(f"{len(bad)} file(s) do not match: replace them (minifit data fetch NAME)", file=sys.stderr)
    return 1 if bad else 0
