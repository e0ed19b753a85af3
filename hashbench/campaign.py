"""The Table 1 campaign: tune → final → sweep → ablation, as ordinary cells.

campaign.toml says what to run; this module turns it into runner Cells, stage by stage.
Nothing here keeps state of its own: the tuning trials (hashbench.tuning: Optuna's seeded
TPE sampler, rebuilt from the records), which trial won, and which baselines are the two
best, are read back from results/runs.jsonl every time, so a campaign killed at any point
continues with the same command, and the report derives the same choices.

Tuning is per dataset: every tuned method gets the same number of trials on each tuning
dataset's validation split, and the final cells of a dataset use that dataset's winner.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hashbench import records
from hashbench.errors import HashbenchError
from hashbench.registry import method_names, method_spec
from hashbench.cells import Cell

STAGES = ("tune", "final", "sweep", "ablation")
EPOCH_KEYS = ("epochs", "max_iters", "init_iters")  # the budget keys that --budget-scale multiplies


@dataclass(frozen=True)
class Campaign:
    datasets: tuple[str, ...]
    bits: int
    seeds: int
    methods: tuple[str, ...]
    budget: dict[str, dict[str, Any]]
    tune_datasets: tuple[str, ...]
    tune_seed: int
    monitor: str
    trials: int
    tune_methods: tuple[str, ...]
    sweep_dataset: str
    sweep_bits: tuple[int, ...]
    sweep_baselines: int
    ablation_dataset: str
    ablation_method: str
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    budget_scale: float = 1.0
    sampler: str = "tpe"
    startup_trials: int = 4  # TPE's random trials before it models (the defaults are the first)
    pruner: str = "median"
    pruner_args: tuple[tuple[str, Any], ...] = ()

    def budget_for(self, method: str) -> dict[str, Any]:
        params = dict(self.budget.get(method, {}))
        for key in EPOCH_KEYS:
            if key in params:
                params[key] = max(1, round(params[key] * self.budget_scale))
        return params


def campaign_path() -> Path:
    """campaign.toml: $HASHBENCH_CAMPAIGN, else the current directory's, else the checkout's or the packaged copy."""
    if env := os.environ.get("HASHBENCH_CAMPAIGN"):
        return Path(env)
    package = Path(__file__).resolve().parent
    for candidate in (Path("campaign.toml"), package.parent / "campaign.toml", package / "campaign.toml"):
        if candidate.exists():
            return candidate
    return Path("campaign.toml")


def load_campaign(path: Path | None = None, budget_scale: float = 1.0) -> Campaign:
    path = Path(path) if path else campaign_path()
    if not path.exists():
        raise HashbenchError(f"campaign spec {path} not found (pass --spec or set HASHBENCH_CAMPAIGN)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise HashbenchError(f"{path}: not valid TOML: {exc}") from None
    if budget_scale <= 0:
        raise HashbenchError(f"--budget-scale must be positive, got {budget_scale}")
    try:
        c, tune, sweep, abl = raw["campaign"], raw["tuning"], raw["sweep"], raw["ablation"]
        campaign = Campaign(
            datasets=tuple(c["datasets"]), bits=int(c["bits"]), seeds=int(c["seeds"]), methods=tuple(c["methods"]),
            budget=raw.get("budget", {}), tune_datasets=tuple(tune["datasets"]), tune_seed=int(tune["seed"]),
            monitor=tune.get("monitor", "recall@50"), trials=int(tune["trials"]),
            tune_methods=tuple(tune["methods"]), sampler=tune.get("sampler", "tpe"),
            startup_trials=int(tune.get("startup_trials", 4)), pruner=tune.get("pruner", "median"),
            pruner_args=tuple(sorted(tune.get("pruner_args", {}).items())),
            sweep_dataset=sweep["dataset"], sweep_bits=tuple(sweep["bits"]), sweep_baselines=int(sweep["baselines"]),
            ablation_dataset=abl["dataset"], ablation_method=abl["method"], variants=abl.get("variants", {}),
            budget_scale=budget_scale)
    except KeyError as exc:
        raise HashbenchError(f"{path}: missing key {exc}") from None
    _validate(campaign, path)
    return campaign


def _validate(c: Campaign, path: Path) -> None:
    from hashbench.tuning import PRUNERS, SAMPLERS, check_space

    known = set(method_names())
    for name in {*c.methods, *c.budget, *c.tune_methods, c.ablation_method}:
        if name not in known:
            raise HashbenchError(f"{path}: unknown method {name!r} (known: {', '.join(sorted(known))})")
    if c.sampler not in SAMPLERS or c.pruner not in PRUNERS:
        raise HashbenchError(f"{path}: [tuning] sampler must be one of {', '.join(SAMPLERS)} and pruner one of "
                             f"{', '.join(PRUNERS)}")
    if c.trials < 1:
        raise HashbenchError(f"{path}: [tuning] trials must be at least 1")
    for name in c.tune_methods:  # the fairness rule: the same trials, over a space declared beside the method
        check_space(method_spec(name), str(path))
    missing = set(c.datasets) - set(c.tune_datasets)
    if c.tune_methods and missing:
        raise HashbenchError(f"{path}: [tuning] datasets lacks {', '.join(sorted(missing))}: every dataset is "
                             "tuned separately")
    for where, method, params in ([("budget", m, p) for m, p in c.budget.items()]
                                  + [("ablation", c.ablation_method, v) for v in c.variants.values()]):
        unknown = set(params) - set(method_spec(method).defaults)
        if unknown:
            raise HashbenchError(f"{path}: [{where}] {method} has no parameter {', '.join(sorted(unknown))}")


# --- stages ------------------------------------------------------------------------------------

def study_name(method: str, dataset: str) -> str:
    return f"{method}/{dataset}"


def study_seed(c: Campaign, method: str, dataset: str) -> int:
    """The sampler's seed: the campaign's tuning seed and the study's name."""
    return int(np.random.SeedSequence([c.tune_seed, *study_name(method, dataset).encode()]).generate_state(1)[0])


