"""Results are append-only JSON lines, one per finished run cell, written by one writer.

An append is one write() of one line under a file lock, so concurrent sweeps on the same
directory interleave whole lines; a line cut short by kill -9 is skipped on reading (with a
warning) and the next append starts on a fresh line, so nothing is lost or corrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

RUNS_FILE = "runs.jsonl"


def config_hash(config: dict[str, Any]) -> str:
    """The identity of a run cell: sha256 of its canonical JSON config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _lock(path: Path) -> FileLock:
    return FileLock(str(path) + ".lock", timeout=60)


def append_record(results_dir: Path, record: dict[str, Any]) -> None:
    path = Path(results_dir) / RUNS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    with _lock(path):
        with open(path, "ab") as fh:
            if fh.tell() > 0:
                with open(path, "rb") as check:
                    check.seek(-1, os.SEEK_END)
                    if check.read(1) != b"\n":  # a previous writer was killed mid-line
                        line = "\n" + line
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())


def read_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    path = Path(results_dir) / RUNS_FILE
    if not path.is_file():
        return
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{number}: skipping a truncated record (a run killed mid-write)")


def latest_by_cell(results_dir: Path) -> dict[str, dict[str, Any]]:
    """The newest record of each cell (config hash): a re-run supersedes what it overwrote."""
    latest = {}
    for record in read_records(results_dir):
        latest[record["config_hash"]] = record
    return latest
