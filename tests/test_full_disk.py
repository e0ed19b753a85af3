"""A full disk loses nothing: at every place hashbench writes, "no space left on device" stops
the command with one line naming the file and the space it needs, no file is left
half-written under its final name, runs.jsonl stays whole lines, and once space is freed the
same command finishes every cell exactly once, bitwise as an uninterrupted run.

The disk fills up two ways: ENOSPC injected into os.write for the files of one write site
(tests/disk_full.py; always), and a real, tiny tmpfs filled to the brim (where we may mount).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from disk_full import disk_full
from hashbench import records
from hashbench.cli import app
from hashbench.core.checkpoints import read_checkpoint
from hashbench.errors import HashbenchError
from hashbench.fetch import fetch
from hashbench.splits import Split
from test_fault_injection import assert_exactly_once_and_identical, reference, sweep_args
from test_fetch import make_mirror, toy_files, toy_spec


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The uninterrupted sweep every interrupted one must end up equal to."""
    return reference(tmp_path_factory.mktemp("expected"), seeds=1)


def final_name(path: str) -> Path:
    """The file a temporary `.<name>.<pid>.tmp` (or `.<name>.part`) was going to become."""
    p = Path(path)
    if p.name.startswith(".") and p.suffix in (".tmp", ".part"):
        name = p.name[1:].removesuffix(".part")
        return p.with_name(name.rsplit(".", 2)[0] if p.suffix == ".tmp" else name)
    return p


def the_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "no space left on device" in line]
    assert len(lines) == 1, output
    return lines[0]


def assert_nothing_half_written(results: Path) -> None:
    """Every file under its final name is whole; no temporary file is left behind."""
    assert not [p for p in results.rglob("*") if p.name.endswith((".tmp", ".part"))]
    for path in results.rglob("*.npz"):
        with np.load(path, allow_pickle=False) as z:
            [z[key] for key in z.files]  # a cut-off file fails here (bad zip or short read)
    for path in results.rglob("train_state.pt"):
        read_checkpoint(path)  # raises CheckpointRefused on a partial file
    runs = results / records.RUNS_FILE
    if runs.exists():
        raw = runs.read_bytes()
        assert raw == b"" or raw.endswith(b"\n"), "runs.jsonl ends in half a line"
        assert all(json.loads(line)["config_hash"] for line in raw.splitlines())


# which file of a run fills the disk, and how many such files are written first
RUN_SITES = {
    "checkpoint": (lambda p: "train_state.pt" in p, 1),  # the proposed cell's second checkpoint
    "codes": (lambda p: "/codes/" in p, 1),  # the second hashing cell's codes file
    "per-user": (lambda p: "/per_user/" in p, 0),  # the first cell's per-user metrics
    "record": (lambda p: p.endswith(records.RUNS_FILE), 1),  # the second cell's record
}


@pytest.mark.parametrize("site", RUN_SITES)
def test_a_full_disk_at_each_write_of_a_run_stops_it_in_one_line_and_the_rerun_finishes(tmp_path, monkeypatch,
                                                                                         expected, site):
    matches, let_through = RUN_SITES[site]
    results = tmp_path / "results"
    args = sweep_args(seeds=1) + ["--results", str(results)]
    before = []
    with disk_full(monkeypatch, matches, let_through) as disk:
        first = CliRunner().invoke(app, args)
        before = [r["config_hash"] for r in records.read_records(results)]
    assert disk.failed, f"no {site} write happened"
    assert first.exit_code == 1, first.output
    line = the_error_line(first.output)
    assert str(final_name(disk.failed[0])) in line and "needs" in line and "free" in line
    assert_nothing_half_written(results)
    assert len(before) == {"checkpoint": 2, "codes": 2, "per-user": 0, "record": 1}[site]

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert_exactly_once_and_identical(results, expected)
    if site == "checkpoint":  # resumed from the checkpoint the full disk did not get to replace
        proposed = next(r for r in records.read_records(results) if r["method"] == "proposed")
        assert proposed["extras"]["resumed_from_epoch"] == 2


def test_a_full_disk_leaves_an_existing_split_file_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "split.npz"
    args = ["split", "synthetic", "--out", str(out)]
    assert CliRunner().invoke(app, args + ["--seed", "1"]).exit_code == 0
    old = out.read_bytes()
    with disk_full(monkeypatch, lambda p: "split.npz" in p):
        result = CliRunner().invoke(app, args + ["--seed", "0"])
    assert result.exit_code == 1
    assert str(out) in the_error_line(result.output)
    assert out.read_bytes() == old
    assert_nothing_half_written(tmp_path)
    assert CliRunner().invoke(app, args + ["--seed", "0"]).exit_code == 0
    assert Split.load(out).seed == 0


def test_a_full_disk_during_report_write_keeps_the_tables_whole(tmp_path, monkeypatch, expected):
    results = shutil.copytree(expected, tmp_path / "results")
    args = ["report", "--write", "--bits", "32", "--results", str(results), "--no-campaign", "--datasets", "synthetic"]
    with disk_full(monkeypatch, lambda p: "table1.tex" in p):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert str(results / "table1.tex") in the_error_line(result.output)
    assert not (results / "table1.tex").exists()
    assert_nothing_half_written(results)
    assert CliRunner().invoke(app, args).exit_code == 0
    assert "lsh" in (results / "table1.tex").read_text()


@pytest.mark.parametrize("site", ["test.txt", "manifest.json", "interactions.npz"])
def test_a_full_disk_during_fetch_caches_only_whole_verified_files(tmp_path, monkeypatch, site):
    files = toy_files()
    mirror = make_mirror(tmp_path / "mirror", files)
    spec, cache = toy_spec(files), tmp_path / "cache"
    with disk_full(monkeypatch, lambda p: site in p and "/cache/" in p) as disk:
        with pytest.raises(HashbenchError, match="no space left on device") as caught:
            fetch(spec, cache_dir=cache, mirror=str(mirror), quiet=True)
    assert disk.failed
    assert str(final_name(disk.failed[0])) in str(caught.value) and "\n" not in str(caught.value)
    assert not (cache / spec.name / site).exists()
    assert_nothing_half_written(cache)
    data = fetch(spec, cache_dir=cache, mirror=str(mirror), quiet=True)
    assert (cache / spec.name / "interactions.npz").is_file() and data.n_interactions > 0


# --- a real full disk ---------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MiB tmpfs (a checkpoint and its replacement, ~0.8 MiB each, must fit), unmounted afterwards whatever happens."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the injected-ENOSPC tests cover the same write sites")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "hashbench-test", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); "
                    "the injected-ENOSPC tests cover the same write sites")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_real_full_disk_stops_the_sweep_and_freeing_space_lets_it_finish(tiny_disk, expected):
    free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
    filler = tiny_disk / "filler"
    with open(filler, "wb") as fh:  # leave room for a couple of cells, not for a checkpoint
        fh.write(b"\0" * (free - 40 * 1024))
    results = tiny_disk / "results"
    args = sweep_args(seeds=1) + ["--results", str(results)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output
    assert str(results) in the_error_line(first.output)
    assert_nothing_half_written(results)
    done_before = len(list(records.read_records(results)))
    assert done_before < 3

    filler.unlink()  # space freed
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert_exactly_once_and_identical(results, expected)