def study_trials(c: Campaign, method: str, dataset: str, latest: dict[str, dict]) -> list[tuple[Cell, dict | None]]:
    """One study's recorded trials and the next one to run, as (cell, record or None)."""
    from hashbench.tuning import TrialTag, plan_study, pruner_args_for

    name = study_name(method, dataset)
    min_epochs = method_spec(method).with_defaults(c.budget_for(method)).get("min_epochs", 0)
    pruner_args = pruner_args_for(c.pruner, c.pruner_args, min_epochs)

    def tag(number: int, history: tuple) -> TrialTag:
        return TrialTag(name, number, c.pruner, pruner_args, c.monitor, history)

    def cell_for(params: dict[str, Any], trial: TrialTag) -> Cell:
        return Cell(method, dataset, c.bits, c.tune_seed, params={**c.budget_for(method), **params}, trial=trial)

    tagged: dict[int, list[dict[str, Any]]] = {}  # trial number -> the parameters of the records tagged with it
    for rec in latest.values():
        tuning = rec.get("tuning") or {}
        if tuning.get("study") == name and rec.get("method") == method and rec.get("dataset") == dataset:
            tagged.setdefault(int(tuning["trial"]), []).append(rec.get("params") or {})

    return plan_study(method_spec(method), name, c.trials, study_seed(c, method, dataset), c.startup_trials,
                      tag, cell_for, lambda cell: latest.get(cell.config_hash()), c.monitor,
                      recorded_params=lambda number: tagged.get(number, []))


