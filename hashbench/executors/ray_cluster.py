"""`--executor ray`: cells as Ray core tasks, a bounded number in flight, each requesting its
method's resources; the driver still writes every result."""

from __future__ import annotations

from typing import Any

from hashbench.cells import Cell
from hashbench.errors import HashbenchError
from hashbench.executors.sweep import DEFAULT_RETRIES, Executor, Sweep
from hashbench.executors.worker import RunnerSpec, set_threads, worker_runner
from hashbench.registry import Method, get_method
from hashbench.runner import CellResult, failed_record


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
    set_threads(max(1, int(cpus)))
    return worker_runner(spec, device).compute_cell(cell)


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
