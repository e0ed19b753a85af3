from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hashbench.cli import CacheDir, Mirror, ResultsDir, command, console
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
        "--param", "-p", help="Override a method parameter: KEY=VALUE (every selected method that has KEY) "
                              "or METHOD.KEY=VALUE. Repeatable.")] = None,
    results: ResultsDir = Path("results"),
    overwrite: Annotated[str, typer.Option("--overwrite", help="Re-run cells that already have a record: "
                                                               "never, failed, or always.")] = "failed",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    mirror: Mirror = None,
    cache_dir: CacheDir = None,
):
    """Train and evaluate methods on datasets; one JSON line per (method, dataset, seed) cell.

    Each finished cell appends a record to RESULTS/runs.jsonl (config, hashes, metrics on
    valid and test, timings, peak memory, versions, hardware, git sha) and a hashing method's
    codes go to RESULTS/codes/. Cells that already have a record are skipped, and an
    interrupted training run resumes from its checkpoint: re-running a killed sweep with the
    same command finishes it.
    """
    from hashbench import records
    from hashbench.registry import available_methods
    from hashbench.runner import Runner, parse_param, plan_cells
    from hashbench.specs import load_registry

    method_names = _names(methods, list(available_methods()), "method")
    dataset_names = _names(datasets, list(load_registry()), "dataset")
    if seeds < 1:
        raise HashbenchError(f"--seeds must be at least 1, got {seeds}")
    cells = plan_cells(method_names, dataset_names, bits, list(range(first_seed, first_seed + seeds)), protocol,
                       [parse_param(p) for p in param or []], tuple(_ints(ks, "--ks")))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        sweep = progress.add_task("cells", total=len(cells), status="")
        training = progress.add_task("", total=None, status="", visible=False)

        def report_training(description, completed, total=None, **fields):
            status = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            progress.update(training, description=f"  {description}", completed=completed, total=total,
                            status=status, visible=True)

        runner = Runner(results, cache_dir, mirror, device, overwrite, report_training)
        existing = records.latest_by_cell(results)
        done = failed = skipped = 0
        for cell in cells:
            label = f"{cell.method} · {cell.dataset} · {cell.bits}b · seed {cell.seed}"
            if not runner.should_run(cell, existing):
                skipped += 1
                progress.update(sweep, advance=1, status=f"skipped {label} (result exists)")
                continue
            progress.update(sweep, status=f"running {label}")
            progress.update(training, description=f"  {cell.method}", completed=0, total=None, status="",
                            visible=True)
            record = runner.run_cell(cell)
            progress.update(training, visible=False)
            if record["status"] == "ok":
                done += 1
                test = record["metrics"]["test"]
                summary = "  ".join(f"{k} {v:.4f}" for k, v in test.items() if "@" in k and "_" not in k)
                progress.console.print(f"[green]ok[/] {label}: {summary}  ({record['train_seconds']:.1f} s)")
            else:
                failed += 1
                progress.console.print(f"[red]failed[/] {label}: {record['error']}")
            progress.update(sweep, advance=1)
        progress.update(sweep, status="")
    console.print(f"{done} run, {skipped} skipped, {failed} failed -> {results / records.RUNS_FILE}")
    if failed:
        raise typer.Exit(1)
