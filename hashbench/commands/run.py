"""`hashbench run`: plan the cells, run them on an executor, draw the sweep as it goes."""

import contextlib
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from hashbench.cells import has_checkpoint
from hashbench.commands.common import CacheDir, FinishBy, Mirror, ResultsDir, command, console
from hashbench.commands.sweep_display import SweepDisplay, cell_label
from hashbench.errors import HashbenchError
from hashbench.splits import DEFAULT_PROTOCOL, PROTOCOLS


PAPER_DATASETS = ("gowalla", "yelp2018")  # `run` without --datasets: the paper's Table 1
DEVICES = ("auto", "cpu", "cuda")


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HashbenchError(f"{flag} expects comma-separated integers, got {text!r}") from None
    if not values:
        raise HashbenchError(f"{flag} expects comma-separated integers, got {text!r}")
    return values


def check_ks(ks: list[int], datasets: list[str]) -> tuple[int, ...]:
    """Every K at least 1 and at most the smallest catalogue among the datasets (from their specs)."""
    from hashbench.specs import get_dataset_spec

    if min(ks) < 1:
        raise HashbenchError(f"--ks: every K must be at least 1, got {min(ks)}")
    for name in datasets:
        items = get_dataset_spec(name).items
        if items and max(ks) > items:
            smaller = ",".join(str(k) for k in (10, 20, 50) if k <= items) or str(items)
            raise HashbenchError(f"--ks: K = {max(ks)} is larger than the catalogue of {name} ({items:,} items); "
                                 f"pick smaller cut-offs, e.g. --ks {smaller}")
    return tuple(ks)


def check_choice(value: str, choices, flag: str) -> str:
    if value not in choices:
        raise HashbenchError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
    return value


def ensure_datasets(names: list[str], cache_dir, mirror, explicit: bool) -> None:
    """Fetch the real datasets that are not cached yet, before the plan; a dataset that cannot be
    fetched stops the run with what to do instead."""
    from hashbench.datasets import cached_path
    from hashbench.specs import get_dataset_spec

    for name in names:
        spec = get_dataset_spec(name)
        if spec.builtin or cached_path(name, cache_dir).is_file():
            continue
        from hashbench.fetch import fetch

        console.print(f"{name} is not cached yet: fetching it")
        try:
            fetch(spec, cache_dir=cache_dir, mirror=mirror, quiet=False, console=console)
        except HashbenchError as exc:
            default = "" if explicit else " (the default datasets are the paper's, gowalla and yelp2018)"
            text = str(exc).rstrip(".")
            mirror_hint = "" if "--mirror" in text else "; point --mirror (or HASHBENCH_MIRROR) at a local copy"
            raise HashbenchError(f"cannot fetch {name}{default}: {text}{mirror_hint}; or use --datasets synthetic to "
                                 "try hashbench on built-in toy data") from None


