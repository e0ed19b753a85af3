"""Bad input, fuzzed: the dataset parsers and the registry never crash with a traceback
(every problem is a HashbenchError naming the file and line, or the registry entry), and
never give a silently wrong dataset: what they return is exactly what the input says.

"Exactly what the input says" is the parsers' own definition of an id (parsers._is_id: ASCII
digits, below 2**63) and of the two formats (parsers.py, datasets.toml's header comment).
"""

from __future__ import annotations

import gzip
import re
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hashbench.data import TEST_FOLD, TRAIN_FOLD
from hashbench.errors import HashbenchError
from hashbench.parsers import TSV_HEADER, parse_source, read_adjacency, read_tsv
from hashbench.specs import FORMATS, ROLES, DatasetSpec, FileSpec, SourceSpec, parse_registry

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORK = Path(tempfile.mkdtemp(prefix="hashbench-fuzz-"))
MAX_ID = 2**63 - 1

ids = st.one_of(st.integers(0, 50), st.integers(0, MAX_ID))
spaces = st.sampled_from([b" ", b"\t", b"  ", b" \t", b"\x0b", b"\x0c"])
eols = st.sampled_from([b"\n", b"\r\n"])
# tokens a careless writer or a corrupted download produces; none of them is an id
junk = st.sampled_from([b"-1", b"+3", b"-0", b"1_0", b"1.0", b"2.5", b"1e3", b"0x1f", b"nan", b"\xef\xbc\x91",
                        b"\xd9\xa3", b"9223372036854775808", b"99999999999999999999", b"\x00", b"#", b"'1'",
                        b'"2"', b"1,2", b"NULL", b"\xff\xfe"])


def write(name: str, data: bytes) -> Path:
    path = WORK / name
    path.write_bytes(data)
    return path


def is_id(token: bytes) -> bool:
    return token.isdigit() and int(token) <= MAX_ID  # bytes.isdigit() is ASCII digits only


# --- adjacency: `user item item ...` ---------------------------------------------------------

def strict_adjacency(data: bytes) -> tuple[list[int], list[int]] | None:
    users, items = [], []
    for line in data.split(b"\n"):
        tokens = line.split()
        if not tokens:
            continue
        if not all(map(is_id, tokens)):
            return None
        users += [int(tokens[0])] * (len(tokens) - 1)
        items += [int(t) for t in tokens[1:]]
    return users, items


adjacency_lines = st.lists(st.tuples(ids, st.lists(ids, max_size=6), spaces, eols), max_size=12)


def render_adjacency(lines, blank_every: int = 0) -> bytes:
    out = b""
    for n, (user, items, space, eol) in enumerate(lines):
        out += space.join(str(t).encode() for t in [user, *items]) + eol
        if blank_every and n % blank_every == 0:
            out += space + eol  # a blank (whitespace-only) line
    return out


@FUZZ
@given(adjacency_lines, st.integers(0, 3), st.booleans())
def test_adjacency_reads_exactly_the_pairs_written(lines, blank_every, final_newline):
    data = render_adjacency(lines, blank_every)
    if not final_newline:
        data = data.rstrip(b"\r\n")
    users, items = read_adjacency(write("train.txt", data), "fuzz/train.txt")
    want_users, want_items = strict_adjacency(data)
    assert users.dtype == items.dtype == np.int64
    assert users.tolist() == want_users and items.tolist() == want_items


def check_adjacency_gives_pairs_or_a_clear_error(data: bytes, strict: bool):
    try:
        users, items = read_adjacency(write("train.txt", data), "fuzz/train.txt")
    except HashbenchError as exc:
        assert str(exc).startswith("fuzz/train.txt: ")
        if re.search(r"line \d+", str(exc)):
            number = int(re.search(r"line (\d+)", str(exc)).group(1))
            assert 1 <= number <= data.count(b"\n") + 1
        return
    if strict:
        assert strict_adjacency(data) is not None, "malformed input accepted"
        assert (users.tolist(), items.tolist()) == strict_adjacency(data)


@st.composite
def damaged_adjacency(draw):
    """A valid file with junk tokens put in at random places."""
    tokens = draw(st.lists(st.one_of(ids.map(lambda i: str(i).encode()), junk), min_size=1, max_size=30))
    seps = draw(st.lists(st.sampled_from([b" ", b"\t", b"\n", b"\r\n", b"\n\n"]), min_size=len(tokens),
                         max_size=len(tokens)))
    return b"".join(t + s for t, s in zip(tokens, seps))


@FUZZ
@given(st.one_of(st.binary(max_size=200), damaged_adjacency()))
def test_adjacency_never_crashes_on_any_bytes(data):
    check_adjacency_gives_pairs_or_a_clear_error(data, strict=False)


@FUZZ
@given(damaged_adjacency())
@example(b"1 1_0\n")
def test_adjacency_accepts_nothing_but_ids(data):
    check_adjacency_gives_pairs_or_a_clear_error(data, strict=True)


# --- tsv: gzip, header `user_id<TAB>item_id` -------------------------------------------------

