"""The Table 1 campaign as a user runs it: spec validation, tuning choice read back from the
records, the stages end to end on the synthetic dataset, and the report they regenerate."""

import json

import pytest
from typer.testing import CliRunner

from hashbench import records
from hashbench.campaign import chosen_params, final_cells, load_campaign, tune_cells
from hashbench.cli import app
from hashbench.errors import HashbenchError

SPEC = """
[campaign]
datasets = ["synthetic"]
bits = 32
seeds = 2
methods = ["proposed", "hashrec", "dcf", "mostpop"]

[budget]
proposed = { epochs = 2, eval_every = 1 }
hashrec = { epochs = 3, eval_every = 1 }
dcf = { max_iters = 2, init_iters = 2 }

[tuning]
dataset = "synthetic"
seed = 0
trials = 2

[tuning.grid]
proposed = [{}, { beta = 5.0 }]
hashrec = [{}, { lr = 0.01 }]
dcf = [{}, { negatives = 2 }]

[sweep]
dataset = "synthetic"
bits = [16, 32]
baselines = 1

[ablation]
dataset = "synthetic"
method = "proposed"
[ablation.variants]
"straight-through" = { estimator = "ste" }
"SignSwish β 15" = { estimator = "signswish", beta = 15.0 }
"""


def write_spec(tmp_path, text=SPEC):
    path = tmp_path / "campaign.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("edit, message", [
    (("hashrec = [{}, { lr = 0.01 }]", "hashrec = [{}]"), "hashrec has 1 tuning trials, the campaign says 2"),
    (('"mostpop"]', '"mostpop", "nosuch"]'), "unknown method 'nosuch'"),
    (("{ beta = 5.0 }", "{ betta = 5.0 }"), "proposed has no parameter betta"),
    (("[sweep]", "[swept]"), "missing key 'sweep'"),
])
def test_a_bad_spec_is_refused_with_the_reason(tmp_path, edit, message):
    with pytest.raises(HashbenchError, match=message):
        load_campaign(write_spec(tmp_path, SPEC.replace(*edit)))


def test_the_budget_scale_multiplies_epochs_only(tmp_path):
    c = load_campaign(write_spec(tmp_path), budget_scale=3)
    assert c.budget_for("proposed") == {"epochs": 6, "eval_every": 1}
    assert c.budget_for("dcf") == {"max_iters": 6, "init_iters": 6}
    with pytest.raises(HashbenchError, match="positive"):
        load_campaign(write_spec(tmp_path), budget_scale=0)


def test_the_best_validation_trial_is_chosen_and_final_waits_for_tuning(tmp_path):
    c = load_campaign(write_spec(tmp_path))
    results = tmp_path / "results"
    with pytest.raises(HashbenchError, match="tuning of proposed is not finished"):
        final_cells(c, results)
    valid = {("proposed", 0): 0.30, ("proposed", 1): 0.35, ("hashrec", 0): 0.2, ("hashrec", 1): 0.2,
             ("dcf", 0): 0.9, ("dcf", 1): 0.0}
    seen = {}
    for cell in tune_cells(c):
        i = seen[cell.method] = seen.get(cell.method, -1) + 1
        failed = (cell.method, i) == ("dcf", 0)  # a failed trial just loses
        records.append_record(results, {"config_hash": cell.config_hash(), "status": "failed" if failed else "ok",
                                        "metrics": {"valid": {"recall@50": valid[(cell.method, i)]}}})
    chosen = chosen_params(c, results)
    assert chosen["proposed"] == {"epochs": 2, "eval_every": 1, "beta": 5.0}
    assert chosen["hashrec"] == {"epochs": 3, "eval_every": 1}  # a tie keeps the defaults
    assert chosen["dcf"] == {"max_iters": 2, "init_iters": 2, "negatives": 2}
    assert chosen["mostpop"] == {}
    cells = final_cells(c, results)
    assert len(cells) == 4 * 2 and {cell.seed for cell in cells} == {0, 1}


def test_campaign_end_to_end_then_report_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["campaign", "--results", "results"])
    assert result.exit_code == 0, result.output
    recs = [json.loads(line) for line in (tmp_path / "results" / "runs.jsonl").read_text().splitlines()]
    # 6 trials; final 8 cells of which the 3 winning seed-0 trials are shared; sweep 2 methods x 2
    # bits (32 bits shared); ablation 2 variants (SignSwish beta 15 is Proposed's default trial
    # when it won, else one more)
    assert all(r["status"] == "ok" for r in recs)
    assert {r["bits"] for r in recs} == {16, 32}
    assert all((tmp_path / "results" / r["per_user_file"]).exists() for r in recs)
    # re-running the finished campaign runs nothing
    again = runner.invoke(app, ["campaign", "--results", "results"])
    assert again.exit_code == 0 and again.output.count("0 run,") == 4
    assert len((tmp_path / "results" / "runs.jsonl").read_text().splitlines()) == len(recs)

    result = runner.invoke(app, ["report", "--results", "results", "--bits", "32", "--write"])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "results" / "table1.md").read_text()
    for heading in ("Table 1:", "Table 1c", "Table 3: tuning", "Table 4: gradient-estimator ablation",
                    "Table 5: bits sweep", "Table 6: what the campaign cost"):
        assert heading in md
    assert "✓" in md and "straight-through" in md and "not run" not in md
    assert (tmp_path / "results" / "bits_sweep.png").stat().st_size > 1000
    assert r"\begin{table*}" in (tmp_path / "results" / "table1.tex").read_text()
    assert "mean" in (tmp_path / "results" / "table1.csv").read_text()
