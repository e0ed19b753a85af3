"""`hashbench verify`: every hashing record's metrics come back from its exported codes and the
data alone, and a record or a codes file that was altered is caught and named."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from hashbench.cli import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two seeds of LSH (codes), MostPop (a float row: no codes) and a briefly trained Proposed
    (codes from a trained model, validation and test metrics from its selected epoch)."""
    path = tmp_path_factory.mktemp("results")
    result = invoke("run", "--methods", "mostpop,lsh,proposed", "--datasets", "synthetic", "--bits", 32,
                    "--seeds", 2, "-p", "proposed.epochs=2", "-p", "proposed.eval_every=1", "--results", path)
    assert result.exit_code == 0, result.output
    return path


def copy_of(results, tmp_path):
    target = tmp_path / "results"
    shutil.copytree(results, target)
    return target


def alter_one_per_user_value(results):
    """Flip one user's stored Recall@50 in Proposed's per-user file; returns that file."""
    rec = next(json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()
               if '"proposed"' in line)
    path = results / rec["per_user_file"]
    with np.load(path) as z:
        arrays = {name: z[name] for name in z.files}
    user = int(np.flatnonzero(~np.isnan(arrays["recall_at_50"]))[0])
    arrays["recall_at_50"][user] = 1.0 - arrays["recall_at_50"][user]
    np.savez_compressed(path, **arrays)
    return path


def test_faithful_records_are_all_re_checked_and_match(results):
    out = invoke("verify", "--results", results)
    assert out.exit_code == 0, out.output
    assert "4 records re-checked from their codes match, 0 do not" in out.output
    assert "2 float or real-valued rows without codes" in out.output


