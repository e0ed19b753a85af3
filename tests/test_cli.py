"""The CLI as a user drives it (typer's CliRunner), on the built-in synthetic dataset."""

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hashbench.cli import app
from hashbench.evaluate import evaluate_split_codes

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


def test_a_whole_number_written_as_int_or_float_names_the_same_recorded_cell(tmp_path):
    # a record's params say l2 = 0.0; copying its command with l2=0 must find it, not train it again
    args = ("run", "-m", "proposed", "-d", "synthetic", "-p", "epochs=2", "-p", "eval_every=1", "--results", tmp_path)
    first = invoke(*args, "-p", "l2=0.0")
    assert first.exit_code == 0 and "1 run, 0 skipped" in first.output
    again = invoke(*args, "-p", "l2=0")
    assert again.exit_code == 0 and "0 run, 1 skipped" in again.output
    other = invoke(*args, "-p", "l2=1")  # a different value is a different cell
    assert other.exit_code == 0 and "1 run, 0 skipped" in other.output
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("fmt, marker", [("markdown", "| method"), ("latex", r"\toprule"), ("csv", "source,method")])
def test_report_formats(sweep, fmt, marker):
    results, _ = sweep
    result = invoke("report", "--format", fmt, "--results", results, "--bits", 32, "--datasets", "synthetic")
    assert result.exit_code == 0, result.output
    assert marker in result.output and "lsh" in result.output and "mostpop" in result.output


def test_report_marks_best_hashing_row_and_shows_std_over_seeds(sweep):
    results, _ = sweep
    out = invoke("report", "--results", results, "--bits", 32, "--datasets", "synthetic").output
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


def test_synthetic_results_stay_out_of_the_papers_tables_unless_asked(sweep):
    results, _ = sweep
    result = invoke("report", "--format", "latex", "--results", results, "--bits", 32)
    assert result.exit_code == 1
    assert "--datasets synthetic" in result.output and len(result.output.strip().splitlines()) == 1


def _left_behind(results):
    return sorted(p.relative_to(results).as_posix() for p in results.rglob("*")) if results.exists() else []


@pytest.mark.parametrize("args, message", [
    (["-m", "proposed", "-p", "proposed.epochs=abc"], "proposed.epochs must be an integer"),
    (["-m", "proposed", "-p", "proposed.epochs=-5"], "proposed.epochs must be an integer >= 1, got -5"),
    (["-m", "lsh", "--first-seed", -1], "--first-seed must be at least 0"),
    (["-m", "lsh", "--ks", 0], "every K must be at least 1"),
    (["-m", "lsh", "--ks", 999999], "larger than the catalogue"),
    (["-m", "lsh", "--seeds", 0], "--seeds must be at least 1"),
    (["-m", "lsh", "--device", "tpu"], "--device must be one of"),
    (["-m", "lsh", "--overwrite", "sometimes"], "--overwrite must be one of"),
    (["-m", "lsh", "--protocol", "random"], "--protocol must be one of"),
    (["-m", "lsh", "-p", "nosuchkey=1"], "no selected method has a parameter"),
])
def test_bad_run_arguments_stop_before_any_work(tmp_path, args, message):
    results = tmp_path / "results"
    result = invoke("run", "--datasets", "synthetic", "--results", results, *args)
    assert result.exit_code == 1, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert _left_behind(results) == []  # no record, no lock, no checkpoint folder


def test_a_results_path_that_is_a_file_or_unwritable_is_a_one_line_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for command in (["run", "-m", "lsh", "-d", "synthetic"], ["report"], ["report", "--write"]):
        result = invoke(*command, "--results", afile)
        assert result.exit_code == 1 and "is a file, not a directory" in result.output, result.output
    for command in (["run", "-m", "lsh", "-d", "synthetic", "--results", "/proc/hashbench-results"],
                    ["report", "--write", "--results", "/proc/self"]):  # /proc takes no new files, even as root
        result = invoke(*command)
        assert result.exit_code == 1 and "cannot write in /proc" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root writes into a read-only (0555) directory")
