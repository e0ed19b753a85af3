"""`--finish-by`: start only the cells expected to end before a given time.

A long sweep (the campaign) often has to stop at a known time: a shared machine's booking,
a session that ends, a laptop that must go home. Killing it then loses the work in flight,
up to a whole long cell per worker. With a finish-by time the sweep instead hands out only
the cells whose expected time still fits, leaves the others for the next run of the same
command, and ends when nothing left fits; cells in flight are never interrupted.

A cell's expected time comes from the records (a guess, not a bound): the method's cost per
epoch on the dataset (seconds by the clock — the larger of busy seconds and training +
evaluation time, since the deadline is the clock's — over epochs run, the most of its latest
runs, those that measured busy time first: code and thread counts change; another dataset's
cost scaled by training interactions where the method never ran on this one) times the epochs
it is expected to run (the most any run of the method on that dataset needed to stop on
patience, any dataset where none did, else its epoch budget), less the epochs its checkpoint
already holds, times a safety margin. A cell with nothing to estimate from is not started.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from hashbench import records
from hashbench.cells import Cell, checkpoint_dir_for
from hashbench.errors import HashbenchError
from hashbench.registry import method_spec
from hashbench.splits import DEFAULT_PROTOCOL

MARGIN = 1.25  # expected times come from other runs: leave room for a slower one
RECENT = 3  # runs per (method, dataset) that the cost per epoch is taken from
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?:in)?)?$")


def parse_finish_by(text: str, now: datetime | None = None) -> datetime:
    """'13:50' (the next time the clock shows it) or a duration from now: '2h30m', '90m', '3h'."""
    now = now or datetime.now()
    text = text.strip().lower()
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if clock:
        hour, minute = int(clock[1]), int(clock[2])
        if hour > 23 or minute > 59:
            raise HashbenchError(f"--finish-by: {text!r} is not a time of day (HH:MM, 00:00 to 23:59)")
        at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return at if at > now else at + timedelta(days=1)
    match = _DURATION.fullmatch(text)
    if text and match and (match[1] or match[2]):
        return now + timedelta(hours=int(match[1] or 0), minutes=int(match[2] or 0))
    raise HashbenchError(f"--finish-by expects a time of day (13:50) or a duration (2h30m, 90m), got {text!r}")


def busy_seconds(record: dict[str, Any]) -> float:
    """What a recorded cell cost: its busy seconds (CPU per thread), else its train + eval time."""
    extras = record.get("extras") or {}
    return float(extras.get("busy_seconds") or (record.get("train_seconds", 0.0) + record.get("eval_seconds", 0.0)))


def elapsed_seconds(record: dict[str, Any]) -> float:
    """How long a recorded cell took by the clock: the larger of its busy seconds and its
    training (every resumed segment) + evaluation time. A deadline is wall-clock time, and on a
    shared machine a cell takes up to ~3x its busy seconds (both ran at --jobs 2 on 2 cores)."""
    return max(busy_seconds(record), records.wall_seconds(record))


def _train_size(record: dict[str, Any]) -> int:
    return int((record.get("split_sizes") or {}).get("train") or 0)


def _epochs_run(record: dict[str, Any]) -> int:
    return int((record.get("extras") or {}).get("epochs_run") or 0)


def _expected_epochs(cell: Cell, runs: list[dict], latest: dict[str, dict]) -> int | None:
    """Epochs the cell is expected to train; None for a method not trained in epochs (mostpop)."""
    budget = method_spec(cell.method).with_defaults(cell.params).get("epochs")
    if not isinstance(budget, int):
        return None
    if cell.fixed_epochs:
        return cell.fixed_epochs
    stopped = [r for r in runs if (r.get("extras") or {}).get("stopped") == "patience"]
    # on the cell's dataset where any stopped there: Yelp2018's Proposed runs 300 epochs, Gowalla's 70
    converged = [_epochs_run(r) for r in stopped if r.get("dataset") == cell.dataset] or list(map(_epochs_run, stopped))
    epochs = min(max(converged), budget) if converged else budget
    if cell.refit:  # its selection run (unless recorded), then the refit of the chosen epochs
        selection = latest.get(cell.selection().config_hash())
        return ((selection or {}).get("extras") or {}).get("best_epoch") or 2 * epochs
    return epochs


def expected_seconds(cell: Cell, latest: dict[str, dict], results_dir: Path, device: str | None = None) -> float | None:
    """The cell's expected seconds by the clock from now (see the module doc; elapsed_seconds);
    None: no record to go by.
    `device` ("cpu", "cuda"): where it will run; that device's runs are preferred (results merged
    from a GPU machine would make a CPU's estimates ~50x too short)."""
    from hashbench.core.checkpoints import checkpoint_epoch
    from hashbench.core.training import CHECKPOINT_NAME

    runs = [r for r in latest.values() if r.get("status") == "ok" and r.get("method") == cell.method]
    epochs = _expected_epochs(cell, runs, latest)
    if epochs is not None:
        runs = [r for r in runs if _epochs_run(r) > 0]

    def unit(r: dict) -> float:  # seconds per epoch, or per run for a method not trained in epochs
        return elapsed_seconds(r) / _epochs_run(r) if epochs is not None else elapsed_seconds(r)

    # runs under the cell's protocol (another trains on other data, often at other settings:
    # LightGCN's own protocol at its batch of 2,048 costs ~70x an epoch here), and among them
    # runs that measured busy time (all since the converged campaign), describe it best
    runs = [r for r in runs if r.get("protocol", DEFAULT_PROTOCOL) == cell.protocol] or runs
    runs = [r for r in runs if device is None or r.get("device", "cpu") == device] or runs
    runs = [r for r in runs if (r.get("extras") or {}).get("busy_seconds")] or runs
    here = [r for r in runs if r.get("dataset") == cell.dataset][-RECENT:]  # the records file is in time order
    if here:
        per_unit = max(unit(r) for r in here)
    else:
        size = next((_train_size(r) for r in latest.values() if r.get("dataset") == cell.dataset and _train_size(r)), 0)
        elsewhere = [unit(r) / _train_size(r) for r in runs if _train_size(r)][-RECENT:]
        if not size or not elsewhere:
            return None
        per_unit = max(elsewhere) * size
    if epochs is None:
        return per_unit * MARGIN
    done = checkpoint_epoch(checkpoint_dir_for(results_dir, cell) / CHECKPOINT_NAME) or 0
    return per_unit * max(epochs - done, 1) * MARGIN


def fits_before(deadline: datetime, results_dir: Path, device: str | None = None) -> Callable[[Cell], bool]:
    """fits(cell): whether the cell is expected to end before `deadline` if started now on
    `device` (the records are re-read at each call: every finished cell sharpens the estimates)."""
    def fits(cell: Cell) -> bool:
        latest = records.latest_by_cell(results_dir) if (Path(results_dir) / records.RUNS_FILE).exists() else {}
        expected = expected_seconds(cell, latest, results_dir, device)
        return expected is not None and time.time() + expected <= deadline.timestamp()

    return fits
