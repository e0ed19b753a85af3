"""`hashbench run`: plan the cells, run them on an executor, draw the sweep as it goes."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hashbench.commands.common import CacheDir, Mirror, ResultsDir, command, console
from hashbench.errors import HashbenchError


def _names(text: str, valid: list[str], kind: str) -> list[str]:
    from hashbench.specs import unknown_name_error

    names = valid if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in valid:
            raise unknown_name_error(kind, n, valid)
    return names


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HashbenchError(f"{flag} expects comma-separated integers, got {text!r}") from None


@command("run")
def run_command(
    methods: Annotated[str, typer.Option("--methods", "-m", help="Comma-separated method names, or 'all' "
                                                                 "(see `hashbench list`).")] = "all",
    datasets: Annotated[str, typer.Option("--datasets", "-d", help="Comma-separated dataset names.")] = "synthetic",
    bits: Annotated[int, typer.Option("--bits", "-b", help="Code length in bits (a positive multiple of 8).")] = 64,
    seeds: Annotated[int, typer.Option("--seeds", help="Number of seeds: runs seeds first-seed .. first-seed+N-1.")] = 1,
    first_seed: Annotated[int, typer.Option("--first-seed", help="The first seed.")] = 0,
    protocol: Annotated[str, typer.Option("--protocol", help="Split protocol: random-8-1-1 or lightgcn.")] = "random-8-1-1",
    ks: Annotated[str, typer.Option("--ks", help="Cut-offs K for Recall@K / NDCG@K.")] = "50,100",
    param: Annotated[Optional[list[str]], typer.Option(
        "--param", "-p", metavar="[METHOD.]KEY=VALUE", help="Override a method parameter: KEY=VALUE (every selected method that has KEY) "
                              "or METHOD.KEY=VALUE. Repeatable.")] = None,
    results: ResultsDir = Path("results"),
    overwrite: Annotated[str, typer.Option("--overwrite", help="Re-run cells that already have a record: "
                                                               "never, failed, or always.")] = "failed",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    mirror: Mirror = None,
    cache_dir: CacheDir = None,
    executor: Annotated[str, typer.Option("--executor", help="Where cells run: local (this machine) or ray "
                                                             "(a Ray cluster; pip install 'hashbench[ray]').")] = "local",
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Cells at once: local worker processes "
                                                "(default: 1, in this process), or Ray tasks in flight "
                                                "(default: the cluster's CPUs).", show_default=False)] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="The Ray cluster to join (e.g. "
                                                       "auto, or ray://head:10001); default: $RAY_ADDRESS, else a "
                                                       "new local Ray instance.", show_default=False)] = None,
    retries: Annotated[int, typer.Option("--retries", help="Times a cell is re-run when its worker process or "
                                                           "node is lost, before it is recorded as failed.")] = 2,
):
    """Train and evaluate methods on datasets; one JSON line per (method, dataset, seed) cell.

    Each finished cell appends a record to RESULTS/runs.jsonl (config, hashes, metrics on
    valid and test, timings, peak memory, versions, hardware, git sha) and a hashing method's
    codes go to RESULTS/codes/. Cells that already have a record are skipped, and an
    interrupted training run resumes from its checkpoint: re-running a killed sweep with the
    same command finishes it. `--jobs N` runs N cells at once in worker processes and
    `--executor ray` on a Ray cluster; either way this process alone writes the results.
    """
    from hashbench.registry import available_methods
    from hashbench.runner import parse_param, plan_cells
    from hashbench.specs import load_registry

    method_names = _names(methods, list(available_methods()), "method")
    dataset_names = _names(datasets, list(load_registry()), "dataset")
    if seeds < 1:
        raise HashbenchError(f"--seeds must be at least 1, got {seeds}")
    cells = plan_cells(method_names, dataset_names, bits, list(range(first_seed, first_seed + seeds)), protocol,
                       [parse_param(p) for p in param or []], tuple(_ints(ks, "--ks")))
    counts = execute_cells(cells, results, overwrite, device, mirror, cache_dir, executor, jobs, ray_address, retries)
    if counts["failed"]:
        raise typer.Exit(1)


def execute_cells(cells, results: Path, overwrite: str = "failed", device: str = "auto", mirror=None,
                  cache_dir=None, executor: str = "local", jobs=None, ray_address=None, retries: int = 2) -> dict:
    """Run cells on an executor with the sweep's progress display; returns the run/skipped/failed counts."""
    from hashbench.executors import RunnerSpec, Sweep, make_executor
    from hashbench.records import RUNS_FILE
    from hashbench.runner import OVERWRITE, resolve_device

    if overwrite not in OVERWRITE:
        raise HashbenchError(f"--overwrite must be one of {', '.join(OVERWRITE)}, got {overwrite!r}")
    runner_executor = make_executor(executor, jobs, ray_address, retries)
    if executor == "local":
        resolve_device(device)  # fail before any work; on Ray each worker resolves its own
    spec = RunnerSpec.for_cells(cells, results, cache_dir, mirror, device)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        display = SweepDisplay(progress, len(cells))
        sweep = Sweep(cells, spec, overwrite, display)
        try:
            counts = sweep.run(runner_executor)
        finally:
            display.close()
    console.print(f"{counts['run']} run, {counts['skipped']} skipped, {counts['failed']} failed -> "
                  f"{results / RUNS_FILE}")
    return counts


def _label(cell) -> str:
    return f"{cell.method} · {cell.dataset} · {cell.bits}b · seed {cell.seed}"


class SweepDisplay:
    """The sweep's bar, one live row per cell in flight, and a line per finished cell."""

    def __init__(self, bars: Progress, total: int):
        self.bars = bars
        self.sweep = bars.add_task("cells", total=total, status="")
        self.rows: dict[str, int] = {}

    def _row(self, cell) -> int:
        key = cell.config_hash()
        if key not in self.rows:
            self.rows[key] = self.bars.add_task(f"  {cell.method}", total=None, status="")
        return self.rows[key]

    def _drop(self, cell) -> None:
        row = self.rows.pop(cell.config_hash(), None)
        if row is not None:
            self.bars.remove_task(row)

    def skipped(self, cell, reason: str) -> None:
        self.bars.update(self.sweep, advance=1, status=f"skipped {_label(cell)} ({reason})")

    def waiting(self, cell) -> None:
        self.bars.update(self.sweep, status=f"waiting for another sweep to finish {_label(cell)}")

    def started(self, cell) -> None:
        self.bars.update(self.sweep, status=f"running {_label(cell)}")
        self.bars.update(self._row(cell), status="started")

    def progress(self, cell, description, completed, total=None, **fields) -> None:
        status = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        self.bars.update(self._row(cell), description=f"  {description} · {cell.dataset} · seed {cell.seed}",
                             completed=completed, total=total, status=status)

    def retried(self, cell, reason: str, attempt: int) -> None:
        self.bars.console.print(f"[yellow]retry {attempt}[/] {_label(cell)}: {reason}")

    def finished(self, cell, record) -> None:
        self._drop(cell)
        label = _label(cell)
        if record["status"] == "ok":
            test = record["metrics"]["test"]
            summary = "  ".join(f"{k} {v:.4f}" for k, v in test.items() if "@" in k and "_" not in k)
            self.bars.console.print(f"[green]ok[/] {label}: {summary}  ({record['train_seconds']:.1f} s)")
        else:
            self.bars.console.print(f"[red]failed[/] {label}: {record['error']}")
        self.bars.update(self.sweep, advance=1)

    def close(self) -> None:
        for row in self.rows.values():
            self.bars.remove_task(row)
        self.rows.clear()
        self.bars.update(self.sweep, status="")
