"""fetch, offline: a toy dataset served from a directory mirror or a 127.0.0.1 HTTP server.

Every file's hashes are computed here from the bytes the test writes, and the spec is built
from a TOML string through specs.parse_registry, so the registry parsing is exercised too.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import socket
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import hashbench.fetch as fetch_module
from hashbench.data import TEST_FOLD, TRAIN_FOLD
from hashbench.errors import HashbenchError
from hashbench.fetch import fetch, print_stats, stats_table
from hashbench.specs import get_dataset_spec, parse_registry

TRAIN = {0: [0, 1, 2], 1: [2, 3], 2: [0, 4, 5], 3: [1, 5]}
TEST = {0: [3], 1: [4], 2: [1], 3: [0, 2]}
N_USERS, N_ITEMS, N_TRAIN, N_TEST = 4, 6, 10, 5


def adjacency(folds: dict) -> bytes:
    return "".join(f"{u} {' '.join(map(str, items))}\n" for u, items in folds.items()).encode()


def tsv_gz(*folds: dict) -> bytes:
    rows = sorted((u, i) for fold in folds for u, items in fold.items() for i in items)
    text = "user_id\titem_id\n" + "".join(f"{u}\t{i}\n" for u, i in rows)
    return gzip.compress(text.encode(), mtime=0)


def toy_files() -> dict[str, bytes]:
    return {
        "train.txt": adjacency(TRAIN),
        "test.txt": adjacency(TEST),
        "lightgcn_train.tsv.gz": tsv_gz(TRAIN),
        "lightgcn_test.tsv.gz": tsv_gz(TEST),
        "interactions.tsv.gz": tsv_gz(TRAIN, TEST),
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def toy_spec(files: dict[str, bytes] | None = None, url_base: str | None = None, **counts):
    """A registry entry like datasets.toml's: upstream train.txt verified by git blob only
    (as for real Gowalla), test.txt by blob + sha256 + size, the tsv files by sha256 + size."""
    files = files or toy_files()

    def entry(name, role, blob_only=False):
        fields = {"name": name, "role": role}
        if url_base and name.endswith(".txt"):
            fields["url"] = f"{url_base}/toy/{name}"
        if name.endswith(".txt"):
            fields["git_blob"] = git_blob(files[name])
        if not blob_only:
            fields["sha256"] = sha256(files[name])
            fields["size"] = len(files[name])
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in fields.items()) + " }"

    c = dict(users=N_USERS, items=N_ITEMS, interactions=N_TRAIN + N_TEST,
             lightgcn_train=N_TRAIN, lightgcn_test=N_TEST) | counts
    text = f"""
[toy]
title = "Toy"
citation = "test"
{chr(10).join(f"{k} = {v}" for k, v in c.items())}

[[toy.sources]]
name = "upstream"
format = "adjacency"
files = [{entry("train.txt", "train", blob_only=True)}, {entry("test.txt", "test")}]

[[toy.sources]]
name = "tsv-folds"
format = "tsv"
files = [{entry("lightgcn_train.tsv.gz", "train")}, {entry("lightgcn_test.tsv.gz", "test")}]

