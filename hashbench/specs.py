"""Dataset specs, read from datasets.toml (specs are data, the code only interprets them)."""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from hashbench.errors import HashbenchError

ROLES = ("train", "test", "all")
FORMATS = ("adjacency", "tsv")


@dataclass(frozen=True)
class FileSpec:
    name: str
    role: str
    url: str | None = None
    sha256: str | None = None
    git_blob: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class SourceSpec:
    name: str
    format: str
    files: tuple[FileSpec, ...]

    @property
    def has_folds(self) -> bool:
        return {f.role for f in self.files} == {"train", "test"}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    citation: str
    users: int
    items: int
    interactions: int | None = None
    builtin: bool = False
    sources: tuple[SourceSpec, ...] = ()
    lightgcn_train: int | None = None
    lightgcn_test: int | None = None
    note: str | None = None
    homepage: str | None = None
    params: dict = field(default_factory=dict)  # builtin generator parameters


def registry_path() -> Path:
    """datasets.toml: $HASHBENCH_DATASETS, else the source checkout's, else the packaged copy."""
    if env := os.environ.get("HASHBENCH_DATASETS"):
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "datasets.toml"
    if checkout.is_file():
        return checkout
    return Path(str(resources.files("hashbench") / "datasets.toml"))


def _parse_file(dataset: str, raw: dict) -> FileSpec:
    try:
        spec = FileSpec(**raw)
    except TypeError as exc:
        raise HashbenchError(f"datasets.toml: [{dataset}] bad file entry {raw!r}: {exc}") from None
    if spec.role not in ROLES:
        raise HashbenchError(f"datasets.toml: [{dataset}] file {spec.name}: role must be one of {ROLES}")
    if not (spec.sha256 or spec.git_blob):
        raise HashbenchError(f"datasets.toml: [{dataset}] file {spec.name} has no sha256 or git_blob to verify it by")
    return spec


def parse_registry(text: str) -> dict[str, DatasetSpec]:
    """Parse the TOML text of a registry; every problem becomes a HashbenchError naming the entry."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HashbenchError(f"datasets.toml is not valid TOML: {exc}") from None
    specs = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise HashbenchError(f"datasets.toml: top-level key {name!r} must be a table")
        entry = dict(entry)
        try:
            sources = tuple(
                SourceSpec(
                    name=s["name"],
                    format=s["format"],
                    files=tuple(_parse_file(name, f) for f in s["files"]),
                )
                for s in entry.pop("sources", [])
            )
            known = {k: entry.pop(k) for k in list(entry) if k in DatasetSpec.__dataclass_fields__}
            spec = DatasetSpec(name=name, sources=sources, params=entry, **known)
        except (KeyError, TypeError) as exc:
            raise HashbenchError(f"datasets.toml: [{name}] is missing or has a bad field: {exc}") from None
        for s in sources:
            if s.format not in FORMATS:
                raise HashbenchError(f"datasets.toml: [{name}] source {s.name}: format must be one of {FORMATS}")
        if not spec.builtin and not sources:
            raise HashbenchError(f"datasets.toml: [{name}] has no sources and is not builtin")
        specs[name] = spec
    return specs


@cache
def load_registry(path: Path | None = None) -> dict[str, DatasetSpec]:
    path = path or registry_path()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise HashbenchError(f"cannot read dataset registry {path}: {exc.strerror}") from None
    return parse_registry(text)


def unknown_name_error(kind: str, name: str, valid: list[str]) -> HashbenchError:
    """'unknown method 'bgh'; did you mean 'bgch'? valid: ...' — shared by datasets and methods."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return HashbenchError(f"unknown {kind} {name!r}{hint} Valid {kind}s: {', '.join(sorted(valid))}")


def get_dataset_spec(name: str) -> DatasetSpec:
    registry = load_registry()
    if name not in registry:
        raise unknown_name_error("dataset", name, list(registry))
    return registry[name]
