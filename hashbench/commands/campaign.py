"""`hashbench campaign`: the Table 1 campaign of campaign.toml, stage by stage."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from hashbench.commands.common import CacheDir, FinishBy, Mirror, ResultsDir, command, console
from hashbench.commands.run import execute_cells
from hashbench.errors import HashbenchError


@command("campaign")
def campaign_command(
    stage: Annotated[str, typer.Option("--stage", "-s", help="tune, final, sweep or ablation (each needs the "
                                                             "earlier ones recorded), or all: one queue in which "
                                                             "every cell starts once what it needs is recorded.")] = "all",
    spec: Annotated[Optional[Path], typer.Option("--spec", help="The campaign spec (default: $HASHBENCH_CAMPAIGN, "
                                                 "else ./campaign.toml, else the checkout's).", show_default=False)] = None,
    budget_scale: Annotated[float, typer.Option("--budget-scale", help="Multiply the epoch caps (epochs, max_iters, "
                                                "init_iters) the spec's [budget] gives a method; the converged "
                                                "campaign.toml gives none (its cells stop by patience), so there "
                                                "it changes nothing.")] = 1.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the stage's cells and whether each is done; "
                                                            "run nothing.")] = False,
    results: ResultsDir = Path("results"),
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Cells at once in local worker processes "
                                                "(default: 1, in this process).", show_default=False)] = None,
    mirror: Mirror = None,
    cache_dir: CacheDir = None,
    finish_by: FinishBy = None,
    methods: Annotated[Optional[str], typer.Option(
        "--methods", "-m", help="Only these methods' cells, in every stage (comma-separated, e.g. proposed): "
                                "to point a borrowed GPU at the methods it speeds up most while this machine "
                                "runs the others, named the same way. Other methods' cells wait for a later run.",
        show_default=False)] = None,
    prune: Annotated[bool, typer.Option(
        "--prune", help="Delete the codes and per-user files no table reads, then exit: the tuning trials that "
                        "are not their study's leader (one that is not now never wins), and runs at the campaign's code length that are neither shown "
                        "in Table 1 nor a campaign cell (a row's earlier seeds, once its converged "
                        "configuration has as many). Records stay, and only files committed to git as they are "
                        "go (the history keeps them): commit new results first.")] = False,
):
    """Tune every method on validation, run the chosen configurations on every dataset and
    seed, then the bits sweep and the gradient-estimator ablation (campaign.toml).

    The whole campaign (the default) runs as one queue: a study's next trial starts once its
    previous one is recorded, a row's final cells once its study is finished, the ablation
    once Proposed's, the sweep's baselines once the sweep dataset's final cells are in.

    Every cell is an ordinary `hashbench run` cell recorded in RESULTS/runs.jsonl; recorded
    cells are skipped and a killed training run resumes from its checkpoint, so re-running
    the same command finishes a campaign. The tuning winner and the two best baselines are
    read back from the records, never stored separately. `hashbench report` tabulates it all.
    With --finish-by the campaign stops starting cells that would not end in time, so a
    booked machine or a session can be left with nothing half-trained.
    """
    from hashbench.campaign import STAGES, describe, load_campaign, stage_cells
    from hashbench.campaign_queue import longest_chain_first, stage_queue
    from hashbench.records import latest_by_cell
    from hashbench.campaign_eta import describe_progress, describe_time_left

    from hashbench.checks import check_results_dir
    from hashbench.commands.run import DEVICES, check_choice

    stages = STAGES if stage == "all" else (stage,)
    if any(s not in STAGES for s in stages):
        raise HashbenchError(f"--stage must be one of {', '.join(STAGES)} or all, got {stage!r}")
    check_choice(device, DEVICES, "--device")  # every argument checked before any work, dry run or not
    if jobs is not None and jobs < 1:
        raise HashbenchError(f"--jobs must be at least 1, got {jobs}")
    deadline = None
    if finish_by is not None:
        from hashbench.schedule import parse_finish_by

        deadline = parse_finish_by(finish_by)  # once: a duration counts from now, not from each stage
    check_results_dir(results, write=not dry_run)
    campaign = load_campaign(spec, budget_scale)
    only = only_methods(campaign, methods)
    if prune:
        from hashbench.campaign_report import in_git_history, unshown_files

        # only files the git history keeps: a file recorded since the last commit, deleted here,
        # would be lost for good (it happened: a study replayed wrongly made two final cells look unread)
        files, kept = in_git_history(unshown_files(campaign, results), results)
        size = sum(f.stat().st_size for f in files)
        for f in files:
            f.unlink()
        console.print(f"removed {len(files)} files that no table reads ({size / 1e6:.1f} MB); their records stay",
                      highlight=False)
        if kept:
            console.print(f"kept {len(kept)} more that are not committed as they are (commit them, then prune again): "
                          + ", ".join(str(f) for f in kept[:3]) + (" …" if len(kept) > 3 else ""), highlight=False)
        return
    console.print(describe_progress(campaign, results), highlight=False)
    console.print(describe_time_left(campaign, results, jobs or 1), highlight=False)
    if stage == "all" and not dry_run:
        # one queue for the whole campaign: a final, sweep or ablation cell starts as soon as
        # the tuning it needs is recorded, instead of after the last study's last trial
        first, more = only(*stage_queue(campaign, "all", results))
        counts = execute_cells(first, results, "failed", device, mirror, cache_dir, jobs=jobs, more=more,
                               deadline=deadline, order=longest_chain_first(campaign, results),
                               methods=(*campaign.methods, *campaign.tune_methods))
        if counts["failed"]:
            console.print(f"[red]{counts['failed']} cells failed[/] (see their records' error)")
            raise typer.Exit(1)
        return
    failed = 0
    for name in stages:
        try:
            # the whole campaign's dry run lists each stage's cells whose inputs are recorded
            cells, _ = only(stage_cells(campaign, name, results, ready_only=stage == "all"), None)
        except HashbenchError as exc:
            if not dry_run:
                raise
            # a later stage's cells depend on the earlier stages' results: say so, do not fail
            console.rule(f"campaign stage: {name}")
            console.print(f"  not planned yet: {exc}", highlight=False)
            continue
        console.rule(f"campaign stage: {name} ({len(cells)} cells)")
        if dry_run and stage == "all" and name != "tune":
            console.print("  the cells whose inputs are recorded; the others are listed once they are", highlight=False)
        if dry_run:
            done = latest_by_cell(results)
            for cell in cells:
                rec = done.get(cell.config_hash())
                state = rec.get("status", "?") if rec else "to run"
                trial = f"trial {cell.trial.number}  " if cell.trial is not None else ""
                console.print(f"  {state:7} {cell.method:14} {cell.dataset:9} {cell.bits:4}b seed {cell.seed}  {trial}"
                              f"{describe(cell.params, campaign.budget_for(cell.method))}", highlight=False)
            continue
        # tuning: a study's next trial is queued as soon as its previous one is recorded
        first, more = only(*stage_queue(campaign, name, results))
        counts = execute_cells(first, results, "failed", device, mirror, cache_dir, jobs=jobs, more=more,
                               deadline=deadline, order=longest_chain_first(campaign, results),
                               methods=(*campaign.methods, *campaign.tune_methods))
        if counts["failed"]:  # a failed trial just loses the tuning; later stages say what they lack
            console.print(f"[red]{counts['failed']} cells failed in stage {name}[/] (see their records' error)")
            failed += counts["failed"]
        if counts["left"]:  # a later stage needs this one's cells: stop here, the next run goes on
            break
    if failed:
        raise typer.Exit(1)


def only_methods(campaign, methods: str | None):
    """What --methods leaves of a queue: a function of (cells, more) that keeps the named methods'
    cells, in both the first list and every later call of `more`. Unknown names fail at once
    (run's parser and message: the campaign's methods are the valid ones)."""
    from hashbench.specs import parse_name_list

    if methods is None:
        return lambda cells, more: (cells, more)
    names = set(parse_name_list(methods, sorted({*campaign.methods, *campaign.tune_methods}), "method"))

    def keep(cells):
        return [cell for cell in cells if cell.method in names]

    return lambda cells, more: (keep(cells), None if more is None else (lambda: keep(more())))
