"""Where a sweep's cells run: in this process, in a local process pool, or on a Ray cluster.

Whatever the executor, the driver (the `hashbench run` process) is the only writer of the
results directory: workers compute a cell (Runner.compute_cell writes nothing but its
training checkpoint) and send back the record and the codes; the driver saves the codes
file, appends the record and drops the checkpoint (runner.save_result). So a worker that
dies, a node that is lost, or a driver killed with -9 can lose at most the work in flight,
never leave a half-written or duplicate result.

A `Sweep` hands cells to an executor one at a time. Before a cell is handed out it is
*claimed*: a lock file per cell (results/checkpoints/<cell>.lock, an flock that the OS
drops when the process dies) held by the driver until the cell's record is written. A
second sweep on the same directory skips the cells the first one holds and, once it has
nothing else to do, waits for them and re-reads the records: each cell runs once. The
records file is re-read (only its new lines) at every claim, so a cell that another sweep
finished meanwhile is not run again.

    local  (default)  one cell after another, in this process
    --jobs N          N spawned worker processes, one cell each; a worker that dies is
                      replaced and its cell retried (--retries times), then recorded failed
    --executor ray    Ray core tasks: at most --jobs (default: the cluster's CPUs) in
                      flight, each requesting its method's `resources`; Ray re-runs a task
                      whose worker or node is lost (--retries times), then it is recorded
                      failed
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass
from functools import reduce
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any, Iterable


from hashbench import records
from hashbench.errors import HashbenchError
from hashbench.files import make_dirs
from hashbench.registry import Method, available_methods, get_method, register
from hashbench.cells import EXECUTORS, OVERWRITE, Cell, checkpoint_dir_for, should_run
from hashbench.runner import CellResult, Runner, failed_record, save_result


DEFAULT_RETRIES = 2


# --- what a worker needs to build a Runner -------------------------------------------------

@dataclass(frozen=True)
class RunnerSpec:
    """Everything a worker process (here or on another node) needs to compute cells."""

    results_dir: str  # absolute; workers write checkpoints under it
    cache_dir: str | None = None
    mirror: str | None = None
    device: str = "auto"
    command: str = ""
    # methods registered in the driver at run time (a notebook, a test, a plug-in not on the
    # entry-point group): name -> "module:QualName", imported and registered in the worker
    method_imports: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # the driver's HASHBENCH_* variables

    @classmethod
    def for_cells(cls, cells: Iterable[Cell], results_dir: Path, cache_dir: Path | None = None,
                  mirror: str | None = None, device: str = "auto", command: str | None = None) -> "RunnerSpec":
        imports = {}
        for name in sorted({c.method for c in cells}):
            method = get_method(name)
            imports[name] = f"{method.__module__}:{method.__qualname__}"
        return cls(
            results_dir=str(Path(results_dir).absolute()),
            cache_dir=str(Path(cache_dir).absolute()) if cache_dir else None,
            mirror=mirror, device=device,
            command=command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            method_imports=tuple(imports.items()),
            env=tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("HASHBENCH_"))),
        )

    def make_runner(self, progress=None, device: str | None = None) -> Runner:
        return Runner(Path(self.results_dir), Path(self.cache_dir) if self.cache_dir else None, self.mirror,
                      device or self.device, "failed", progress, self.command)


_WORKER_RUNNERS: dict[tuple[RunnerSpec, str], Runner] = {}


def _worker_runner(spec: RunnerSpec, device: str | None = None) -> Runner:
    """One Runner per worker process and spec, so datasets and splits are loaded once."""
    key = (spec, device or spec.device)
    if key not in _WORKER_RUNNERS:
        os.environ.update(dict(spec.env))
        registered = available_methods()
        for name, target in spec.method_imports:
            if name not in registered:
                module, _, qualname = target.partition(":")
                register(reduce(getattr, qualname.split("."), importlib.import_module(module)))
        _WORKER_RUNNERS[key] = spec.make_runner(device=device)
    return _WORKER_RUNNERS[key]


def _set_threads(threads: int) -> None:
    """Pin torch and numba to this worker's share of the cores (no oversubscription)."""
    import torch

    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass


# --- the driver side of a sweep ------------------------------------------------------------

class SweepObserver:
    """What a sweep reports as it goes (the CLI draws it); every hook is optional."""

    def skipped(self, cell: Cell, reason: str) -> None: ...

    def waiting(self, cell: Cell) -> None: ...

    def started(self, cell: Cell) -> None: ...

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
    """The driver's state: which cells are left, which this process holds, what got written."""

    def __init__(self, cells: Iterable[Cell], spec: RunnerSpec, overwrite: str = "failed",
                 observer: SweepObserver | None = None):
        if overwrite not in OVERWRITE:
            raise HashbenchError(f"--overwrite must be one of {', '.join(OVERWRITE)}, got {overwrite!r}")
        self.spec, self.overwrite = spec, overwrite
        self.results_dir = Path(spec.results_dir)
        self.observer = observer or SweepObserver()
        self.log = records.RecordLog(self.results_dir)
        self.initial = dict(self.log.latest)  # what existed when the sweep began
        self.todo: deque[Cell] = deque(cells)
        self.deferred: deque[Cell] = deque()  # held by another sweep right now
        self.claims: dict[str, CellLock] = {}
        self.counts: Counter[str] = Counter()  # run, failed, skipped
        self.written: list[dict[str, Any]] = []

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
        while self.todo:
            cell = self.todo.popleft()
            if not should_run(cell, self.initial, self.overwrite):
                self._skip(cell, "result exists")
                continue
            if self._claim_or_defer(cell):
                return cell
        for _ in range(len(self.deferred)):
            cell = self.deferred.popleft()
            if self._claim_or_defer(cell):
                return cell
        while block and self.deferred:  # nothing else to do: wait for the other sweep's cells
            cell = self.deferred.popleft()
            self.observer.waiting(cell)
            if self._claim(cell, timeout=-1) == "claimed":
                return cell  # the other sweep died without recording it
            self._skip(cell, "recorded by another sweep")
        return None

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
        self.counts["run" if record["status"] == "ok" else "failed"] += 1
        self.written.append(record)
        self.observer.finished(result.cell, record)
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
    name = "base"

    def run(self, sweep: Sweep) -> None:
        raise NotImplementedError


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
    _set_threads(threads)
    last = [0.0]

    def progress(description, completed, total=None, **fields):
        now = time.monotonic()
        if now - last[0] >= 0.25 or (total and completed >= total):
            last[0] = now
            conn.send(("progress", (description, completed, total), fields))

    try:
        runner = _worker_runner(spec)
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


