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

The pieces: worker (what a worker needs: RunnerSpec, its Runner, its threads), sweep (the
driver: claims, the single writer, the Executor interface), local (sequential and --jobs),
ray_cluster (--executor ray).
"""

from __future__ import annotations

from hashbench.cells import EXECUTORS
from hashbench.errors import HashbenchError
from hashbench.executors.local import LocalPoolExecutor, SequentialExecutor
from hashbench.executors.ray_cluster import RayExecutor, cell_resources
from hashbench.executors.sweep import DEFAULT_RETRIES, CellLock, Executor, Sweep, SweepObserver
from hashbench.executors.worker import RunnerSpec

__all__ = ["DEFAULT_RETRIES", "CellLock", "Executor", "LocalPoolExecutor", "RayExecutor", "RunnerSpec",
           "SequentialExecutor", "Sweep", "SweepObserver", "cell_resources", "make_executor"]


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
