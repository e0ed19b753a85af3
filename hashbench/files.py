"""Every file hashbench writes is written here: whole or not at all, and a full disk is a
one-line error, never a traceback or a half-written file.

    atomic_file(path, needed)   a temporary file beside `path`, fsync'ed and renamed over it
                                only when the block exits cleanly (removed on any error)
    atomic_write(path, data)    the same for bytes (or a few chunks) held in memory
    atomic_save_npz(path, ...)  numpy arrays as .npz (rendered in memory, then atomic_write)
    save_figure(fig, path)      a matplotlib figure, rendered in memory, then atomic_write
    append_line(path, line)     one O_APPEND write of one line; on failure the file is cut back
                                to what it was, so a reader never meets half a line from us

When the disk (or the user's quota) is full, each raises a HashbenchError naming the file and
how much free space it needs; the file under its final name is left as it was. Nothing here
catches other errors.

And the one way an .npz is read back, read_npz: numpy with pickles off, whatever the file says.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from hashbench.errors import HashbenchError

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
Bytes = bytes | bytearray | memoryview


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def _free_bytes(path: Path) -> int | None:
    for place in (path, *path.parents):
        try:
            return shutil.disk_usage(place).free
        except OSError:
            continue
    return None


def human_bytes(n: int | None) -> str:
    if n is None:
        return "an unknown amount"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def no_space_error(path: Path, needed: int | None) -> HashbenchError:
    free = _free_bytes(Path(path).parent)
    return HashbenchError(
        f"no space left on device writing {path}: it needs {human_bytes(needed)} free "
        f"({human_bytes(free)} free there now); nothing was half-written: free some space and "
        "re-run the same command to carry on")


@contextmanager
def no_space_is_an_error(path: Path, needed: int | None) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT raised inside the block into the one-line error for `path`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise no_space_error(path, needed) from None
        raise


def fsync_dir(directory: Path) -> None:
    """Make a new or renamed directory entry durable (best effort: not every filesystem can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """mkdir -p, with a full disk reported like any other write."""
    with no_space_is_an_error(Path(directory), 4096):  # a directory takes a block
        Path(directory).mkdir(parents=True, exist_ok=True)


def write_all(fd: int, data: Bytes) -> None:
    """os.write until all of `data` is written: every byte hashbench writes goes through here."""
    view = memoryview(data).cast("B")
    while view:  # a regular file takes it in one write(); loop only for the rare short write
        view = view[os.write(fd, view):]


class _Unbuffered:
    """What atomic_file hands out: write() goes straight to the file (no buffer to lose)."""

    def __init__(self, fd: int, name: str):
        self.fd, self.name = fd, name

    def write(self, data: Bytes) -> int:
        write_all(self.fd, data)
        return memoryview(data).nbytes

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.fd


@contextmanager
def atomic_file(path: Path, needed: int | None = None, temp_name: str | None = None) -> Iterator[_Unbuffered]:
    """A binary file to write `path` through: on a clean exit it is fsync'ed and renamed to
    `path`; on any exception it is removed and `path` keeps its old content (or stays absent).

    `needed` (bytes) is what a full-disk error reports; `temp_name` (default
    `.<name>.<pid>.tmp`) is the temporary file's name in the same directory.
    """
    path = Path(path)
    tmp = path.with_name(temp_name or f".{path.name}.{os.getpid()}.tmp")
    with no_space_is_an_error(path, needed):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                yield _Unbuffered(fd, str(tmp))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # after os.replace it is gone already; else never leave it
    fsync_dir(path.parent)


def atomic_write(path: Path, data: Bytes | Iterable[Bytes]) -> None:
    """Write bytes (or a sequence of byte chunks, written in order) to `path` atomically."""
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
    with atomic_file(path, sum(memoryview(c).nbytes for c in chunks)) as fh:
        for chunk in chunks:
            fh.write(chunk)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode())


def atomic_save_npz(path: Path, compressed: bool = False, **arrays) -> None:
    """numpy arrays to an .npz at `path`, atomically (rendered in memory first, so a full
    disk can say exactly how much space the file needs)."""
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    atomic_write(path, buffer.getbuffer())


def save_figure(fig, path: Path, **savefig_kwargs) -> None:
    """A matplotlib figure to `path` atomically, in the format its suffix names."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **savefig_kwargs)
    atomic_write(path, buffer.getbuffer())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, read as data only (pickled object arrays are refused, never
    unpickled); a file that is not a readable .npz is a one-line error naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {key: z[key] for key in z.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise HashbenchError(f"cannot read {path} as arrays (damaged, or holds pickled objects, which "
                             f"hashbench never loads): {exc}") from None


def append_line(path: Path, line: bytes) -> None:
    """Append one line (ending in b"\\n") with one O_APPEND write, fsync'ed.

    The caller holds the file's lock. A file whose last line was cut short (a writer killed
    mid-line) gets a newline first, so the new line starts fresh. If the write or the fsync
    fails (a full disk), the file is cut back to its size before, then the error is raised:
    the file holds only whole lines of ours either way.
    """
    path = Path(path)
    with no_space_is_an_error(path, len(line) + 1):
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            try:
                write_all(fd, line)
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)  # shrinking needs no space
                raise
        finally:
            os.close(fd)
    if created:  # make the new directory entry durable too
        fsync_dir(path.parent)
