"""The Table 1 campaign as a user runs it: spec validation, tuning choice read back from the
records, the stages end to end on the synthetic dataset, and the report they regenerate."""

import json
import shutil
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from hashbench import records
from hashbench.campaign import chosen_params, final_cells, load_campaign, tune_cells
from hashbench.campaign_report import tuning_rows
from hashbench.cells import Cell
from hashbench.cli import app
from hashbench.errors import HashbenchError
from helpers import assert_compiles_cleanly, commit_everything

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
datasets = ["synthetic"]
seed = 0
trials = 2
methods = ["proposed", "hashrec", "dcf"]
startup_trials = 1
pruner = "median"

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
    (('"mostpop"]\n\n[budget]', '"mostpop", "nosuch"]\n\n[budget]'), "unknown method 'nosuch'"),
    (("{ epochs = 2, eval_every = 1 }", "{ epochs = 2, evl = 1 }"), "proposed has no parameter evl"),
    (('methods = ["proposed", "hashrec", "dcf"]', 'methods = ["proposed", "mostpop"]'),
     "mostpop has no \\[mostpop.search\\] table"),
    (('datasets = ["synthetic"]\nseed', 'datasets = []\nseed'), "datasets lacks synthetic"),
    (('pruner = "median"', 'pruner = "mean"'), "pruner one of"),
    (("[sweep]", "[swept]"), "missing key 'sweep'"),
])
def test_a_bad_spec_is_refused_with_the_reason(tmp_path, edit, message):
    assert edit[0] in SPEC
    with pytest.raises(HashbenchError, match=message):
        load_campaign(write_spec(tmp_path, SPEC.replace(*edit)))


def test_the_budget_scale_multiplies_epochs_only(tmp_path):
    c = load_campaign(write_spec(tmp_path), budget_scale=3)
    assert c.budget_for("proposed") == {"epochs": 6, "eval_every": 1}
    assert c.budget_for("dcf") == {"max_iters": 6, "init_iters": 6}
    with pytest.raises(HashbenchError, match="positive"):
        load_campaign(write_spec(tmp_path), budget_scale=0)


def fake_record(cell, value, stopped="patience", status="ok"):
    return {"config_hash": cell.config_hash(), "status": status, "extras": {"stopped": stopped,
            "curve": [{"epoch": 1, "valid": {"recall@50": value}}]}, "metrics": {"valid": {"recall@50": value}}}


def test_the_best_complete_trial_is_chosen_and_final_waits_for_tuning(tmp_path):
    c = load_campaign(write_spec(tmp_path))
    results = tmp_path / "results"
    with pytest.raises(HashbenchError, match="tuning of proposed on synthetic is not finished"):
        final_cells(c, results)
    # trial 0 of every study is the method's defaults (on top of the budget)
    first = {cell.method: cell for cell in tune_cells(c, results)}
    assert first["proposed"].params == {"epochs": 2, "eval_every": 1, "lr": 0.01, "l2": 1e-4, "beta": 15.0,
                                        "psi": 0.05}
    assert all(cell.trial.number == 0 for cell in first.values())
    values = {"proposed": (0.30, 0.35, "patience"), "hashrec": (0.2, 0.9, "pruned"), "dcf": (0.1, 0.05, "patience")}
    for number in range(2):
        for cell in tune_cells(c, results):
            if cell.trial.number == number:
                v = values[cell.method]
                records.append_record(results, fake_record(cell, v[number], v[2] if number else "patience"))
        if number == 0:  # every study still running: the report marks its best trial so far
            assert {row[-1] for row in tuning_rows(c, results)[1] if row[1] == "0"} == {"leads"}
    trials = {cell.method: [] for cell in tune_cells(c, results)}
    for cell in tune_cells(c, results):
        trials[cell.method].append(cell.params)
    assert all(len(t) == 2 for t in trials.values())
    marks = {(row[0], row[1]): row[-1] for row in tuning_rows(c, results)[1]}  # Table 3's chosen column
    assert marks[("proposed/synthetic", "1")] == marks[("hashrec/synthetic", "0")] == "✓"
    assert marks[("proposed/synthetic", "0")] == marks[("hashrec/synthetic", "1")] == ""
    chosen = chosen_params(c, results)
    assert chosen[("proposed", "synthetic")] == trials["proposed"][1]  # the better trial
    assert chosen[("hashrec", "synthetic")] == trials["hashrec"][0]  # a pruned trial never wins
    assert chosen[("dcf", "synthetic")] == trials["dcf"][0]
    assert chosen[("mostpop", "synthetic")] == {}
    cells = final_cells(c, results)
    assert len(cells) == 4 * 2 and {cell.seed for cell in cells} == {0, 1}
    # a tuned method's seed-0 run is its winning trial, already recorded: not trained twice
    winners = {cell.method: cell for cell in cells if cell.trial is not None}
    assert set(winners) == {"proposed", "hashrec", "dcf"} and all(w.seed == 0 for w in winners.values())
    assert winners["proposed"].trial.number == 1 and winners["hashrec"].trial.number == 0
    latest = records.latest_by_cell(results)
    assert all(w.config_hash() in latest for w in winners.values())
    assert all(cell.trial is None and cell.params == winners[cell.method].params
               for cell in cells if cell.seed == 1 and cell.method in winners)