@command("run")
def run_command(
    methods: Annotated[str, typer.Option("--methods", "-m", help="Comma-separated method names, or 'all' "
                                                                 "(see `hashbench list`).")] = "all",
    datasets: Annotated[Optional[str], typer.Option(
        "--datasets", "-d", help="Comma-separated dataset names (default: the paper's, gowalla and yelp2018, "
                                 "fetched when needed; synthetic: built-in toy data for a quick try).",
        show_default=False)] = None,
    bits: Annotated[int, typer.Option("--bits", "-b", help="Code length in bits (a positive multiple of 8).")] = 64,
    seeds: Annotated[int, typer.Option("--seeds", help="Number of seeds: runs seeds first-seed .. first-seed+N-1.")] = 1,
    first_seed: Annotated[int, typer.Option("--first-seed", help="The first seed.")] = 0,
    protocol: Annotated[str, typer.Option("--protocol", help=f"Split protocol: {' or '.join(PROTOCOLS)}.")] = DEFAULT_PROTOCOL,
    ks: Annotated[str, typer.Option("--ks", help="Cut-offs K for Recall@K / NDCG@K.")] = "50,100",
    param: Annotated[Optional[list[str]], typer.Option(
        "--param", "-p", metavar="[METHOD.]KEY=VALUE", help="Override a method parameter: KEY=VALUE (every selected method that has KEY) "
                              "or METHOD.KEY=VALUE. Repeatable. A whole number finds its recorded cell "
                              "whether written 180 or 180.0.")] = None,
    refit: Annotated[bool, typer.Option("--refit", help="Choose the number of epochs on validation (from the "
                                        "plain run's record when there is one), then retrain on train + valid "
                                        "for that many epochs and evaluate test once (DaisyRec's practice; "
                                        "recorded as its own cell, marked refit).")] = False,
    refit_epochs: Annotated[Optional[int], typer.Option(
        "--refit-epochs", metavar="N", help="Train on train + valid for exactly N epochs and evaluate test "
                                            "once, choosing nothing on validation: a reference's own fixed "
                                            "schedule (LightGCN: 1000 epochs). Recorded as its own cell.",
        show_default=False)] = None,
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
    finish_by: FinishBy = None,
):
    """Train and evaluate methods on datasets; one JSON line per (method, dataset, seed) cell.

    Each finished cell appends a record to RESULTS/runs.jsonl (config, hashes, metrics on
    valid and test, timings, peak memory, versions, hardware, git sha) and a hashing method's
    codes go to RESULTS/codes/. Cells that already have a record are skipped, and an
    interrupted training run resumes from its checkpoint: re-running a killed sweep with the
    same command finishes it. `--jobs N` runs N cells at once in worker processes and
    `--executor ray` on a Ray cluster; either way this process alone writes the results.
    """
    # every argument is checked here, before anything is fetched, trained or written
    from hashbench.cells import EXECUTORS, OVERWRITE, as_recorded, parse_param, plan_cells
    from hashbench.checks import check_results_dir
    from hashbench.registry import method_names
    from hashbench.specs import load_registry, parse_name_list
    from hashbench.splits import PROTOCOLS

    method_list = parse_name_list(methods, method_names(), "method")
    dataset_list = (list(PAPER_DATASETS) if datasets is None
                    else parse_name_list(datasets, list(load_registry()), "dataset"))
    if seeds < 1:
        raise HashbenchError(f"--seeds must be at least 1, got {seeds}")
    if first_seed < 0:
        raise HashbenchError(f"--first-seed must be at least 0, got {first_seed}")
    check_choice(protocol, PROTOCOLS, "--protocol")
    check_choice(overwrite, OVERWRITE, "--overwrite")
    check_choice(device, DEVICES, "--device")
    check_choice(executor, EXECUTORS, "--executor")
    if jobs is not None and jobs < 1:
        raise HashbenchError(f"--jobs must be at least 1, got {jobs}")
    if retries < 0:
        raise HashbenchError(f"--retries must be at least 0, got {retries}")
    if ray_address and executor != "ray":
        raise HashbenchError("--ray-address needs --executor ray")
    deadline = None
    if finish_by is not None:
        from hashbench.schedule import parse_finish_by

        deadline = parse_finish_by(finish_by)
    if refit_epochs is not None:
        if refit or refit_epochs < 1:
            raise HashbenchError("--refit-epochs takes a number of epochs >= 1 and replaces --refit (which chooses "
                                 f"them on validation), got {refit_epochs}{' with --refit' if refit else ''}")
        refit = refit_epochs
    cells = plan_cells(method_list, dataset_list, bits, list(range(first_seed, first_seed + seeds)), protocol,
                       [parse_param(p) for p in param or []], check_ks(_ints(ks, "--ks"), dataset_list), refit)
    check_results_dir(results)
    cells = as_recorded(cells, results)
    if device == "cuda" and executor == "local":
        from hashbench.environment import resolve_device

        resolve_device(device)  # needs torch: only asked when a GPU is asked for
    ensure_datasets(dataset_list, cache_dir, mirror, explicit=datasets is not None)
    counts = execute_cells(cells, results, overwrite, device, mirror, cache_dir, executor, jobs, ray_address, retries,
                           deadline=deadline)
    if counts["failed"]:
        raise typer.Exit(1)


def execute_cells(cells, results: Path, overwrite: str = "failed", device: str = "auto", mirror=None,
                  cache_dir=None, executor: str = "local", jobs=None, ray_address=None, retries: int = 2,
                  more=None, deadline=None, order=None, methods=()) -> dict:
    """Print the plan, run cells on an executor with the sweep's progress display; returns the
    run/skipped/failed/left counts. `more`, `order`: see Sweep (the cells that become runnable as
    records land, and how the queue is arranged); `methods`: see RunnerSpec.for_cells; `deadline` (a datetime, from --finish-by): start
    only the cells expected to end by then (hashbench.schedule)."""
    from hashbench.executors import RunnerSpec, Sweep, make_executor
    from hashbench.records import RUNS_FILE
    from hashbench.cells import OVERWRITE
    from hashbench.environment import resolve_device

    if overwrite not in OVERWRITE:
        raise HashbenchError(f"--overwrite must be one of {', '.join(OVERWRITE)}, got {overwrite!r}")
    runner_executor = make_executor(executor, jobs, ray_address, retries)
    where = None  # the device the cells will run on, where known (estimates prefer its records)
    if executor == "local":
        where = resolve_device(device)  # fail before any work; on Ray each worker resolves its own
    fits = None
    if deadline is not None:
        from hashbench.schedule import fits_before

        fits = fits_before(deadline, results, where)
    if order is not None:
        cells = order(list(cells))  # the plan lists them in the order they start
    print_plan(make_plan(cells, results, overwrite))
    if deadline is not None:
        console.print(f"  finish by {deadline:%Y-%m-%d %H:%M}: a cell expected to end later is left for the "
                      "next run of this command", highlight=False)
    spec = RunnerSpec.for_cells(cells, results, cache_dir, mirror, device, methods=methods)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=console, transient=False) as progress, _stop_signals_interrupt():
        display = SweepDisplay(progress, len(cells), results)
        sweep = Sweep(cells, spec, overwrite, display, more, fits, order)
        try:
            counts = sweep.run(runner_executor)
        finally:
            display.close()
    left = f", {counts['left']} left for a later run (not expected to end by {deadline:%H:%M})" if counts["left"] else ""
    console.print(f"{counts['run']} run, {counts['skipped']} skipped, {counts['failed']} failed{left} -> "
                  f"{results / RUNS_FILE}")
    return counts


