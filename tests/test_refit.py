"""`hashbench run --refit`: the number of epochs is chosen on validation, then a fresh model is
trained on train + valid for exactly that many epochs and evaluated on test once (DaisyRec's
practice, protocol §2). The refit is its own cell, reuses the plain run's record when there is
one, and its test metrics re-check from its exported codes."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hashbench.cli import app
from hashbench.datasets import load_dataset
from hashbench.evaluate import evaluate_split_codes
from hashbench.splits import make_split

PLAIN = ["run", "-m", "proposed", "-d", "synthetic", "-b", "32", "-p", "epochs=12", "-p", "eval_every=2",
         "-p", "patience=2"]


def run(results, *extra):
    result = CliRunner().invoke(app, [*PLAIN, "--results", str(results), *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def plain_then_refit(tmp_path_factory):
    results = tmp_path_factory.mktemp("refit") / "results"
    plain = run(results)[-1]
    refit = run(results, "--refit")[-1]
    return results, plain, refit


def test_a_refit_trains_the_selected_epochs_on_train_and_valid(plain_then_refit):
    _, plain, refit = plain_then_refit
    assert refit["status"] == "ok" and refit["refit"] is True and "refit" not in plain
    assert refit["config_hash"] != plain["config_hash"]
    chosen = plain["extras"]["best_epoch"]
    assert refit["extras"]["refit"]["epochs"] == chosen == refit["extras"]["best_epoch"]
    assert refit["extras"]["refit"]["epochs_run"] == chosen  # exactly, with no validation to stop it
    assert refit["extras"]["refit"]["n_train"] == sum(plain["split_sizes"][part] for part in ("train", "valid"))
    # the selection is the plain run, read from its record: same validation numbers, not retrained
    assert refit["extras"]["refit"]["selection_record"] == plain["config_hash"]
    assert refit["metrics"]["valid"] == plain["metrics"]["valid"]
    assert refit["metrics"]["test"] != plain["metrics"]["test"]


def test_a_refit_test_score_rechecks_from_its_codes(plain_then_refit):
    results, plain, refit = plain_then_refit
    assert refit["codes_file"] != plain["codes_file"]
    split = make_split(load_dataset("synthetic"), "random-8-1-1", 0)
    with np.load(results / refit["codes_file"]) as z:
        metrics = evaluate_split_codes(z["user_codes"], z["item_codes"], split, "test", (50, 100)).metrics
    assert metrics["recall@50"] == pytest.approx(refit["metrics"]["test"]["recall@50"], abs=1e-12)


def test_without_a_plain_record_the_refit_selects_first_and_gives_the_same_result(plain_then_refit, tmp_path):
    _, plain, refit = plain_then_refit
    alone = run(tmp_path / "results", "--refit")
    assert len(alone) == 1  # one cell, one record: the selection was trained inside it
    assert alone[0]["extras"]["refit"]["selection_record"] is None
    assert alone[0]["metrics"] == refit["metrics"]
    assert not list((tmp_path / "results" / "checkpoints").glob("*/*"))  # no state left behind


def test_the_plan_estimates_a_refit_from_the_epochs_it_will_train(plain_then_refit, tmp_path):
    from hashbench.cells import Cell
    from hashbench.commands.run import estimate_seconds, make_plan

    results, plain, refit = plain_then_refit
    selected_early = {**plain, "extras": {**plain["extras"], "best_epoch": 4}}  # of a 12-epoch budget
    only_plain = tmp_path / "results"
    only_plain.mkdir()
    (only_plain / "runs.jsonl").write_text(json.dumps(selected_early) + "\n")  # the refit still to run
    cell = Cell(method="proposed", dataset="synthetic", bits=32, seed=0, params=dict(plain["params"]), refit=True)
    assert cell.config_hash() == refit["config_hash"]
    plan = make_plan([cell], only_plain, "failed")
    assert plan.to_run == [cell]
    assert plan.seconds == pytest.approx(estimate_seconds(cell, [selected_early], refit_epochs=4))
    assert plan.seconds < estimate_seconds(cell, [selected_early])  # not the 12-epoch budget


def test_a_fixed_schedule_trains_exactly_n_epochs_on_train_and_valid_and_chooses_nothing(plain_then_refit, tmp_path):
    """--refit-epochs N (a reference's own schedule): the same training as a --refit whose
    selection chose N, without a selection run."""
    _, plain, refit = plain_then_refit
    chosen = plain["extras"]["best_epoch"]
    fixed = run(tmp_path / "results", "--refit-epochs", str(chosen))
    assert len(fixed) == 1  # no selection run was trained or recorded
    rec = fixed[0]
    assert rec["refit"] == chosen and rec["config_hash"] not in (plain["config_hash"], refit["config_hash"])
    assert rec["metrics"]["valid"] == {} and rec["extras"]["refit"]["fixed_schedule"] is True
    assert rec["extras"]["refit"]["epochs_run"] == chosen and rec["extras"]["refit"]["selection_record"] is None
    assert rec["metrics"]["test"] == refit["metrics"]["test"]  # the same model as the refit's
    bad = CliRunner().invoke(app, [*PLAIN, "--results", str(tmp_path / "r2"), "--refit", "--refit-epochs", "3"])
    assert bad.exit_code != 0 and "--refit-epochs" in bad.output