def startup_trials_not_drawn(c: Campaign, method: str, dataset: str, latest: dict[str, dict]) -> list[int]:
    """The recorded random startup trials (1 .. startup_trials - 1) that are not the seeded
    sampler's draws: each replanned from the records before it and compared. Before 894469f a
    replay counted repeated draws as finished trials, so TPE proposed trial 3 of some studies;
    such a trial stays (it is a trial of the study like any other) and the report marks it."""
    trials = study_trials(c, method, dataset, latest)
    off = []
    for number in range(1, min(c.startup_trials, len(trials))):
        cell, rec = trials[number]
        if rec is None:
            break
        later = {t.config_hash() for t, r in trials[number:] if r is not None}
        drawn = study_trials(c, method, dataset, {h: r for h, r in latest.items() if h not in later})[number][0]
        if any(not np.isclose(drawn.params[k], v, rtol=1e-9) if isinstance(v, float) else drawn.params[k] != v
               for k, v in cell.params.items()):
            off.append(number)
    return off


def tune_cells(c: Campaign, results_dir: Path | None = None) -> list[Cell]:
    """Every study's recorded trials and its next one (a study's trial k is known once its
    trials 0..k-1 are recorded: run the stage again until tuning_finished)."""
    latest = records.latest_by_cell(results_dir) if results_dir is not None else {}
    return [cell for d in c.tune_datasets for m in c.tune_methods for cell, _ in study_trials(c, m, d, latest)]


def tuning_finished(c: Campaign, results_dir: Path) -> bool:
    latest = records.latest_by_cell(results_dir)
    return all(all_trials_recorded(c, study_trials(c, m, d, latest)) for d in c.tune_datasets for m in c.tune_methods)