def test_each_cell_is_ready_once_what_it_needs_is_recorded(tmp_path):
    """The whole campaign is one queue: a row's final cells need its own study only, the
    ablation and Proposed's sweep cells Proposed's study, the baselines' sweep cells the sweep
    dataset's final cells; the stage-by-stage commands still refuse to start early."""
    from hashbench.campaign import ablation_cells, ready_cells, stage_cells, sweep_cells

    c = load_campaign(write_spec(tmp_path))
    results = tmp_path / "results"

    def ready():
        return {(cell.method, cell.bits, cell.seed, cell.trial is not None) for cell in ready_cells(c, results)}

    # nothing recorded: every study's first trial, and the rows that are not tuned
    assert ready() == {("proposed", 32, 0, True), ("hashrec", 32, 0, True), ("dcf", 32, 0, True),
                       ("mostpop", 32, 0, False), ("mostpop", 32, 1, False)}
    for number in range(2):  # Proposed's study finishes; the baselines' have one trial each
        for cell in tune_cells(c, results):
            if cell.trial.number == number and (cell.method == "proposed" or number == 0):
                records.append_record(results, fake_record(cell, 0.1 + number))
    cells = ready()
    assert {("proposed", 32, 1, False), ("proposed", 16, 0, False)} <= cells  # final seed 1, the sweep
    assert len(ablation_cells(c, results, ready_only=True)) == 2
    assert not any(m in ("hashrec", "dcf") and not trial for m, _, _, trial in cells)  # their studies run
    assert [cell.method for cell in sweep_cells(c, results, ready_only=True)] == ["proposed", "proposed"]
    with pytest.raises(HashbenchError, match="not finished"):
        stage_cells(c, "final", results)
    for cell in tune_cells(c, results):  # every study finished: every final cell; the baselines'
        if cell.config_hash() not in records.latest_by_cell(results):  # sweep waits for them
            records.append_record(results, fake_record(cell, 0.05))
    assert len(final_cells(c, results, ready_only=True)) == len(final_cells(c, results)) == 8
    assert {cell.method for cell in sweep_cells(c, results, ready_only=True)} == {"proposed"}
    for cell in final_cells(c, results):
        if cell.config_hash() not in records.latest_by_cell(results):
            records.append_record(results, fake_record(cell, 0.2 if cell.method == "dcf" else 0.05))
    assert [(cell.method, cell.bits) for cell in sweep_cells(c, results, ready_only=True)] == [
        ("proposed", 16), ("proposed", 32), ("dcf", 16), ("dcf", 32)]


def test_the_queue_starts_the_longest_chains_of_work_first(tmp_path):
    """A study's trial weighs its expected time × the trials its study has left, another cell its
    own time; cells in flight (a checkpoint) go before everything."""
    from hashbench.campaign_queue import longest_chain_first
    from hashbench.cells import Cell, checkpoint_dir_for
    from hashbench.tuning import TrialTag

    c = load_campaign(write_spec(tmp_path))  # 2 trials per study
    results = tmp_path / "results"
    for method, seconds_per_epoch in (("proposed", 10.0), ("hashrec", 30.0), ("mostpop", 1.0)):
        earlier = Cell(method, "synthetic", 32, 100)  # a run that converged in 10 epochs
        records.append_record(results, {
            "config_hash": earlier.config_hash(), "method": method, "dataset": "synthetic", "status": "ok",
            "protocol": "random-8-1-1", "split_sizes": {"train": 1000},
            "extras": {"epochs_run": 10, "busy_seconds": 10 * seconds_per_epoch, "stopped": "patience"}})
    proposed_first = Cell("proposed", "synthetic", 32, 0, trial=TrialTag("proposed/synthetic", 0))  # 2 x 100 s
    hashrec_last = Cell("hashrec", "synthetic", 32, 0, trial=TrialTag("hashrec/synthetic", 1))  # 1 x 300 s
    proposed_final = Cell("proposed", "synthetic", 32, 1)  # 100 s
    popularity = Cell("mostpop", "synthetic", 32, 1)  # seconds
    order = longest_chain_first(c, results)
    cells = [popularity, proposed_final, proposed_first, hashrec_last]
    assert order(cells) == [hashrec_last, proposed_first, proposed_final, popularity]
    checkpoint = checkpoint_dir_for(results, popularity)
    checkpoint.mkdir(parents=True)
    (checkpoint / "train_state.pt").write_bytes(b"state")
    assert order(cells)[0] == popularity