[[toy.sources]]
name = "tsv"
format = "tsv"
files = [{entry("interactions.tsv.gz", "all")}]
"""
    return parse_registry(text)["toy"]


def make_mirror(root: Path, files: dict[str, bytes], only: list[str] | None = None) -> Path:
    (root / "toy").mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if only is None or name in only:
            (root / "toy" / name).write_bytes(data)
    return root


def cache_names(cache: Path) -> set[str]:
    return {p.name for p in (cache / "toy").iterdir()} if (cache / "toy").exists() else set()


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("User-Agent")))
        name = self.path.rsplit("/", 1)[-1]
        if name in self.server.fail:
            self.send_error(500, "boom")
        elif name in self.server.truncate:  # promise the full length, send half, hang up
            data = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
        else:
            super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; .seen records (path, User-Agent)."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    httpd.seen, httpd.fail, httpd.truncate, httpd.root = [], set(), set(), root
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


# --- downloads over HTTP -------------------------------------------------------------------

def test_upstream_download_is_verified_parsed_and_cached(tmp_path, server):
    files = toy_files()
    make_mirror(server.root, files)
    spec = toy_spec(files, url_base=server.url)
    cache = tmp_path / "cache"

    data = fetch(spec, cache_dir=cache, quiet=True)  # no mirror: the spec's own URLs

    assert (data.n_users, data.n_items, data.n_interactions) == (N_USERS, N_ITEMS, N_TRAIN + N_TEST)
    assert (data.fold == TRAIN_FOLD).sum() == N_TRAIN and (data.fold == TEST_FOLD).sum() == N_TEST
    assert [p for p, _ in server.seen] == ["/toy/train.txt", "/toy/test.txt"]
    assert all(ua.startswith("hashbench/") for _, ua in server.seen)
    assert (cache / "toy" / "train.txt").read_bytes() == files["train.txt"]
    assert not any(n.endswith(".part") for n in cache_names(cache))
    manifest = json.loads((cache / "toy" / "manifest.json").read_text())
    assert manifest["source"] == "upstream" and manifest["content_hash"] == data.content_hash()
    assert manifest["files"][0]["git_blob"] == git_blob(files["train.txt"])
    assert manifest["files"][1]["sha256"] == sha256(files["test.txt"])
    assert (manifest["users"], manifest["lightgcn_test"]) == (N_USERS, N_TEST)


@pytest.mark.parametrize("name, check", [("test.txt", "sha256"), ("train.txt", "git blob")])
def test_corrupted_download_is_rejected_and_not_cached(tmp_path, server, name, check):
    files = toy_files()
    spec = toy_spec(files)
    bad = bytearray(files[name])
    bad[0] ^= 1  # same size: only the hash can tell
    make_mirror(server.root, files | {name: bytes(bad)})
    cache = tmp_path / "cache"

    with pytest.raises(HashbenchError) as err:
        fetch(spec, cache_dir=cache, mirror=server.url, quiet=True)

    expected = sha256(files[name]) if check == "sha256" else git_blob(files[name])
    got = sha256(bytes(bad)) if check == "sha256" else git_blob(bytes(bad))
    assert str(err.value) == (f"toy/{name}: {check} mismatch: expected {expected}, got {got} "
                              "(file rejected, not cached)")
    names = cache_names(cache)
    assert name not in names and not any(n.endswith(".part") for n in names)
    assert "interactions.npz" not in names


def test_404_falls_through_to_the_next_source(tmp_path, server):
    files = toy_files()
    make_mirror(server.root, files, only=["lightgcn_train.tsv.gz", "lightgcn_test.tsv.gz"])

    data = fetch(toy_spec(files), cache_dir=tmp_path / "cache", mirror=server.url + "/", quiet=True)

    assert data.fold is not None and data.n_interactions == N_TRAIN + N_TEST
    assert [p for p, _ in server.seen] == ["/toy/train.txt", "/toy/lightgcn_train.tsv.gz",
                                           "/toy/lightgcn_test.tsv.gz"]
    assert json.loads((tmp_path / "cache/toy/manifest.json").read_text())["source"] == "tsv-folds"


def test_server_error_is_reported_not_skipped(tmp_path, server):
    files = toy_files()
    make_mirror(server.root, files)
    server.fail.add("train.txt")
    with pytest.raises(HashbenchError, match=r"toy/train.txt: download from .*/toy/train.txt failed: HTTP 500"):
        fetch(toy_spec(files), cache_dir=tmp_path / "cache", mirror=server.url, quiet=True)


def test_connection_cut_mid_body_leaves_nothing(tmp_path, server):
    files = toy_files()
    make_mirror(server.root, files)
    server.truncate.add("test.txt")
    cache = tmp_path / "cache"
    with pytest.raises(HashbenchError, match=r"toy/test.txt: download from .* truncated: got \d+ of \d+ bytes"):
        fetch(toy_spec(files), cache_dir=cache, mirror=server.url, quiet=True)
    assert "test.txt" not in cache_names(cache) and ".test.txt.part" not in cache_names(cache)


def test_unreachable_host_gives_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = toy_spec(url_base=f"http://127.0.0.1:{port}")
    with pytest.raises(HashbenchError, match=r"toy/train.txt: cannot reach http://127.0.0.1:\d+/toy/train.txt: .*HASHBENCH_MIRROR"):
        fetch(spec, cache_dir=tmp_path / "cache", quiet=True)


def test_interrupted_download_leaves_nothing_under_the_final_name(tmp_path, server, monkeypatch):
    files = toy_files()
    make_mirror(server.root, files)
    real_urlopen = urllib.request.urlopen

    def urlopen_then_ctrl_c(*args, **kwargs):
        response = real_urlopen(*args, **kwargs)
        reads = iter([response.read(4)])

        def read(_n=-1):
            for chunk in reads:
                return chunk
            raise KeyboardInterrupt

        response.read = read
        return response

    monkeypatch.setattr(urllib.request, "urlopen", urlopen_then_ctrl_c)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        fetch(toy_spec(files), cache_dir=cache, mirror=server.url, quiet=True)
    assert cache_names(cache) <= {".fetch.lock"}


def test_second_fetch_does_no_work(tmp_path, server, monkeypatch):
    files = toy_files()
    make_mirror(server.root, files)
    spec, cache = toy_spec(files), tmp_path / "cache"
    first = fetch(spec, cache_dir=cache, mirror=server.url, quiet=True)
    server.seen.clear()
    monkeypatch.setattr(fetch_module, "parse_source", lambda *a: pytest.fail("parsed again"))

    second = fetch(spec, cache_dir=cache, mirror=server.url, quiet=True)

    assert server.seen == []
    assert np.array_equal(first.pairs, second.pairs) and np.array_equal(first.fold, second.fold)


def test_force_reparses_but_reuses_verified_raw_files(tmp_path, server, monkeypatch):
    files = toy_files()
    make_mirror(server.root, files)
    spec, cache = toy_spec(files), tmp_path / "cache"
    fetch(spec, cache_dir=cache, mirror=server.url, quiet=True)
    server.seen.clear()
    parses = []
    real_parse = fetch_module.parse_source
    monkeypatch.setattr(fetch_module, "parse_source", lambda *a, **k: parses.append(1) or real_parse(*a, **k))

    again = fetch(spec, cache_dir=cache, mirror=server.url, quiet=True, force=True)

    assert server.seen == [] and again.n_interactions == N_TRAIN + N_TEST
    assert parses == [1]  # parsed again from the verified raw files


def test_a_bad_cached_raw_file_is_downloaded_again(tmp_path, server):
    files = toy_files()
    make_mirror(server.root, files)
    spec, cache = toy_spec(files), tmp_path / "cache"
    fetch(spec, cache_dir=cache, mirror=server.url, quiet=True)
    (cache / "toy" / "interactions.npz").unlink()
    (cache / "toy" / "train.txt").write_bytes(b"0 1\n")  # tampered with since
    server.seen.clear()

    data = fetch(spec, cache_dir=cache, mirror=server.url, quiet=True)

    assert [p for p, _ in server.seen] == ["/toy/train.txt"]
    assert (cache / "toy" / "train.txt").read_bytes() == files["train.txt"]
    assert data.n_interactions == N_TRAIN + N_TEST


# --- directory mirrors ---------------------------------------------------------------------

@pytest.mark.parametrize("present, source, has_folds", [
    (None, "upstream", True),
    (["lightgcn_train.tsv.gz", "lightgcn_test.tsv.gz", "interactions.tsv.gz"], "tsv-folds", True),
    (["interactions.tsv.gz"], "tsv", False),
])
def test_directory_mirror_each_source(tmp_path, present, source, has_folds):
    files = toy_files()
    mirror = make_mirror(tmp_path / "mirror", files, only=present)
    cache = tmp_path / "cache"

    data = fetch(toy_spec(files), cache_dir=cache, mirror=str(mirror), quiet=True)

    assert (data.n_users, data.n_items, data.n_interactions) == (N_USERS, N_ITEMS, N_TRAIN + N_TEST)
    assert (data.fold is not None) == has_folds
    if has_folds:
        train = {tuple(p) for p in data.pairs[data.fold == TRAIN_FOLD]}
        assert train == {(u, i) for u, items in TRAIN.items() for i in items}
    assert json.loads((cache / "toy" / "manifest.json").read_text())["source"] == source


def test_mirror_from_environment_and_cache_dir_from_environment(tmp_path, monkeypatch):
    files = toy_files()
    mirror = make_mirror(tmp_path / "mirror", files, only=["interactions.tsv.gz"])
    monkeypatch.setenv("HASHBENCH_MIRROR", str(mirror))
    monkeypatch.setenv("HASHBENCH_CACHE_DIR", str(tmp_path / "envcache"))
    fetch(toy_spec(files), quiet=True)
    assert (tmp_path / "envcache" / "toy" / "interactions.npz").is_file()


@pytest.mark.parametrize("name, expected", [
    ("lightgcn_train.tsv.gz", "size mismatch: expected {n} bytes, got {m} bytes"),
    ("train.txt", "git blob mismatch"),  # spec has no size for it: the blob id catches it
])
def test_truncated_mirror_file_is_rejected(tmp_path, name, expected):
    files = toy_files()
    short = files[name][: len(files[name]) - 5]
    present = ["lightgcn_train.tsv.gz", "lightgcn_test.tsv.gz"] if name.endswith(".gz") else None
    mirror = make_mirror(tmp_path / "mirror", files | {name: short}, only=present)
    cache = tmp_path / "cache"
    with pytest.raises(HashbenchError) as err:
        fetch(toy_spec(files), cache_dir=cache, mirror=str(mirror), quiet=True)
    message = str(err.value)
    assert message.startswith(f"toy/{name}: " + expected.format(n=len(files[name]), m=len(short)))
    assert message.endswith("(file rejected, not cached)")
    assert name not in cache_names(cache)


def test_every_source_missing_names_mirror_and_files(tmp_path):
    mirror = make_mirror(tmp_path / "mirror", {})
    with pytest.raises(HashbenchError) as err:
        fetch(toy_spec(), cache_dir=tmp_path / "cache", mirror=str(mirror), quiet=True)
    message = str(err.value)
    assert f"mirror {mirror}" in message and "<mirror>/<dataset>/<file>" in message
    for name in ("train.txt", "lightgcn_train.tsv.gz", "interactions.tsv.gz"):
        assert str(mirror / "toy" / name) in message


def test_mirror_that_does_not_exist(tmp_path):
    with pytest.raises(HashbenchError, match="neither an http"):
        fetch(toy_spec(), cache_dir=tmp_path / "cache", mirror=str(tmp_path / "nope"), quiet=True)


# --- parsing and counts --------------------------------------------------------------------

@pytest.mark.parametrize("name, content, line, text", [
    ("train.txt", b"0 0 1 2\n1 2 3\n2 0 x4 5\n3 1 5\n", 3, "2 0 x4 5"),
    ("train.txt", b"0 0 1 2\n1 2 -3\n", 2, "1 2 -3"),
    ("lightgcn_train.tsv.gz", gzip.compress(b"user_id\titem_id\n0\t0\n0\t1\t7\n"), 3, "0\t1\t7"),
    ("lightgcn_train.tsv.gz", gzip.compress(b"user_id\titem_id\n0\t0\n1\n"), 3, "1"),
    ("lightgcn_train.tsv.gz", gzip.compress(b"user\titem\n0\t0\n"), 1, "user\titem"),
])
def test_malformed_line_names_file_and_line(tmp_path, name, content, line, text):
    files = toy_files() | {name: content}  # hashes match: the file is what the spec says
    present = ["lightgcn_train.tsv.gz", "lightgcn_test.tsv.gz"] if name.endswith(".gz") else None
    mirror = make_mirror(tmp_path / "mirror", files, only=present)
    with pytest.raises(HashbenchError) as err:
        fetch(toy_spec(files), cache_dir=tmp_path / "cache", mirror=str(mirror), quiet=True)
    assert str(err.value).startswith(f"toy/{name}: line {line}: cannot parse {text!r}")


def test_long_malformed_line_is_truncated_in_the_message(tmp_path):
    files = toy_files() | {"train.txt": b"0 " + b"1 " * 200 + b"oops\n"}
    mirror = make_mirror(tmp_path / "mirror", files)
    with pytest.raises(HashbenchError, match=r"line 1: cannot parse '0 1 1 .*\.\.\.'") as err:
        fetch(toy_spec(files), cache_dir=tmp_path / "cache", mirror=str(mirror), quiet=True)
    assert len(str(err.value)) < 200


def test_expected_count_mismatch(tmp_path):
    files = toy_files()
    mirror = make_mirror(tmp_path / "mirror", files)
    spec = toy_spec(files, users=5, lightgcn_test=6)
    with pytest.raises(HashbenchError) as err:
        fetch(spec, cache_dir=tmp_path / "cache", mirror=str(mirror), quiet=True)
    assert str(err.value) == ("toy: counts differ from datasets.toml (source 'upstream'): "
                              "users expected 5, got 4; lightgcn_test expected 6, got 5")
    assert not (tmp_path / "cache" / "toy" / "interactions.npz").exists()


def test_progress_and_stats_render(tmp_path):
    files = toy_files()
    mirror = make_mirror(tmp_path / "mirror", files, only=["interactions.tsv.gz"])
    out = io.StringIO()
    console = Console(file=out, width=1000)  # long tmp paths must not wrap the checked phrases
    data = fetch(toy_spec(files), cache_dir=tmp_path / "cache", mirror=str(mirror), console=console)
    print_stats(data, console=console)
    text = out.getvalue()
    assert "interactions.tsv.gz" in text and "not the 'upstream' form; trying the 'tsv-folds' form" in text
    assert f"{100 * 15 / 24:.3f}%" in text

    table = stats_table([data, data])
    assert table.row_count == 2 and [c.header for c in table.columns][-1] == "Density"


# --- the real offline copy -----------------------------------------------------------------

OFFLINE = Path(__file__).resolve().parents[2] / "shared" / "datasets"
@pytest.mark.skipif(not OFFLINE.is_dir(), reason=f"no offline dataset copy at {OFFLINE}")
@pytest.mark.parametrize("name", ["gowalla", "yelp2018"])
def test_real_offline_copy_verifies_against_datasets_toml(tmp_path, name):
    # fetch itself refuses counts that differ from datasets.toml; this checks the real copy passes
    data = fetch(get_dataset_spec(name), cache_dir=tmp_path, mirror=str(OFFLINE), quiet=True)
    assert data.n_interactions > 0
    assert json.loads((tmp_path / name / "manifest.json").read_text())["source"] == "tsv-folds"
