"""Results are append-only JSON lines, one per finished run cell, written by one writer.

An append is one O_APPEND write() of one line under a file lock, fsync'ed before the lock is
released, so concurrent sweeps on the same directory interleave whole lines; a line cut short
by kill -9 is skipped on reading (with a warning) and the next append starts on a fresh
line, so nothing is lost or corrupted. A full disk stops the append with a one-line error
and leaves the file as it was (hashbench.files.append_line). Records are never rewritten: a re-run cell appends a
new record, and the newest record of a cell (its config hash) is the one that counts.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from filelock import FileLock

from hashbench.errors import HashbenchError, HashbenchWarning
from hashbench.files import append_line, no_space_is_an_error

RUNS_FILE = "runs.jsonl"


def config_hash(config: dict[str, Any]) -> str:
    """The identity of a run cell: sha256 of its canonical JSON config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _lock(path: Path) -> FileLock:
    return FileLock(str(path) + ".lock", timeout=60)


def append_record(results_dir: Path, record: dict[str, Any]) -> None:
    path = Path(results_dir) / RUNS_FILE
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    with no_space_is_an_error(path, len(line)):  # a full disk may already refuse the directory or the lock
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lock(path):
            append_line(path, line)


def _parse(line: bytes, where: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        warnings.warn(f"{where}: skipping a line that is not JSON (cut short by a kill, or edited by hand)",
                      HashbenchWarning)
        return None
    if not isinstance(record, dict) or "config_hash" not in record:
        warnings.warn(f"{where}: skipping a line that is not a run record", HashbenchWarning)
        return None
    return record


def read_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    path = Path(results_dir) / RUNS_FILE
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip() and (record := _parse(line, f"{path}:{number}")) is not None:
                yield record


def latest_by_cell(results_dir: Path) -> dict[str, dict[str, Any]]:
    """The newest record of each cell (config hash): a re-run supersedes what it overwrote."""
    latest = {}
    for record in read_records(results_dir):
        latest[record["config_hash"]] = record
    return latest


class RecordLog:
    """latest_by_cell, kept up to date by reading only what was appended since the last look.

    A sweep re-checks a cell just before running it (another sweep may have finished it
    meanwhile); reading the whole file each time would cost O(cells × records).
    """

    def __init__(self, results_dir: Path):
        self.path = Path(results_dir) / RUNS_FILE
        self.latest: dict[str, dict[str, Any]] = {}
        self._offset = 0
        self._line = 0
        self.refresh()

    def refresh(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return self.latest
        end = chunk.rfind(b"\n") + 1  # a line still being written is left for the next look
        for line in chunk[:end].splitlines():
            self._line += 1
            if line.strip() and (record := _parse(line, f"{self.path}:{self._line}")) is not None:
                self.latest[record["config_hash"]] = record
        self._offset += end
        return self.latest


FILE_FOLDERS = ("codes", "per_user")  # where a record's files live, under its results directory


def record_file(value: Any, where: str) -> str:
    """A record's file path (codes_file, per_user_file): relative, one name inside codes/ or
    per_user/, no '..'. A record is data anyone may have edited, and data must not make us read
    or write elsewhere (merge copies these files, verify --history restores them)."""
    path = PurePosixPath(str(value))
    if not isinstance(value, str) or path.is_absolute() or ".." in path.parts or len(path.parts) != 2 \
            or path.parts[0] not in FILE_FOLDERS:
        raise HashbenchError(f"{where}: file {value!r} is not a name inside codes/ or per_user/")
    return str(path)


def is_record_file(value: Any) -> bool:
    """record_file's check as a yes/no: prune never deletes what a hand-edited record names elsewhere."""
    try:
        record_file(value, "a record")
        return True
    except HashbenchError:
        return False


def wall_seconds(record: dict[str, Any]) -> float:
    """A cell's training (every resumed segment, test curves left out) + final evaluation seconds
    by the clock; the top-level train_seconds (this process's fit, curves included) where the
    method reports none."""
    extras = record.get("extras") or {}
    return float(extras.get("train_seconds") or record.get("train_seconds") or 0.0) + float(record.get("eval_seconds") or 0.0)