def test_a_variant_row_is_trained_with_its_base_methods_tuned_parameters(tmp_path):
    """bgch-scaled (based_on bgch, not tuned itself) gets bgch's winning parameters, not its defaults."""
    spec = (SPEC.replace('methods = ["proposed", "hashrec", "dcf", "mostpop"]',
                         'methods = ["proposed", "bgch", "bgch-scaled", "mostpop"]')
            .replace('methods = ["proposed", "hashrec", "dcf"]', 'methods = ["proposed", "bgch"]')
            .replace("hashrec = { epochs = 3, eval_every = 1 }",
                     "bgch = { epochs = 3, eval_every = 1 }\nbgch-scaled = { epochs = 3, eval_every = 1 }"))
    c = load_campaign(write_spec(tmp_path, spec))
    results = tmp_path / "results"
    for number, value in enumerate((0.1, 0.2)):  # trial 1 wins both studies
        for cell in tune_cells(c, results):
            if cell.trial.number == number:
                records.append_record(results, fake_record(cell, value))
    chosen = chosen_params(c, results)
    bgch_winner = [cell for cell in tune_cells(c, results) if cell.method == "bgch"][1].params
    assert chosen[("bgch", "synthetic")] == bgch_winner
    assert chosen[("bgch-scaled", "synthetic")] == bgch_winner  # the same budget, so the same parameters
    scaled = [cell for cell in final_cells(c, results) if cell.method == "bgch-scaled"]
    assert len(scaled) == 2 and all(cell.params == bgch_winner for cell in scaled)
    # seed 0 is the winning trial's model ranked α-scaled (its companion record), not a new training
    winner = [cell for cell in tune_cells(c, results) if cell.method == "bgch"][1]
    assert scaled[0].trial == winner.trial and scaled[0].config_hash() == replace(winner, method="bgch-scaled").config_hash()
    assert scaled[1].trial is None and scaled[1].seed == 1


def test_the_sampler_proposes_the_same_trials_when_rebuilt(tmp_path):
    c = load_campaign(write_spec(tmp_path, SPEC.replace("trials = 2", "trials = 5")))
    results = tmp_path / "results"
    seen = []
    for number in range(5):
        cells = [cell for cell in tune_cells(c, results) if cell.method == "hashrec"]
        assert [x.params for x in cells[:-1]] == seen  # the recorded trials come back unchanged
        seen.append(cells[-1].params)
        records.append_record(results, fake_record(cells[-1], 0.1 * number))
    assert len({json.dumps(p, sort_keys=True) for p in seen}) == 5  # five distinct proposals
    for p in seen:  # every proposal inside the declared space
        assert 3e-4 <= p["lr"] <= 1e-2 and p["c_lam"] in (0.0, 1e-4, 1e-3, 1e-2, 1e-1)


def test_a_study_recorded_on_another_cpu_resumes_without_retraining_its_trials(tmp_path):
    """TPE's arithmetic differs in the last bits between CPUs: a trial recorded elsewhere must be
    replayed with the parameters its record holds, not trained again with the sampler's proposal."""
    c = load_campaign(write_spec(tmp_path, SPEC.replace("trials = 2", "trials = 4")))
    results = tmp_path / "results"

    def hashrec_cells():
        return [cell for cell in tune_cells(c, results) if cell.method == "hashrec"]

    elsewhere = []
    for number in range(3):
        cell = hashrec_cells()[-1]
        if number == 2:  # the other machine's proposal: a hair off this one's
            cell = replace(cell, params={**cell.params, "lr": cell.params["lr"] * (1 + 1e-12)})
        elsewhere.append(cell.params)
        records.append_record(results, {**fake_record(cell, 0.1 * number), "method": cell.method, "dataset": cell.dataset,
                                        "params": cell.config()["params"], "tuning": cell.trial.config()})
    cells = hashrec_cells()
    assert [cell.params for cell in cells[:3]] == elsewhere  # replayed as recorded
    assert len(cells) == 4 and cells[3].trial.number == 3  # and the study goes on to its next trial
    assert cells[3].params["lr"] != elsewhere[2]["lr"]