def test_an_altered_metric_is_caught_and_named(results, tmp_path):
    results = copy_of(results, tmp_path)
    lines = (results / "runs.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    k = next(i for i, r in enumerate(recs) if r["method"] == "proposed" and r["seed"] == 1)
    recs[k]["metrics"]["test"]["recall@50"] += 0.01
    (results / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = invoke("verify", "--results", results)
    assert out.exit_code == 1
    assert "MISMATCH proposed · synthetic · 32b · seed 1" in out.output and "test recall@50" in out.output
    assert "3 records re-checked from their codes match, 1 do not" in out.output


def test_altered_codes_are_caught_and_a_pruned_file_is_only_counted(results, tmp_path):
    results = copy_of(results, tmp_path)
    recs = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    lsh = [r for r in recs if r["method"] == "lsh"]
    path = results / lsh[0]["codes_file"]
    with np.load(path) as z:
        arrays = {name: z[name] for name in z.files}
    arrays["item_codes"] = arrays["item_codes"][::-1].copy()  # the same codes, given to other items
    np.savez(path, **arrays)
    (results / lsh[1]["codes_file"]).unlink()  # pruned: the record stays, git history has the file
    out = invoke("verify", "--results", results, "--methods", "lsh")
    assert out.exit_code == 1
    assert f"MISMATCH lsh · synthetic · 32b · seed {lsh[0]['seed']}" in out.output
    assert "0 records re-checked from their codes match, 1 do not; 1 with pruned codes" in out.output


def test_codes_of_another_split_are_refused(results, tmp_path):
    results = copy_of(results, tmp_path)
    recs = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    a, b = [r for r in recs if r["method"] == "lsh"]
    shutil.copy(results / b["codes_file"], results / a["codes_file"])  # seed 1's codes under seed 0's record
    out = invoke("verify", "--results", results, "--methods", "lsh")
    assert out.exit_code == 1 and "split: the codes say" in out.output


def test_a_directory_without_records_is_a_one_line_error(tmp_path):
    out = invoke("verify", "--results", tmp_path)
    assert out.exit_code == 1 and "nothing to verify" in out.output


def test_an_altered_per_user_value_is_caught(results, tmp_path):
    """The significance tests read the per-user files: one user's value changed is a mismatch."""
    results = copy_of(results, tmp_path)
    alter_one_per_user_value(results)
    out = invoke("verify", "--results", results, "--methods", "proposed")
    assert out.exit_code == 1 and "per-user recall@50: 1 users differ" in out.output


def test_history_checks_pruned_codes_from_the_commit_that_had_them(results, tmp_path):
    """Prune deletes files that git history keeps; --history reads them back from it and checks
    them like the others, without writing into the work tree."""
    from helpers import commit_everything, git

    results = copy_of(results, tmp_path)
    commit_everything(results)
    recs = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    pruned = next(r for r in recs if r["method"] == "lsh" and r["seed"] == 1)
    for key in ("codes_file", "per_user_file"):
        (results / pruned[key]).unlink()
    git(results, "commit", "-qam", "prune")
    out = invoke("verify", "--results", results, "--methods", "lsh", "--history")
    assert out.exit_code == 0, out.output
    assert "match lsh · synthetic · 32b · seed 1" in out.output and "(codes from git history)" in out.output
    assert "2 records re-checked from their codes match, 0 do not (1 of them read back from git history)" in out.output
    assert not (results / pruned["codes_file"]).exists()  # the work tree is left as it was
    # without --history it is only counted, and the summary says how to check it
    plain = invoke("verify", "--results", results, "--methods", "lsh")
    assert "1 with pruned codes (git history has them: --history checks them)" in plain.output
    # a file the history never had stays "pruned"
    fresh = copy_of(results, tmp_path / "fresh")
    shutil.rmtree(fresh / ".git")
    out = invoke("verify", "--results", fresh, "--methods", "lsh", "--history")
    assert out.exit_code == 0 and "1 with pruned codes not in git history" in out.output


def test_a_record_naming_a_file_outside_the_results_is_never_restored_there(tmp_path):
    """A record is a line anyone may have edited: its file name must not let --history write
    outside the temporary folder."""
    from helpers import commit_everything

    from hashbench.verify import restore_from_history

    results = tmp_path / "results"
    (results / "codes").mkdir(parents=True)
    (results / "codes" / "a.npz").write_bytes(b"codes")
    (tmp_path / "outside.npz").write_bytes(b"not ours")
    commit_everything(tmp_path)
    into = tmp_path / "restored" / "here"
    into.mkdir(parents=True)
    assert restore_from_history(results, "codes/a.npz", into) and (into / "codes" / "a.npz").read_bytes() == b"codes"
    for hostile in ("../outside.npz", "/etc/passwd", "codes/../../outside.npz", "", 7, "..\\outside.npz"):
        assert not restore_from_history(results, hostile, into)
    assert not (tmp_path / "restored" / "outside.npz").exists()


def test_a_record_whose_file_name_leaves_the_results_is_a_named_mismatch(results, tmp_path):
    results = copy_of(results, tmp_path)
    recs = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    k = next(i for i, r in enumerate(recs) if r["method"] == "lsh")
    recs[k]["codes_file"] = "../../elsewhere.npz"
    (results / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = invoke("verify", "--results", results, "--methods", "lsh")
    assert out.exit_code == 1 and "MISMATCH lsh" in out.output and "not a name inside codes/" in out.output


def test_history_finds_each_file_on_its_own_so_a_pruned_per_user_file_is_still_checked(results, tmp_path):
    from helpers import commit_everything, git

    results = copy_of(results, tmp_path)
    path = alter_one_per_user_value(results)  # committed altered, then pruned; the codes stay on disk
    commit_everything(results)
    path.unlink()
    git(results, "commit", "-qam", "prune")
    assert invoke("verify", "--results", results, "--methods", "proposed").exit_code == 0  # not on disk: not read
    out = invoke("verify", "--results", results, "--methods", "proposed", "--history")
    assert out.exit_code == 1 and "per-user recall@50: 1 users differ" in out.output
