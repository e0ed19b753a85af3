"""The campaign's sections of the report: tuning, significance, the bits sweep (with its plot),
the gradient-estimator ablation and the compute bill.

Every number is read from results/runs.jsonl (and per_user/ for the tests); which records
belong to which stage is recomputed from campaign.toml, as `hashbench campaign` does.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path


from hashbench import records
from hashbench.campaign import (STAGES, Campaign, ablation_cells, ablation_reference, best_baselines, describe,
                                stage_cells, sweep_cells)
from hashbench.errors import HashbenchError
from hashbench.files import save_figure
from hashbench.registry import method_spec
from hashbench.tables import CAP_STOPS, Selection, Table, select_records, short

Rows = tuple[list[str], list[list[str]]]  # header, body


def _records_for(cells, latest) -> list[dict | None]:
    return [latest.get(cell.config_hash()) for cell in cells]


def _ok(rec: dict | None) -> bool:
    return rec is not None and rec.get("status") == "ok"


def _f(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def tuning_spaces(c: Campaign) -> str:
    """Each tuned method's search space, for the tuning table's caption (too wide for a column)."""
    from hashbench.tuning import describe_space

    return "; ".join(f"{m}: {describe_space(method_spec(m))}" for m in c.tune_methods)


NOT_DRAWN_MARK = "*"
NOT_DRAWN_NOTE = (f"{NOT_DRAWN_MARK}: a startup trial that TPE proposed where the design has a seeded random "
                  "draw (a replay bug, fixed in 894469f, made TPE start one trial early in these studies); "
                  "kept: it is a trial of its study like any other, scored on validation")


def tuning_rows(c: Campaign, results_dir: Path) -> Rows:
    """Every study (method/dataset): each recorded trial with its validation score and how it
    ended (patience / a cap / pruned at epoch e / failed), the winner of a finished study marked
    ✓ and the best trial so far of a running one "leads", and how many of its trials are still
    to run; a startup trial the sampler did not draw at random is marked * (NOT_DRAWN_NOTE). The
    search spaces are in the caption (tuning_spaces)."""
    from hashbench.campaign import all_trials_recorded, best_trial, startup_trials_not_drawn, study_trials
    from hashbench.tuning import outcome

    latest = records.latest_by_cell(results_dir)
    body = []
    for d in c.tune_datasets:
        for m in c.tune_methods:
            name = f"{m}/{d}"
            trials = study_trials(c, m, d, latest)
            done = [(cell, rec) for cell, rec in trials if rec is not None]
            leader = best_trial(trials, c.monitor)
            lead_mark = "✓" if all_trials_recorded(c, trials) else "leads"
            not_drawn = startup_trials_not_drawn(c, m, d, latest)
            for number, (cell, rec) in enumerate(done):
                state, value, curve = outcome(rec, c.monitor)
                ended = (f"pruned at {curve[-1][0]}" if state == "pruned" and curve else
                         state if state != "complete" else (rec.get("extras") or {}).get("stopped") or "complete")
                mark = lead_mark if leader is not None and cell.config_hash() == leader.config_hash() else ""
                body.append([name, f"{number}{NOT_DRAWN_MARK if number in not_drawn else ''}",
                             describe(cell.params, c.budget_for(m)), _f(value), ended, mark])
            if (first := len(done)) < c.trials:
                trials = str(first) if first == c.trials - 1 else f"{first}–{c.trials - 1}"
                body.append([name, trials, "not run", "", "", ""])
    return ["study", "trial", "parameters", f"valid {short(c.monitor)}", "ended", "chosen"], body


def _p(value: float) -> str:
    return "< 1e-300" if value == 0 else f"{value:.2g}"  # scipy's p underflows to 0 for 30k users


def significance_rows(table: Table, dataset: str | None = None) -> Rows:
    """Rows: methods; columns: (dataset, metric) with its best method; cells: Holm-adjusted p vs that best.

    With `dataset`: that dataset's columns only, headed by the metric (the best row says "best")."""
    columns = [c for c in table.tests if dataset is None or c[0] == dataset]
    header = ["method"] + [short(m) if dataset else f"{d} {short(m)} (best: {table.tests[(d, m)][0]})"
                           for d, m in columns]
    body = []
    for method in table.rows:
        cells = []
        for column in columns:
            best, tests = table.tests[column]
            t = tests.get(method)
            cells.append("best" if method == best else "–" if t is None else
                         _p(t.p_adjusted) + ("" if t.significant else " (n.s.)"))
        body.append([method] + cells)
    return header, body