@contextlib.contextmanager
def _stop_signals_interrupt():
    """SIGTERM and SIGHUP (a closed terminal) stop the sweep as Ctrl-C does: locks released, checkpoints kept."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    except ValueError:  # not the main thread: leave the signals alone
        previous = {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class Plan:
    to_run: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    resumed: list = field(default_factory=list)  # to run, from a checkpoint
    seconds: float = 0.0  # estimated time of the cells with an estimate (an upper bound)
    unknown: list = field(default_factory=list)  # cells to run without an estimate
    expected: float = 0.0  # their likely time (hashbench.schedule: epochs runs needed to converge)


def estimate_seconds(cell, recorded: list[dict], refit_epochs: int | None = None) -> float | None:
    """From the records of the same method on the same dataset: seconds per epoch times the cell's
    epoch budget (an upper bound: early stopping may end sooner) plus evaluation, else the median
    recorded training time; None when the method never ran there. A refit whose selection run is
    recorded trains exactly `refit_epochs` (that run's best epoch): those are its budget."""
    from hashbench.registry import method_spec

    same = [r for r in recorded if r.get("status") == "ok" and r["method"] == cell.method
            and r["dataset"] == cell.dataset]
    if not same:
        return None
    scale = cell.bits / 64
    per_epoch = [r["extras"]["seconds_per_epoch"] for r in same if (r.get("extras") or {}).get("seconds_per_epoch")]
    epochs = refit_epochs or method_spec(cell.method).with_defaults(cell.params).get("epochs")
    evaluation = float(np.median([r.get("eval_seconds", 0.0) for r in same]))
    if per_epoch and isinstance(epochs, int):
        return float(np.median(per_epoch)) * epochs * max(scale, 0.5) + evaluation
    return float(np.median([r.get("train_seconds", 0.0) for r in same])) + evaluation


def make_plan(cells, results: Path, overwrite: str) -> Plan:
    from hashbench.cells import should_run
    from hashbench.records import latest_by_cell
    from hashbench.schedule import expected_seconds

    latest = latest_by_cell(results) if (Path(results) / "runs.jsonl").exists() else {}
    recorded = list(latest.values())
    plan = Plan()
    for cell in cells:
        if not should_run(cell, latest, overwrite):
            plan.skipped.append(cell)
            continue
        plan.to_run.append(cell)
        if has_checkpoint(results, cell):
            plan.resumed.append(cell)
        selection = latest.get(cell.selection().config_hash()) if cell.refit is True else None
        refit_epochs = cell.fixed_epochs or ((selection or {}).get("extras") or {}).get("best_epoch")
        estimate = estimate_seconds(cell, recorded, refit_epochs)
        if estimate is None:
            plan.unknown.append(cell)
        else:
            plan.seconds += estimate
            plan.expected += min(expected_seconds(cell, latest, results) or estimate, estimate)
    return plan


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f} s"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def print_plan(plan: Plan) -> None:
    total = len(plan.to_run) + len(plan.skipped)
    resumed = f" ({len(plan.resumed)} resume from a checkpoint)" if plan.resumed else ""
    console.print(f"plan: {total} cells: {len(plan.to_run)} to run{resumed}, {len(plan.skipped)} skipped "
                  "(already recorded)", highlight=False)
    if not plan.to_run:
        return
    known = len(plan.to_run) - len(plan.unknown)
    eta = (f"estimated time: about {duration(plan.expected)}, at most {duration(plan.seconds)}, for {known} of them "
           "(recorded seconds per epoch x the epochs earlier runs needed to converge, at most the epoch budget)"
           if known else "estimated time: unknown")
    if plan.unknown:
        first = sorted({f"{c.method} on {c.dataset}" for c in plan.unknown})
        more = f", +{len(first) - 4} more" if len(first) > 4 else ""
        eta += (f"{'; unknown for' if known else ' for'} {len(plan.unknown)} cell(s) never run here before "
                f"({', '.join(first[:4])}{more})")
    console.print("  " + eta, highlight=False)
    if len(plan.to_run) <= 12:
        for cell in plan.to_run:
            mark = " (resumes from its checkpoint)" if cell in plan.resumed else ""
            console.print(f"  run {cell_label(cell)}{mark}", highlight=False)