def test_campaign_end_to_end_then_report_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path)
    runner = CliRunner()
    before = runner.invoke(app, ["campaign", "--results", "results", "--dry-run"])
    assert "recorded so far: tune 0/6 trials, final 0/8, sweep 0/4, ablation 0/2" in before.output, before.output
    result = runner.invoke(app, ["campaign", "--results", "results"])
    assert result.exit_code == 0, result.output
    assert "recorded so far: tune 0/6 trials" in result.output  # a run says where the campaign stands too
    after = runner.invoke(app, ["campaign", "--results", "results", "--dry-run"])
    assert "recorded so far: tune 6/6 trials, final 8/8, sweep 4/4, ablation 2/2" in after.output, after.output
    assert "nothing left in the campaign" in after.output
    recs = [json.loads(line) for line in (tmp_path / "results" / "runs.jsonl").read_text().splitlines()]
    # 6 trials; final 8 cells, 3 of them the tuned methods' winning trials (seed 0, already run);
    # sweep 2 methods x 2 bits (32 bits shared); ablation 2 variants
    assert all(r["status"] == "ok" for r in recs)
    assert {r["bits"] for r in recs} == {16, 32}
    assert all((tmp_path / "results" / r["per_user_file"]).exists() for r in recs)
    # nothing is trained twice: no two records of the same method, data, bits, seed and parameters
    runs = [json.dumps([r["method"], r["dataset"], r["bits"], r["seed"], r["params"]], sort_keys=True) for r in recs]
    assert len(runs) == len(set(runs))
    # one queue: a row's final cells start once its own study is recorded, before the other studies end
    order = [r["method"] if "tuning" not in r else "trial" for r in recs]
    first_final = next(i for i, method in enumerate(order) if method != "trial")
    assert first_final < len(order) - 1 - order[::-1].index("trial")
    # re-running the finished campaign runs nothing
    again = runner.invoke(app, ["campaign", "--results", "results"])
    assert again.exit_code == 0 and again.output.count("0 run,") == 1
    assert len((tmp_path / "results" / "runs.jsonl").read_text().splitlines()) == len(recs)

    result = runner.invoke(app, ["report", "--results", "results", "--bits", "32", "--write"])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "results" / "table1.md").read_text()
    for heading in ("Table 1:", "Table 1c", "Table 3: tuning", "Table 4: gradient-estimator ablation",
                    "Table 5: bits sweep", "Table 6: what the campaign cost"):
        assert heading in md
    assert "✓" in md and "straight-through" in md and "not run" not in md
    # the ablation starts from the configuration its variants change: the chosen one, with its numbers
    chosen = next(line for line in md.splitlines() if line.startswith("| chosen (Table 3): "))
    assert "estimator=signswish" in chosen and chosen.split("|")[2].strip() not in ("", "not run")
    assert "Every row is the converged campaign's final cells" in md  # Table 1's caption: no interim row
    # Table 5's caption names the baseline the sweep chose (the spec's 1), as its rows show it
    sweep_caption = next(line for line in md.splitlines() if line.startswith("### Table 5:"))
    [baseline] = [m for m in ("hashrec", "dcf") if sweep_caption.endswith(f"in the final stage: {m})")]
    assert f"| {baseline} " in md.split("### Table 5:")[1].split("###")[0]
    # --no-campaign leaves out the campaign's tables, not its choice of Table 1's rows
    plain = runner.invoke(app, ["report", "--results", "results", "--bits", "32", "--no-campaign"])
    assert plain.exit_code == 0 and "Table 3:" not in plain.output
    table_1 = md.split("### Table 1:")[1].split("![")[0].split("### ")[0].strip()
    assert table_1 in plain.output
    # at another code length (the sweep's) Table 1 is no campaign table: no claim about final cells
    sixteen = runner.invoke(app, ["report", "--results", "results", "--bits", "16"])
    caption = next(line for line in sixteen.output.splitlines() if line.startswith("### Table 1:"))
    assert sixteen.exit_code == 0 and "16-bit" in caption and "final cells" not in caption
    assert (tmp_path / "results" / "bits_sweep.png").stat().st_size > 1000 and "](bits_sweep.png)" in md
    tex = (tmp_path / "results" / "table1.tex").read_text()
    assert r"\begin{table*}" in tex
    assert r"chosen (Table~\ref{tab:tuning})" in tex  # a table named in a cell is a \ref: LaTeX numbers them
    if shutil.which("pdflatex"):  # every table of a finished campaign, Tables 4 and 5 full, fits the page
        (tmp_path / "paper").mkdir()
        assert_compiles_cleanly(tex, tmp_path / "paper")
    assert "mean" in (tmp_path / "results" / "table1.csv").read_text()


TWO_DATASETS = """
[synthetic-b]
title = "A second, smaller planted dataset (tests)"
citation = "tests"
builtin = true
users = 300
items = 400
clusters = 4
mean_degree = 20
in_cluster = 0.85
popularity_sigma = 1.0
generator_seed = 7
"""

TUNE_SPEC = SPEC.replace('datasets = ["synthetic"]\nbits', 'datasets = ["synthetic", "synthetic-b"]\nbits').replace(
    'datasets = ["synthetic"]\nseed', 'datasets = ["synthetic", "synthetic-b"]\nseed').replace(
    'methods = ["proposed", "hashrec", "dcf"]', 'methods = ["proposed", "hashrec"]').replace("trials = 2", "trials = 3")


@pytest.fixture
def two_datasets(tmp_path, monkeypatch):
    from pathlib import Path

    from hashbench import specs

    registry = tmp_path / "datasets.toml"
    registry.write_text((Path(specs.__file__).resolve().parent.parent / "datasets.toml").read_text() + TWO_DATASETS)
    monkeypatch.setenv("HASHBENCH_DATASETS", str(registry))
    specs.load_registry.cache_clear()
    yield
    specs.load_registry.cache_clear()


def trials_of(results):
    """{(study, trial): (params, valid recall@50)} from a results directory."""
    out = {}
    for line in (results / "runs.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "tuning" in r and r["status"] == "ok":
            out[(r["tuning"]["study"], r["tuning"]["trial"])] = (r["params"], r["metrics"]["valid"]["recall@50"])
    return out


def test_methods_runs_only_the_named_methods_cells_and_the_rest_later(tmp_path, monkeypatch):
    """--methods points a machine at some methods (a borrowed GPU at Proposed) while another
    runs the rest: only their cells run, across stages, and a plain run then finishes the others."""
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path)
    cli = CliRunner()
    unknown = cli.invoke(app, ["campaign", "--results", "results", "--methods", "proposed,nosuch"])
    assert unknown.exit_code == 1 and "unknown method 'nosuch'" in unknown.output and not (tmp_path / "results" / "runs.jsonl").exists()
    listed = cli.invoke(app, ["campaign", "--results", "results", "--dry-run", "-m", "mostpop"])
    rows = [line.split() for line in listed.output.splitlines() if line.startswith("  to run")]
    assert rows and {row[2] for row in rows} == {"mostpop"}
    result = cli.invoke(app, ["campaign", "--results", "results", "--methods", "proposed"])
    assert result.exit_code == 0, result.output
    recs = [json.loads(line) for line in (tmp_path / "results" / "runs.jsonl").read_text().splitlines()]
    assert {r["method"] for r in recs} == {"proposed"}
    # its study, its final seeds, its sweep bits and the ablation: every stage, not just tuning
    assert {"tuning" in r for r in recs} == {True, False} and {r["bits"] for r in recs} == {16, 32}
    assert any(r["params"].get("estimator") == "ste" for r in recs)
    rest = cli.invoke(app, ["campaign", "--results", "results"])
    assert rest.exit_code == 0, rest.output
    after = cli.invoke(app, ["campaign", "--results", "results", "--dry-run"])
    assert "recorded so far: tune 6/6 trials, final 8/8, sweep 4/4, ablation 2/2" in after.output, after.output


