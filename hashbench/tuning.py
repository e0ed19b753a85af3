"""Tuning, the same way for every method: Optuna's TPE sampler over the search space declared
beside each method (`[name.search]` in its TOML file), a median pruner on the
validation curves, the method's defaults as the first trial.

Trials are ordinary cells. Nothing is stored besides the records: a study is rebuilt from
results/runs.jsonl every time (the same seeded sampler, told the same finished trials in the
same order, proposes the same next trial), so a killed tuning stage re-run with the same
command proposes the same trials, skips the recorded ones and resumes the interrupted one
from its checkpoint. A recorded trial is replayed with the parameters its record holds, not
the ones the sampler proposes again: TPE's arithmetic differs in the last bits between CPUs
(an AMD-recorded study proposed lr 0.0013662272860142008 there and a hair off it on an Intel
machine), which changed the trial's hash and would have retrained it. Trial k depends on
trials 0..k-1, so a study runs its trials one after another; different (method, dataset)
studies run side by side.

Pruning happens inside a trial's training: after every validation the driver asks
`pruner_for(tag)` whether the curve so far is hopeless against the earlier trials' curves at
the same epochs (tag.history); a pruned cell is recorded with extras.stopped = "pruned" and
told to the sampler as pruned. It judges no trial before its method's min_epochs, the epoch
patience waits for (`pruner_args_for`).

A search space entry is one of
    lr = { low = 1e-4, high = 1e-2, log = true }      # a float (int if the parameter is int)
    lambda_ae = { choices = [0.0, 1e-4, 1e-3] }        # a categorical, 0 allowed
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from hashbench.errors import HashbenchError
from hashbench.params import MethodSpec

SAMPLERS = ("tpe",)
# Hyperband is not offered: a study is rebuilt from the records for every pruning check, and
# Optuna's Hyperband keeps its rung scores in trial attributes that a rebuilt study lacks, so it
# would compare a trial with itself only and never prune (found in review, 2026-12-03)
PRUNERS = ("median", "none")
REPEATS_PER_TRIAL = 50  # proposals per trial before a study says its space is too small
Curve = tuple[tuple[int, float], ...]  # (epoch, validation value) after every evaluation


@dataclass(frozen=True)
class TrialTag:
    """What makes a cell trial `number` of a study. study, number and pruner are part of the
    cell's configuration (its hash); history — the earlier trials' outcomes, which the pruner
    compares against — is derived from the records and is not."""

    study: str  # "<method>/<dataset>"
    number: int
    pruner: str = "median"
    pruner_args: tuple[tuple[str, Any], ...] = ()
    monitor: str = "recall@50"
    history: tuple[tuple[str, float | None, Curve], ...] = field(default=(), compare=False, hash=False)

    def config(self) -> dict[str, Any]:
        return {"study": self.study, "trial": self.number, "pruner": self.pruner, "pruner_args": dict(self.pruner_args)}


def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - a dependency since the tuning issue
        raise HashbenchError("tuning needs optuna (pip install optuna)") from None
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna


def check_space(spec: MethodSpec, where: str) -> dict[str, Any]:
    """The method's search space, checked against its parameters; its defaults must lie inside
    it (they are the first trial)."""
    space = spec.search
    if not space:
        raise HashbenchError(f"{where}: {spec.name} has no [{spec.name}.search] table to tune over")
    defaults = spec.defaults
    for key, entry in space.items():
        if key not in defaults:
            raise HashbenchError(f"{where}: {spec.name}.search.{key} is not a parameter of {spec.name}")
        if not isinstance(entry, dict) or not ("choices" in entry or {"low", "high"} <= set(entry)):
            raise HashbenchError(f"{where}: {spec.name}.search.{key} needs choices = [...] or low/high")
        value = defaults[key]
        inside = (value in entry["choices"]) if "choices" in entry else (
            value is not None and entry["low"] <= value <= entry["high"])
        if not inside:
            raise HashbenchError(f"{where}: {spec.name}'s default {key} = {value!r} is outside its search space "
                                 f"{entry} (the defaults are the first trial)")
    return space


def distributions(spec: MethodSpec) -> dict[str, Any]:
    optuna = _optuna()
    d = optuna.distributions
    out = {}
    for key, entry in spec.search.items():
        if "choices" in entry:
            out[key] = d.CategoricalDistribution(list(entry["choices"]))
        elif spec.params[key].type == "int":
            out[key] = d.IntDistribution(int(entry["low"]), int(entry["high"]), log=bool(entry.get("log", False)))
        else:
            out[key] = d.FloatDistribution(float(entry["low"]), float(entry["high"]), log=bool(entry.get("log", False)))
    return out


def describe_space(spec: MethodSpec) -> str:
    parts = []
    for key, entry in spec.search.items():
        if "choices" in entry:
            parts.append(f"{key} ∈ {{{', '.join(f'{c:g}' if isinstance(c, float) else str(c) for c in entry['choices'])}}}")
        else:
            parts.append(f"{key} ∈ [{entry['low']:g}, {entry['high']:g}]" + (" log" if entry.get("log") else ""))
    return "; ".join(parts)


def outcome(record: dict | None, monitor: str) -> tuple[str, float | None, Curve]:
    """(state, value, curve) of a recorded trial: complete, pruned or fail."""
    if record is None or record.get("status") != "ok":
        return "fail", None, ()
    extras = record.get("extras") or {}
    curve = tuple((int(h["epoch"]), float(h["valid"][monitor])) for h in extras.get("curve", [])
                  if monitor in h.get("valid", {}))
    value = record["metrics"]["valid"].get(monitor)
    state = "pruned" if extras.get("stopped") == "pruned" else "complete"
    return state, value, curve


def make_pruner(name: str, args: dict[str, Any]):
    optuna = _optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(**args)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise HashbenchError(f"unknown pruner {name!r} (one of {', '.join(PRUNERS)})")


# each pruner's own knob for "judge no trial before this step (epoch)"
WARMUP_ARG = {"median": "n_warmup_steps"}


def pruner_args_for(pruner: str, args: tuple[tuple[str, Any], ...], min_epochs: int) -> tuple[tuple[str, Any], ...]:
    """The pruner's arguments for a method whose patience waits for `min_epochs` (the schedule
    its reference always runs: HashGNN's 20 epochs, HashRec's 100-epoch β continuation): no
    trial is judged before then either, since a curve mid-schedule says little about where it
    ends (of HashGNN's four complete Gowalla trials, the one leading at epoch 1 ended last).
    Unchanged for a method without one, so its trials keep their configuration hashes."""
    key = WARMUP_ARG.get(pruner)
    if key is None or min_epochs <= dict(args).get(key, 0):
        return args
    return tuple(sorted({**dict(args), key: int(min_epochs)}.items()))


def _study(name: str, sampler, pruner):
    optuna = _optuna()
    return optuna.create_study(study_name=name, direction="maximize", sampler=sampler, pruner=pruner,
                               storage=optuna.storages.InMemoryStorage())


def _tell(study, trial, state: str, value: float | None, curve: Curve) -> None:
    optuna = _optuna()
    for step, v in curve:
        trial.report(v, step)
    if state == "complete" and value is not None and math.isfinite(value):
        study.tell(trial, value)
    elif state == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def plan_study(spec: MethodSpec, study_name: str, trials: int, seed: int, startup_trials: int,
               tag: Callable[[int, tuple], TrialTag], cell_for: Callable[[dict[str, Any], TrialTag], Any],
               record_for: Callable[[Any], dict | None], monitor: str,
               recorded_params: Callable[[int], list[dict[str, Any]]] = lambda number: [],
               ) -> list[tuple[Any, dict | None]]:
    """The study's trials as (cell, record or None): every recorded trial and the next one to
    run (whose parameters depend on the recorded ones); later trials are not known yet.

    `recorded_params(k)`: the parameters of the records tagged as trial k of this study (any
    configuration); the one whose cell is recorded is replayed as it was run."""
    optuna = _optuna()
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
    study = _study(study_name, sampler, optuna.pruners.NopPruner())
    dists = distributions(spec)
    history: list[tuple[str, float | None, Curve]] = []
    known: dict[str, tuple[str, float | None, Curve]] = {}  # the parameters of each recorded trial -> its outcome

    def as_recorded(number: int) -> dict[str, Any] | None:
        for params in recorded_params(number):
            params = {k: params[k] for k in dists if k in params}
            if len(params) == len(dists) and record_for(cell_for(params, tag(number, tuple(history)))) is not None:
                return params
        return None

    def enqueue(number: int) -> None:
        """Trial `number`'s parameters before the sampler is asked: its record's, else the
        defaults for the first trial, else none (the sampler proposes)."""
        fixed = as_recorded(number) or ({k: spec.defaults[k] for k in dists} if number == 0 else None)
        if fixed is not None:
            study.enqueue_trial(fixed)

    planned = []
    asks = 0
    enqueue(0)
    while len(planned) < trials:
        trial = study.ask(dists)
        asks += 1
        params = json.dumps(trial.params, sort_keys=True)
        if params in known:
            # the sampler proposed a recorded trial's parameters again, then ask anew: every
            # method gets `trials` distinct trials. While the sampler still draws at random (the
            # startup trials), a repeat is the replay's doing: a recorded trial is enqueued, so it
            # draws nothing from the sampler's generator, which then repeats the earlier random
            # draws. Told as failed, such a repeat does not count as a startup trial (told as
            # complete, a copy of trial 1 made TPE take over at trial 3, not 4). Once TPE models
            # the space (small discrete spaces), the repeat is told its known outcome again, so
            # that the model moves on from the point instead of proposing it forever
            if asks > REPEATS_PER_TRIAL * trials:
                raise HashbenchError(f"{study_name}: the search space has fewer than {trials} distinct points; "
                                     "lower [tuning] trials or widen the space")
            finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                optuna.trial.TrialState.PRUNED))
            _tell(study, trial, *(known[params] if len(finished) >= startup_trials else ("fail", None, ())))
            continue
        cell = cell_for(dict(trial.params), tag(len(planned), tuple(history)))
        record = record_for(cell)
        planned.append((cell, record))
        if record is None:
            break
        state, value, curve = outcome(record, monitor)
        _tell(study, trial, state, value, curve)
        history.append((state, value, curve))
        known[params] = (state, value, curve)
        enqueue(len(planned))
    return planned


def pruner_for(tag: TrialTag) -> Callable[[Sequence[tuple[int, float]]], bool]:
    """should_prune(curve so far) for one trial, against the earlier trials' curves."""
    optuna = _optuna()

    def should_prune(curve: Sequence[tuple[int, float]]) -> bool:
        study = _study(tag.study, optuna.samplers.RandomSampler(seed=0), make_pruner(tag.pruner, dict(tag.pruner_args)))
        for state, value, past in tag.history:
            st = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
                  "fail": optuna.trial.TrialState.FAIL}[state]
            study.add_trial(optuna.trial.create_trial(
                state=st, value=value if st == optuna.trial.TrialState.COMPLETE else None,
                intermediate_values={step: v for step, v in past}))
        trial = study.ask()
        for step, v in curve:
            trial.report(v, step)
        return bool(curve) and trial.should_prune()

    return should_prune
