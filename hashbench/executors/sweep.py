"""The driver side of a sweep: which cells are left, which this process holds (a lock file
per cell), and the single writer that saves what executors send back."""

from __future__ import annotations

import fcntl
import os
from collections import Counter, deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

from hashbench import records
from hashbench.cells import OVERWRITE, Cell, checkpoint_dir_for, should_run
from hashbench.errors import HashbenchError
from hashbench.registry import method_spec
from hashbench.executors.worker import RunnerSpec
from hashbench.files import make_dirs
from hashbench.runner import CellResult, failed_record, save_result


DEFAULT_RETRIES = 2  # a cell whose worker is lost runs at most 1 + this many times


class SweepObserver:
    """What a sweep reports as it goes (the CLI draws it); every hook is optional."""

    def skipped(self, cell: Cell, reason: str) -> None: ...

    def waiting(self, cell: Cell) -> None: ...

    def left(self, cell: Cell) -> None: ...

    def started(self, cell: Cell) -> None: ...

    def added(self, cells: list[Cell]) -> None: ...

    def computed_beside(self, cells: list[Cell]) -> None:
        """Cells no one queued that a queued cell computed beside its training (a tuning
        trial's ranking variants); each is then `finished` like a queued one."""

    def progress(self, cell: Cell, description: str, completed: int, total: int | None = None,
                 **fields: Any) -> None: ...

    def retried(self, cell: Cell, reason: str, attempt: int) -> None: ...

    def finished(self, cell: Cell, record: dict[str, Any]) -> None: ...


