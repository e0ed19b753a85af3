"""Bring results computed elsewhere (a lent GPU, another machine, a cluster node without a
shared disk) into this results directory: their records and the files those records name.

The rule is the records file's own: one record per line, appended, the newest of a cell the
one that counts. So merging appends the source's records of cells this directory has no
finished ("ok") record of, after copying their codes and per-user files; a cell finished here
keeps its record (both machines ran it: the numbers already reported stay), and a record
already here (the same line) is not appended twice. A killed merge re-run with the same
command finishes: the files are copied again (atomically), the records not yet appended are.

The source is a results directory or a .tar archive of one (what scripts/device-run.sh sends
back); an archive is unpacked into a temporary folder with tarfile's "data" filter, so it
cannot write outside that folder, make links or device files, or set odd permissions.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hashbench import records
from hashbench.errors import HashbenchError
from hashbench.files import atomic_write

FILE_KEYS = ("codes_file", "per_user_file")  # a record's files, relative to its results directory


@dataclass
class MergePlan:
    records: list[dict[str, Any]] = field(default_factory=list)  # to append, in the source's order
    files: list[str] = field(default_factory=list)  # relative paths to copy
    finished_here: int = 0  # source records of cells this directory already has finished
    already_here: int = 0  # source records this directory already holds, line for line


def _canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def plan_merge(source: Path, dest: Path) -> MergePlan:
    """What merging `source` (a results directory) into `dest` would do; raises before anything
    is written if a record to merge names a file the source lacks."""
    if not (source / records.RUNS_FILE).is_file():
        raise HashbenchError(f"{source}: no {records.RUNS_FILE} to merge (expected a results directory or "
                             "a .tar of one)")
    here = {_canonical(r) for r in records.read_records(dest)}
    finished = {h for h, r in records.latest_by_cell(dest).items() if r.get("status") == "ok"}
    plan = MergePlan()
    for record in records.read_records(source):
        if _canonical(record) in here:
            plan.already_here += 1
            continue
        if record["config_hash"] in finished:
            plan.finished_here += 1
            continue
        for key in FILE_KEYS:
            if record.get(key) and record.get("status") == "ok":
                relative = records.record_file(record[key], f"{source / records.RUNS_FILE}")
                if not (source / relative).is_file():
                    raise HashbenchError(f"{source}: a record names {relative}, which is not there")
                plan.files.append(relative)
        plan.records.append(record)
        if record.get("status") == "ok":
            finished.add(record["config_hash"])  # a later record of the same cell in the source is a re-run
    return plan


def apply_merge(source: Path, dest: Path, plan: MergePlan) -> None:
    """Files first (atomic), then the records (appended): killed in between, a re-run merges
    the same records and copies the same bytes again."""
    for relative in plan.files:
        atomic_write(dest / relative, (source / relative).read_bytes())
    for record in plan.records:
        records.append_record(dest, record)


def unpacked(archive: Path) -> tuple[Path, tempfile.TemporaryDirectory]:
    """A .tar (optionally compressed) unpacked into a temporary folder, safely; the folder that
    holds runs.jsonl (the archive's top or one folder down)."""
    temp = tempfile.TemporaryDirectory(prefix="hashbench-merge-")
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(temp.name, filter="data")
    except (tarfile.TarError, OSError) as exc:
        temp.cleanup()
        raise HashbenchError(f"{archive}: not a readable .tar archive ({exc})") from None
    except TypeError:  # a Python before 3.11.4 has no extraction filters: never unpack unfiltered
        temp.cleanup()
        raise HashbenchError(f"{archive}: this Python cannot unpack an archive safely (3.11.4 or later can); "
                             "unpack it yourself and merge the folder") from None
    root = Path(temp.name)
    found = [root] if (root / records.RUNS_FILE).is_file() else [p.parent for p in root.glob(f"*/{records.RUNS_FILE}")]
    if len(found) != 1:
        temp.cleanup()
        raise HashbenchError(f"{archive}: holds no results directory (one {records.RUNS_FILE} at its top "
                             "or one folder down)")
    return found[0], temp


def merge(source: Path, dest: Path) -> MergePlan:
    """Merge `source` (a results directory or a .tar of one) into `dest`; returns what was done."""
    source, dest = Path(source), Path(dest)
    if not source.exists():
        raise HashbenchError(f"{source}: no such file or directory")
    temp = None
    if source.is_file():
        source, temp = unpacked(source)
    try:
        if source.resolve() == dest.resolve():
            raise HashbenchError(f"{source} is the results directory itself")
        plan = plan_merge(source, dest)
        apply_merge(source, dest, plan)
        return plan
    finally:
        if temp is not None:
            temp.cleanup()