def test_a_tuning_stage_runs_per_dataset_and_resumes_after_a_kill(tmp_path, monkeypatch, two_datasets):
    from hashbench import runner as runner_module

    assert "synthetic-b" in TUNE_SPEC
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, TUNE_SPEC)
    cli = CliRunner()
    # uninterrupted
    done = cli.invoke(app, ["campaign", "--stage", "tune", "--results", "whole"])
    assert done.exit_code == 0, done.output
    whole = trials_of(tmp_path / "whole")
    studies = {study for study, _ in whole}
    assert studies == {f"{m}/{d}" for m in ("proposed", "hashrec") for d in ("synthetic", "synthetic-b")}
    assert sorted(whole) == sorted((s, k) for s in studies for k in range(3))  # the same trials everywhere
    # one sweep for the whole stage: each study's next trial is queued as its previous one lands
    assert "queued proposed · synthetic-b · 32b · seed 0 · trial 2" in " ".join(done.output.split())

    # killed inside the second trial of proposed/synthetic-b, after its first evaluation
    original = runner_module.Runner._checked_progress

    def dying(self, cell):
        progress = original(self, cell)

        def wrapped(description, completed, total=None, **fields):
            if cell.trial is not None and (cell.trial.study, cell.trial.number) == ("proposed/synthetic-b", 1) \
                    and completed == 1 and not fields.get("resumed"):
                raise KeyboardInterrupt
            progress(description, completed, total, **fields)

        return wrapped

    monkeypatch.setattr(runner_module.Runner, "_checked_progress", dying)
    try:
        killed = cli.invoke(app, ["campaign", "--stage", "tune", "--results", "killed"])
        assert killed.exit_code != 0
    except KeyboardInterrupt:
        pass
    partial = trials_of(tmp_path / "killed")
    assert ("proposed/synthetic-b", 1) not in partial and len(partial) < len(whole)
    assert list((tmp_path / "killed" / "checkpoints").glob("*/train_state.pt"))  # the trial's checkpoint
    monkeypatch.setattr(runner_module.Runner, "_checked_progress", original)
    resumed = cli.invoke(app, ["campaign", "--stage", "tune", "--results", "killed"])
    assert resumed.exit_code == 0, resumed.output
    assert trials_of(tmp_path / "killed") == whole  # same proposals, same scores


def test_the_compute_bill_counts_the_cpu_of_killed_and_resumed_segments():
    from hashbench.campaign_report import billed_cpu_seconds

    fresh = {"cpu_seconds": 100.0, "extras": {"resumed_from_epoch": None, "earlier_cpu_seconds": 0.0}}
    # since the count: this process's CPU already includes the earlier segments' (runner)
    resumed = {"cpu_seconds": 250.0, "extras": {"resumed_from_epoch": 40, "earlier_cpu_seconds": 200.0,
                                                 "busy_seconds": 900.0}, "hardware": {"torch_threads": 1}}
    # before it: the last segment only (50 s) against 240 busy seconds on 2 threads
    old = {"cpu_seconds": 50.0, "extras": {"resumed_from_epoch": 40, "busy_seconds": 240.0},
           "hardware": {"torch_threads": 2}}
    assert [billed_cpu_seconds(r) for r in (fresh, resumed, old)] == [100.0, 250.0, 480.0]


def test_the_compute_bill_charges_a_ranking_of_another_cells_model_its_evaluation_only():
    from hashbench.campaign_report import billed_seconds

    trained = {"train_seconds": 900.0, "eval_seconds": 10.0, "extras": {"train_seconds": 880.0}}
    # bgch-scaled ranking the bgch cell's model: its extras are that model's, its work the evaluation
    ranking = {"train_seconds": 0.0, "eval_seconds": 12.0, "extras": {"train_seconds": 880.0, "model_of": "abc"}}
    assert billed_seconds(trained) == 890.0 and billed_seconds(ranking) == 12.0


def test_the_compute_bill_says_how_many_trained_cells_stopped_on_a_cap():
    """Issue 15 expects at least 90% of the final cells to stop by patience: Table 6 shows the share,
    every kind of budget counted as a cap and untrained rows (lsh, mostpop) left out of it."""
    from hashbench.campaign_report import stop_reasons

    stops = ["patience"] * 7 + ["epochs", "time", "pruned", "max_iters"] + [None] * 3
    recs = [{"extras": {"stopped": s} if s else {}} for s in stops]
    assert stop_reasons(recs) == "patience 7, cap 3, no training 3, pruned 1"
    assert stop_reasons(recs, share=True).endswith("; 73% not on a cap")  # 8 of 11 trained
    assert stop_reasons([{"extras": {}}], share=True) == "no training 1"
    failed = {"status": "failed", "error": "out of memory"}  # no extras: not to be read as an untrained row
    assert stop_reasons([failed, recs[0]], share=True) == "failed 1, patience 1; 100% not on a cap"


