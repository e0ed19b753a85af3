"""fetch: download (or copy from a mirror), verify, parse and cache one dataset.

Where the files come from, in order of preference:
  1. the `mirror` argument, else 2. $HASHBENCH_MIRROR, else 3. the upstream `url`s in
  datasets.toml.
A mirror is a local directory (or file:// URL) or an http(s) URL prefix, with one layout:
the file F of dataset D is at `<mirror>/<D>/<F>` (the layout of ../shared/datasets).

The sources of a dataset are tried in datasets.toml order. A source is skipped only when one
of its files is *missing* (HTTP 404/410, no such file); any other failure (network down,
hash mismatch, malformed line, unexpected counts) is an error, never a silent fall-through.

The cache `<cache>/<D>/` only ever holds verified files: each download streams into
`.<F>.part` while being hashed, and is renamed to `<F>` only once its size, sha256 and git
blob id all match datasets.toml. The canonical `interactions.npz` and a `manifest.json`
(source, file hashes, content hash, counts) are written atomically next to them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from filelock import FileLock
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)
from rich.table import Table

from hashbench import __version__
from hashbench.data import TEST_FOLD, TRAIN_FOLD, Interactions, default_cache_dir
from hashbench.errors import HashbenchError
from hashbench.files import atomic_file, atomic_write_text, is_no_space, make_dirs
from hashbench.parsers import parse_source
from hashbench.specs import DatasetSpec, FileSpec, SourceSpec

USER_AGENT = f"hashbench/{__version__} (dataset fetcher; python-urllib)"
TIMEOUT_S = 60  # per socket operation, not for the whole download
CHUNK_SIZE = 1 << 20
MISSING_HTTP_CODES = (404, 410)


class _Missing(Exception):
    """A source file is not at the mirror / upstream: the caller tries the next source."""

    def __init__(self, where: str):
        super().__init__(where)
        self.where = where


def fetch(spec: DatasetSpec, cache_dir: Path | None = None, mirror: str | None = None,
          quiet: bool = False, console: Console | None = None, force: bool = False) -> Interactions:
    """Give the dataset's canonical interactions, downloading and verifying them if not cached.

    With a cached `interactions.npz` nothing is downloaded or parsed (unless `force`, which
    rebuilds it; raw files already in the cache are re-verified and reused).
    """
    cache = Path(cache_dir or default_cache_dir()) / spec.name
    npz = cache / "interactions.npz"
    if npz.is_file() and not force:
        return Interactions.load(npz, spec.name)
    if spec.builtin:
        raise HashbenchError(f"{spec.name} is built in and needs no fetch")
    mirror = mirror or os.environ.get("HASHBENCH_MIRROR") or None
    origin = _Origin.of(mirror)
    console = None if quiet else (console or Console(stderr=True))
    make_dirs(cache)
    with FileLock(str(cache / ".fetch.lock")):  # two runs fetching at once wait, not clash
        if npz.is_file() and not force:
            return Interactions.load(npz, spec.name)
        return _fetch_locked(spec, cache, origin, console)


def _fetch_locked(spec: DatasetSpec, cache: Path, origin: "_Origin", console: Console | None) -> Interactions:
    sources = [s for s in spec.sources if origin.mirror or all(f.url for f in s.files)]
    if not sources:
        raise HashbenchError(f"{spec.name}: no source in datasets.toml has download URLs; "
                             "point --mirror or HASHBENCH_MIRROR at a local copy")
    _say(console, f"[bold]{spec.name}[/]: fetching from {origin.describe()}")
    missing, data = [], None
    with _progress(console) as progress:
        for source in sources:
            try:
                obtained = [_obtain(spec, f, origin, cache, progress, console) for f in source.files]
            except _Missing as exc:
                missing.append(f"{exc.where} [{source.name}]")
                nxt = sources[sources.index(source) + 1].name if source is not sources[-1] else None
                _say(console, f"  no {exc.where} there, so not the {source.name!r} form"
                              + (f"; trying the {nxt!r} form" if nxt else ""))
                continue
            data = parse_source(spec, source, [path for path, _ in obtained])
            check_counts(spec, source, data)
            # manifest first: the npz is what marks the cache complete (datasets.load_dataset)
            _write_manifest(cache / "manifest.json", spec, source, origin, obtained, data)
            data.save(cache / "interactions.npz")
            break
    if data is None:
        raise HashbenchError(f"{spec.name}: no source in datasets.toml is complete at {origin.describe()} "
                             f"(layout <mirror>/<dataset>/<file>); missing: {', '.join(missing)}")
    _say(console, f"  {spec.name}: {data.n_interactions:,} interactions, {data.n_users:,} users, "
                  f"{data.n_items:,} items (source {source.name!r}) -> {cache}")
    return data


# --- where files come from -----------------------------------------------------------------

@dataclass(frozen=True)
class _Origin:
    mirror: str | None  # None: upstream URLs
    local: Path | None  # set when the mirror is a directory

    @classmethod
    def of(cls, mirror: str | None) -> "_Origin":
        if mirror is None:
            return cls(None, None)
        parsed = urllib.parse.urlparse(mirror)
        if parsed.scheme in ("http", "https"):
            return cls(mirror, None)
        local = Path(urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else mirror).expanduser()
        if not local.is_dir():
            raise HashbenchError(f"mirror {mirror!r} is neither an http(s) URL nor an existing directory")
        return cls(mirror, local)

    def describe(self) -> str:
        return f"mirror {self.mirror}" if self.mirror else "upstream URLs"

    def location(self, dataset: str, file: FileSpec) -> str | Path:
        if self.local is not None:
            return self.local / dataset / file.name
        if self.mirror is not None:
            quote = urllib.parse.quote
            return f"{self.mirror.rstrip('/')}/{quote(dataset)}/{quote(file.name)}"
        assert file.url, "upstream sources without URLs are filtered out before"
        return file.url


@contextlib.contextmanager
def _open_location(where: str | Path, label: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """Yield (stream, length if known); raise _Missing when the file is not there."""
    if isinstance(where, Path):
        if not where.is_file():
            raise _Missing(str(where))
        with open(where, "rb") as fh:
            yield fh, os.fstat(fh.fileno()).st_size
        return
    request = urllib.request.Request(where, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in MISSING_HTTP_CODES:
            raise _Missing(where) from None
        raise HashbenchError(f"{label}: download from {where} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HashbenchError(f"{label}: cannot reach {where}: {reason}. Offline? Point --mirror or "
                             "HASHBENCH_MIRROR at a local copy (layout <mirror>/<dataset>/<file>)") from None
    with response:
        length = response.headers.get("Content-Length")
        yield response, int(length) if length and length.isdigit() else None


@contextlib.contextmanager
def _progress(console: Console | None) -> Iterator[Progress | None]:
    if console is None:
        yield None
        return
    columns = (TextColumn("  {task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        yield progress


def _say(console: Console | None, message: str) -> None:
    if console is not None:
        console.print(message, highlight=False)


# --- download and verify -------------------------------------------------------------------

class _Digest:
    """Size, sha256 and (when expected) git blob id of a byte stream, computed as it passes."""

    def __init__(self, file: FileSpec, length: int | None):
        self.file, self.size, self.sha256 = file, 0, hashlib.sha256()
        self.blob_length = length if length is not None else file.size
        self.blob = None
        if file.git_blob and self.blob_length is not None:
            self.blob = hashlib.sha1(b"blob %d\0" % self.blob_length)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.sha256.update(chunk)
        if self.blob is not None:
            self.blob.update(chunk)

    def git_blob(self, path: Path) -> str:
        if self.blob is not None and self.blob_length == self.size:
            return self.blob.hexdigest()
        return git_blob_id(path)  # length was unknown (or wrong) up front: hash a second time

    def problem(self, label: str, path: Path) -> str | None:
        """The first check that fails, as a sentence, or None when the file is what the spec says."""
        f = self.file
        if f.size is not None and self.size != f.size:
            return f"{label}: size mismatch: expected {f.size} bytes, got {self.size} bytes"
        if f.sha256 and self.sha256.hexdigest() != f.sha256.lower():
            return f"{label}: sha256 mismatch: expected {f.sha256}, got {self.sha256.hexdigest()}"
        if f.git_blob and (got := self.git_blob(path)) != f.git_blob.lower():
            return f"{label}: git blob mismatch: expected {f.git_blob}, got {got}"
        return None


def git_blob_id(path: Path) -> str:
    """What `git hash-object` prints: SHA-1 of b"blob <size>\\0" + bytes."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            h.update(chunk)
    return h.hexdigest()


