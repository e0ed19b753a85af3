"""`hashbench merge`: results computed on another machine (a lent GPU) join this results
directory — the cells it lacks, with their files; nothing twice; nothing outside it written."""

import io
import json
import tarfile

import pytest
from typer.testing import CliRunner

from hashbench import records
from hashbench.cli import app
from hashbench.errors import HashbenchError
from hashbench.merge import merge


def run(results, seeds):
    result = CliRunner().invoke(app, ["run", "-m", "lsh,mostpop", "-d", "synthetic", "--bits", "32",
                                      "--seeds", seeds, "--results", str(results)])
    assert result.exit_code == 0, result.output


def lines(results):
    return (results / "runs.jsonl").read_text().splitlines()


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    """'here' ran seed 0; 'there' (the GPU) ran seeds 0 and 1."""
    here, there = tmp_path_factory.mktemp("here"), tmp_path_factory.mktemp("there")
    run(here, "1")
    run(there, "2")
    return here, there


def copy(tmp_path, machines):
    import shutil

    here, there = machines
    shutil.copytree(here, tmp_path / "here")
    return tmp_path / "here", there


def test_the_cells_missing_here_are_merged_with_their_files_and_only_once(tmp_path, machines):
    here, there = copy(tmp_path, machines)
    before = lines(here)
    result = CliRunner().invoke(app, ["merge", str(there), "--results", str(here)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "merged 2 records" in said and "skipped 2 of cells finished here" in said
    after = lines(here)
    assert after[:len(before)] == before  # appended, nothing rewritten
    merged = [json.loads(line) for line in after[len(before):]]
    assert {(r["method"], r["seed"]) for r in merged} == {("lsh", 1), ("mostpop", 1)}
    for r in merged:
        for key in ("codes_file", "per_user_file"):
            if r.get(key):
                assert (here / r[key]).read_bytes() == (there / r[key]).read_bytes()
    # seed 0 ran on both machines: the record already here stays the one that counts
    latest = records.latest_by_cell(here)
    assert sorted(json.dumps(r, sort_keys=True) for r in latest.values()) == sorted(
        json.dumps(json.loads(line), sort_keys=True) for line in before[:2] + after[len(before):])
    again = CliRunner().invoke(app, ["merge", str(there), "--results", str(here)])
    assert again.exit_code == 0 and "merged 0 records" in again.output and len(lines(here)) == len(after)
    assert "2 already here" in " ".join(again.output.split())


def test_an_archive_merges_as_its_folder_does(tmp_path, machines):
    here, there = copy(tmp_path, machines)
    archive = tmp_path / "results.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(there, arcname="results")
    plan = merge(archive, here)
    assert len(plan.records) == 2 and plan.files
    assert all((here / f).is_file() for f in plan.files)


def test_an_archive_that_reaches_outside_is_refused_and_nothing_is_written(tmp_path, machines):
    here, _ = copy(tmp_path, machines)
    before = lines(here)
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        data = b"{}\n"
        member = tarfile.TarInfo("../../outside.txt")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    with pytest.raises(HashbenchError, match="not a readable .tar"):
        merge(archive, here)
    assert not (tmp_path.parent / "outside.txt").exists() and lines(here) == before


def test_a_record_naming_a_file_outside_the_results_is_refused_before_any_write(tmp_path, machines):
    here, there = copy(tmp_path, machines)
    source = tmp_path / "source"
    source.mkdir()
    record = json.loads(lines(there)[-1])
    record["per_user_file"] = "../../etc/passwd"
    (source / "runs.jsonl").write_text(json.dumps(record) + "\n")
    before = lines(here)
    result = CliRunner().invoke(app, ["merge", str(source), "--results", str(here)])
    assert result.exit_code == 1 and "is not a name inside codes/ or per_user/" in " ".join(result.output.split())
    assert lines(here) == before
    missing = CliRunner().invoke(app, ["merge", str(tmp_path / "nowhere"), "--results", str(here)])
    assert missing.exit_code == 1 and "no such file or directory" in " ".join(missing.output.split())


def test_a_failed_record_does_not_hide_a_cell_finished_here(tmp_path, machines):
    here, _ = copy(tmp_path, machines)
    finished = json.loads(lines(here)[0])
    failed = {**finished, "status": "failed", "error": "CUDA out of memory", "finished_at": "2030-01-01T00:00:00"}
    source = tmp_path / "source"
    source.mkdir()
    (source / "runs.jsonl").write_text(json.dumps(failed) + "\n")
    plan = merge(source, here)
    assert plan.records == [] and plan.finished_here == 1
    assert records.latest_by_cell(here)[finished["config_hash"]]["status"] == "ok"


def test_the_device_script_sends_back_what_it_ran_and_it_merges_here(tmp_path):
    """scripts/device-run.sh as the GPU machine runs it (on the CPU here): the records it added,
    with their files, in one archive that `hashbench merge` takes."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out, there, here = tmp_path / "out", tmp_path / "there", tmp_path / "here"
    out.mkdir()
    run(there, "1")  # what the machine's results held before the call
    env = {**os.environ, "OUT": str(out), "HASHBENCH_DEVICE": "cpu", "HASHBENCH_RESULTS": str(there),
           "HASHBENCH_PYTHON": sys.executable}
    done = subprocess.run(["bash", str(repo / "scripts" / "device-run.sh"), "300", "run", "-m", "lsh", "-d",
                           "synthetic", "--bits", "32", "--seeds", "3"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "packed 2 records" in done.stdout  # seeds 1 and 2: seed 0 was there already
    plan = merge(out / "results.tar", here)
    assert sorted(r["seed"] for r in plan.records) == [1, 2]
    assert all((here / f).read_bytes() == (there / f).read_bytes() for f in plan.files)
