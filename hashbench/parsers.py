"""The dataset file formats datasets.toml names (`format` of a source), parsed strictly: every
id is ASCII digits below 2**63, and the first line that is not is named in a one-line error
(a file we read never runs code and never half-parses). fetch.py calls parse_source."""

from __future__ import annotations

import csv
import gzip
import re
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd

from hashbench.data import TEST_FOLD, TRAIN_FOLD, Interactions, from_pairs
from hashbench.errors import HashbenchError
from hashbench.specs import DatasetSpec, SourceSpec

FOLD_OF_ROLE = {"train": TRAIN_FOLD, "test": TEST_FOLD}


def parse_source(spec: DatasetSpec, source: SourceSpec, paths: list[Path]) -> Interactions:
    """Read every file of a source into one canonical table (fold labels for train/test roles)."""
    parse = {"adjacency": read_adjacency, "tsv": read_tsv}[source.format]
    users, items, folds = [], [], []
    for file, path in zip(source.files, paths):
        u, i = parse(path, f"{spec.name}/{file.name}")
        users.append(u)
        items.append(i)
        if file.role in FOLD_OF_ROLE:
            folds.append(np.full(len(u), FOLD_OF_ROLE[file.role], dtype=np.int8))
    fold = np.concatenate(folds) if source.has_folds else None
    return from_pairs(spec.name, np.concatenate(users), np.concatenate(items), fold)


def _bad_line(label: str, number: int, text: str, expected: str) -> HashbenchError:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return HashbenchError(f"{label}: line {number}: cannot parse {shown!r} (expected {expected})")


def _is_id(token: bytes | str) -> bool:
    return token.isdigit() and token.isascii() and int(token) < 2**63


def read_adjacency(path: Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Upstream `user item item ...` lines (whitespace-separated ids) -> (users, items)."""
    lines = path.read_bytes().split(b"\n")
    tokens = [line.split() for line in lines]
    counts = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    try:
        raw = np.array(list(chain.from_iterable(tokens)), dtype=bytes)
        # numpy's bytes -> int64 also takes '+3', '-0' and '1_0' (= 10): only ASCII digits are ids
        ok = raw.size == 0 or bool(np.char.isdigit(raw).all())
        values = raw.astype(np.int64) if ok else None
    except (ValueError, OverflowError):
        ok = False
    if not ok:  # slow path, only on failure: find the first bad line to show the user
        for number, line in enumerate(lines, 1):
            if not all(_is_id(t) for t in line.split()):
                raise _bad_line(label, number, line.decode(errors="replace"), "'user item item ...' ids")
        raise HashbenchError(f"{label}: cannot parse as 'user item item ...' lines")
    nonblank = counts > 0
    starts = (np.cumsum(counts) - counts)[nonblank]
    is_item = np.ones(values.size, dtype=bool)
    is_item[starts] = False
    return np.repeat(values[starts], counts[nonblank] - 1), values[is_item]


TSV_HEADER = "user_id\titem_id"
_TSV_ROWS = re.compile(rb"(?:\r?\n(?:[0-9]+\t[0-9]+\r?)?)*\r?\n?")


def read_tsv(path: Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    """gzip TSV with header `user_id<TAB>item_id` -> (users, items)."""
    try:
        with gzip.open(path, "rb") as fh:
            header = fh.readline().rstrip(b"\r\n").decode(errors="replace")
        if header != TSV_HEADER:
            raise _bad_line(label, 1, header, repr(TSV_HEADER) + " header")
        try:
            frame = pd.read_csv(path, sep="\t", dtype=np.int64, compression="gzip", index_col=False,
                                quoting=csv.QUOTE_NONE, engine="c")
            ok = list(frame.columns) == ["user_id", "item_id"] and (frame.empty or frame.min().min() >= 0)
            # pandas' int64 parser also takes ' 7', '+3', '-0' and '2.0': the rows must be digits only
            with gzip.open(path, "rb") as fh:
                ok = ok and _TSV_ROWS.fullmatch(fh.read(), len(TSV_HEADER)) is not None
        except (ValueError, OverflowError, pd.errors.ParserError):  # UnicodeDecodeError included
            ok = False
        if not ok:  # slow path, only on failure: find the first bad line to show the user
            with gzip.open(path, "rb") as fh:
                for number, line in enumerate(fh, 1):
                    line = line.rstrip(b"\r\n")
                    fields = line.split(b"\t")
                    if number > 1 and line and not (len(fields) == 2 and all(map(_is_id, fields))):
                        raise _bad_line(label, number, line.decode(errors="replace"), "'user_id<TAB>item_id' ids")
            raise HashbenchError(f"{label}: cannot parse as a user_id/item_id TSV")
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise HashbenchError(f"{label}: not a readable gzip file: {exc}") from None
    return frame["user_id"].to_numpy(), frame["item_id"].to_numpy()