def test_the_compute_bill_counts_a_cell_on_the_gpu_where_its_model_trained():
    from hashbench.campaign_report import on_gpu

    assert on_gpu({"device": "cuda", "extras": {"device": "cuda:0"}})
    assert not on_gpu({"device": "cuda", "extras": {"device": "cpu"}})  # a CPU-only method on the GPU machine
    assert on_gpu({"device": "cuda"}) and not on_gpu({"device": "cpu"}) and not on_gpu({})


def test_a_resumed_campaign_finishes_the_cells_in_flight_before_starting_new_ones(tmp_path):
    from hashbench.campaign_queue import stage_queue
    from hashbench.cells import checkpoint_dir_for

    c = load_campaign(write_spec(tmp_path))
    results = tmp_path / "results"
    order = [cell.method for cell in stage_queue(c, "tune", results)[0]]
    assert order == ["proposed", "hashrec", "dcf"]
    dcf = next(cell for cell in tune_cells(c, results) if cell.method == "dcf")
    folder = checkpoint_dir_for(results, dcf)
    folder.mkdir(parents=True)
    (folder / "train_state.pt").write_bytes(b"a killed run's state")
    assert [cell.method for cell in stage_queue(c, "tune", results)[0]] == ["dcf", "proposed", "hashrec"]


def test_the_tuning_table_marks_a_startup_trial_the_sampler_did_not_draw(tmp_path):
    """Before 894469f a replay let TPE propose a trial that should have been a random draw; the
    trial stays, and Table 3 marks it (replanned from the records before it, and compared)."""
    from dataclasses import replace

    from hashbench.campaign import startup_trials_not_drawn
    from hashbench.campaign_report import NOT_DRAWN_MARK, tuning_rows

    c = load_campaign(write_spec(tmp_path, SPEC.replace("startup_trials = 1", "startup_trials = 3")))
    results = tmp_path / "results"

    def record(cell, value):
        return {**fake_record(cell, value), "method": cell.method, "dataset": cell.dataset,
                "params": cell.config()["params"], "tuning": cell.trial.config()}

    for number in range(2):
        for cell in tune_cells(c, results):
            if cell.trial.number == number:
                if number == 1 and cell.method == "hashrec":  # another proposal than the seeded draw
                    cell = replace(cell, params={**cell.params, "lr": cell.params["lr"] * 1.5})
                records.append_record(results, record(cell, 0.1 + number / 10))
    latest = records.latest_by_cell(results)
    assert startup_trials_not_drawn(c, "hashrec", "synthetic", latest) == [1]
    assert startup_trials_not_drawn(c, "proposed", "synthetic", latest) == []
    marked = [row[:2] for row in tuning_rows(c, results)[1] if row[1].endswith(NOT_DRAWN_MARK)]
    assert marked == [["hashrec/synthetic", "1" + NOT_DRAWN_MARK]]


def test_a_finished_tuning_runs_no_trial_again_not_even_a_failed_one(tmp_path):
    """A failed trial is not retried once its study has moved on: a retry that won would change
    the winner after the final, sweep and ablation cells had used it."""
    from hashbench.campaign_queue import stage_queue

    c = load_campaign(write_spec(tmp_path))
    results = tmp_path / "results"
    for number in range(c.trials):
        for cell in tune_cells(c, results):
            if cell.trial.number == number:
                failed = cell.method == "proposed" and number == 0
                records.append_record(results, fake_record(cell, 0.1, status="failed" if failed else "ok"))
    assert all(cell.config_hash() in records.latest_by_cell(results) for cell in tune_cells(c, results))
    cells, more = stage_queue(c, "tune", results)
    assert cells == [] and more() == []


def test_a_trial_of_a_method_with_a_schedule_is_not_pruned_before_it_ends(tmp_path):
    """HashRec patience waits for its 100-epoch β continuation; so does its trials' pruner. The
    other methods' trials keep the spec's pruner arguments (and their configuration hashes)."""
    spec = write_spec(tmp_path, SPEC.replace('pruner = "median"', 'pruner = "median"\npruner_args = { n_warmup_steps = 0 }'))
    tags = {cell.method: cell.trial for cell in tune_cells(load_campaign(spec), tmp_path / "results")}
    assert dict(tags["hashrec"].pruner_args)["n_warmup_steps"] == 100  # hashrec.toml's min_epochs
    assert dict(tags["proposed"].pruner_args) == dict(tags["dcf"].pruner_args) == {"n_warmup_steps": 0}
    # a campaign's budget for the method sets the epoch patience waits for: the pruner follows it
    shorter = write_spec(tmp_path, SPEC.replace("hashrec = { epochs = 3, eval_every = 1 }",
                                                "hashrec = { epochs = 3, eval_every = 1, min_epochs = 2 }"))
    [tag] = [cell.trial for cell in tune_cells(load_campaign(shorter), tmp_path / "results") if cell.method == "hashrec"]
    assert dict(tag.pruner_args)["n_warmup_steps"] == 2


