"""The one error type for bad dataset files: every message names the file, the problem and
the fix, so no loader builds its own message."""
from __future__ import annotations

from pathlib import Path
from ..errors import UserError


class DataFileError(UserError, ValueError):
    """A dataset file is truncated, corrupt, not in the expected format, or fails its
    checksum. ``str(e)`` reads ``"<path>: <problem>. Fix: <fix>"``."""

    def __init__(self, path, problem: str, fix: str):
        self.path = Path(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}. Fix: {fix}")


class MissingDataError(DataFileError, FileNotFoundError):
    """A dataset file or folder is not there (also a ``FileNotFoundError``)."""
