"""What `run` and `campaign` print while cells run: the sweep's bar with its ETA, one live row
per cell in flight, and a line per finished cell; without a terminal (nohup, CI) a line per
validation instead, so that a long run can be followed with tail -f."""

from __future__ import annotations

import time
from pathlib import Path

from rich.markup import escape
from rich.progress import Progress

from hashbench.cells import has_checkpoint


def cell_label(cell) -> str:
    """How a cell is named in progress lines; a tuning trial by its number too (a study's trials
    differ only in parameters)."""
    trial = f" · trial {cell.trial.number}" if cell.trial is not None else ""
    return f"{cell.method} · {cell.dataset} · {cell.bits}b · seed {cell.seed}{trial}"


def _value(v) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class SweepDisplay:
    """The sweep's bar, one live row per cell in flight, and a line per finished cell."""

    def __init__(self, bars: Progress, total: int, results: Path | None = None):
        self.bars = bars
        self.results = results
        self.sweep = bars.add_task("cells", total=total, status="")
        self.rows: dict[str, int] = {}
        self.scores: dict[str, dict[str, float]] = {}  # the cell's last validation score and best so far

    def _row(self, cell) -> int:
        key = cell.config_hash()
        if key not in self.rows:
            self.rows[key] = self.bars.add_task(f"  {cell.method}", total=None, status="")
        return self.rows[key]

    def _drop(self, cell) -> None:
        self.scores.pop(cell.config_hash(), None)
        row = self.rows.pop(cell.config_hash(), None)
        if row is not None:
            self.bars.remove_task(row)

    def skipped(self, cell, reason: str) -> None:
        self.bars.update(self.sweep, advance=1, status=f"skipped {cell_label(cell)} ({reason})")

    def _count_more(self, cells) -> None:
        total = next(task.total for task in self.bars.tasks if task.id == self.sweep)
        self.bars.update(self.sweep, total=(total or 0) + len(cells))

    def added(self, cells) -> None:
        self._count_more(cells)
        for cell in cells:
            self.bars.console.print(f"queued {cell_label(cell)}", highlight=False)

    def computed_beside(self, cells) -> None:
        self._count_more(cells)

    def waiting(self, cell) -> None:
        self.bars.update(self.sweep, status=f"waiting for another sweep to finish {cell_label(cell)}")

    def left(self, cell) -> None:
        self.bars.console.print(f"left for a later run: {cell_label(cell)} (not expected to end by --finish-by)",
                                highlight=False)
        self.bars.update(self.sweep, advance=1)

    def started(self, cell) -> None:
        if self.results is not None and has_checkpoint(self.results, cell):
            self.bars.console.print(f"resuming {cell_label(cell)} from its checkpoint", highlight=False)
        self.bars.update(self.sweep, status=f"running {cell_label(cell)}")
        self.bars.update(self._row(cell), status="started")

    def progress(self, cell, description, completed, total=None, **fields) -> None:
        # the validation score comes every few epochs: keep showing the last one (and the best)
        scores = self.scores.setdefault(cell.config_hash(), {})
        unvalidated = cell.refit and isinstance(completed, int) and completed % 10 == 0  # a refit never validates
        if (fields.get("valid") is not None or unvalidated) and not self.bars.console.is_terminal:
            # a log file (nohup, CI) gets no live bars: a line per validation (every 10 epochs
            # of a refit) instead, so a long run's progress can be followed with tail -f
            shown = "  ".join(f"{k} {_value(v)}" for k, v in fields.items() if v is not None)
            self.bars.console.print(f"{time.strftime('%H:%M:%S')} {cell_label(cell)}: {description} {completed}"
                                    f"/{_value(total)}  {shown}", highlight=False, soft_wrap=True)
        for key in ("valid", "best"):
            if key in fields:
                value = fields.pop(key)
                if value is not None:
                    scores[key] = value
        shown = {**fields, **{k: scores.get(k) for k in ("valid", "best") if k in scores or fields}}
        status = "  ".join(f"{k} {_value(v)}" for k, v in shown.items())
        self.bars.update(self._row(cell), description=f"  {description} · {cell.dataset} · seed {cell.seed}",
                             completed=completed, total=total, status=status)

    def retried(self, cell, reason: str, attempt: int) -> None:
        self.bars.console.print(f"[yellow]retry {attempt}[/] {cell_label(cell)}: {reason}")

    def finished(self, cell, record) -> None:
        self._drop(cell)
        self.bars.update(self.sweep, advance=1)
        sweep = next(task for task in self.bars.tasks if task.id == self.sweep)
        # how far the sweep is, on the line a log reader sees (a log file gets no live bar)
        label = escape(f"[{sweep.completed:.0f}/{sweep.total:.0f}] {cell_label(cell)}")
        if record["status"] == "ok":
            test = record["metrics"]["test"]
            summary = "  ".join(f"{k} {v:.4f}" for k, v in test.items() if "@" in k and "_" not in k)
            extras = record.get("extras") or {}
            resumed = extras.get("resumed_from_epoch") or extras.get("resumed_from_iteration")
            note = f", resumed from epoch {resumed}" if resumed else ""
            self.bars.console.print(f"[green]ok[/] {label}: {summary}  ({record['train_seconds']:.1f} s{note})")
        else:
            self.bars.console.print(f"[red]failed[/] {label}: {record['error']}")

    def close(self) -> None:
        for row in self.rows.values():
            self.bars.remove_task(row)
        self.rows.clear()
        self.bars.update(self.sweep, status="")