def strict_tsv(raw: bytes) -> tuple[list[int], list[int]] | None:
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error):
        return None
    lines = [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]
    if lines[0] != TSV_HEADER.encode():
        return None
    users, items = [], []
    for line in lines[1:]:
        if not line:
            continue
        fields = line.split(b"\t")
        if len(fields) != 2 or not all(map(is_id, fields)):
            return None
        users.append(int(fields[0]))
        items.append(int(fields[1]))
    return users, items


@FUZZ
@given(st.lists(st.tuples(ids, ids), max_size=15), eols, st.booleans())
def test_tsv_reads_exactly_the_pairs_written(pairs, eol, final_newline):
    text = eol.join([TSV_HEADER.encode()] + [f"{u}\t{i}".encode() for u, i in pairs]) + (eol if final_newline else b"")
    users, items = read_tsv(write("x.tsv.gz", gzip.compress(text)), "fuzz/x.tsv.gz")
    assert (users.tolist(), items.tolist()) == strict_tsv(gzip.compress(text))


@st.composite
def damaged_tsv(draw):
    """gzip of a header + rows with junk fields, wrong field counts, stray whitespace; sometimes cut short."""
    field = st.one_of(ids.map(lambda i: str(i).encode()), junk, st.just(b""), st.just(b" 7"), st.just(b"7 "))
    rows = draw(st.lists(st.lists(field, min_size=1, max_size=3), max_size=8))
    header = draw(st.sampled_from([TSV_HEADER.encode(), b"user\titem", b"user_id,item_id", b"\xef\xbb\xbf"
                                   + TSV_HEADER.encode(), b"item_id\tuser_id", b""]))
    eol = draw(eols)
    raw = gzip.compress(eol.join([header] + [b"\t".join(r) for r in rows]) + eol)
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]  # a truncated download
    return raw


def check_tsv_gives_pairs_or_a_clear_error(raw: bytes, strict: bool):
    try:
        users, items = read_tsv(write("x.tsv.gz", raw), "fuzz/x.tsv.gz")
    except HashbenchError as exc:
        assert str(exc).startswith("fuzz/x.tsv.gz: ")
        return
    assert users.dtype == items.dtype == np.int64 and len(users) == len(items)
    if strict:
        assert strict_tsv(raw) is not None, "malformed input accepted"
        assert (users.tolist(), items.tolist()) == strict_tsv(raw)


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::pandas.errors.ParserWarning")
@FUZZ
@given(st.one_of(st.binary(max_size=200), damaged_tsv()))
def test_tsv_never_crashes_on_any_bytes(raw):
    check_tsv_gives_pairs_or_a_clear_error(raw, strict=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::pandas.errors.ParserWarning")
@FUZZ
@given(damaged_tsv())
@example(gzip.compress(TSV_HEADER.encode() + b"\n1\t2.0\n"))
def test_tsv_accepts_nothing_but_ids(raw):
    check_tsv_gives_pairs_or_a_clear_error(raw, strict=True)


# --- a source's files -> the canonical table ---------------------------------------------------

@FUZZ
@given(st.sets(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=40), st.data())
def test_a_two_fold_source_keeps_every_pair_once_with_its_fold(pairs, data):
    pairs = sorted(pairs)
    in_test = data.draw(st.lists(st.booleans(), min_size=len(pairs), max_size=len(pairs)))
    folds = {"train": [p for p, t in zip(pairs, in_test) if not t], "test": [p for p, t in zip(pairs, in_test) if t]}
    files, paths = [], []
    for role, rows in folds.items():
        text = "\n".join([TSV_HEADER] + [f"{u}\t{i}" for u, i in rows]) + "\n"
        paths.append(write(f"{role}.tsv.gz", gzip.compress(text.encode())))
        files.append(FileSpec(f"{role}.tsv.gz", role, sha256="0" * 64))
    spec = DatasetSpec("fuzz", "t", "c", users=1, items=1)
    got = parse_source(spec, SourceSpec("s", "tsv", tuple(files)), paths)
    assert got.pairs.tolist() == [list(p) for p in pairs]
    assert got.fold.tolist() == [TEST_FOLD if t else TRAIN_FOLD for t in in_test]
    assert got.n_users == max(u for u, _ in pairs) + 1 and got.n_items == max(i for _, i in pairs) + 1


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=2, max_size=20).filter(
    lambda rows: len(set(rows)) < len(rows)))
def test_a_duplicate_interaction_is_an_error_not_a_silent_merge(rows):
    text = "\n".join([TSV_HEADER] + [f"{u}\t{i}" for u, i in rows]) + "\n"
    path = write("all.tsv.gz", gzip.compress(text.encode()))
    source = SourceSpec("s", "tsv", (FileSpec("all.tsv.gz", "all", sha256="0" * 64),))
    with pytest.raises(HashbenchError, match="duplicate interaction"):
        parse_source(DatasetSpec("fuzz", "t", "c", users=1, items=1), source, [path])


# --- datasets.toml ---------------------------------------------------------------------------

def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}" for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def toml_document(registry: dict) -> str:
    return "".join(f"[{toml_key(name)}]\n" + "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in entry.items())
                   for name, entry in registry.items())