# --- Ray ------------------------------------------------------------------------------------

def cell_resources(method: type[Method], device: str, cluster_gpus: float) -> dict[str, float]:
    """A cell's Ray request: the method's `resources`, with GPUs only where they can be used.

    --device cpu: no GPUs. --device cuda: the method's num_gpus, 1 if it declares none
    (declare 0 for a CPU-only method and it runs on CPU). --device auto: the method's
    num_gpus when the cluster has GPUs, else none.
    """
    wanted = dict(getattr(method, "resources", None) or {"num_cpus": 1})
    gpus = wanted.pop("num_gpus", None)
    if device == "cpu":
        gpus = 0
    elif device == "cuda":
        gpus = 1 if gpus is None else gpus
    else:
        gpus = (gpus or 0) if cluster_gpus > 0 else 0
    if gpus:
        wanted["num_gpus"] = gpus
    return wanted


def _ray_compute_cell(spec: RunnerSpec, cell: Cell, device: str) -> CellResult:
    """The Ray task: compute one cell on whatever node Ray picked; the driver saves it."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    _set_threads(max(1, int(cpus)))
    return _worker_runner(spec, device).compute_cell(cell)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise HashbenchError("--executor ray needs Ray: pip install 'hashbench[ray]' (ray>=2.9)") from None
    return ray


class RayExecutor(Executor):
    """Ray core tasks, a bounded number in flight; the driver keeps writing the results."""

    name = "ray"

    def __init__(self, address: str | None = None, jobs: int | None = None, retries: int = DEFAULT_RETRIES):
        if jobs is not None and jobs < 1:
            raise HashbenchError(f"--jobs must be at least 1, got {jobs}")
        self.address, self.jobs, self.retries = address, jobs, retries

    def run(self, sweep: Sweep) -> None:
        ray = _import_ray()
        first = sweep.next_cell(block=True)
        if first is None:  # everything is recorded already: no need to start or join Ray
            return
        started_here = not ray.is_initialized()
        if started_here:
            try:
                ray.init(address=self.address, include_dashboard=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise HashbenchError(f"cannot start or join Ray (--ray-address {self.address or 'local'}): "
                                     f"{exc}") from None
        try:
            self._run(ray, sweep, first)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray, sweep: Sweep, first: Cell) -> None:
        cluster = ray.cluster_resources()
        limit = self.jobs or max(1, int(cluster.get("CPU", 1)))
        task = ray.remote(_ray_compute_cell)
        spec = ray.put(sweep.spec)
        device = sweep.spec.device
        in_flight: dict[Any, Cell] = {}
        try:
            while True:
                while len(in_flight) < limit:
                    cell, first = first or sweep.next_cell(block=not in_flight), None
                    if cell is None:
                        break
                    resources = cell_resources(get_method(cell.method), device, cluster.get("GPU", 0))
                    cell_device = "cpu" if device == "cuda" and not resources.get("num_gpus") else device
                    ref = task.options(**resources, max_retries=self.retries, retry_exceptions=False,
                                       name=f"hashbench:{cell.method}:{cell.dataset}:{cell.bits}b:s{cell.seed}"
                                       ).remote(spec, cell, cell_device)
                    in_flight[ref] = cell
                    sweep.started(cell)
                if not in_flight:
                    return
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                for ref in done:
                    cell = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # raised inside compute_cell
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, HashbenchError):
                            raise HashbenchError(str(cause)) from None
                        sweep.finish(CellResult(cell, failed_record(
                            cell, f"{type(cause or exc).__name__}: {cause or exc}", str(exc),
                            command=sweep.spec.command)))
                    except ray.exceptions.RayError as exc:  # worker or node lost, retries spent
                        sweep.lost(cell, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}",
                                   self.retries + 1)
                    else:
                        sweep.finish(result)
        finally:
            for ref in in_flight:  # interrupted or stopped by bad input: do not leave work behind
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or its worker is gone: nothing to cancel
                    pass


def make_executor(executor: str = "local", jobs: int | None = None, ray_address: str | None = None,
                  retries: int = DEFAULT_RETRIES) -> Executor:
    if executor not in EXECUTORS:
        raise HashbenchError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if retries < 0:
        raise HashbenchError(f"--retries must be at least 0, got {retries}")
    if executor == "ray":
        return RayExecutor(ray_address, jobs, retries)
    if ray_address:
        raise HashbenchError("--ray-address needs --executor ray")
    if jobs is None or jobs == 1:
        return SequentialExecutor()
    return LocalPoolExecutor(jobs, retries)