def _digest_file(file: FileSpec, path: Path) -> _Digest:
    digest = _Digest(file, path.stat().st_size)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest


def _obtain(spec: DatasetSpec, file: FileSpec, origin: _Origin, cache: Path,
            progress: Progress | None, console: Console | None) -> tuple[Path, _Digest]:
    """The verified file in the cache: reused if it still verifies, else downloaded."""
    label = f"{spec.name}/{file.name}"
    final = cache / file.name
    if final.is_file():
        digest = _digest_file(file, final)
        if (problem := digest.problem(label, final)) is None:
            return final, digest
        _say(console, f"  [yellow]cached {label} failed verification ({problem}); fetching it again[/]")
        final.unlink()
    where = origin.location(spec.name, file)
    part = cache / f".{file.name}.part"
    with _open_location(where, label) as (stream, length):
        digest = _Digest(file, length)
        task = progress.add_task(file.name, total=length) if progress is not None else None
        # renamed to `final` only if the block ends without an error: the cache holds verified files only
        with atomic_file(final, needed=length or file.size, temp_name=part.name) as out:
            try:
                while chunk := stream.read(CHUNK_SIZE):
                    out.write(chunk)
                    digest.update(chunk)
                    if task is not None:
                        progress.advance(task, len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                if is_no_space(exc):
                    raise
                raise HashbenchError(f"{label}: download from {where} interrupted: {exc}") from None
            out.flush()
            if length is not None and digest.size != length:
                raise HashbenchError(f"{label}: download from {where} truncated: got {digest.size} of "
                                     f"{length} bytes (file rejected, not cached)")
            if problem := digest.problem(label, part):
                raise HashbenchError(f"{problem} (file rejected, not cached)")
    return final, digest


# --- parse (parsers.py) and check ----------------------------------------------------------

def check_counts(spec: DatasetSpec, source: SourceSpec, data: Interactions) -> None:
    """Users, items, interactions (and LightGCN fold sizes) must be what datasets.toml says."""
    checks = [("users", spec.users, data.n_users), ("items", spec.items, data.n_items),
              ("interactions", spec.interactions, data.n_interactions)]
    if data.fold is not None:
        checks += [("lightgcn_train", spec.lightgcn_train, int((data.fold == TRAIN_FOLD).sum())),
                   ("lightgcn_test", spec.lightgcn_test, int((data.fold == TEST_FOLD).sum()))]
    wrong = [f"{what} expected {want:,}, got {got:,}" for what, want, got in checks
             if want is not None and want != got]
    if wrong:
        raise HashbenchError(f"{spec.name}: counts differ from datasets.toml (source {source.name!r}): "
                             + "; ".join(wrong))


# --- manifest and stats --------------------------------------------------------------------

def _write_manifest(path: Path, spec: DatasetSpec, source: SourceSpec, origin: _Origin,
                    obtained: list[tuple[Path, _Digest]], data: Interactions) -> None:
    files = []
    for file, (p, digest) in zip(source.files, obtained):
        entry = {"name": file.name, "role": file.role, "size": digest.size,
                 "sha256": digest.sha256.hexdigest()}
        if file.git_blob:
            entry["git_blob"] = digest.git_blob(p)
        files.append(entry)
    manifest = {
        "dataset": spec.name,
        "source": source.name,
        "format": source.format,
        "origin": origin.mirror or "upstream",
        "files": files,
        "content_hash": data.content_hash(),
        **{k: v for k, v in data.stats().items() if k != "dataset"},
        "has_folds": data.fold is not None,
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hashbench_version": __version__,
    }
    if data.fold is not None:
        manifest["lightgcn_train"] = int((data.fold == TRAIN_FOLD).sum())
        manifest["lightgcn_test"] = int((data.fold == TEST_FOLD).sum())
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")


def stats_table(datasets: Iterable[Interactions], title: str = "Dataset statistics") -> Table:
    """The paper's Table 2: users, items, interactions and density (%) per dataset."""
    table = Table(title=title)
    table.add_column("Dataset")
    for column in ("#Users", "#Items", "#Interactions", "Density"):
        table.add_column(column, justify="right")
    for data in datasets:
        table.add_row(data.name, f"{data.n_users:,}", f"{data.n_items:,}", f"{data.n_interactions:,}",
                      f"{100 * data.density:.3f}%")
    return table


def print_stats(data: Interactions | Iterable[Interactions], spec: DatasetSpec | None = None,
                console: Console | None = None) -> Table:
    """Print stats_table (and the spec's note, if any); returns the table."""
    console = console or Console()
    table = stats_table([data] if isinstance(data, Interactions) else data)
    console.print(table)
    if spec is not None and spec.note:
        console.print(f"[dim]Note: {spec.note}[/]")
    return table