hexes = lambda n: st.text("0123456789abcdef", min_size=n, max_size=n)  # noqa: E731
names = st.text(st.characters(categories=("L", "N"), max_codepoint=0x7f), min_size=1, max_size=12)


@st.composite
def valid_file(draw, role):
    entry = {"name": draw(names) + ".tsv.gz", "role": role, "sha256": draw(hexes(64))}
    if draw(st.booleans()):
        entry["git_blob"] = draw(hexes(40))
    if draw(st.booleans()):
        entry["size"] = draw(st.integers(0, 2**40))
    if draw(st.booleans()):
        entry["url"] = "https://example.org/" + draw(names)
    return entry


@st.composite
def valid_entry(draw):
    entry = {"title": draw(st.text(max_size=20)), "citation": draw(st.text(max_size=20)),
             "users": draw(st.integers(1, 10**6)), "items": draw(st.integers(1, 10**6))}
    if draw(st.booleans()):
        entry["interactions"] = draw(st.integers(1, 10**7))
    if draw(st.booleans()):
        entry["builtin"] = True
    else:
        roles = draw(st.sampled_from([["all"], ["train", "test"]]))
        entry["sources"] = [{"name": draw(names), "format": draw(st.sampled_from(FORMATS)),
                             "files": [draw(valid_file(r)) for r in roles]}]
    return entry


@FUZZ
@given(st.dictionaries(names, valid_entry(), min_size=1, max_size=3))
def test_a_valid_registry_parses_to_exactly_its_entries(registry):
    specs = parse_registry(toml_document(registry))
    assert set(specs) == set(registry)
    for name, entry in registry.items():
        spec = specs[name]
        for key in ("title", "citation", "users", "items", "interactions"):
            assert getattr(spec, key) == entry.get(key)
        assert spec.builtin == entry.get("builtin", False)
        got = [[vars(f) for f in s.files] for s in spec.sources]
        want = [[{"url": None, "git_blob": None, "size": None, **f} for f in s["files"]] for s in entry.get("sources", [])]
        assert got == want


@FUZZ
@given(st.text(max_size=300))
@example("[a]\nusers = 1\n[[a.sources]]\nfiles = 5\n")
@example('[a]\nsources = "x"\n')
@example("a = 1\n")
def test_the_registry_never_crashes_on_any_text(text):
    try:
        parse_registry(text)
    except HashbenchError as exc:
        assert str(exc).startswith("datasets.toml")


# values of the wrong type or range, in places a typo or a bad merge puts them
wrong = st.one_of(st.just("x"), st.just(-3), st.just(0), st.just(3.5), st.just(True), st.just([1]), st.just({}),
                  st.just(""), st.just("../../etc/passwd"), st.just("zz"))
file_keys = st.sampled_from(["name", "role", "sha256", "git_blob", "size", "url"])
entry_keys = st.sampled_from(["title", "citation", "users", "items", "interactions", "builtin", "lightgcn_train"])


@st.composite
def damaged_registry(draw):
    registry = draw(st.dictionaries(names, valid_entry(), min_size=1, max_size=2))
    name = draw(st.sampled_from(sorted(registry)))
    entry = registry[name]
    if "sources" in entry and draw(st.booleans()):
        target = draw(st.sampled_from(entry["sources"][0]["files"]))
        target[draw(file_keys)] = draw(wrong)
    else:
        entry[draw(entry_keys)] = draw(wrong)
    return toml_document(registry)


def well_formed(spec: DatasetSpec) -> bool:
    """What the fetch and split code relies on, checked field by field."""
    def count(v, allow_none=False, minimum=1):
        return (v is None and allow_none) or (type(v) is int and v >= minimum)

    def hexdigest(v, n):
        return v is None or (isinstance(v, str) and re.fullmatch(f"[0-9a-fA-F]{{{n}}}", v) is not None)

    ok = (isinstance(spec.title, str) and isinstance(spec.citation, str) and type(spec.builtin) is bool
          and count(spec.users) and count(spec.items) and count(spec.interactions, True)
          and count(spec.lightgcn_train, True, 0) and count(spec.lightgcn_test, True, 0))
    for source in spec.sources:
        roles = sorted(f.role for f in source.files)
        ok &= source.format in FORMATS and roles in (["all"], ["test", "train"])
        for f in source.files:
            ok &= (isinstance(f.name, str) and f.name not in ("", ".", "..") and "/" not in f.name
                   and "\\" not in f.name and f.role in ROLES and hexdigest(f.sha256, 64)
                   and hexdigest(f.git_blob, 40) and bool(f.sha256 or f.git_blob)
                   and count(f.size, True, 0) and (f.url is None or isinstance(f.url, str)))
    return bool(ok)



@FUZZ
@given(damaged_registry())
@example('[a]\ntitle = "t"\ncitation = "c"\nusers = "x"\nitems = 3\nbuiltin = true\n')
def test_a_damaged_registry_is_rejected_not_half_accepted(text):
    try:
        specs = parse_registry(text)
    except HashbenchError as exc:
        assert str(exc).startswith("datasets.toml")
        return
    assert all(well_formed(spec) for spec in specs.values()), specs