def sweep_methods(c: Campaign, results_dir: Path) -> str:
    """Which methods Table 5 has, for its caption: the swept method once its tuning is finished,
    the baselines once they are chosen."""
    best = (f"the baseline{'' if c.sweep_baselines == 1 else 's'} with the best mean validation {short(c.monitor)} "
            "in the final stage")
    tuned = any(cell.method == c.ablation_method for cell in sweep_cells(c, results_dir, ready_only=True))
    ours = c.ablation_method if tuned else f"{c.ablation_method} once its tuning on {c.sweep_dataset} is finished"
    try:
        chosen = best_baselines(c, results_dir)
    except HashbenchError:  # the sweep dataset's final stage is still running
        return f"{ours}; {best} join{'s' if c.sweep_baselines == 1 else ''} once it is finished on {c.sweep_dataset}"
    return f"{ours} and {best}: {', '.join(chosen)}" if chosen else ours


def sweep_rows(c: Campaign, results_dir: Path) -> tuple[Rows, dict[str, list[tuple[int, float]]]]:
    latest = records.latest_by_cell(results_dir)
    cells = sweep_cells(c, results_dir, ready_only=True)  # Proposed's rows before the baselines are chosen
    if not cells:
        raise HashbenchError(f"the sweep needs {c.ablation_method}'s tuning on {c.sweep_dataset}")
    curves: dict[str, list[tuple[int, float]]] = {}
    body = []
    for cell, rec in zip(cells, _records_for(cells, latest)):
        test = rec["metrics"]["test"] if _ok(rec) else {}
        body.append([cell.method, str(cell.bits), _f(test.get("recall@50")), _f(test.get("recall@100")),
                     _f(test.get("ndcg@50")), _f(test.get("ndcg@100"))])
        if "recall@50" in test:
            curves.setdefault(cell.method, []).append((cell.bits, test["recall@50"]))
    return (["method", "bits", "R@50", "R@100", "N@50", "N@100"], body), curves


