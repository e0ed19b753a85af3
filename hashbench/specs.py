"""Dataset specs, read from datasets.toml (specs are data, the code only interprets them)."""

from __future__ import annotations

import difflib
import os
import re
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


def _check_count(where: str, key: str, value, minimum: int = 1, optional: bool = True) -> None:
    if (value is None and optional) or (type(value) is int and value >= minimum):
        return
    raise HashbenchError(f"{where}: {key} must be an integer >= {minimum}, got {value!r}")


def _check_file(dataset: str, spec: FileSpec) -> None:
    where = f"datasets.toml: [{dataset}] file {spec.name!r}"
    if not isinstance(spec.name, str) or spec.name in ("", ".", "..") or "/" in spec.name or "\\" in spec.name:
        raise HashbenchError(f"{where}: name must be a plain file name (it is written into the cache)")
    for key, length in (("sha256", 64), ("git_blob", 40)):
        value = getattr(spec, key)
        if value is not None and not (isinstance(value, str) and re.fullmatch(f"[0-9a-fA-F]{{{length}}}", value)):
            raise HashbenchError(f"{where}: {key} must be {length} hex digits, got {value!r}")
    _check_count(where, "size", spec.size, minimum=0)
    if spec.url is not None and not isinstance(spec.url, str):
        raise HashbenchError(f"{where}: url must be a string")


def _check_entry(name: str, spec: "DatasetSpec") -> None:
    where = f"datasets.toml: [{name}]"
    for key in ("title", "citation"):
        if not isinstance(getattr(spec, key), str):
            raise HashbenchError(f"{where}: {key} must be a string")
    for key in ("note", "homepage"):
        if getattr(spec, key) is not None and not isinstance(getattr(spec, key), str):
            raise HashbenchError(f"{where}: {key} must be a string")
    if type(spec.builtin) is not bool:
        raise HashbenchError(f"{where}: builtin must be true or false, got {spec.builtin!r}")
    _check_count(where, "users", spec.users, optional=False)
    _check_count(where, "items", spec.items, optional=False)
    _check_count(where, "interactions", spec.interactions)
    _check_count(where, "lightgcn_train", spec.lightgcn_train, minimum=0)
    _check_count(where, "lightgcn_test", spec.lightgcn_test, minimum=0)
    for source in spec.sources:
        for file in source.files:
            _check_file(name, file)
        roles = sorted(f.role for f in source.files)
        if roles not in (["all"], ["test", "train"]):
            raise HashbenchError(f"{where} source {source.name}: files must be one 'all' file, or one 'train' "
                                 f"and one 'test' file; got roles {roles}")


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
        _check_entry(name, spec)
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


def parse_name_list(text: str, valid: list[str], kind: str) -> list[str]:
    """A --methods/--datasets value: 'all' or a comma list, each name checked against `valid`
    (a one-line did-you-mean error otherwise); duplicates dropped, order kept."""
    names = valid if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise HashbenchError(f"no {kind} given")
    for n in names:
        if n not in valid:
            raise unknown_name_error(kind, n, valid)
    return list(dict.fromkeys(names))


def get_dataset_spec(name: str) -> DatasetSpec:
    registry = load_registry()
    if name not in registry:
        raise unknown_name_error("dataset", name, list(registry))
    return registry[name]
