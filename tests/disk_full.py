"""A full disk, on demand: os.write fails with ENOSPC for the files a test names.

Every byte hashbench writes goes through os.write (hashbench.files.write_all), so failing
that system call is the disk filling up as the program sees it. The first failing write
lands half its bytes first (what a real full disk does), so a half-written file exists for
a moment and the tests can check that nobody ever sees it under its final name.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass
class DiskFull:
    matches: Callable[[str], bool]  # the path of the file being written
    let_through: int = 0  # matching files written in full (each open-to-close) before the disk fills up
    written: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    _open: dict[int, str] = field(default_factory=dict)  # fd -> "pass" | "half" | "full"

    def write(self, real_write, fd: int, data) -> int:
        if fd not in self._open:
            try:
                path = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                path = ""
            if not self.matches(path):
                return real_write(fd, data)
            fail = len(self.written) >= self.let_through
            (self.failed if fail else self.written).append(path)
            self._open[fd] = "half" if fail else "pass"
        state = self._open[fd]
        if state == "pass":
            return real_write(fd, data)
        if state == "half" and len(data) > 1:  # half of the first failing write lands
            self._open[fd] = "full"
            return real_write(fd, memoryview(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self, real_close, fd: int) -> None:
        self._open.pop(fd, None)
        real_close(fd)


@contextmanager
def disk_full(monkeypatch, matches: Callable[[str], bool], let_through: int = 0) -> Iterator[DiskFull]:
    """While active, writes to files whose path `matches` fail (after `let_through` such files)."""
    state = DiskFull(matches, let_through)
    real_write, real_close = os.write, os.close
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", lambda fd, data: state.write(real_write, fd, data))
        patch.setattr(os, "close", lambda fd: state.close(real_close, fd))
        yield state
