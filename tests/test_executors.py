"""Executors: the same cells give the same records wherever they run, each cell is written
once by the driver, lost workers are retried, and concurrent sweeps share a directory."""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import faulty_methods
from hashbench import executors, records
from hashbench.cli import app
from hashbench.errors import HashbenchError
from hashbench.executors import (LocalPoolExecutor, RayExecutor, RunnerSpec, SequentialExecutor, Sweep,
                                 cell_resources, make_executor, ray_cluster)
from hashbench.registry import get_method
from hashbench.cells import Cell, plan_cells

TESTS_DIR = str(Path(__file__).parent)
# small settings: the point is where cells run, not how well they do
PROPOSED_FAST = [("proposed", "epochs", 2), ("proposed", "eval_every", 1)]


@pytest.fixture
def faulty():
    with faulty_methods.registered():
        yield


def sweep_of(cells, results, observer=None, overwrite="failed"):
    return Sweep(cells, RunnerSpec.for_cells(cells, results), overwrite, observer)


def by_cell(results: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for record in records.read_records(results):
        out.setdefault(record["config_hash"], []).append(record)
    return out


def codes_of(results: Path, record: dict) -> tuple[bytes, bytes]:
    with np.load(results / record["codes_file"]) as z:
        return z["user_codes"].tobytes(), z["item_codes"].tobytes()


def assert_same_results(a: Path, b: Path) -> None:
    """Same cells, one record each, bitwise-equal metrics, split hashes and codes."""
    ra, rb = by_cell(a), by_cell(b)
    assert set(ra) == set(rb)
    for key in ra:
        assert len(ra[key]) == len(rb[key]) == 1, key
        x, y = ra[key][0], rb[key][0]
        assert x["status"] == y["status"] == "ok", (x.get("error"), y.get("error"))
        assert x["split_hash"] == y["split_hash"] and x["metrics"] == y["metrics"], x["method"]
        if x["hashing"]:
            assert codes_of(a, x) == codes_of(b, y), x["method"]


SWEEP = (["mostpop", "lsh", "proposed"], ["synthetic"], 32, [0], "random-8-1-1", PROPOSED_FAST, (50, 100))


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The reference: the sweep run one cell after another in this process."""
    results = tmp_path_factory.mktemp("sequential")
    assert sweep_of(plan_cells(*SWEEP), results).run(SequentialExecutor()) == {"run": 3}
    return results


def test_jobs_give_bitwise_the_records_of_a_sequential_sweep_and_a_rerun_skips_them(sequential, tmp_path):
    args = ["run", "-m", "mostpop,lsh,proposed", "-d", "synthetic", "--bits", "32", "--jobs", "2",
            "-p", "proposed.epochs=2", "-p", "proposed.eval_every=1", "--results", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3 run, 0 skipped, 0 failed" in result.output
    assert_same_results(sequential, tmp_path)
    # the driver cleans up behind finished cells: no checkpoint, no temporary file
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()]
    assert not list(tmp_path.rglob("*.tmp"))
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 run, 3 skipped" in again.output
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 3


def test_a_pool_worker_that_dies_is_replaced_and_its_cell_retried_then_recorded_failed(tmp_path, faulty):
    marker = tmp_path / "died-once"
    overrides = [("faulty-die-once", "marker", str(marker)), ("faulty-die-once", "epochs", 2),
                 ("faulty-die", "epochs", 2)]
    cells = plan_cells(["faulty-die-once", "faulty-die"], ["synthetic"], 32, [0], "random-8-1-1", overrides, (50,))

    class Seen(executors.SweepObserver):
        def __init__(self):
            self.retries = []

        def retried(self, cell, reason, attempt):
            self.retries.append((cell.method, attempt, reason))

    seen = Seen()
    counts = sweep_of(cells, tmp_path / "r", seen).run(LocalPoolExecutor(jobs=2, retries=1))
    assert marker.exists() and counts == {"run": 1, "failed": 1}
    recs = {r["method"]: r for r in records.read_records(tmp_path / "r")}
    assert len(recs) == 2 == len(list(records.read_records(tmp_path / "r")))
    assert recs["faulty-die-once"]["status"] == "ok"
    assert recs["faulty-die"]["status"] == "failed"
    assert recs["faulty-die"]["error"].startswith("WorkerLost") and "-9" in recs["faulty-die"]["error"]
    assert sorted((m, a) for m, a, _ in seen.retries) == [("faulty-die", 1), ("faulty-die-once", 1)]


def test_two_sweeps_on_one_directory_run_each_cell_once(tmp_path):
    """Claims: a cell held by one sweep is skipped by the other, which waits for it at the end."""
    cells = plan_cells(["mostpop"], ["synthetic"], 32, [0, 1, 2, 3], "random-8-1-1", [], (50,))
    first, second = sweep_of(cells, tmp_path), sweep_of(cells, tmp_path)
    runner = first.spec.make_runner()
    held = first.next_cell()
    assert held == cells[0]
    mine = second.next_cell(block=False)
    assert mine == cells[1]  # cells[0] is held by the first sweep: deferred, not run twice
    second.finish(runner.compute_cell(mine))
    while (cell := second.next_cell(block=False)) is not None:
        second.finish(runner.compute_cell(cell))
    assert list(second.deferred) == [cells[0]]
    first.finish(runner.compute_cell(held))
    assert second.next_cell(block=True) is None  # it waited, re-read the records, and skipped
    assert first.next_cell(block=True) is None  # the others were recorded by the second sweep
    assert second.counts == {"run": 3, "skipped": 1} and first.counts == {"run": 1, "skipped": 3}
    assert sorted(len(v) for v in by_cell(tmp_path).values()) == [1, 1, 1, 1]


def test_a_cell_made_runnable_by_a_record_starts_while_other_cells_still_run(tmp_path):
    """`more` (a tuning study's next trial): offered as soon as its predecessor is recorded, not
    after the whole batch; each offered cell is queued once, however often `more` offers it."""
    first, second, follow_up = plan_cells(["mostpop"], ["synthetic"], 32, [0, 1, 2], "random-8-1-1", [], (50,))
    asked = []

    def more():
        recorded = {r["config_hash"] for r in records.read_records(tmp_path)}
        asked.append(len(recorded))
        return [follow_up] if first.config_hash() in recorded else []

    sweep = Sweep([first, second], RunnerSpec.for_cells([first, second, follow_up], tmp_path), "failed", None, more)
    runner = sweep.spec.make_runner()
    a, b = sweep.next_cell(block=False), sweep.next_cell(block=False)
    assert (a, b) == (first, second)
    assert sweep.next_cell(block=False) is None and asked == [0]  # nothing recorded yet: nothing more
    assert sweep.next_cell(block=False) is None and asked == [0]  # and not asked again until a cell ends
    sweep.finish(runner.compute_cell(a))
    assert sweep.next_cell(block=False) == follow_up  # while `second` is still held
    sweep.finish(runner.compute_cell(follow_up))
    sweep.finish(runner.compute_cell(b))
    assert sweep.next_cell(block=True) is None  # `more` still offers follow_up: queued once only
    assert sweep.counts == {"run": 3} and asked == [0, 1, 3]


def test_a_cell_made_runnable_goes_where_the_order_puts_it_not_behind_the_cells_queued_before(tmp_path):
    """A study's next trial (the longest chain) is offered by `more` once its predecessor is
    recorded and starts next, ahead of the cells queued at the start: the campaign's critical
    path does not wait for the whole queue to drain."""
    first, second, third, follow_up = plan_cells(["mostpop"], ["synthetic"], 32, [0, 1, 2, 3], "random-8-1-1", [],
                                                 (50,))

    def more():
        recorded = {r["config_hash"] for r in records.read_records(tmp_path)}
        return [follow_up] if first.config_hash() in recorded else []

    def follow_up_first(cells):
        return sorted(cells, key=lambda cell: cell != follow_up)

    cells = [first, second, third]
    sweep = Sweep(cells, RunnerSpec.for_cells([*cells, follow_up], tmp_path), "failed", None, more,
                  order=follow_up_first)
    runner = sweep.spec.make_runner()
    assert sweep.next_cell(block=False) == first
    sweep.finish(runner.compute_cell(first))
    assert sweep.next_cell(block=False) == follow_up  # not second, queued before it


def test_ranking_variants_a_trial_computes_beside_it_are_counted_before_they_are_reported(tmp_path):
    """A tuning trial of BGCH records bgch-scaled's ranking beside its own, a cell no one queued:
    the sweep announces it before reporting it finished, so the progress bar's total covers every
    cell it reports ended (it showed 37/36)."""
    from dataclasses import replace

    from hashbench.tuning import TrialTag

    trial = Cell("bgch", "synthetic", 64, 0, params={"epochs": 2, "eval_every": 1, "batch_size": 1024},
                 trial=TrialTag("bgch/synthetic", 0))

    class Tally(executors.SweepObserver):
        def __init__(self):
            self.counted, self.ended = {trial.config_hash()}, []

        def computed_beside(self, cells):
            self.counted.update(cell.config_hash() for cell in cells)

        def finished(self, cell, record):
            assert cell.config_hash() in self.counted, f"{cell.method} reported ended before it was counted"
            self.ended.append(cell)

    tally = Tally()
    sweep = Sweep([trial], RunnerSpec.for_cells([trial], tmp_path, methods=["bgch-scaled"]), "failed", tally)
    sweep.run(SequentialExecutor())
    assert tally.ended == [replace(trial, method="bgch-scaled"), trial] and len(tally.counted) == 2


def test_the_record_log_reads_only_new_complete_lines(tmp_path):
    """What a sweep re-reads before each claim: appended lines, never a line still being written."""
    log = records.RecordLog(tmp_path)
    assert log.latest == {}
    records.append_record(tmp_path, {"config_hash": "a", "status": "failed"})
    assert log.refresh()["a"]["status"] == "failed"
    with open(tmp_path / records.RUNS_FILE, "ab") as fh:
        fh.write(b'{"config_hash": "b", "sta')  # a writer killed mid-line (or still writing)
    assert set(log.refresh()) == {"a"}
    records.append_record(tmp_path, {"config_hash": "a", "status": "ok"})
    with pytest.warns(UserWarning, match="not JSON"):
        latest = log.refresh()
    assert set(latest) == {"a"} and latest["a"]["status"] == "ok"
    with pytest.warns(UserWarning, match="not JSON"):
        assert records.latest_by_cell(tmp_path) == latest


def test_a_claim_left_by_a_killed_sweep_is_free(tmp_path):
    cells = plan_cells(["mostpop"], ["synthetic"], 32, [0], "random-8-1-1", [], (50,))
    first = sweep_of(cells, tmp_path)
    assert first.next_cell() == cells[0]
    first.release_all()  # what the OS does to the flock of a process killed with -9
    second = sweep_of(cells, tmp_path)
    assert second.next_cell(block=False) == cells[0]


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--executor", "dask"], "--executor must be one of"),
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--retries", "-1"], "--retries must be at least 0"),
])
def test_bad_executor_options_are_one_line_errors(tmp_path, args, message):
    result = CliRunner().invoke(app, ["run", "-m", "mostpop", "--results", str(tmp_path), *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs.jsonl").exists()


def test_resources_follow_the_method_and_the_device(faulty):
    lsh, two = get_method("lsh"), get_method("faulty-two-cpus")
    assert cell_resources(lsh, "auto", cluster_gpus=0) == {"num_cpus": 1}
    assert cell_resources(two, "cpu", cluster_gpus=4) == {"num_cpus": 2}
    assert cell_resources(lsh, "cuda", cluster_gpus=4) == {"num_cpus": 1, "num_gpus": 1}

    class GpuMethod(faulty_methods.Faulty):
        resources = {"num_cpus": 1, "num_gpus": 0.5}

    assert cell_resources(GpuMethod, "auto", cluster_gpus=1) == {"num_cpus": 1, "num_gpus": 0.5}
    assert cell_resources(GpuMethod, "auto", cluster_gpus=0) == {"num_cpus": 1}
    assert cell_resources(GpuMethod, "cpu", cluster_gpus=1) == {"num_cpus": 1}


# --- Ray: the driver loop against a stand-in (always), then against real Ray (if installed) --

class FakeRay(types.ModuleType):
    """Just enough of Ray's core API to drive RayExecutor in-process: tasks run when waited on."""

    class exceptions:
        class RayError(Exception):
            pass

        class RayTaskError(RayError):
            def __init__(self, cause):
                super().__init__(str(cause))
                self.cause = cause

        class WorkerCrashedError(RayError):
            pass

    def __init__(self, lost_methods=()):
        super().__init__("ray")
        self.lost_methods, self.options_seen, self.max_in_flight = set(lost_methods), [], 0
        self.pending: dict[int, tuple] = {}
        self.cancelled = 0

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return {"CPU": 3.0}

    def put(self, value):
        return value

    def remote(self, fn):
        fake = self

        class Task:
            def options(self, **options):
                fake.options_seen.append(options)
                return types.SimpleNamespace(remote=lambda *args: fake._submit(fn, args))

        return Task()

    def _submit(self, fn, args):
        ref = len(self.options_seen)
        self.pending[ref] = (fn, args)
        self.max_in_flight = max(self.max_in_flight, len(self.pending))
        return ref

    def get_runtime_context(self):
        return types.SimpleNamespace(get_assigned_resources=lambda: {"CPU": 1.0})

    def wait(self, refs, num_returns, timeout):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        fn, (spec, cell, device) = self.pending.pop(ref)
        if cell.method in self.lost_methods:
            raise self.exceptions.WorkerCrashedError("the node running this task died")
        try:
            return fn(spec, cell, device)
        except Exception as exc:
            raise self.exceptions.RayTaskError(exc) from exc

    def cancel(self, ref, force=False):
        self.cancelled += 1


def test_the_ray_driver_bounds_tasks_in_flight_requests_resources_and_records_lost_nodes(tmp_path, faulty,
                                                                                       monkeypatch):
    fake = FakeRay(lost_methods={"faulty-die", "faulty-two-cpus"})
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(ray_cluster, "set_threads", lambda threads: None)  # tasks run in this process
    cells = plan_cells(["mostpop", "faulty-two-cpus", "faulty-die"], ["synthetic"], 32, [0, 1],
                       "random-8-1-1", [], (50,))
    counts = sweep_of(cells, tmp_path).run(RayExecutor(jobs=2, retries=3))
    assert counts == {"run": 2, "failed": 4}
    assert fake.max_in_flight == 2
    requested = {o["name"].split(":")[1]: o for o in fake.options_seen}
    assert requested["faulty-two-cpus"]["num_cpus"] == 2 and requested["mostpop"]["num_cpus"] == 1
    assert all(o["max_retries"] == 3 and o["retry_exceptions"] is False for o in fake.options_seen)
    lost = [r for r in records.read_records(tmp_path) if r["method"] != "mostpop"]
    assert len(lost) == 4 and all(r["error"].startswith("WorkerLost: WorkerCrashedError") for r in lost)


def test_bad_input_on_a_ray_worker_stops_the_sweep_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", FakeRay())
    monkeypatch.setattr(ray_cluster, "set_threads", lambda threads: None)
    cells = plan_cells(["mostpop"], ["synthetic"], 32, [0], "random-8-1-1", [], (5000,))
    with pytest.raises(HashbenchError, match="larger than the catalogue"):
        sweep_of(cells, tmp_path).run(RayExecutor())
    assert not (tmp_path / "runs.jsonl").exists()


def test_without_ray_the_ray_executor_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    cells = plan_cells(["mostpop"], ["synthetic"], 32, [0], "random-8-1-1", [], (50,))
    with pytest.raises(HashbenchError, match=r"pip install 'hashbench\[ray\]'"):
        sweep_of(cells, tmp_path).run(make_executor("ray"))


@pytest.fixture(scope="module")
def real_ray():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'hashbench[ray]'); the Ray "
                                            "driver loop is still covered against a stand-in above")
    # workers import the test-only methods by module path, as any method registered at run time
    path = os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")]))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = path
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        os.environ.pop("PYTHONPATH") if old is None else os.environ.__setitem__("PYTHONPATH", old)
    yield ray
    ray.shutdown()