def chosen_params(c: Campaign, results_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Each (method, dataset)'s winning trial's parameters; untuned methods get their budget.

    Raises if a tuned method's trials are not all recorded: the final stage must not start
    from a half-finished tuning pass."""
    return {key: params for key, (params, _) in _choices(c, records.latest_by_cell(results_dir)).items()}


def best_trial(trials: list[tuple[Cell, dict | None]], monitor: str) -> Cell | None:
    """A study's leader among `trials` (study_trials' list): the best validation metric among its
    complete (not pruned) trials, the earlier trial (the defaults first) winning ties; None
    before any is complete."""
    from hashbench.tuning import outcome

    scored = []
    for cell, rec in trials:
        state, value, _ = outcome(rec, monitor)
        if state == "complete" and value is not None:
            scored.append((value, cell))
    return max(scored, key=lambda s: s[0])[1] if scored else None  # max keeps the first of equal values


def all_trials_recorded(c: Campaign, trials: list[tuple[Cell, dict | None]]) -> bool:
    """Whether the study of `trials` (study_trials' list) is finished."""
    return len(trials) == c.trials and trials[-1][1] is not None


def study_winner(c: Campaign, method: str, dataset: str, latest: dict[str, dict]) -> Cell | None:
    """A finished study's winning trial (its leader once every trial is recorded); None while it runs."""
    trials = study_trials(c, method, dataset, latest)
    return best_trial(trials, c.monitor) if all_trials_recorded(c, trials) else None


def losing_trial_files(c: Campaign, results_dir: Path) -> list[Path]:
    """The codes and per-user files of every tuning trial but each study's leader, and of their
    ranking variants' records (bgch-scaled's of a bgch trial). A trial that is not the leader
    now never wins: the winner is the best complete trial, and a later trial can only displace
    the leader (so the files of a study still running go too). No table reads them (Table 3
    shows their records' validation metrics; the winner's files are its seed-0 final cell's),
    and at ~0.7 MB a trial they would outgrow results/ (96 trials): the records stay, and the
    files stay in the git history of the commit that added them."""
    latest = records.latest_by_cell(results_dir)
    out = []
    for d in c.tune_datasets:
        for m in c.tune_methods:
            trials = study_trials(c, m, d, latest)
            leader = best_trial(trials, c.monitor)
            variants = [v for v in c.methods if method_spec(v).based_on == m]
            for cell, _ in trials:
                if leader is not None and cell.config_hash() == leader.config_hash():
                    continue
                for rec in filter(None, (latest.get(replace(cell, method=name).config_hash()) for name in [m, *variants])):
                    out += [Path(results_dir) / rec[k] for k in ("codes_file", "per_user_file")
                            if rec.get(k) and records.is_record_file(rec[k]) and (Path(results_dir) / rec[k]).is_file()]
    return out


def _choices(c: Campaign, latest: dict[str, dict], ready_only: bool = False
             ) -> dict[tuple[str, str], tuple[dict[str, Any], Cell | None]]:
    """(method, dataset) -> (chosen parameters, the winning trial's cell, None if untuned): the
    best validation metric among the complete (not pruned) trials. A study still running raises,
    unless `ready_only`: then its method (and the variant rows trained like it) is left out on
    that dataset."""
    chosen: dict[tuple[str, str], tuple[dict[str, Any], Cell | None]] = {
        (m, d): (c.budget_for(m), None) for m in c.methods for d in {*c.datasets, *c.tune_datasets}
        if m not in c.tune_methods}
    for d in c.tune_datasets:
        for m in c.tune_methods:
            winner = study_winner(c, m, d, latest)
            if winner is not None:
                chosen[(m, d)] = (winner.params, winner)
            elif not ready_only:
                raise HashbenchError(f"tuning of {m} on {d} is not finished (run `hashbench campaign --stage tune`)")
    # a variant row of a tuned method (bgch-scaled: bgch's model, ranked otherwise) is trained
    # with that method's chosen parameters, not its defaults; its seed-0 run is the winning
    # trial's model ranked its way (a trial computes its variants beside its own ranking: Runner.companions)
    for m in c.methods:
        base = method_spec(m).based_on
        if m not in c.tune_methods and base in c.tune_methods:
            for d in c.tune_datasets:
                if (base, d) in chosen:
                    params, winner = chosen[(base, d)]
                    chosen[(m, d)] = ({**params, **c.budget_for(m)}, replace(winner, method=m))
                else:
                    chosen.pop((m, d), None)
    return chosen


def _run_of(c: Campaign, choices, method: str, dataset: str, seed: int, bits: int | None = None,
            extra: dict[str, Any] | None = None) -> Cell:
    """The cell of a chosen configuration. Where it is the winning tuning trial's own run (the
    tuning seed, the campaign's bits, no extra parameters) it is that trial's cell: a complete
    trial trained exactly as a plain run does (the pruner only watched), so running it again
    would repeat it bit for bit, and one final cell per tuned method is already recorded."""
    params, winner = choices[(method, dataset)]
    cell = Cell(method, dataset, c.bits if bits is None else bits, seed, params={**params, **(extra or {})})
    if winner is not None and cell.config_hash() == replace(winner, trial=None).config_hash():
        return winner
    return cell


def final_cells(c: Campaign, results_dir: Path, ready_only: bool = False) -> list[Cell]:
    """Every row on every dataset and seed; `ready_only`: only those whose tuning is finished."""
    choices = _choices(c, records.latest_by_cell(results_dir), ready_only)
    return [_run_of(c, choices, m, d, s) for d in c.datasets for m in c.methods if (m, d) in choices
            for s in range(c.seeds)]


def best_baselines(c: Campaign, results_dir: Path) -> list[str]:
    """The trained hashing baselines with the best mean validation metric on the sweep dataset
    (their final cells there must be recorded; the other datasets' need not be)."""
    latest = records.latest_by_cell(results_dir)
    choices = _choices(c, latest, ready_only=True)
    means = {}
    for m in c.methods:
        if not method_spec(m).hashing or m in (c.ablation_method, "lsh"):
            continue
        recs = [latest.get(_run_of(c, choices, m, c.sweep_dataset, s).config_hash()) if (m, c.sweep_dataset) in choices
                else None for s in range(c.seeds)]
        if not all(rec is not None and rec.get("status") == "ok" for rec in recs):
            raise HashbenchError(f"the final stage is not finished on {c.sweep_dataset} "
                                 "(run `hashbench campaign --stage final`)")
        means[m] = [rec["metrics"]["valid"][c.monitor] for rec in recs]
    ranked = sorted(means, key=lambda m: -float(np.mean(means[m])))
    return ranked[:c.sweep_baselines]


def sweep_cells(c: Campaign, results_dir: Path, ready_only: bool = False) -> list[Cell]:
    """Proposed and the best baselines at every code length; `ready_only`: Proposed's once its
    tuning is finished, the baselines' once the sweep dataset's final cells are recorded."""
    choices = _choices(c, records.latest_by_cell(results_dir), ready_only)
    methods = [c.ablation_method] if (c.ablation_method, c.sweep_dataset) in choices else []
    try:
        methods += best_baselines(c, results_dir)
    except HashbenchError:
        if not ready_only:
            raise
    return [_run_of(c, choices, m, c.sweep_dataset, 0, bits) for m in methods for bits in c.sweep_bits]


def ablation_cells(c: Campaign, results_dir: Path, ready_only: bool = False) -> list[tuple[str, Cell]]:
    """(variant name, cell) of every estimator variant; `ready_only`: none until the ablated
    method's tuning on the ablation dataset is finished."""
    choices = _choices(c, records.latest_by_cell(results_dir), ready_only)
    if (c.ablation_method, c.ablation_dataset) not in choices:
        return []
    return [(name, _run_of(c, choices, c.ablation_method, c.ablation_dataset, 0, extra=variant))
            for name, variant in c.variants.items()]


def ablation_reference(c: Campaign, results_dir: Path) -> Cell | None:
    """The chosen configuration's seed-0 cell on the ablation dataset, which each variant changes
    in one respect (a final cell, not an ablation cell); None until that tuning is finished."""
    choices = _choices(c, records.latest_by_cell(results_dir), ready_only=True)
    if (c.ablation_method, c.ablation_dataset) not in choices:
        return None
    return _run_of(c, choices, c.ablation_method, c.ablation_dataset, 0)


def stage_cells(c: Campaign, stage: str, results_dir: Path, ready_only: bool = False) -> list[Cell]:
    """The stage's cells. A later stage needs the earlier ones' records: it raises while they are
    missing, unless `ready_only`, which gives the cells whose inputs are recorded (see ready_cells)."""
    if stage == "tune":
        return tune_cells(c, results_dir)
    if stage == "final":
        return final_cells(c, results_dir, ready_only)
    if stage == "sweep":
        return sweep_cells(c, results_dir, ready_only)
    if stage == "ablation":
        return [cell for _, cell in ablation_cells(c, results_dir, ready_only)]
    raise HashbenchError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")


def ready_cells(c: Campaign, results_dir: Path) -> list[Cell]:
    """Every cell of every stage whose inputs are recorded, in stage order, each once.

    What a cell needs is narrower than its stage: a row's final cells need only its own study
    on that dataset (the float reference, LSH and popularity need none), the ablation only the
    ablated method's study, the sweep Proposed's study and, for the baselines, the sweep
    dataset's final cells. So the whole campaign can run as one queue in which every cell
    starts as soon as what it needs is recorded: while one long study (HashGNN's trials,
    one after another) is all that tuning has left, the other workers train final, sweep
    and ablation cells instead of waiting for the stage to end."""
    cells = {}
    for stage in STAGES:
        for cell in stage_cells(c, stage, results_dir, ready_only=True):
            cells.setdefault(cell.config_hash(), cell)
    return list(cells.values())


def describe(params: dict[str, Any], budget: dict[str, Any]) -> str:
    """The part of a cell's parameters that is not the budget, numbers to 3 significant digits,
    for tables and listings: 'lr=0.00857, beta=5.42' or 'defaults'."""
    own = {k: v for k, v in params.items() if budget.get(k) != v}
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in own.items()) or "defaults"
