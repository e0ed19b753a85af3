"""Cells: one (method, dataset, bits, seed) with its parameters, planned from the command line.

Light on purpose (no torch, numba or method module): the command line checks and plans cells,
and the report recomputes their config hashes, from the methods' declared specs alone.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hashbench import records
from hashbench.errors import HashbenchError
from hashbench.registry import check_bits, method_spec
from hashbench.splits import DEFAULT_PROTOCOL
from hashbench.tuning import TrialTag

OVERWRITE = ("never", "failed", "always")
EXECUTORS = ("local", "ray")  # where cells run (hashbench/executors/)


@dataclass(frozen=True)
class Cell:
    method: str
    dataset: str
    bits: int
    seed: int
    protocol: str = DEFAULT_PROTOCOL
    params: dict[str, Any] = field(default_factory=dict)  # overrides of the method's defaults
    ks: tuple[int, ...] = (50, 100)
    trial: TrialTag | None = None  # a tuning trial (hashbench.tuning): pruned on its validation curve
    # True: choose the epochs on validation, then retrain on train + valid for that many (runner);
    # an int N: train on train + valid for exactly N epochs, nothing chosen (a reference's own
    # fixed schedule, e.g. LightGCN's 1000 epochs)
    refit: bool | int = False

    def config(self) -> dict[str, Any]:
        config = {
            "method": self.method, "dataset": self.dataset, "bits": self.bits, "seed": self.seed,
            "protocol": self.protocol, "ks": list(self.ks), "params": method_spec(self.method).with_defaults(self.params),
        }
        if self.trial is not None:  # a pruned trial is not the same result as a full run of its params
            config["tuning"] = self.trial.config()
        if self.refit:  # only when set: every earlier record keeps its hash
            config["refit"] = self.refit
        return config

    def selection(self) -> "Cell":
        """The plain run whose best epoch a refit cell retrains for."""
        return replace(self, refit=False)

    @property
    def fixed_epochs(self) -> int | None:
        """N for a fixed-schedule cell (refit = N epochs, no selection run), else None."""
        return self.refit if type(self.refit) is int else None

    def config_hash(self) -> str:
        return records.config_hash(self.config())

    def codes_name(self) -> str:
        """<dataset>-<method>-<bits>b-seed<seed>.npz, plus a tag when protocol or params differ.

        The same name is used under codes/ (the codes) and per_user/ (per-user test metrics)."""
        name = f"{self.dataset}-{self.method}-{self.bits}b-seed{self.seed}"
        if self.protocol != DEFAULT_PROTOCOL or self.params or tuple(self.ks) != (50, 100) or self.trial or self.refit:
            name += f"-{self.config_hash()[:8]}"
        return name + ".npz"


def parse_param(text: str) -> tuple[str | None, str, Any]:
    """'beta=20' or 'proposed.beta=20' -> (method or None, key, value parsed as int/float/bool/str)."""
    if "=" not in text:
        raise HashbenchError(f"--param expects KEY=VALUE or METHOD.KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    method, _, key = key.rpartition(".")
    value: Any = raw
    for cast in (int, float):
        try:
            value = cast(raw)
            break
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    return method or None, key, value


def params_for(method: str, overrides: list[tuple[str | None, str, Any]]) -> dict[str, Any]:
    """The overrides that apply to `method`, checked against its declared parameters (type, range,
    choices) and parsed: a bad value is a one-line error before any work, never a record."""
    spec = method_spec(method)
    return spec.check_params({k: v for m, k, v in overrides if (m == method) or (m is None and k in spec.defaults)})


def plan_cells(methods: list[str], datasets: list[str], bits: int, seeds_: list[int], protocol: str,
               overrides: list, ks: tuple[int, ...], refit: bool | int = False) -> list[Cell]:
    for m, key, _ in overrides:
        targets = [m] if m else methods
        if not any(key in method_spec(t).defaults for t in targets if t in methods or m):
            raise HashbenchError(f"--param {key}: no selected method has a parameter {key!r}")
    return [Cell(m, d, check_bits(bits), s, protocol, params_for(m, overrides), ks, refit=refit)
            for d in datasets for m in methods for s in seeds_]


def as_recorded(cells: list[Cell], results_dir: Path) -> list[Cell]:
    """Each cell in the form a record already has, where the two differ only in how a whole
    number is written: `-p l2=0` trains exactly what a recorded `l2 = 0.0` trained, but the
    config hash (of the JSON) tells them apart, so without this a printed command with `0`
    would train a recorded `0.0` cell again under a second hash. A cell with no such record is
    left as written (old records keep their hashes either way)."""
    latest = records.latest_by_cell(results_dir)  # {} when there is no runs.jsonl yet
    return [_as_recorded(cell, latest) for cell in cells]


def _as_recorded(cell: Cell, latest: dict[str, dict]) -> Cell:
    if not latest or cell.config_hash() in latest:
        return cell
    whole = [k for k, v in cell.params.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()]
    if not whole or len(whole) > 10:  # 2^k spellings to try; a command line has a handful
        return cell
    for spelling in itertools.product(*[(int(cell.params[k]), float(cell.params[k])) for k in whole]):
        candidate = replace(cell, params={**cell.params, **dict(zip(whole, spelling))})
        if candidate.config_hash() in latest:
            return candidate
    return cell


def checkpoint_dir_for(results_dir: Path, cell: Cell) -> Path:
    return Path(results_dir) / "checkpoints" / cell.config_hash()[:16]


def has_checkpoint(results_dir: Path, cell: Cell) -> bool:
    """A killed run of this cell left a training state to resume from."""
    folder = checkpoint_dir_for(results_dir, cell)
    return folder.is_dir() and any(folder.iterdir())


def should_run(cell: Cell, existing: dict[str, dict], overwrite: str) -> bool:
    record = existing.get(cell.config_hash())
    if record is None or overwrite == "always":
        return True
    return overwrite == "failed" and record.get("status") != "ok"
