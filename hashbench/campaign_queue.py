"""The order in which `hashbench campaign` runs its cells: what is runnable now (a study's
next trial as soon as its previous one is recorded, a later stage's cells as their inputs are
recorded), work in flight first, then the longest chains of dependent work first."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from hashbench import records
from hashbench.campaign import Campaign, ready_cells, stage_cells, tune_cells
from hashbench.cells import Cell, has_checkpoint


def stage_queue(c: Campaign, stage: str, results_dir: Path) -> tuple[list[Cell], Callable[[], list[Cell]] | None]:
    """The stage's cells to start with and, for tuning and the whole campaign ("all"), what
    gives the cells runnable now.

    A study's next trial is proposed from its recorded trials, so it becomes runnable as soon
    as its previous one is recorded, whatever the other studies are doing: the sweep asks
    `runnable` again after every cell (Sweep's `more`), and no worker idles while a long trial
    of another study (HashGNN's) finishes a round. The trials are the same in any order of
    finishing: each study's sampler is seeded per study and reads that study's records only.
    A failed trial is not run again, in either mode (the study has moved on from it: a retried
    trial that won would change the winner after the later stages used it). "all" queues every stage's cells the same way, as their inputs are recorded (ready_cells);
    a failed final, sweep or ablation cell is run again, a failed trial of a study is not (the
    study has moved on from it).
    Cells that a killed run left a checkpoint for go first: work in flight is finished before
    new work starts (a long trial resumed last would otherwise wait behind every other study).
    """
    def in_flight_first(cells: list[Cell]) -> list[Cell]:
        return sorted(cells, key=lambda cell: not has_checkpoint(results_dir, cell))

    if stage == "all":
        def pending() -> list[Cell]:
            latest = records.latest_by_cell(results_dir)
            return [cell for cell in ready_cells(c, results_dir) if (rec := latest.get(cell.config_hash())) is None
                    or (rec.get("status") != "ok" and (cell.trial is None or cell.method not in c.tune_methods))]

        return in_flight_first(pending()), pending

    if stage != "tune":
        return in_flight_first(stage_cells(c, stage, results_dir)), None

    def runnable() -> list[Cell]:
        latest = records.latest_by_cell(results_dir)
        return [cell for cell in tune_cells(c, results_dir) if cell.config_hash() not in latest]

    return in_flight_first(runnable()), runnable


def longest_chain_first(c: Campaign, results_dir: Path) -> Callable[[list[Cell]], list[Cell]]:
    """The campaign's queue order: cells in flight (a checkpoint left by a killed run) first, then
    the longest chains of work first.

    A study's trials run one after another, so a study with many long trials left (HashGNN on
    Yelp2018: ~8 × 2 hours here) takes as long as its chain, however many workers there are;
    started late, or taking turns with the short studies, it would finish alone at the end while
    the other workers idle. So a trial counts as its expected time × the trials its study has
    left (itself included), any other cell as its own expected time (hashbench.schedule), and
    the longest go first; with --finish-by the long cells are then the ones started early in a
    session, and the short ones fill its end. Cells without an estimate go last."""
    from hashbench.schedule import expected_seconds

    def order(cells: list[Cell]) -> list[Cell]:
        latest = records.latest_by_cell(results_dir) if results_dir is not None else {}

        def key(cell: Cell) -> tuple[bool, float]:
            seconds = expected_seconds(cell, latest, results_dir) or 0.0
            if cell.trial is not None and cell.method in c.tune_methods:  # not a variant's ranking of one
                seconds *= c.trials - cell.trial.number
            return (not has_checkpoint(results_dir, cell), -seconds)

        return sorted(cells, key=key)

    return order
