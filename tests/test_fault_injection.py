"""Fault injection: a sweep killed with SIGKILL at random points, re-run with the same
command until it finishes, ends with every cell recorded exactly once and bitwise the
metrics and codes of an uninterrupted sweep; a cell that raises or whose loss turns NaN is
recorded `failed` with its traceback while the sweep goes on.

The kills are real: `hashbench run` in a subprocess, SIGKILL from outside, at seeded
random delays after seeded trigger points (a new record, a training checkpoint written by this run, a time).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import faulty_methods
from hashbench import records
from hashbench.cli import app
from hashbench.executors import RunnerSpec, SequentialExecutor, Sweep
from hashbench.cells import plan_cells

CLI = [sys.executable, "-c", "from hashbench.cli import main; main()"]
METHODS = ["mostpop", "lsh", "proposed"]
PROPOSED = [("proposed", "epochs", 6), ("proposed", "eval_every", 2)]  # a checkpoint every 2 epochs
KILL_LOG: list[str] = []


def sweep_args(seeds: int, extra=(), proposed=PROPOSED) -> list[str]:
    params = [a for m, k, v in proposed for a in ("-p", f"{m}.{k}={v}")]
    return ["run", "-m", ",".join(METHODS), "-d", "synthetic", "--bits", "32", "--seeds", str(seeds), *params,
            *extra]


def reference(results: Path, seeds: int, proposed=PROPOSED) -> Path:
    """The uninterrupted sweep (in this process: where it runs must not matter either)."""
    cells = plan_cells(METHODS, ["synthetic"], 32, list(range(seeds)), "random-8-1-1", proposed, (50, 100))
    Sweep(cells, RunnerSpec.for_cells(cells, results)).run(SequentialExecutor())
    return results


def valid_records(results: Path) -> list[dict]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a line cut by a kill is expected here
        return list(records.read_records(results))


def checkpoints(results: Path) -> list[Path]:
    return list((results / "checkpoints").glob("*/train_state.pt"))


def written_since(paths: list[Path], since: float) -> bool:
    for path in paths:
        try:
            if path.stat().st_mtime > since:
                return True
        except FileNotFoundError:  # its cell just finished and the driver removed it
            pass
    return False


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def run_and_kill(results: Path, args: list[str], trigger: str, rng: random.Random, log, whole_group: bool,
                 timeout: float = 300) -> dict:
    """Start the sweep; when `trigger` fires, wait a seeded random moment, then SIGKILL it."""
    before = len(valid_records(results))
    process = subprocess.Popen(CLI + args + ["--results", str(results)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    start, started_at = time.monotonic(), time.time()
    delay = rng.uniform(0.5, 20.0) if trigger == "time" else None
    jitter = rng.uniform(0.0, 1.0)
    while process.poll() is None and time.monotonic() - start < timeout:
        if trigger == "record" and len(valid_records(results)) > before:
            break
        if trigger == "checkpoint" and written_since(checkpoints(results), started_at):
            break  # this run has trained and checkpointed: it is mid-training now
        if trigger == "time" and time.monotonic() - start >= delay:
            break
        time.sleep(0.02)
    if trigger == "record":  # somewhere inside the next cell; a checkpoint trigger kills at once, since
        time.sleep(jitter)     # under load a short training run can finish within the jitter
    workers = children_of(process.pid)
    state = {"trigger": trigger, "at_s": round(time.monotonic() - start, 2), "records": len(valid_records(results)),
             "checkpoints": len(checkpoints(results)), "killed": process.poll() is None, "group": whole_group}
    if state["killed"]:
        if whole_group:
            os.killpg(process.pid, signal.SIGKILL)  # what a scheduler's kill or a lost node does
        else:
            process.send_signal(signal.SIGKILL)  # the driver alone: its workers must not outlive it
    process.wait()
    state["workers_left"] = [p for p in workers if _gone_within(p, 10.0) is False]
    KILL_LOG.append(json.dumps(state))
    return state


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def finish(results: Path, args: list[str], log) -> int:
    """Re-run the same command until it exits cleanly; returns how many runs it took."""
    for attempt in range(1, 4):
        code = subprocess.run(CLI + args + ["--results", str(results)], stdout=log, stderr=subprocess.STDOUT).returncode
        if code == 0:
            return attempt
    raise AssertionError(f"the sweep did not finish: exit code {code}")


def assert_exactly_once_and_identical(results: Path, expected: Path) -> None:
    got, want = valid_records(results), valid_records(expected)
    keys = [r["config_hash"] for r in got]
    assert sorted(keys) == sorted(r["config_hash"] for r in want), "a cell is missing or recorded twice"
    assert len(set(keys)) == len(keys)
    want = {r["config_hash"]: r for r in want}
    for record in got:
        ref = want[record["config_hash"]]
        assert record["status"] == "ok", record.get("traceback")
        assert record["split_hash"] == ref["split_hash"]
        assert record["metrics"] == ref["metrics"], record["method"]  # bitwise: exact float equality
        if record["hashing"]:
            with np.load(results / record["codes_file"]) as a, np.load(expected / ref["codes_file"]) as b:
                assert np.array_equal(a["user_codes"], b["user_codes"])
                assert np.array_equal(a["item_codes"], b["item_codes"])
    assert not [p for p in (results / "checkpoints").iterdir() if p.is_dir()], "a checkpoint was left behind"
    assert not list(results.rglob("*.tmp")) and not list(results.rglob(".*.part"))


def test_a_sweep_killed_three_times_finishes_with_each_cell_once_and_identical(tmp_path):
    rng = random.Random(20261122)
    expected = reference(tmp_path / "expected", seeds=1)
    results, args = tmp_path / "killed", sweep_args(seeds=1)
    with open(tmp_path / "log.txt", "w") as log:
        # mid-cell after a record, mid-training after a checkpoint, then anywhere (even at startup)
        kills = [run_and_kill(results, args, trigger, rng, log, whole_group=False)
                 for trigger in ("record", "checkpoint", "time")]
        finish(results, args, log)
    print("\n".join(KILL_LOG))
    assert sum(k["killed"] and k["records"] < 3 for k in kills) >= 2, kills  # kills that hit unfinished work
    assert_exactly_once_and_identical(results, expected)
    if kills[1]["killed"] and kills[1]["records"] < 3:  # the kill hit the proposed cell mid-training
        proposed = next(r for r in valid_records(results) if r["method"] == "proposed")
        assert proposed["extras"]["resumed_from_epoch"] is not None
        # the killed run's CPU is billed to the cell, not lost with its process
        assert 0 < proposed["extras"]["earlier_cpu_seconds"] <= proposed["cpu_seconds"]


@pytest.mark.slow
def test_a_parallel_sweep_killed_again_and_again_finishes_with_each_cell_once_and_identical(tmp_path):
    """--jobs 2, three seeds, longer training; killed (driver alone or its whole process group)
    at every run until it is done or ten kills have landed, then finished."""
    rng = random.Random(7)
    longer = [("proposed", "epochs", 20), ("proposed", "eval_every", 2)]
    expected = reference(tmp_path / "expected", seeds=3, proposed=longer)
    results, args = tmp_path / "killed", sweep_args(seeds=3, extra=["--jobs", "2"], proposed=longer)
    cells = len(valid_records(expected))
    kills = []
    with open(tmp_path / "log.txt", "w") as log:
        for trigger in ["checkpoint", "time", "record", "checkpoint", "time"] * 4:
            if len(valid_records(results)) >= cells or sum(k["killed"] for k in kills) >= 10:
                break
            kills.append(run_and_kill(results, args, trigger, rng, log, whole_group=len(kills) % 2 == 1))
        finish(results, args, log)
    print("\n".join(KILL_LOG))
    landed = [k for k in kills if k["killed"] and k["records"] < cells]
    assert len(landed) >= 5, kills  # kills that interrupted unfinished work
    assert not [k for k in kills if k["workers_left"]], "a worker outlived its killed driver"
    assert_exactly_once_and_identical(results, expected)


@pytest.fixture
def faulty():
    with faulty_methods.registered():
        yield


@pytest.mark.parametrize("jobs", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_an_exception_or_a_nan_loss_fails_its_cell_with_a_traceback_and_the_sweep_goes_on(tmp_path, faulty,
                                                                                        jobs):
    args = ["run", "-m", "faulty-raise,mostpop,faulty-nan,lsh", "-d", "synthetic", "--bits", "32", "--ks", "50",
            "--jobs", jobs, "--results", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "2 run, 0 skipped, 2 failed" in result.output
    recs = {r["method"]: r for r in records.read_records(tmp_path)}
    assert len(recs) == 4 == len(list(records.read_records(tmp_path)))
    assert recs["mostpop"]["status"] == recs["lsh"]["status"] == "ok"  # cells after a failure still ran
    raised, nan = recs["faulty-raise"], recs["faulty-nan"]
    assert raised["status"] == "failed" and raised["error"] == "RuntimeError: planted failure in fit"
    assert "Traceback (most recent call last)" in raised["traceback"] and "faulty_methods.py" in raised["traceback"]
    assert nan["status"] == "failed" and nan["error"].startswith("NonFiniteLoss: faulty-nan: training loss is nan")
    assert "run_training" in nan["traceback"]  # raised from inside the shared training driver
    assert "metrics" not in raised and "codes_file" not in nan
    # the default --overwrite failed retries failed cells and keeps the finished ones
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "0 run, 2 skipped, 2 failed" in again.output
    latest = records.latest_by_cell(tmp_path)
    assert len(latest) == 4 and len(list(records.read_records(tmp_path))) == 6
