"""--finish-by: a sweep starts only the cells expected to end in time and leaves the others,
untouched, for the next run of the same command."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from typer.testing import CliRunner

from hashbench import records
from hashbench.cells import Cell, checkpoint_dir_for
from hashbench.cli import app
from hashbench.core.checkpoints import checkpoint_epoch, save_checkpoint
from hashbench.core.training import CHECKPOINT_NAME
from hashbench.errors import HashbenchError
from hashbench.executors import RunnerSpec, SequentialExecutor, Sweep
from hashbench.cells import plan_cells
from hashbench.schedule import MARGIN, expected_seconds, parse_finish_by

NOON = datetime(2026, 12, 2, 12, 0)


@pytest.mark.parametrize("text, expected", [
    ("13:50", NOON.replace(hour=13, minute=50)),
    ("11:00", NOON.replace(hour=11) + timedelta(days=1)),  # already past today: the next 11:00
    ("2h30m", NOON + timedelta(hours=2, minutes=30)),
    ("90m", NOON + timedelta(minutes=90)),
    ("3h", NOON + timedelta(hours=3)),
])
def test_a_finish_by_time_is_a_clock_time_or_a_duration_from_now(text, expected):
    assert parse_finish_by(text, now=NOON) == expected


@pytest.mark.parametrize("text", ["25:00", "12:61", "soon", "", "90", "2x"])
def test_a_bad_finish_by_is_a_one_line_error(text):
    with pytest.raises(HashbenchError, match="--finish-by"):
        parse_finish_by(text, now=NOON)


def _record(method, dataset, epochs_run, busy, train, stopped="patience"):
    cell = Cell(method, dataset, 64, epochs_run)  # a distinct config hash per planted record
    return cell.config_hash(), {
        "config_hash": cell.config_hash(), "method": method, "dataset": dataset, "status": "ok",
        "split_sizes": {"train": train},
        "extras": {"epochs_run": epochs_run, "busy_seconds": busy, "stopped": stopped}}


def test_the_expected_time_is_the_cost_per_epoch_times_the_epochs_a_run_needed_to_converge(tmp_path):
    latest = dict([_record("proposed", "gowalla", 10, 100.0, 1000),  # 10 s an epoch, converged after 10 here
                   _record("proposed", "yelp2018", 40, 800.0, 2000),  # converged after 40 epochs there
                   _record("mostpop", "other", 1, 1.0, 3000)])
    # the epochs the method needed on this dataset, not the most it needed anywhere
    assert expected_seconds(Cell("proposed", "gowalla", 64, 0), latest, tmp_path) == pytest.approx(10 * 10 * MARGIN)
    # the epoch budget caps the expectation
    capped = Cell("proposed", "gowalla", 64, 0, params={"epochs": 5})
    assert expected_seconds(capped, latest, tmp_path) == pytest.approx(10 * 5 * MARGIN)
    # never run on this dataset: the cost per training interaction elsewhere, scaled to its size,
    # times the most epochs any dataset needed
    assert expected_seconds(Cell("proposed", "other", 64, 0), latest, tmp_path) == pytest.approx(
        0.01 * 3000 * 40 * MARGIN)
    # nothing to go by: not expected to fit anywhere
    assert expected_seconds(Cell("bgch", "gowalla", 64, 0), latest, tmp_path) is None


def test_a_deadline_is_met_by_the_clock_so_a_cell_slowed_by_a_shared_machine_costs_its_wall_time(tmp_path):
    key, shared = _record("hashgnn", "yelp2018", 10, 100.0, 1000)  # 100 busy seconds ...
    shared["extras"]["train_seconds"], shared["eval_seconds"] = 290.0, 10.0  # ... over 300 by the clock
    assert expected_seconds(Cell("hashgnn", "yelp2018", 64, 0), {key: shared}, tmp_path) == pytest.approx(
        30 * 10 * MARGIN)


def test_the_cost_per_epoch_comes_from_runs_under_the_cells_protocol(tmp_path):
    ours, reference = _record("lightgcn", "gowalla", 300, 3000.0, 1000), _record("lightgcn", "gowalla", 5, 3500.0, 1000)
    ours[1]["extras"].pop("busy_seconds")  # an older run, before busy time was measured
    ours[1]["train_seconds"], ours[1]["eval_seconds"] = 2900.0, 100.0
    reference[1]["protocol"] = "lightgcn"  # its own split and batch size: 700 s an epoch
    latest = dict([ours, reference])
    assert expected_seconds(Cell("lightgcn", "gowalla", 64, 0), latest, tmp_path) == pytest.approx(10 * 300 * MARGIN)
    assert expected_seconds(Cell("lightgcn", "gowalla", 64, 0, protocol="lightgcn"), latest, tmp_path) == \
        pytest.approx(700 * 300 * MARGIN)


def test_the_cost_per_epoch_comes_from_runs_on_the_same_device(tmp_path):
    cpu, gpu = _record("hashgnn", "gowalla", 30, 3000.0, 1000), _record("hashgnn", "gowalla", 31, 62.0, 1000)
    gpu[1]["device"] = "cuda"  # merged from a GPU machine, after the CPU run: 2 s an epoch
    latest = dict([cpu, gpu])
    cell = Cell("hashgnn", "gowalla", 64, 0)
    assert expected_seconds(cell, latest, tmp_path, "cpu") == pytest.approx(100 * 31 * MARGIN)
    assert expected_seconds(cell, latest, tmp_path, "cuda") == pytest.approx(2 * 31 * MARGIN)


def test_a_checkpointed_cell_is_expected_to_need_only_the_epochs_it_has_left(tmp_path):
    latest = dict([_record("proposed", "gowalla", 40, 400.0, 1000)])
    cell = Cell("proposed", "gowalla", 64, 0)
    path = checkpoint_dir_for(tmp_path, cell) / CHECKPOINT_NAME
    path.parent.mkdir(parents=True)
    save_checkpoint(path, {"fingerprint": cell.config_hash(), "epoch": 30})
    assert checkpoint_epoch(path) == 30
    assert expected_seconds(cell, latest, tmp_path) == pytest.approx(10 * 10 * MARGIN)
    path.write_bytes(b"not a checkpoint")  # a damaged file: the whole run is expected
    assert checkpoint_epoch(path) is None
    assert expected_seconds(cell, latest, tmp_path) == pytest.approx(10 * 40 * MARGIN)


def test_a_cell_that_does_not_fit_is_left_unclaimed_and_unrecorded_for_the_next_run(tmp_path):
    cells = plan_cells(["mostpop"], ["synthetic"], 32, [0, 1, 2], "random-8-1-1", [], (50,))
    spec = RunnerSpec.for_cells(cells, tmp_path)
    counts = Sweep(cells, spec, "failed", None, fits=lambda cell: cell.seed != 1).run(SequentialExecutor())
    assert counts == {"run": 2, "left": 1}
    recorded = records.latest_by_cell(tmp_path)
    assert cells[1].config_hash() not in recorded and len(recorded) == 2
    assert not list((tmp_path / "checkpoints").glob("*.lock"))
    assert Sweep(cells, spec, "failed", None).run(SequentialExecutor()) == {"run": 1, "skipped": 2}


def test_run_with_finish_by_starts_what_its_records_say_fits_and_says_what_it_left(tmp_path):
    cli = CliRunner()
    base = ["run", "-d", "synthetic", "-b", "32", "--results", str(tmp_path), "-p", "proposed.epochs=2",
            "-p", "proposed.eval_every=1"]
    assert cli.invoke(app, [*base, "-m", "mostpop"]).exit_code == 0
    # mostpop ran here (a fraction of a second): seed 1 fits; proposed never ran: both seeds left
    out = cli.invoke(app, [*base, "-m", "mostpop,proposed", "--seeds", "2", "--finish-by", "30m"])
    assert out.exit_code == 0, out.output
    assert "finish by" in out.output and "left for a later run: proposed" in out.output
    assert "2 left for a later run" in " ".join(out.output.split())
    methods = sorted(r["method"] for r in records.latest_by_cell(tmp_path).values())
    assert methods == ["mostpop", "mostpop"]
    out = cli.invoke(app, [*base, "-m", "mostpop,proposed", "--seeds", "2"])  # the same command, no deadline
    assert out.exit_code == 0, out.output
    assert sorted(r["method"] for r in records.latest_by_cell(tmp_path).values()).count("proposed") == 2


def test_the_campaign_says_how_much_is_left_in_all_from_what_each_method_cost(tmp_path):
    from hashbench import records
    from hashbench.campaign import load_campaign, tune_cells
    from hashbench.campaign_eta import campaign_time_left, describe_time_left
    from test_campaign import SPEC, write_spec

    c = load_campaign(write_spec(tmp_path, SPEC))
    results = tmp_path / "results"
    # 6 trials; 8 final cells less the 3 tuned methods' winning trials; 2 sweep cells at 16 bits; 2 ablation variants
    left = campaign_time_left(c, results)
    assert (left.cells, left.seconds, len(left.unknown)) == (15, 0.0, 15)
    assert "not counted: 15 cells" in describe_time_left(c, results, 2)

    trial = next(cell for cell in tune_cells(c, results) if cell.method == "proposed")
    records.append_record(results, {"config_hash": trial.config_hash(), "status": "ok", "method": "proposed",
                                    "dataset": "synthetic", "bits": 32, "params": trial.config()["params"],
                                    "tuning": trial.trial.config(), "metrics": {"valid": {"recall@50": 0.3}},
                                    "extras": {"stopped": "patience", "busy_seconds": 3600.0, "curve": []}})
    left = campaign_time_left(c, results)
    # proposed: its other trial, its second seed, its 16-bit sweep cell and the two ablation variants
    # at its one recorded hour each; the other methods (the sweep's baseline too) have no cost on record
    assert left.cells == 14 and left.seconds == 5 * 3600.0 and "proposed" not in left.unknown
    assert left.by_method["proposed"] == (5, 5 * 3600.0) and list(left.by_method)[0] == "proposed"
    said = describe_time_left(c, results, 2)
    assert said.startswith("about 5 cell-hours in 14 cells left in the whole campaign (~2 h at --jobs 2)")
    assert "; most of it: proposed 5 cells ~5 h" in said  # where a speed-up would pay
    assert left.borrowed == []
    # a method with no complete run on the campaign's protocol is costed from another protocol's
    records.append_record(results, {"config_hash": "hashrec-own-split", "status": "ok", "method": "hashrec",
                                    "dataset": "synthetic", "bits": 32, "protocol": "lightgcn", "params": {},
                                    "metrics": {"valid": {"recall@50": 0.2}},
                                    "extras": {"stopped": "patience", "busy_seconds": 1800.0}})
    left = campaign_time_left(c, results)
    assert left.borrowed == ["hashrec"] and "hashrec" not in left.unknown and left.seconds > 5 * 3600.0
    assert "(hashrec: from its runs on another protocol)" in describe_time_left(c, results, 2)