def plot_sweep(curves: dict[str, list[tuple[int, float]]], dataset: str, path: Path) -> None:
    """Recall@50 against code length, one line per method, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=150)
    for method, points in curves.items():
        bits, recall = zip(*sorted(points))
        ax.plot(bits, recall, marker="o", label=method)
    ax.set_xscale("log", base=2)
    all_bits = sorted({b for pts in curves.values() for b, _ in pts})
    ax.set_xticks(all_bits, [str(b) for b in all_bits])
    ax.set_xlabel("code length (bits)")
    ax.set_ylabel("test Recall@50")
    ax.set_title(f"{dataset}: Recall@50 against code length")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def ablation_rows(c: Campaign, results_dir: Path) -> Rows:
    latest = records.latest_by_cell(results_dir)
    cells = ablation_cells(c, results_dir, ready_only=True)
    if not cells:
        raise HashbenchError(f"the ablation needs {c.ablation_method}'s tuning on {c.ablation_dataset}")
    # first the configuration every variant changes: the chosen one, in what the variants override
    reference = ablation_reference(c, results_dir)
    overridden = sorted({k for variant in c.variants.values() for k in variant})
    recorded = latest.get(reference.config_hash())  # its record has every parameter, defaults included
    params = recorded["params"] if _ok(recorded) else reference.params
    label = (("chosen (Table 3): " if c.ablation_method in c.tune_methods else "defaults: ")
             + describe({k: params[k] for k in overridden if k in params}, {}))
    body = []
    for name, cell in [(label, reference), *cells]:
        rec = latest.get(cell.config_hash())
        if not _ok(rec):
            body.append([name, "not run" if rec is None else rec["status"], "", "", "", ""])
            continue
        m = rec["metrics"]
        body.append([name, _f(m["valid"].get("recall@50")), _f(m["test"].get("recall@50")),
                     _f(m["test"].get("recall@100")), _f(m["test"].get("ndcg@50")),
                     str(rec.get("extras", {}).get("best_epoch", ""))])
    return ["estimator", "valid R@50", "test R@50", "test R@100", "test N@50", "best epoch"], body


def billed_cpu_seconds(rec: dict) -> float:
    """A record's CPU seconds, every training segment included (a cell resumed after a kill
    carries the CPU of the segments before in extras.earlier_cpu_seconds). A record from before
    that count has its last segment's only: there its busy time × threads, a lower bound of the
    training's CPU (an upper one where the busy clock was still the wall clock), is used if larger."""
    cpu = rec.get("cpu_seconds", 0.0)
    extras = rec.get("extras") or {}
    if "earlier_cpu_seconds" not in extras and extras.get("resumed_from_epoch"):
        threads = (rec.get("hardware") or {}).get("torch_threads") or 1
        cpu = max(cpu, extras.get("busy_seconds", 0.0) * threads)
    return cpu


def billed_seconds(rec: dict) -> float:
    """A record's own training + evaluation seconds by the clock: a ranking of another cell's model
    (extras.model_of: bgch-scaled's α-scaled ranking of the bgch cell's model) is billed its
    evaluation only, as its CPU is; its extras still carry the training time of that model."""
    if (rec.get("extras") or {}).get("model_of"):
        return float(rec.get("eval_seconds") or 0.0)
    return records.wall_seconds(rec)


def seconds_running(spans: list[tuple]) -> float:
    """The length of the union of (start, finish) datetime spans: the wall time during which at
    least one of them was in flight (the hours between working sessions, when nothing ran, are
    not in it; first-start-to-last-finish would count them)."""
    seconds, (start, end) = 0.0, sorted(spans)[0]
    for s, e in sorted(spans)[1:]:
        if s > end:
            seconds, start = seconds + (end - start).total_seconds(), s
        end = max(end, e)
    return seconds + (end - start).total_seconds()


def on_gpu(rec: dict) -> bool:
    """Whether a cell trained on a GPU: where its model was (extras.device, e.g. "cuda:0"), else
    the runner's device."""
    return str((rec.get("extras") or {}).get("device") or rec.get("device") or "").startswith("cuda")