def test_a_read_only_results_directory_is_a_one_line_error(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    try:
        result = invoke("run", "-m", "lsh", "-d", "synthetic", "--results", results)
        assert result.exit_code == 1 and "permission denied" in result.output
    finally:
        results.chmod(0o755)


def test_split_out_must_be_a_writable_file_in_an_existing_directory(tmp_path):
    missing = tmp_path / "no" / "such" / "x.npz"
    result = invoke("split", "synthetic", "--out", missing)
    assert result.exit_code == 1 and "does not exist" in result.output
    assert not (tmp_path / "no").exists()  # no parents created
    result = invoke("split", "synthetic", "--out", tmp_path)
    assert result.exit_code == 1 and "is a directory" in result.output
    result = invoke("split", "synthetic", "--out", "/proc/x.npz")
    assert result.exit_code == 1 and "cannot write in /proc" in result.output
    assert "Traceback" not in result.output


def test_run_defaults_to_the_papers_datasets_and_says_what_to_do_when_they_cannot_be_fetched(tmp_path):
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    result = invoke("run", "-m", "lsh", "--results", tmp_path / "results", "--mirror", empty_mirror,
                    "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "gowalla" in error[0]
    assert "--mirror" in error[0] and "--datasets synthetic" in error[0]
    assert _left_behind(tmp_path / "results") == []


def test_run_prints_its_plan_and_says_when_a_cell_resumes(tmp_path):
    from hashbench.cells import Cell, checkpoint_dir_for

    results = tmp_path / "results"
    first = invoke("run", "-m", "mostpop", "-d", "synthetic", "--results", results)
    assert "plan: 1 cells: 1 to run, 0 skipped" in first.output and "estimated time: unknown" in first.output
    # a checkpoint left by an interrupted run of the next seed: the plan and the live display say it resumes
    folder = checkpoint_dir_for(results.absolute(), Cell("mostpop", "synthetic", 64, 1))
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"")
    second = invoke("run", "-m", "mostpop", "-d", "synthetic", "--seeds", 2, "--results", results)
    assert second.exit_code == 0, second.output
    assert "plan: 2 cells: 1 to run (1 resume from a checkpoint), 1 skipped" in second.output
    assert "estimated time: about" in second.output and ", at most" in second.output  # mostpop is timed now
    assert "resuming mostpop · synthetic · 64b · seed 1 from its checkpoint" in second.output


def test_ctrl_c_leaves_no_lock_file(tmp_path, monkeypatch):
    from hashbench.runner import Runner

    def interrupted(self, cell):
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "compute_cell", interrupted)
    results = tmp_path / "results"
    result = invoke("run", "-m", "mostpop,lsh", "-d", "synthetic", "--results", results)
    assert result.exit_code == 130 and "re-run the same command to resume" in result.output
    assert list(results.rglob("*.lock")) == []


def test_the_live_line_keeps_the_last_validation_score_and_the_best():
    import io

    from rich.console import Console
    from rich.progress import Progress

    from hashbench.cells import Cell
    from hashbench.commands.sweep_display import SweepDisplay

    bars = Progress(console=Console(file=io.StringIO()))
    display = SweepDisplay(bars, 1)
    cell = Cell("proposed", "synthetic", 64, 0)
    display.progress(cell, "proposed", 1, 10, loss=0.5, valid=None, best=None)
    row = bars.tasks[-1]
    assert "None" not in row.fields["status"]
    display.progress(cell, "proposed", 2, 10, loss=0.4, valid=0.21, best=0.21)
    display.progress(cell, "proposed", 3, 10, loss=0.3, valid=None, best=0.21)
    assert "valid 0.21" in row.fields["status"] and "best 0.21" in row.fields["status"]


def test_a_log_file_gets_one_line_per_validation_instead_of_live_bars():
    import io

    from rich.console import Console
    from rich.progress import Progress

    from hashbench.cells import Cell
    from hashbench.commands.sweep_display import SweepDisplay

    log = io.StringIO()  # not a terminal, as under nohup or in CI
    display = SweepDisplay(Progress(console=Console(file=log)), 1)
    cell = Cell("proposed", "synthetic", 64, 0)
    for epoch in range(1, 6):
        valid = 0.2 + epoch / 100 if epoch % 5 == 0 else None
        display.progress(cell, "proposed", epoch, 400, loss=0.5, valid=valid, best=valid)
    lines = [l for l in log.getvalue().splitlines() if "proposed · synthetic" in l]
    assert len(lines) == 1 and "5/400" in lines[0] and "valid 0.25" in lines[0]


def test_a_log_file_says_how_many_cells_of_the_sweep_are_done_as_each_ends():
    import io

    from rich.console import Console
    from rich.progress import Progress

    from hashbench.cells import Cell
    from hashbench.commands.sweep_display import SweepDisplay

    log = io.StringIO()
    display = SweepDisplay(Progress(console=Console(file=log)), 3)
    ok = {"status": "ok", "metrics": {"test": {"recall@50": 0.2}}, "train_seconds": 1.0}
    display.finished(Cell("proposed", "synthetic", 64, 0), ok)
    display.finished(Cell("proposed", "synthetic", 64, 1), {"status": "failed", "error": "boom"})
    lines = log.getvalue().splitlines()
    assert any(l.startswith("ok [1/3] proposed · synthetic · 64b · seed 0") for l in lines), lines
    assert any(l.startswith("failed [2/3] proposed · synthetic · 64b · seed 1: boom") for l in lines), lines


@pytest.mark.parametrize("args, message", [
    (["campaign", "--dry-run", "--jobs", 0], "--jobs must be at least 1"),
    (["campaign", "--dry-run", "--device", "gpu"], "--device must be one of"),
    (["campaign", "--dry-run", "--stage", "foo"], "--stage must be one of"),
    (["speed", "--codes", "/nonexistent/codes.npz"], "--codes /nonexistent/codes.npz: no such file"),
    (["speed", "--threads", 0], "--threads must be at least 1"),
    (["speed", "--parts", "fig2", "--fig2-items", "1e3,0"], "every catalogue size must be at least 1"),
    (["speed", "--budget", 0], "--budget must be positive"),
    (["speed", "--parts", "retrieval", "--dataset", "nosuch"], "is not a known dataset"),
    (["speed", "--parts", "retrieval", "--protocol", "random"], "--protocol must be one of"),
])
def test_bad_campaign_and_speed_arguments_stop_before_any_work(tmp_path, args, message):
    results = tmp_path / "results"
    result = invoke(*args, "--results", results)
    assert result.exit_code == 1, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not results.exists()  # nothing timed, nothing written
