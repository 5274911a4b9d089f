"""Errors a user can cause or meet, and the one place that turns an exception into the
line the user reads (``describe``, used by the command line's error boundary)."""
from __future__ import annotations

import errno


class UserError(Exception):
    """A problem the user can fix (a bad file, missing data, no space...): printed as one
    line naming the problem and the fix, exit status 2."""


# errno values that mean "the disk or the folder", not a bug: what to do about each
_OS_FIXES = {
    errno.ENOSPC: "free some space (or choose another --out), then run the same command with --resume",
    errno.EDQUOT: "free some space in your quota (or choose another --out), then run the same command "
                  "with --resume",
    errno.EACCES: "make the folder writable or choose another --out",
    errno.EPERM: "make the folder writable or choose another --out",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.ENOTDIR: "a file stands where a folder should be: choose another --out",
}


def describe(e: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None for an internal error."""
    if isinstance(e, UserError):   # (data files, downloads, devices, configs, checkpoints, NaN losses)
        return str(e)
    if isinstance(e, OSError) and e.errno in _OS_FIXES:
        where = f" ({e.filename})" if e.filename else ""
        return f"{e.strerror or e}{where}: {_OS_FIXES[e.errno]}"
    if isinstance(e, FileNotFoundError):
        return str(e) if e.filename is None else f"{e.filename} does not exist"
    return None


class UnknownNameError(UserError, ValueError):
    """A model, dataset, optimizer or device name that is not one of the known ones (the
    message lists them)."""