def stop_reasons(recs: list[dict], share: bool = False) -> str:
    """How a group of cells stopped, e.g. 'patience 15, cap 2': their records' extras.stopped,
    every epoch, time or iteration budget counted as 'cap', a row that does not train (lsh,
    mostpop) as 'no training', a failed cell as 'failed'. `share`: with the part of the trained cells that did not stop on
    a cap (issue 15 expects at least 90% of the final stage's by patience)."""
    counts: dict[str, int] = {}
    for rec in recs:
        reason = (rec.get("extras") or {}).get("stopped")
        label = ("failed" if rec.get("status", "ok") != "ok" else "cap" if reason in CAP_STOPS
                 else "no training" if reason is None else reason.replace("-", " "))
        counts[label] = counts.get(label, 0) + 1
    text = ", ".join(f"{label} {n}" for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    trained = sum(n for label, n in counts.items() if label not in ("no training", "failed"))
    if share and trained:
        text += f"; {(trained - counts.get('cap', 0)) / trained:.0%} not on a cap"
    return text or "–"


def compute_rows(c: Campaign, results_dir: Path) -> Rows:
    """The compute bill per stage and method: CPU hours (every resumed segment included), summed
    cell time, cells on a GPU, and each stage's elapsed time; a cell shared by two stages is
    billed to the first."""
    from datetime import datetime

    latest = records.latest_by_cell(results_dir)
    seen: set[str] = set()
    body, spans, total = [], [], {"cells": 0, "cpu": 0.0, "summed": 0.0, "gpu": 0}

    def hours(seconds: float) -> str:
        return f"{seconds / 3600:.2f}"

    def elapsed_of(times) -> str:
        return hours((max(t[1] for t in times) - min(t[0] for t in times)).total_seconds()) if times else "–"

    def running_of(times) -> str:
        return hours(seconds_running(times)) if times else "–"

    for name in STAGES:
        try:
            cells = stage_cells(c, name, results_dir, ready_only=True)  # `campaign` runs cells as they are ready
        except HashbenchError:
            continue
        recs = [rec for cell in cells if (rec := latest.get(cell.config_hash())) is not None
                and cell.config_hash() not in seen]
        seen.update(cell.config_hash() for cell in cells)
        times = [(datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
                 for r in recs if "started_at" in r and "finished_at" in r]
        spans.extend(times)
        for method in dict.fromkeys(r["method"] for r in recs):
            mine = [r for r in recs if r["method"] == method]
            body.append([name, method, str(len(mine)), stop_reasons(mine),
                         hours(sum(billed_cpu_seconds(r) for r in mine)), hours(sum(billed_seconds(r) for r in mine)), "", "",
                         str(sum(1 for r in mine if on_gpu(r)))])
        stage = {"cells": len(recs), "cpu": sum(billed_cpu_seconds(r) for r in recs),
                 "summed": sum(billed_seconds(r) for r in recs), "gpu": sum(1 for r in recs if on_gpu(r))}
        body.append([name, "all", str(stage["cells"]), stop_reasons(recs, share=True), hours(stage["cpu"]),
                     hours(stage["summed"]), running_of(times), elapsed_of(times), str(stage["gpu"])])
        total = {k: total[k] + stage[k] for k in total}
    body.append(["total", "", str(total["cells"]), "", hours(total["cpu"]), hours(total["summed"]), running_of(spans),
                 elapsed_of(spans), str(total["gpu"])])
    return (["stage", "method", "cells", "stopped by", "CPU h", "cell h (train + eval, summed)", "running h",
             "elapsed h", "on GPU"], body)


def unshown_files(c: Campaign, results_dir: Path) -> list[Path]:
    """The codes and per-user files that no table reads, which `campaign --prune` deletes: those
    of the tuning trials that are not their study's leader, finished or not (losing_trial_files;
    Table 3 shows their records' validation metrics), and, at the campaign's code length on its
    datasets and split, those of runs that are neither in Table 1 (it shows, per row, the
    converged campaign's configuration once one of its seeds is recorded, else the configuration
    with most seeds) nor a campaign cell. Records always stay, and every file stays in
    the git history of the commit that added it: results/ must stay small enough to travel (a
    borrowed GPU takes a working tree of at most 64 MiB)."""
    from hashbench.campaign import losing_trial_files, ready_cells

    cells = ready_cells(c, results_dir)
    protocols = {cell.protocol for cell in cells}
    finals = final_hashes(c, results_dir)
    selection = Selection(tuning_only(c, results_dir, finals), finals)
    keep = {r["config_hash"] for protocol in protocols
            for r in select_records(results_dir, c.bits, protocol, list(c.datasets), selection)}
    keep |= {cell.config_hash() for cell in cells}
    # a trial carries its ranking variants' records (bgch-scaled's of a bgch trial): the leader's
    # become the variant row's seed-0 cell if it wins (the others' go with losing_trial_files)
    keep |= {replace(cell, method=v).config_hash() for cell in cells if cell.trial is not None
             for v in c.methods if method_spec(v).based_on == cell.method}
    losing = set(losing_trial_files(c, results_dir))
    out, kept = set(losing), set()
    for config_hash, rec in records.latest_by_cell(results_dir).items():
        files = {f for k in ("codes_file", "per_user_file") if rec.get(k) and records.is_record_file(rec[k])
                 and (f := Path(results_dir) / rec[k]).is_file()}
        if files <= losing:  # a lost trial's (or no file left)
            continue
        if config_hash in keep or rec.get("bits") != c.bits or rec.get("protocol") not in protocols \
                or rec.get("dataset") not in c.datasets:
            kept |= files
            continue
        out |= files
    return sorted(out - kept)  # a file a kept record also names (an older run's same file name) stays



def in_git_history(files: list[Path], results_dir: Path) -> tuple[list[Path], list[Path]]:
    """(files committed as they are now, the others): prune's promise that a deleted file stays
    in the git history holds only for the first. A file not committed yet (a cell recorded this
    session) or changed since, or any file outside a git work tree, is not safe to delete."""
    import subprocess

    def git(*args: str) -> set[Path] | None:
        try:
            out = subprocess.run(["git", "-C", str(results_dir), *args, "-z"], capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        if out.returncode != 0:
            return None
        return {(Path(results_dir) / name).resolve() for name in out.stdout.decode().split("\0") if name}

    tracked = git("ls-files")
    changed = git("diff", "--name-only", "--relative", "HEAD")
    if tracked is None or changed is None:  # not a git work tree, or no commit yet
        return [], list(files)
    safe = tracked - changed
    return [f for f in files if f.resolve() in safe], [f for f in files if f.resolve() not in safe]


def provenance_note(c: Campaign, table: Table, finals: frozenset[str]) -> str:
    """Which Table 1 rows are already the converged campaign's final cells, which are still
    earlier runs (select_records swaps a row over at its first final seed), and which are no
    campaign row at all."""
    status: dict[str, dict[str, str]] = {}
    for (method, d), recs in table.records.items():
        n = sum(r["config_hash"] in finals for r in recs)
        status.setdefault(method, {})[d] = ("outside" if method not in c.methods else "final" if n >= c.seeds
                                            else "interim" if n == 0 else f"final, {n} of {c.seeds} seeds")
    groups: dict[str, list[str]] = {}
    for method in table.rows:
        per = status.get(method, {})
        if len(set(per.values())) == 1 and len(per) == len(table.datasets):
            groups.setdefault(next(iter(per.values())), []).append(method)
            continue
        for d, state in per.items():
            groups.setdefault(state, []).append(f"{method} on {d}")
    if set(groups) == {"final"}:
        return "Every row is the converged campaign's final cells (campaign.toml)."
    parts = []
    if groups.get("final"):
        parts.append("the campaign's final cells (campaign.toml): " + ", ".join(groups["final"]))
    for state, rows in groups.items():
        if state.startswith("final, "):
            parts.append(f"its final cells so far ({state[7:]}): " + ", ".join(rows))
    if groups.get("interim"):
        parts.append("interim, earlier runs of the row (their parameters and stop reasons are in their records) "
                     "until the campaign's final stage records it: " + ", ".join(groups["interim"]))
    if groups.get("outside"):
        parts.append("not in the campaign: " + ", ".join(groups["outside"]))
    return "Rows: " + "; ".join(parts) + "."


def final_hashes(c: Campaign, results_dir: Path) -> frozenset[str]:
    """The config hashes of the final cells whose tuning is finished (recorded or not)."""
    from hashbench.campaign import final_cells

    return frozenset(cell.config_hash() for cell in final_cells(c, results_dir, ready_only=True))


def tuning_only(c: Campaign, results_dir: Path, finals: frozenset[str] | None = None) -> frozenset[str]:
    """The recorded tuning trials (a variant's rankings of them included) that are no final cell:
    every trial but each finished study's winner."""
    finals = final_hashes(c, results_dir) if finals is None else finals
    return frozenset(h for h, rec in records.latest_by_cell(results_dir).items() if "tuning" in rec and h not in finals)