def test_a_ranking_variants_trial_trained_again_is_never_pruned():
    """bgch-scaled's seed-0 final cell is bgch's winning trial ranked its way; trained again (the
    trial predates ranking variants computed beside it), a pruned copy would stand as that cell."""
    from hashbench.runner import Runner
    from hashbench.tuning import TrialTag

    tag = TrialTag("bgch/synthetic", 4, "median", (("n_startup_trials", 3),), history=())
    assert Runner._pruner(Cell("bgch", "synthetic", 32, 0, trial=tag)) is not None
    assert Runner._pruner(Cell("bgch-scaled", "synthetic", 32, 0, trial=tag)) is None
    assert Runner._pruner(Cell("bgch", "synthetic", 32, 0)) is None


def test_prune_deletes_the_files_of_every_trial_but_its_studys_leader(tmp_path):
    """Even while the studies run (3 trials each, 2 recorded): a trial that is not the best
    complete one so far never wins, since a later trial can only displace the leader."""
    from typer.testing import CliRunner

    from hashbench.cli import app

    spec, results = write_spec(tmp_path, SPEC.replace("trials = 2", "trials = 3")), tmp_path / "results"
    c = load_campaign(spec)
    values = {"proposed": (0.30, 0.35), "hashrec": (0.2, 0.1), "dcf": (0.1, 0.05)}
    files = {}
    for number in range(2):
        for cell in tune_cells(c, results):
            if cell.trial.number != number or (cell.method == "dcf" and number == 1):
                continue  # dcf's study stays unfinished
            rec = fake_record(cell, values[cell.method][number])
            for key, folder in (("codes_file", "codes"), ("per_user_file", "per_user")):
                rec[key] = f"{folder}/{cell.method}-trial{number}.npz"
                (results / folder).mkdir(parents=True, exist_ok=True)
                (results / rec[key]).write_bytes(b"x" * 10)
            files[(cell.method, number)] = [results / rec["codes_file"], results / rec["per_user_file"]]
            records.append_record(results, rec)
    prune = ["campaign", "--spec", str(spec), "--results", str(results), "--prune"]
    # outside git nothing is deleted: "the files stay in the git history" would not hold
    out = CliRunner().invoke(app, prune)
    assert out.exit_code == 0 and "removed 0 files" in out.output and "kept 4 more" in out.output, out.output

    commit_everything(tmp_path)
    files[("hashrec", 1)][0].write_bytes(b"changed since")  # not as committed: kept
    out = CliRunner().invoke(app, prune)
    assert out.exit_code == 0, out.output
    assert "removed 3 files" in out.output and "kept 1 more" in out.output
    gone = {path for paths in files.values() for path in paths if not path.exists()}
    # every trial but its study's leader, as far as git keeps it
    assert gone == {*files[("proposed", 0)], files[("hashrec", 1)][1]}
    assert len(list(records.read_records(results))) == 5  # every record stays


def test_prune_deletes_the_files_of_seeds_table_1_no_longer_shows(tmp_path):
    """A row's first-campaign seeds drop out of Table 1 at its campaign configuration's first
    final seed: their files go; other code lengths and protocols, and every record, stay, and so
    does a file that a kept record names too."""
    from hashbench.campaign_report import unshown_files
    from hashbench.cells import Cell

    spec, results = write_spec(tmp_path), tmp_path / "results"
    c = load_campaign(spec)

    def plant(config_hash, seed, finished_at, bits=32, protocol="random-8-1-1", params=None):
        rec = {"config_hash": config_hash, "status": "ok", "method": "mostpop", "dataset": "synthetic",
               "bits": bits, "protocol": protocol, "seed": seed, "params": params or {}, "ks": [50, 100],
               "finished_at": finished_at, "per_user_file": f"per_user/{config_hash}.npz"}
        (results / "per_user").mkdir(parents=True, exist_ok=True)
        (results / rec["per_user_file"]).write_bytes(b"x")
        records.append_record(results, rec)
        return results / rec["per_user_file"]

    first = [plant(f"first-{seed}", seed, "2026-11-22T00:00:00", params={"budget": 1}) for seed in range(2)]
    others = [plant("sixteen-bits", 0, "2026-11-22T00:00:00", bits=16, params={"budget": 1}),
              plant("own-split", 0, "2026-11-22T00:00:00", protocol="lightgcn", params={"budget": 1})]
    assert unshown_files(c, results) == []  # the first campaign's row is Table 1's
    converged = [plant(Cell("mostpop", "synthetic", 32, 0).config_hash(), 0, "2026-12-02T00:00:00")]
    assert unshown_files(c, results) == sorted(first)  # one final seed of two is enough
    converged.append(plant(Cell("mostpop", "synthetic", 32, 1).config_hash(), 1, "2026-12-02T00:00:00"))
    assert unshown_files(c, results) == sorted(first)
    # an older run at another code length named the same file as a first-campaign seed: it stays
    records.append_record(results, {"config_hash": "sixteen-bits-old", "status": "ok", "method": "mostpop",
                                     "dataset": "synthetic", "bits": 16, "protocol": "random-8-1-1", "seed": 0,
                                     "params": {}, "finished_at": "2026-11-20T00:00:00",
                                     "per_user_file": first[0].relative_to(results).as_posix()})
    assert unshown_files(c, results) == [first[1]]
    # a hand-edited record naming a file outside codes/ and per_user/ never gets it deleted
    (tmp_path / "precious.txt").write_text("not a result")
    records.append_record(results, {"config_hash": "edited", "status": "ok", "method": "mostpop",
                                     "dataset": "synthetic", "bits": 32, "protocol": "random-8-1-1", "seed": 5,
                                     "params": {"edited": 1}, "finished_at": "2026-11-20T00:00:00",
                                     "per_user_file": "../precious.txt"})
    assert unshown_files(c, results) == [first[1]]
    for path in unshown_files(c, results):
        path.unlink()
    assert all(p.exists() for p in others + converged) and len(list(records.read_records(results))) == 8


