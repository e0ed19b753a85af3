"""Executors on this machine: one cell after another in this process, or `--jobs N` spawned
worker processes that are replaced, and their cell retried, when they die."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections import Counter, deque
from multiprocessing.connection import wait as wait_for

from hashbench.cells import Cell
from hashbench.errors import HashbenchError
from hashbench.executors.sweep import DEFAULT_RETRIES, Executor, Sweep
from hashbench.executors.worker import RunnerSpec, set_threads, worker_runner


# --- local, sequential ---------------------------------------------------------------------

class SequentialExecutor(Executor):
    """One cell after another in this process (the default; training progress is live)."""

    name = "local"

    def run(self, sweep: Sweep) -> None:
        runner = sweep.spec.make_runner()  # a bad --device fails here, before any work
        while (cell := sweep.next_cell(block=True)) is not None:
            runner.progress = lambda *args, _cell=cell, **fields: sweep.progress(_cell, *args, **fields)
            sweep.started(cell)
            sweep.finish(runner.compute_cell(cell))


# --- local process pool --------------------------------------------------------------------

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive a driver killed with -9 (Linux: ask the kernel for SIGKILL)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the driver died before prctl took effect
        os._exit(1)


def _pool_worker(conn, spec: RunnerSpec, threads: int, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    set_threads(threads)
    last = [0.0]

    def progress(description, completed, total=None, **fields):
        now = time.monotonic()
        if now - last[0] >= 0.25 or (total and completed >= total):
            last[0] = now
            conn.send(("progress", (description, completed, total), fields))

    try:
        runner = worker_runner(spec)
    except HashbenchError as exc:
        conn.send(("error", str(exc)))
        return
    runner.progress = progress
    while True:
        try:
            cell = conn.recv()
        except (EOFError, OSError):
            return
        if cell is None:
            return
        try:
            conn.send(("done", runner.compute_cell(cell)))
        except HashbenchError as exc:
            conn.send(("error", str(exc)))
        except BaseException:  # not a method's failure (those are records): report, then exit
            conn.send(("crash", traceback.format_exc()))
            return


class _Worker:
    def __init__(self, ctx, spec: RunnerSpec, threads: int):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_pool_worker, args=(child, spec, threads, os.getpid()), daemon=True,
                                   name="hashbench-worker")
        self.process.start()
        child.close()
        self.cell: Cell | None = None

    def stop(self, kill: bool) -> None:
        if kill or self.cell is not None:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                self.process.kill()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class LocalPoolExecutor(Executor):
    """`--jobs N`: N spawned worker processes on this machine, each with cores // N threads."""

    name = "local"

    def __init__(self, jobs: int, retries: int = DEFAULT_RETRIES):
        if jobs < 1:
            raise HashbenchError(f"--jobs must be at least 1, got {jobs}")
        self.jobs, self.retries = jobs, retries
        self.threads = max(1, (os.cpu_count() or 1) // jobs)

    def run(self, sweep: Sweep) -> None:
        ctx = mp.get_context("spawn")  # fork would copy torch's and numba's thread pools
        workers: list[_Worker] = []
        retry: deque[Cell] = deque()
        attempts: Counter[str] = Counter()
        try:
            while True:
                for worker in [w for w in workers if w.cell is None and not w.process.is_alive()]:
                    worker.stop(kill=True)  # died while idle (e.g. the OOM killer): replace it
                    workers.remove(worker)
                busy = [w for w in workers if w.cell is not None]
                idle = [w for w in workers if w.cell is None]
                while len(busy) < self.jobs:
                    cell = retry.popleft() if retry else sweep.next_cell(block=not busy)
                    if cell is None:
                        break
                    worker = idle.pop() if idle else None
                    if worker is None:
                        worker = _Worker(ctx, sweep.spec, self.threads)
                        workers.append(worker)
                    try:
                        worker.conn.send(cell)
                    except OSError:  # it died just now: the cell goes to the next worker, no attempt spent
                        retry.appendleft(cell)
                        worker.stop(kill=True)
                        workers.remove(worker)
                        continue
                    worker.cell = cell
                    busy.append(worker)
                    if not attempts[cell.config_hash()]:
                        sweep.started(cell)
                if not busy:
                    return
                ready = set(wait_for([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=1.0))
                for worker in busy:
                    if worker.conn in ready or worker.process.sentinel in ready:
                        self._service(worker, sweep, retry, attempts)
        finally:
            for worker in workers:
                worker.stop(kill=worker.cell is not None)

    def _service(self, worker: _Worker, sweep: Sweep, retry: deque, attempts: Counter) -> None:
        cell = worker.cell
        try:
            while worker.conn.poll():
                kind, *payload = worker.conn.recv()
                if kind == "progress":
                    args, fields = payload
                    sweep.progress(cell, *args, **fields)
                elif kind == "done":
                    worker.cell = None
                    sweep.finish(payload[0])
                    return
                elif kind == "error":
                    raise HashbenchError(payload[0])
                else:  # "crash": the worker is exiting
                    raise EOFError(payload[0].strip().splitlines()[-1])
        except (EOFError, OSError) as exc:
            reason = str(exc) or "connection closed"
        else:
            if worker.process.is_alive():
                return
            reason = "exited"
        worker.process.join(1)
        code = worker.process.exitcode
        died = f"worker process died (exit code {code}): {reason}" if code is not None else reason
        worker.cell = None
        worker.process.kill()
        key = cell.config_hash()
        attempts[key] += 1
        if attempts[key] <= self.retries:
            sweep.retried(cell, died, attempts[key])
            retry.append(cell)
        else:
            sweep.lost(cell, died, attempts[key])