def test_a_sweep_on_a_local_ray_instance_matches_a_sequential_one_and_survives_a_lost_worker(
        real_ray, sequential, tmp_path, faulty):
    marker = tmp_path / "died-once"
    overrides = [("faulty-die-once", "marker", str(marker)), ("faulty-die-once", "epochs", 2),
                 ("faulty-two-cpus", "epochs", 2)]
    sweep_of(plan_cells(*SWEEP), tmp_path / "ray").run(RayExecutor(retries=2))
    assert_same_results(sequential, tmp_path / "ray")

    extra = plan_cells(["faulty-die-once", "faulty-two-cpus"], ["synthetic"], 32, [0], "random-8-1-1",
                       overrides, (50, 100))
    counts = sweep_of(extra, tmp_path / "faults").run(RayExecutor(retries=2))
    assert counts == {"run": 2} and marker.exists()  # Ray re-ran the task whose worker was killed
    recs = {r["method"]: r for r in records.read_records(tmp_path / "faults")}
    assert len(recs) == 2 == len(list(records.read_records(tmp_path / "faults")))
    assert recs["faulty-two-cpus"]["extras"]["ray_resources"]["CPU"] == 2


@pytest.mark.slow
def test_the_same_command_started_twice_at_once_runs_each_cell_once(tmp_path):
    import subprocess

    command = [sys.executable, "-c", "from hashbench.cli import main; main()", "run", "-m", "mostpop,lsh,proposed",
               "-d", "synthetic", "--bits", "32", "--seeds", "2", "-p", "proposed.epochs=4",
               "-p", "proposed.eval_every=2", "--results", str(tmp_path)]
    sweeps = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(2)]
    outputs = [s.communicate(timeout=600)[0] for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0], outputs
    recs = by_cell(tmp_path)
    assert len(recs) == 6 and all(len(v) == 1 and v[0]["status"] == "ok" for v in recs.values())
    runs = [int(re.search(r"(\d+) run, \d+ skipped", out).group(1)) for out in outputs]
    assert sum(runs) == 6, outputs  # the work was shared, none of it done twice