class CellLock:
    """An flock on results/checkpoints/<cell>.lock that removes its file when released.

    The OS drops the flock of a dead process; the file itself goes when the holder lets go
    (so a Ctrl-C leaves no stale *.lock behind). Unlinking under the lock is safe because a
    taker checks, once it holds the lock, that its file is still the one at the path, and
    starts over on the new file otherwise.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, block: bool) -> bool:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return True
            os.close(fd)  # the holder before us removed the file: lock the current one

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None


class Sweep:
    """The driver's state: which cells are left, which this process holds, what got written.

    `more`, if given, is asked for further cells before the next cell is handed out, once per
    cell ended: the cells that the records written so far make runnable (a tuning study's next
    trial, proposed from its recorded ones). They join the queue where `order` puts them, so a
    study's next trial starts as soon as its predecessor is recorded (the longest chain first),
    not behind every cell queued at the start; each cell is queued once per sweep, whatever
    `more` returns.

    `fits`, if given, says whether a cell would end in time if started now (`--finish-by`,
    hashbench.schedule): a cell that would not is left for a later run, unclaimed and untouched.

    `order`, if given, arranges the queue (the cells first, then each time `more` adds some):
    the campaign puts the longest chains of dependent cells first (campaign_queue.longest_chain_first).
    """

    def __init__(self, cells: Iterable[Cell], spec: RunnerSpec, overwrite: str = "failed",
                 observer: SweepObserver | None = None, more: Callable[[], Iterable[Cell]] | None = None,
                 fits: Callable[[Cell], bool] | None = None, order: Callable[[list[Cell]], list[Cell]] | None = None):
        if overwrite not in OVERWRITE:
            raise HashbenchError(f"--overwrite must be one of {', '.join(OVERWRITE)}, got {overwrite!r}")
        self.spec, self.overwrite = spec, overwrite
        self.results_dir = Path(spec.results_dir)
        self.observer = observer or SweepObserver()
        self.log = records.RecordLog(self.results_dir)
        self.initial = dict(self.log.latest)  # what existed when the sweep began
        self.order = order
        self.todo: deque[Cell] = self._arranged(cells)
        self.deferred: deque[Cell] = deque()  # held by another sweep right now
        self.claims: dict[str, CellLock] = {}
        self.counts: Counter[str] = Counter()  # run, failed, skipped, left (for a later run)
        self.written: list[dict[str, Any]] = []
        self.more, self.fits = more, fits
        self.queued = {cell.config_hash() for cell in self.todo}
        self.more_asked_after: int | None = None  # how many cells had ended when `more` was last asked

    def _arranged(self, cells: Iterable[Cell]) -> deque[Cell]:
        cells = self.order(list(cells)) if self.order is not None else list(cells)
        # a ranking variant's cell (bgch-scaled) after every other: its base cell computes it beside
        # its own training, so by the time it comes up it is usually recorded and skipped
        return deque(sorted(cells, key=lambda cell: method_spec(cell.method).based_on is not None))

    # claims ------------------------------------------------------------------------------
    def _claim_or_defer(self, cell) -> bool:
        """Claim a cell without waiting; a cell another sweep is running goes to the back of the queue."""
        state = self._claim(cell, timeout=0)
        if state == "busy":
            self.deferred.append(cell)
        elif state != "claimed":
            self._skip(cell, "recorded by another sweep")
        return state == "claimed"

    def _claim(self, cell: Cell, timeout: float) -> str:
        """'claimed', 'busy' (another sweep holds it) or 'done' (recorded since we began)."""
        key = cell.config_hash()
        path = checkpoint_dir_for(self.results_dir, cell).with_suffix(".lock")
        make_dirs(path.parent)
        lock = CellLock(path)
        if not lock.acquire(block=timeout != 0):
            return "busy"
        if self.log.refresh().get(key) is not self.initial.get(key):
            lock.release()
            return "done"
        self.claims[key] = lock
        return "claimed"

    def _release(self, cell: Cell) -> None:
        lock = self.claims.pop(cell.config_hash(), None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for lock in self.claims.values():
            lock.release()
        self.claims.clear()

    def _skip(self, cell: Cell, reason: str) -> None:
        self.counts["skipped"] += 1
        self.observer.skipped(cell, reason)

    def next_cell(self, block: bool = True) -> Cell | None:
        """The next cell to run, claimed; None when there is none (now, if not `block`)."""
        self._ask_for_more()  # a record since the last call may have made a cell runnable that goes first
        while True:
            held_back: list[Cell] = []  # ranking variants whose base cell is running here
            while self.todo:
                cell = self.todo.popleft()
                if not should_run(cell, self.initial, self.overwrite):
                    self._skip(cell, "result exists")
                    continue
                if self._base_is_running(cell):
                    held_back.append(cell)
                    continue
                if self.fits is not None and not self.fits(cell):
                    self.counts["left"] += 1
                    self.observer.left(cell)
                    continue
                if self._claim_or_defer(cell):
                    self.todo.extendleft(reversed(held_back))
                    return cell
            if held_back:  # nothing else to hand out until their bases finish (and compute them)
                self.todo.extend(held_back)
                return None
            for _ in range(len(self.deferred)):
                cell = self.deferred.popleft()
                if self._claim_or_defer(cell):
                    return cell
            if self._ask_for_more():
                continue
            if not (block and self.deferred):
                return None
            # nothing else to do: wait for the other sweep's cells
            cell = self.deferred.popleft()
            self.observer.waiting(cell)
            if self._claim(cell, timeout=-1) == "claimed":
                return cell  # the other sweep died without recording it
            self._skip(cell, "recorded by another sweep")

    def _base_is_running(self, cell: Cell) -> bool:
        """A ranking variant (bgch-scaled) whose base cell of the same configuration this sweep
        is running: that cell computes it beside its training, so it is not trained again."""
        base = method_spec(cell.method).based_on
        return base is not None and replace(cell, method=base).config_hash() in self.claims

    def _ask_for_more(self) -> bool:
        """Queue the cells `more` offers that this sweep has not queued yet; asked once per cell
        ended (here or, seen as skipped, by another sweep), since only a record can make a new
        one runnable. True if any were queued."""
        ended = sum(self.counts.values())
        if self.more is None or self.more_asked_after == ended:
            return False
        self.more_asked_after = ended
        new = [cell for cell in self.more() if cell.config_hash() not in self.queued]
        self.queued.update(cell.config_hash() for cell in new)
        self.todo.extend(new)
        if new and self.order is not None:
            self.todo = self._arranged(self.todo)
        if new:
            self.observer.added(new)
        return bool(new)

    # what executors report ---------------------------------------------------------------
    def started(self, cell: Cell) -> None:
        self.observer.started(cell)

    def progress(self, cell: Cell, description: str, completed: int, total: int | None = None, **fields) -> None:
        self.observer.progress(cell, description, completed, total, **fields)

    def retried(self, cell: Cell, reason: str, attempt: int) -> None:
        self.observer.retried(cell, reason, attempt)

    def finish(self, result: CellResult) -> dict[str, Any]:
        """Save a computed cell (the single writer), then let other sweeps have it."""
        record = save_result(self.results_dir, result)
        self._release(result.cell)
        done = {companion.cell.config_hash() for companion in result.companions}
        unplanned = [c.cell for c in result.companions if c.cell.config_hash() not in self.queued]
        if unplanned:  # counted from now on, so progress never shows more cells ended than planned
            self.queued.update(cell.config_hash() for cell in unplanned)
            self.observer.computed_beside(unplanned)
        if done:  # computed beside their base cell's training: nothing left to run for them
            self.todo = deque(cell for cell in self.todo if cell.config_hash() not in done)
            self.deferred = deque(cell for cell in self.deferred if cell.config_hash() not in done)
        for saved in [*result.companions, result]:
            status = saved.record["status"]
            self.counts["run" if status == "ok" else "failed"] += 1
            self.written.append(saved.record)
            self.observer.finished(saved.cell, saved.record)
        return record

    def lost(self, cell: Cell, reason: str, attempts: int) -> dict[str, Any]:
        """A cell whose worker died on every attempt: recorded failed, the sweep goes on."""
        error = f"WorkerLost: {reason} ({attempts} attempt{'s' * (attempts != 1)})"
        trace = ("The process computing this cell died without returning a result (killed, out of "
                 "memory, a crash in native code, or its node was lost); no Python traceback exists.\n")
        return self.finish(CellResult(cell, failed_record(cell, error, trace, command=self.spec.command)))

    def run(self, executor: "Executor") -> Counter[str]:
        try:
            executor.run(self)
        finally:
            self.release_all()
        return self.counts


class Executor:
    """Runs a sweep's cells somewhere, taking them from `sweep.next_cell` and handing results to `sweep.finish`."""

    name = "base"

    def run(self, sweep: Sweep) -> None:
        raise NotImplementedError
