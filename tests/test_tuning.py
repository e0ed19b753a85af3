"""hashbench.tuning: the declared search spaces, the pruner's decision from earlier trials'
curves, and the driver stopping a pruned trial."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from hashbench.core.training import TrainConfig, run_training
from hashbench.errors import HashbenchError
from hashbench.params import MethodSpec
from hashbench.registry import method_names, method_spec
from hashbench.tuning import TrialTag, check_space, outcome, pruner_args_for, pruner_for
from helpers import CountingTrainer

TRAINED_HASHING = ("proposed", "bgch", "hashgnn", "hashrec", "ccsr", "dcf")


@pytest.mark.parametrize("name", TRAINED_HASHING)
def test_every_trained_hashing_method_declares_a_space_holding_its_defaults(name):
    assert name in method_names()
    space = check_space(method_spec(name), "test")
    assert len(space) >= 2


def test_a_default_outside_the_space_is_refused():
    spec = MethodSpec.from_table("m", {"params": {"lr": {"default": 0.1}}, "search": {"lr": {"low": 1e-4, "high": 1e-2}}},
                                 "test")
    with pytest.raises(HashbenchError, match="outside its search space"):
        check_space(spec, "test")


def history(*finals):
    # earlier complete trials: curves rising to their final value over epochs 1..4
    return tuple(("complete", f, tuple((e, f * e / 4) for e in range(1, 5))) for f in finals)


def test_the_median_pruner_stops_a_curve_below_the_earlier_trials():
    tag = TrialTag("m/d", 3, "median", (("n_startup_trials", 3), ("n_warmup_steps", 0)), history=history(0.4, 0.5, 0.6))
    prune = pruner_for(tag)
    assert prune([(1, 0.01), (2, 0.02)])  # far below the median at epoch 2 (0.25)
    assert not prune([(1, 0.2), (2, 0.4)])  # above it
    # fewer earlier trials than the pruner's startup: never pruned
    young = TrialTag("m/d", 1, "median", (("n_startup_trials", 3),), history=history(0.5))
    assert not pruner_for(young)([(1, 0.0), (2, 0.0)])


def test_the_pruner_judges_no_trial_before_its_methods_min_epochs():
    """A method whose reference always runs a schedule (HashRec's 100-epoch β continuation) is
    not cut mid-schedule: the pruner waits for the epoch patience waits for."""
    args = (("n_startup_trials", 3), ("n_warmup_steps", 0))
    waiting = pruner_args_for("median", args, min_epochs=3)
    assert dict(waiting) == {"n_startup_trials": 3, "n_warmup_steps": 3}
    prune = pruner_for(TrialTag("m/d", 3, "median", waiting, history=history(0.4, 0.5, 0.6)))
    assert not prune([(1, 0.01), (2, 0.02)])  # far below the median, but mid-schedule
    assert prune([(1, 0.01), (2, 0.02), (3, 0.03)])  # the schedule is over: judged as any trial
    # a method without a schedule keeps the campaign's arguments, so its recorded trials stand
    assert pruner_args_for("median", args, min_epochs=0) == args
    assert pruner_args_for("none", (), min_epochs=100) == ()


def test_the_driver_stops_a_pruned_trial_and_says_so():
    trainer = CountingTrainer()  # validation rises with the epoch (below)
    tag = TrialTag("m/d", 3, "median", (("n_startup_trials", 3),), history=history(0.4, 0.5, 0.6))
    ctx = SimpleNamespace(seed=np.random.SeedSequence(0), progress=lambda *a, **k: None, checkpoint_dir=None, evidence=None,
                          validate=lambda m: {"recall@50": 0.001 * trainer.epoch}, prune=pruner_for(tag))
    result = run_training(SimpleNamespace(ctx=ctx, name="t"), trainer, TrainConfig(epochs=20, eval_every=1), "x")
    assert result.stopped == "pruned" and result.epochs_run < 20
    record = {"status": "ok", "metrics": {"valid": {"recall@50": result.best_valid["recall@50"]}},
              "extras": {"stopped": result.stopped, "curve": [h for h in result.history if "valid" in h]}}
    state, value, curve = outcome(record, "recall@50")
    assert state == "pruned" and len(curve) == result.epochs_run


def run_study(spec, trials, startup_trials=1):
    """plan_study until every trial is recorded (a fake run scoring a trial by its parameters)."""
    from hashbench.tuning import plan_study

    recorded = {}

    def tag(number, past):
        return TrialTag("m/d", number, "none", (), history=past)

    while True:
        planned = plan_study(spec, "m/d", trials, 0, startup_trials, tag,
                             lambda params, t: (json.dumps(params, sort_keys=True), t), lambda cell: recorded.get(cell),
                             "recall@50",
                             recorded_params=lambda k: [json.loads(c[0]) for c in recorded if c[1].number == k])
        cell, record = planned[-1]
        if record is not None and len(planned) == trials:
            return [json.loads(c[0]) for c, _ in planned]
        recorded[cell] = {"status": "ok", "metrics": {"valid": {"recall@50": 0.1 * json.loads(cell[0])["n"]}},
                          "extras": {"stopped": "patience", "curve": []}}


def test_a_replayed_study_draws_its_startup_trials_as_one_uninterrupted_study_would():
    """Every planning replays the study from its records (a recorded trial is enqueued, so it draws
    nothing): the random startup trials must still be the seeded sampler's first draws, in order,
    and TPE must take over after `startup_trials` of them, not earlier."""
    import optuna

    spec = MethodSpec.from_table("m", {"params": {"n": {"default": 1}, "x": {"default": 0.5}},
                                       "search": {"n": {"choices": [0, 1, 2, 3]}, "x": {"low": 0.0, "high": 1.0}}},
                                 "test")
    replayed = run_study(spec, 5, startup_trials=4)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4))
    study.enqueue_trial({"n": 1, "x": 0.5})
    once = []
    for _ in range(4):  # the defaults, then three random draws, in one process
        trial = study.ask({"n": optuna.distributions.CategoricalDistribution([0, 1, 2, 3]),
                           "x": optuna.distributions.FloatDistribution(0.0, 1.0)})
        once.append(trial.params)
        study.tell(trial, 0.1 * trial.params["n"])
    assert replayed[:4] == once


def test_a_study_never_spends_a_trial_on_parameters_it_has_already_run():
    spec = MethodSpec.from_table("m", {"params": {"n": {"default": 1}}, "search": {"n": {"choices": [0, 1, 2, 3]}}},
                                 "test")
    proposals = run_study(spec, 4)  # four trials over four points: each point once
    assert sorted(p["n"] for p in proposals) == [0, 1, 2, 3] and proposals[0] == {"n": 1}
    assert run_study(spec, 4) == proposals  # and the same again when rebuilt (seeded)
    with pytest.raises(HashbenchError, match="fewer than 5 distinct points"):
        run_study(spec, 5)
