"""Checks of command-line arguments that name files and directories, done before any work.

Each failure is a HashbenchError (one line, exit 1), so a read-only disk, a results path that
is a file or an --out that is a directory never shows up as a traceback half-way through.
Nothing here creates anything, except that a probe file is created and removed at once.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from hashbench.errors import HashbenchError


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe(directory: Path, what: str) -> None:
    """Create and remove a file in `directory`: the only test of writability that root, ACLs
    and read-only mounts all answer truthfully."""
    try:
        fd, name = tempfile.mkstemp(prefix=".hashbench-probe-", dir=directory)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        reason = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                  errno.EPERM: "permission denied", errno.ENOSPC: "no space left",
                  errno.ENOENT: "it takes no new files"}.get(exc.errno, exc.strerror)
        raise HashbenchError(f"{what}: cannot write in {directory} ({reason})") from None


def check_results_dir(path: Path, flag: str = "--results", write: bool = True) -> Path:
    """A results directory that exists (or can be created under an existing one) and takes files."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HashbenchError(f"{flag} {path} is a file, not a directory")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise HashbenchError(f"{flag} {path}: {base} is a file, not a directory")
    runs = path / "runs.jsonl"
    if runs.exists() and not runs.is_file():
        raise HashbenchError(f"{flag} {path}: {runs} is not a file")
    if write:
        _probe(base, f"{flag} {path}")
    return path


def check_out_file(path: Path, flag: str = "--out") -> Path:
    """A file to write: not a directory, in a directory that exists (no parents are created) and
    takes files."""
    path = Path(path)
    if path.is_dir():
        raise HashbenchError(f"{flag} {path} is a directory; give a file name, e.g. {path / 'split.npz'}")
    parent = path.absolute().parent
    if not parent.exists():
        raise HashbenchError(f"{flag} {path}: the directory {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise HashbenchError(f"{flag} {path}: {parent} is not a directory")
    if path.exists() and not path.is_file():
        raise HashbenchError(f"{flag} {path} exists and is not a regular file")
    _probe(parent, f"{flag} {path}")
    return path