def test_prune_deletes_the_variant_rankings_of_lost_trials_too(tmp_path):
    """...and keeps those of a study still running (it deleted the leading HashGNN trial's
    hashgnn-rerank per-user file while the study had trials to go)."""
    from hashbench.campaign import losing_trial_files
    from hashbench.campaign_report import unshown_files

    spec = (SPEC.replace('methods = ["proposed", "hashrec", "dcf", "mostpop"]',
                         'methods = ["bgch", "bgch-scaled", "mostpop"]')
            .replace('methods = ["proposed", "hashrec", "dcf"]', 'methods = ["bgch"]')
            .replace("hashrec = { epochs = 3, eval_every = 1 }", "bgch = { epochs = 3, eval_every = 1 }"))
    c = load_campaign(write_spec(tmp_path, spec))
    results = tmp_path / "results"
    files = {}
    for number, value in enumerate((0.1, 0.2)):  # trial 1 wins
        for cell in tune_cells(c, results):
            if cell.trial.number != number:
                continue
            for variant in (cell, replace(cell, method="bgch-scaled")):
                rec = fake_record(variant, value)
                rec.update(method=variant.method, dataset=variant.dataset, bits=variant.bits, seed=variant.seed,
                           protocol=variant.protocol, tuning=variant.trial.config(),
                           finished_at=f"2026-12-02T0{number}:00:00")
                rec["per_user_file"] = f"per_user/{variant.method}-{number}.npz"
                (results / "per_user").mkdir(parents=True, exist_ok=True)
                (results / rec["per_user_file"]).write_bytes(b"x")
                files[(variant.method, number)] = results / rec["per_user_file"]
                records.append_record(results, rec)
        if number == 0:  # the study still runs: trial 0 may win, its bgch-scaled ranking with it
            assert unshown_files(c, results) == []
    assert sorted(losing_trial_files(c, results)) == sorted([files[("bgch", 0)], files[("bgch-scaled", 0)]])
    assert sorted(unshown_files(c, results)) == sorted([files[("bgch", 0)], files[("bgch-scaled", 0)]])


def test_table_1_shows_a_tuning_trial_only_as_the_winner_of_a_finished_study(tmp_path):
    """A trial is one configuration among several being tried: Table 1 (and the variant rows
    ranked from trials) must not show a trial until its study has chosen it."""
    from hashbench.report import build_table, table_selection

    c = load_campaign(write_spec(tmp_path))
    results = tmp_path / "results"

    def record(cell, value):
        rec = fake_record(cell, value)
        rec.update({**cell.config(), "hashing": True, "finished_at": f"2026-12-02T00:00:0{cell.trial.number}",
                    "metrics": {"valid": {"recall@50": value}, "test": {"recall@50": value}}})
        records.append_record(results, rec)

    def rows():
        table = build_table(results, 32, datasets=["synthetic"], metrics=("recall@50",),
                            selection=table_selection(results, c))
        return {m: row[("synthetic", "recall@50")].values for m, row in table.rows.items()}

    first = {cell.method: cell for cell in tune_cells(c, results)}
    record(first["dcf"], 0.3)
    records.append_record(results, {**fake_record(Cell("mostpop", "synthetic", 32, 0), 0.1),
                                    **Cell("mostpop", "synthetic", 32, 0).config(), "hashing": False,
                                    "finished_at": "2026-12-02T00:00:00", "metrics": {"test": {"recall@50": 0.1}}})
    assert rows() == {"mostpop": [0.1]}  # dcf's study is still trying
    second = next(cell for cell in tune_cells(c, results) if cell.method == "dcf" and cell.trial.number == 1)
    record(second, 0.2)  # dcf's study ends: trial 0 wins
    assert rows() == {"dcf": [0.3], "mostpop": [0.1]}



def test_a_stages_running_hours_leave_out_the_time_between_sessions_when_nothing_ran():
    from datetime import datetime, timedelta

    from hashbench.campaign_report import seconds_running

    t0 = datetime(2026, 12, 1, 9)
    hour = timedelta(hours=1)
    spans = [(t0 + 10 * hour, t0 + 11 * hour), (t0, t0 + hour), (t0 + hour / 2, t0 + 2 * hour)]  # any order
    assert seconds_running(spans) == 3 * 3600  # 9:00-11:00 (two cells overlapping) and 19:00-20:00


def test_table_5s_caption_names_only_the_methods_it_can_have_yet(tmp_path):
    """Before the sweep method's tuning and the final stage are done, the caption says what the
    table will hold and when, instead of promising rows that are not there."""
    from hashbench.campaign_report import sweep_methods

    c = load_campaign(write_spec(tmp_path))
    assert sweep_methods(c, tmp_path / "results") == (
        "proposed once its tuning on synthetic is finished; the baseline with the best mean validation R@50 "
        "in the final stage joins once it is finished on synthetic")
