"""The CLI as a user drives it (typer's CliRunner), on the built-in synthetic dataset."""

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hashbench.cli import app
from hashbench.evaluate import evaluate_split_codes
from hashbench.splits import Split

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_every_command_has_help_text():
    commands = typer.main.get_command(app).commands
    assert set(commands) >= {"fetch", "split", "run", "report", "list"}
    for name, cmd in commands.items():
        assert cmd.help and len(cmd.help) > 20, name
        result = invoke(name, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and "hashbench" in result.output


def test_list_shows_methods_and_datasets():
    result = invoke("list")
    assert result.exit_code == 0
    for name in ("mostpop", "lsh", "gowalla", "yelp2018", "synthetic"):
        assert name in result.output


def test_split_writes_arrays_and_prints_a_stable_hash(tmp_path):
    first = invoke("split", "synthetic", "--seed", 2, "--out", tmp_path / "a.npz")
    second = invoke("split", "synthetic", "--seed", 2, "--out", tmp_path / "b.npz")
    assert first.exit_code == 0, first.output
    hash_line = [line for line in first.output.splitlines() if "split hash" in line][0]
    assert hash_line in second.output
    with np.load(tmp_path / "a.npz") as z:
        assert z["train"].shape[1] == 2 and z["train"].dtype == np.int64
        assert len(z["valid"]) and len(z["test"])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    result = invoke("run", "--methods", "mostpop,lsh", "--datasets", "synthetic", "--bits", 32, "--seeds", 2,
                    "--results", results)
    return results, result


def test_run_writes_one_record_per_cell_with_the_promised_fields(sweep):
    results, result = sweep
    assert result.exit_code == 0, result.output
    recs = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and {r["status"] for r in recs} == {"ok"}
    for r in recs:
        for key in ("method", "dataset", "bits", "seed", "config", "config_hash", "dataset_hash", "split_hash",
                    "train_seconds", "eval_seconds", "peak_rss_mb", "packages", "hardware", "git_sha"):
            assert key in r or key == "config" and "params" in r, key
        for on in ("valid", "test"):
            assert set(r["metrics"][on]) >= {"recall@50", "recall@100", "ndcg@50", "ndcg@100"}


def test_exported_codes_reproduce_the_recorded_metrics(sweep):
    results, _ = sweep
    rec = next(json.loads(l) for l in (results / "runs.jsonl").read_text().splitlines() if '"lsh"' in l)
    with np.load(results / rec["codes_file"]) as z:
        assert z["user_codes"].dtype == np.uint8 and z["user_codes"].shape[1] == 32 // 8
        assert str(z["split_hash"]) == rec["split_hash"]
        user_codes, item_codes = z["user_codes"], z["item_codes"]
    from hashbench.datasets import load_dataset
    from hashbench.splits import make_split

    split = make_split(load_dataset("synthetic"), "random-8-1-1", rec["seed"])
    assert split.hash == rec["split_hash"]
    metrics = evaluate_split_codes(user_codes, item_codes, split, "test", (50, 100)).metrics
    assert metrics["recall@50"] == pytest.approx(rec["metrics"]["test"]["recall@50"], abs=1e-12)


def test_rerun_skips_finished_cells(sweep):
    results, _ = sweep
    again = invoke("run", "--methods", "mostpop,lsh", "--datasets", "synthetic", "--bits", 32, "--seeds", 2,
                   "--results", results)
    assert again.exit_code == 0 and "0 run, 4 skipped" in again.output
    assert len((results / "runs.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("fmt, marker", [("markdown", "| method"), ("latex", r"\toprule"), ("csv", "source,method")])
def test_report_formats(sweep, fmt, marker):
    results, _ = sweep
    result = invoke("report", "--format", fmt, "--results", results, "--bits", 32)
    assert result.exit_code == 0, result.output
    assert marker in result.output and "lsh" in result.output and "mostpop" in result.output


def test_report_marks_best_hashing_row_and_shows_std_over_seeds(sweep):
    results, _ = sweep
    out = invoke("report", "--results", results, "--bits", 32).output
    lsh_row = next(line for line in out.splitlines() if line.startswith("| lsh"))
    assert "**" in lsh_row and "±" in lsh_row  # the only hashing row is best; two seeds give a std
    assert "mostpop (not hashing)" in out


@pytest.mark.parametrize("args, message", [
    (["run", "--methods", "lhs", "--datasets", "synthetic"], "did you mean 'lsh'"),
    (["run", "--methods", "lsh", "--datasets", "gowala"], "did you mean 'gowalla'"),
    (["run", "--methods", "lsh", "--datasets", "synthetic", "--bits", 12], "multiple of 8"),
    (["run", "--methods", "lsh", "--datasets", "synthetic", "--ks", 5000], "catalogue"),
    (["fetch", "nope"], "unknown dataset"),
    (["split", "synthetic", "--protocol", "random", "--out", "x.npz"], "unknown protocol"),
    (["report", "--format", "html"], "--format must be"),
])
def test_bad_input_is_one_line_error_without_traceback(tmp_path, args, message):
    result = runner.invoke(app, [str(a) for a in args] + (["--results", str(tmp_path)] if args[0] == "run" else []))
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs.jsonl").exists()
