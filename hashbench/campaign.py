"""The Table 1 campaign: tune → final → sweep → ablation, as ordinary cells.

campaign.toml says what to run; this module turns it into runner Cells, stage by stage.
Nothing here keeps state of its own: which trial won the tuning, and which baselines are
the two best, are read back from results/runs.jsonl every time, so a campaign killed at any
point continues with the same command, and the report derives the same choices.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
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
    tune_dataset: str
    tune_seed: int
    monitor: str
    trials: int
    grid: dict[str, list[dict[str, Any]]]
    sweep_dataset: str
    sweep_bits: tuple[int, ...]
    sweep_baselines: int
    ablation_dataset: str
    ablation_method: str
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    budget_scale: float = 1.0

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
            budget=raw.get("budget", {}), tune_dataset=tune["dataset"], tune_seed=int(tune["seed"]),
            monitor=tune.get("monitor", "recall@50"), trials=int(tune["trials"]), grid=tune.get("grid", {}),
            sweep_dataset=sweep["dataset"], sweep_bits=tuple(sweep["bits"]), sweep_baselines=int(sweep["baselines"]),
            ablation_dataset=abl["dataset"], ablation_method=abl["method"], variants=abl.get("variants", {}),
            budget_scale=budget_scale)
    except KeyError as exc:
        raise HashbenchError(f"{path}: missing key {exc}") from None
    _validate(campaign, path)
    return campaign


def _validate(c: Campaign, path: Path) -> None:
    known = set(method_names())
    for name in {*c.methods, *c.budget, *c.grid, c.ablation_method}:
        if name not in known:
            raise HashbenchError(f"{path}: unknown method {name!r} (known: {', '.join(sorted(known))})")
    for name, trials in c.grid.items():
        if len(trials) != c.trials:  # the fairness rule: every tuned method gets the same number of trials
            raise HashbenchError(f"{path}: {name} has {len(trials)} tuning trials, the campaign says {c.trials}")
    for where, method, params in ([("budget", m, p) for m, p in c.budget.items()]
                                  + [("tuning", m, t) for m, ts in c.grid.items() for t in ts]
                                  + [("ablation", c.ablation_method, v) for v in c.variants.values()]):
        unknown = set(params) - set(method_spec(method).defaults)
        if unknown:
            raise HashbenchError(f"{path}: [{where}] {method} has no parameter {', '.join(sorted(unknown))}")


# --- stages ------------------------------------------------------------------------------------

def tune_cells(c: Campaign) -> list[Cell]:
    return [Cell(m, c.tune_dataset, c.bits, c.tune_seed, params={**c.budget_for(m), **trial})
            for m in c.methods if m in c.grid for trial in c.grid[m]]


def chosen_params(c: Campaign, results_dir: Path) -> dict[str, dict[str, Any]]:
    """Each tuned method's winning trial (best validation metric); untuned methods get their budget.

    Raises if a tuned method's trials are not all recorded: the final stage must not start
    from a half-finished tuning pass."""
    latest = records.latest_by_cell(results_dir)
    scored: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for cell in tune_cells(c):
        rec = latest.get(cell.config_hash())
        if rec is None:
            raise HashbenchError(f"tuning of {cell.method} is not finished (run `hashbench campaign --stage tune`)")
        value = rec["metrics"]["valid"].get(c.monitor, -np.inf) if rec.get("status") == "ok" else -np.inf
        scored.setdefault(cell.method, []).append((value, cell.params))
    chosen = {m: c.budget_for(m) for m in c.methods if m not in c.grid}
    # max keeps the first of equal values: the defaults (the first trial) win ties
    chosen.update({m: max(trials, key=lambda s: s[0])[1] for m, trials in scored.items()})
    return chosen


def final_cells(c: Campaign, results_dir: Path) -> list[Cell]:
    chosen = chosen_params(c, results_dir)
    return [Cell(m, d, c.bits, s, params=chosen[m]) for d in c.datasets for m in c.methods for s in range(c.seeds)]


def best_baselines(c: Campaign, results_dir: Path) -> list[str]:
    """The trained hashing baselines with the best mean validation metric on the sweep dataset."""
    latest = records.latest_by_cell(results_dir)
    means = {}
    for cell in final_cells(c, results_dir):
        if cell.dataset != c.sweep_dataset or not method_spec(cell.method).hashing or cell.method in (c.ablation_method, "lsh"):
            continue
        rec = latest.get(cell.config_hash())
        if rec is None or rec.get("status") != "ok":
            raise HashbenchError("the final stage is not finished (run `hashbench campaign --stage final`)")
        means.setdefault(cell.method, []).append(rec["metrics"]["valid"][c.monitor])
    ranked = sorted(means, key=lambda m: -float(np.mean(means[m])))
    return ranked[:c.sweep_baselines]


def sweep_cells(c: Campaign, results_dir: Path) -> list[Cell]:
    chosen = chosen_params(c, results_dir)
    methods = [c.ablation_method, *best_baselines(c, results_dir)]
    return [Cell(m, c.sweep_dataset, bits, 0, params=chosen[m]) for m in methods for bits in c.sweep_bits]


def ablation_cells(c: Campaign, results_dir: Path) -> list[tuple[str, Cell]]:
    base = chosen_params(c, results_dir)[c.ablation_method]
    return [(name, Cell(c.ablation_method, c.ablation_dataset, c.bits, 0, params={**base, **variant}))
            for name, variant in c.variants.items()]


def stage_cells(c: Campaign, stage: str, results_dir: Path) -> list[Cell]:
    if stage == "tune":
        return tune_cells(c)
    if stage == "final":
        return final_cells(c, results_dir)
    if stage == "sweep":
        return sweep_cells(c, results_dir)
    if stage == "ablation":
        return [cell for _, cell in ablation_cells(c, results_dir)]
    raise HashbenchError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")


def describe(params: dict[str, Any], budget: dict[str, Any]) -> str:
    """The part of a trial's parameters that is not the budget, for tables: 'beta=5.0' or 'defaults'."""
    own = {k: v for k, v in params.items() if budget.get(k) != v}
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in own.items()) or "defaults"
