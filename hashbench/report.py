"""Tables from results/runs.jsonl: Table 1 (methods × datasets × metrics) and Table 2 (data).

Rows are methods, column groups datasets, cells mean ± std over seeds. The best hashing
row of each column is bold and the second underlined, as in the paper; float reference rows
(not hashing) are listed after a rule and never marked. Published numbers appear in their
own block, labelled as the paper's.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

from tabulate import tabulate

from hashbench import protocol_effects, records
from hashbench.deviations import deviation_lines
from hashbench.errors import HashbenchError
from hashbench.splits import DEFAULT_PROTOCOL
from hashbench.tables import (CAP_NOTE, MAIN_METRICS, ORDER, RETRIEVED_METRICS, Cell, Selection, Table, cap_marker,
                              fits_a_column, latex_table, latex_text, load_published, page_chunks, published_values,
                              select_records, short, strip_number, text_columns)

FORMATS = ("markdown", "latex", "csv")


def build_table(results_dir: Path, bits: int = 64, protocol: str = DEFAULT_PROTOCOL,
                metrics: tuple[str, ...] = MAIN_METRICS, split: str = "test", datasets: list[str] | None = None,
                selection: Selection = Selection()) -> Table:
    """Table 1's rows from the records (select_records; `selection`: see table_selection)."""
    recs = select_records(results_dir, bits, protocol, datasets, selection)
    if not recs:
        hint = ("; synthetic results are left out of the paper's tables: add --datasets synthetic to see them"
                if datasets is None and select_records(results_dir, bits, protocol, ["synthetic"]) else
                "; run `hashbench run` first")
        raise HashbenchError(f"no finished runs with {bits} bits and protocol {protocol} in {results_dir}{hint}")
    datasets = sorted({r["dataset"] for r in recs}, key=lambda d: (d == "synthetic", d))
    rows: dict[str, dict] = {}
    hashing = {}
    by_cell: dict[tuple[str, str], list[dict]] = {}
    for r in recs:
        hashing[r["method"]] = r.get("hashing", True)
        by_cell.setdefault((r["method"], r["dataset"]), []).append(r)
        for m in metrics:
            value = r["metrics"][split].get(m)
            if value is not None:
                rows.setdefault(r["method"], {}).setdefault((r["dataset"], m), Cell([])).values.append(value)
    # the paper's NDCG most likely is the hits-based variant (methods.md E1): its N values go under
    # our N* columns (ndcg_retrieved@K) only, never under standard NDCG
    as_ours = {m.replace("ndcg_retrieved", "ndcg") if m.startswith("ndcg_retrieved") else m: m for m in metrics
               if not m.startswith("ndcg@")}
    published = {method: {(d, as_ours[m]): v for (d, m), v in per.items() if d in datasets and m in as_ours}
                 for method, per in published_values().items()} if bits == 64 and protocol == DEFAULT_PROTOCOL else {}
    published = {k: v for k, v in published.items() if v and k in rows}  # no paper rows for methods not run
    order = sorted(rows, key=lambda m: (not hashing[m], ORDER.index(m) if m in ORDER else len(ORDER), m))
    return Table(datasets, metrics, {m: rows[m] for m in order}, hashing, published, by_cell)


def add_significance(table: Table, results_dir: Path) -> None:
    """For every column: the best hashing row against each other row, paired over users, Holm-corrected."""
    from hashbench.significance import compare_to_best

    marks = ranks(table)
    for d in table.datasets:
        for m in table.metrics:
            best = next((method for (method, dd, mm), place in marks.items() if place == 1 and (dd, mm) == (d, m)), None)
            if best is None:
                continue
            family = {method: table.records[(method, d)] for method in table.rows if (method, d) in table.records}
            table.tests[(d, m)] = (best, compare_to_best(results_dir, family, best, m))


def ranks(table: Table) -> dict[tuple[str, str, str], int]:
    """(method, dataset, metric) -> 1 for best, 2 for second, among hashing rows."""
    marks = {}
    for d in table.datasets:
        for m in table.metrics:
            scored = sorted(((row[(d, m)].mean, method) for method, row in table.rows.items()
                             if table.hashing[method] and (d, m) in row), reverse=True)
            for place, (_, method) in enumerate(scored[:2], 1):
                marks[(method, d, m)] = place
    return marks


def _fmt(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    return f"{cell.mean:.4f}" if math.isnan(cell.std) else f"{cell.mean:.4f} ± {cell.std:.4f}"


def _label(table: Table, method: str) -> str:
    # a row may say what it is beyond "not hashing" (bgch-scaled: real-valued scales)
    mark = next(((r.get("extras") or {}).get("row_mark") for (m, _), recs in table.records.items() if m == method
                 for r in recs if (r.get("extras") or {}).get("row_mark")), None)
    if mark:
        return f"{method} ({mark})"
    return method if table.hashing[method] else f"{method} (not hashing)"


def _grid(table: Table, bold, underline, paper_label, datasets: list[str] | None = None,
          text=lambda t: t) -> tuple[list[str], list[list[str]]]:
    """Header and rows; `text` turns plain text into the output format (escaping) before marks are added."""
    marks = ranks(table)
    datasets = table.datasets if datasets is None else datasets
    header = ["method"] + [f"{d} {short(m)}" for d in datasets for m in table.metrics]
    body = []
    for method, row in table.rows.items():
        cells = []
        for d in datasets:
            for m in table.metrics:
                value = text(_fmt(row.get((d, m))) + (cap_marker(table.records.get((method, d), []))
                                                      if (d, m) in row else ""))
                place = marks.get((method, d, m))
                value = bold(value) if place == 1 else underline(value) if place == 2 else value
                test = table.tests.get((d, m), (None, {}))[1].get(method)
                if test is not None and not test.significant:
                    value += text(" ≈")  # not significantly different from the column's best; outside the marks
                cells.append(value)
        body.append([text(_label(table, method))] + cells)
    for method, values in table.published.items():
        body.append([text(paper_label(method))] + [text(f"{values[(d, m)]:.4f}" if (d, m) in values else "–")
                                                   for d in datasets for m in table.metrics])
    return header, body


def render_markdown(table: Table, title: str) -> str:
    header, body = _grid(table, lambda t: f"**{t}**", lambda t: f"<u>{t}</u>", lambda m: f"{m} — paper's number")
    return f"{title}\n\n" + tabulate(body, header, tablefmt="github", disable_numparse=True)


# a table* in a two-column paper holds a method column and about four "0.1234 ± 0.0012" columns
MAX_LATEX_COLUMNS = 4


def latex_label(kind: str, dataset: str | None = None) -> str:
    return f"tab:{kind}" + (f"-{re.sub(r'[^a-z0-9]+', '-', dataset.lower())}" if dataset else "")


# beside four "0.1234 ± 0.0012" columns a table* has room for a method label of about this many characters
METHOD_LABEL_CHARS = 30


def _method_column(body: list[list[str]]) -> str:
    """A label longer than the room (bgch-scaled's "real-valued scales, not pure Hamming") wraps
    as a paragraph instead of pushing the numbers into the margin."""
    longest = max((len(row[0]) for row in body), default=0)
    return "l" if longest <= METHOD_LABEL_CHARS else r"p{0.22\textwidth}"


def render_latex(table: Table, caption: str, kind: str, refs: dict[str, str]) -> str:
    """One table* per group of datasets that fits a page (Table 1: one per dataset); the first
    carries the caption, the others point back to it."""
    per_table = max(1, MAX_LATEX_COLUMNS // len(table.metrics))
    groups = [table.datasets[i:i + per_table] for i in range(0, len(table.datasets), per_table)]
    first = latex_label(kind, groups[0][0])
    parts = []
    n_ours = len(table.rows)
    reference_at = next((i for i, m in enumerate(table.rows) if not table.hashing[m]), None)
    for group in groups:
        _, body = _grid(table, lambda t: rf"\textbf{{{t}}}", lambda t: rf"\underline{{{t}}}",
                        lambda m: f"{m} (paper)", group, latex_text)
        n = len(table.metrics)
        top = (" & " + " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{latex_text(d)}}}" for d in group) + r" \\" + "\n"
               + "".join(rf"\cmidrule(lr){{{2 + i * n}-{1 + (i + 1) * n}}}" for i in range(len(group))))
        header = ["Method"] + [latex_text(short(m)) for _ in group for m in table.metrics]
        text = latex_text(caption, refs) if group is groups[0] else (
            rf"As Table~\ref{{{first}}}, on {latex_text(', '.join(group))}.")
        rules = tuple(i for i in (reference_at, n_ours if table.published else None) if i)
        parts.append(latex_table(header, body, text, latex_label(kind, group[0]),
                                 _method_column(body) + "c" * n * len(group), wide=True, rules_before=rules, top=top))
    return "\n\n".join(parts)


def render_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["source", "method", "dataset", "metric", "mean", "std", "seeds"])
    for method, row in table.rows.items():
        for (d, m), cell in row.items():
            writer.writerow(["hashbench", method, d, m, f"{cell.mean:.6f}",
                             "" if math.isnan(cell.std) else f"{cell.std:.6f}", len(cell.values)])
    for method, values in table.published.items():
        for (d, m), v in values.items():
            writer.writerow(["paper", method, d, m, v, "", ""])
    writer.writerows(protocol_effects.csv_rows(table.records))
    return out.getvalue()


def dataset_rows(results_dir: Path, datasets: list[str]) -> list[list]:
    seen = {}
    for rec in records.latest_by_cell(results_dir).values():
        if rec.get("status") == "ok" and "dataset_stats" in rec and rec["dataset"] in datasets:
            seen[rec["dataset"]] = rec["dataset_stats"]
    return [[s["dataset"], f"{s['users']:,}", f"{s['items']:,}", f"{s['interactions']:,}",
             f"{100 * s['density']:.3f}%"] for _, s in sorted(seen.items())]


def table_section(title: str, rows, fmt: str, label: str = "", refs: dict[str, str] | None = None) -> str:
    header, body = rows
    if fmt == "markdown":
        return f"### {title}\n\n" + tabulate(body, header, tablefmt="github", disable_numparse=True)
    _, caption = strip_number(title)
    short_header, notes = [], []
    for h in header:  # a header's explanation goes to the caption, so the column stays narrow
        match = re.fullmatch(r"(.+?) \((.+)\)", h)
        short_header.append(match.group(1) if match else h)
        if match:
            notes.append(f"{match.group(1)}: {match.group(2)}")
    if notes:
        caption = caption.rstrip(".") + "; " + "; ".join(notes) + "."
    header_tex, align = [latex_text(h) for h in short_header], text_columns(short_header, body)
    wide = not fits_a_column(short_header, body)
    chunks = page_chunks(body, len(caption))
    tables = []
    for i, chunk in enumerate(chunks):  # a float taller than a page runs off its foot: one float per page
        text = latex_text(caption, refs) if i == 0 else rf"As Table~\ref{{{label}}}, continued ({i + 1} of {len(chunks)})."
        tables.append(latex_table(header_tex, [[latex_text(c, refs) for c in row] for row in chunk], text,
                                  label if i == 0 else f"{label}-{i + 1}", align, wide=wide))
    return "\n\n".join(tables)


LABELS = {"2": "tab:datasets", "3": "tab:tuning", "4": "tab:ablation", "5": "tab:bits-sweep", "6": "tab:compute",
          "7": "tab:protocol-recall", "8": "tab:protocol-ndcg"}
def latex_refs(main: Table) -> dict[str, str]:
    """Table number in the text -> its \\label: LaTeX numbers the tables, the captions refer by label."""
    first = main.datasets[0]
    return {"1": latex_label("results", first), "1b": latex_label("ndcg-retrieved", first),
            "1c": latex_label("significance", first), **LABELS}


SIGNIFICANCE = ("Table 1c: Holm-adjusted p-values of paired two-sided Wilcoxon signed-rank tests over users (each "
                "user's value averaged over the seeds both methods have) of every row against the best hashing "
                "method of the column, Holm-corrected per column; n.s.: p ≥ 0.05, marked ≈ in Table 1 (two-sided: "
                "the direction is that of the means in Table 1); –: no per-user results")


def in_table_order(main: Table) -> dict[tuple[str, str], list[dict]]:
    """main.records ordered as Table 1 reads: by dataset, then by row (records arrive in the order
    they were made, which means nothing to a reader)."""
    rows = list(main.rows)

    def position(cell: tuple[str, str]) -> tuple[int, int, str]:
        method, dataset = cell
        index = main.datasets.index(dataset) if dataset in main.datasets else len(main.datasets)
        return index, rows.index(method) if method in rows else len(rows), method

    return {cell: main.records[cell] for cell in sorted(main.records, key=position)}


def campaign_sections(results_dir: Path, main: Table, alt: Table, fmt: str, campaign=None,
                      plot: Path | None = None) -> list[str]:
    """Significance, deviations, and (with a campaign spec) tuning, ablation, bits sweep, compute."""
    from hashbench import campaign_report as cr

    refs = latex_refs(main) if fmt == "latex" else {}
    parts = []
    if main.tests and fmt == "markdown":
        parts.append(table_section(SIGNIFICANCE, cr.significance_rows(main), fmt))
    elif main.tests:  # one table per dataset, a column per metric: what fits a page
        for i, d in enumerate(main.datasets):
            caption = (strip_number(SIGNIFICANCE)[1] + f"; {d}." if i == 0 else
                       f"As Table 1c, on {d}.")
            parts.append(table_section(caption, cr.significance_rows(main, d), fmt, latex_label("significance", d),
                                  {**refs, "1c": latex_label("significance", main.datasets[0])}))
    lines = deviation_lines(main, alt) if main.published else []
    if lines:
        title = "Deviations from the papers' numbers (generated; threshold and causes in hashbench/deviations.toml)"
        if fmt == "markdown":
            parts.append(f"### {title}\n\n" + "\n".join(lines))
        else:
            items = "\n".join(r"\item " + latex_text(l[2:].replace("**", ""), refs) for l in lines)
            parts.append("\n".join([rf"\paragraph{{{latex_text(title)}}}", r"\begin{itemize}", items,
                                    r"\end{itemize}"]))
    if protocol_effects.has_evidence(main.records):
        by_cell = in_table_order(main)
        # the paper's own N beside "all", which includes the hits-based IDCG
        paper = {m: v for m, v in published_values().items() if m in main.rows} if main.published else {}
        for number, metric in (("7", "recall@50"), ("8", "ndcg@50")):
            title = protocol_effects.title(number, metric, list(main.rows))
            if fmt == "markdown":
                parts.append(table_section(title, protocol_effects.effect_rows(by_cell, metric, paper), fmt))
                continue
            for i, d in enumerate(main.datasets):  # one table per dataset: what fits a page
                caption = title + f"; {d}." if i == 0 else f"As Table {number}, on {d}."
                parts.append(table_section(caption, protocol_effects.effect_rows(by_cell, metric, paper, d),
                                      fmt, LABELS[number] + ("" if i == 0 else f"-{d}"), refs))
    if campaign is None:
        return parts
    tuning = cr.tuning_rows(campaign, results_dir)
    not_drawn = any(row[1].endswith(cr.NOT_DRAWN_MARK) for row in tuning[1])
    parts.append(table_section(f"Table 3: tuning on the validation split of each of {', '.join(campaign.tune_datasets)}, "
                          f"seed {campaign.tune_seed}: {campaign.trials} trials per method and dataset, Optuna "
                          f"{campaign.sampler.upper()} sampler (defaults first, then {campaign.startup_trials - 1} "
                          f"random draws) with a {campaign.pruner} pruner, over "
                          "the search space declared beside each method (campaign.toml, method TOML files): "
                          + cr.tuning_spaces(campaign) + ". Chosen: ✓ the winner of a finished study (its "
                          "configuration is its row's final cells'); leads: the best complete trial of a study still running"
                          + (f"; {cr.NOT_DRAWN_NOTE}" if not_drawn else ""),
                          tuning, fmt, LABELS["3"], refs))
    for number, title, make in (
            ("4", f"Table 4: gradient-estimator ablation, {campaign.ablation_method} on {campaign.ablation_dataset}, "
                  f"{campaign.bits} bits, seed 0", lambda: cr.ablation_rows(campaign, results_dir)),
            ("5", f"Table 5: bits sweep on {campaign.sweep_dataset}, seed 0 ({cr.sweep_methods(campaign, results_dir)})",
             lambda: _sweep(cr, campaign, results_dir, plot)),
            ("6", "Table 6: what the campaign cost on this machine, per stage and method, and why its cells "
                  "stopped (patience: validation stopped improving; pruned: the tuning pruner ended a trial below "
                  "its study's median; cap: the epoch, time or iteration budget; the stage's share of trained "
                  "cells that did not stop on a cap; h: hours; CPU h: every "
                  "process that trained or evaluated a cell, killed-and-resumed segments included; for a cell "
                  "resumed before that count was recorded, its busy time × threads where larger; running h: the wall "
                  "time during which at least one of the stage's cells was in flight, from each cell's start (a resumed "
                  "cell's last start: a lower bound) to its finish, so the hours between working sessions are left "
                  "out; elapsed h: first start to "
                  "last finish, which counts them, and records reused from the first campaign; a cell of two "
                  "stages is billed to the first: a study's winning trial is also its row's seed-0 final cell, "
                  "so the final stage counts one cell fewer for each tuned row and dataset)",
             lambda: cr.compute_rows(campaign, results_dir))):
        try:
            parts.append(table_section(title, make(), fmt, LABELS[number], refs))
            if number == "5" and plot is not None and plot.exists():  # drawn just now by _sweep
                parts[-1] += f"\n\n![Recall@50 against code length]({plot.name})"
        except HashbenchError as exc:
            parts.append(f"{title}: not available yet ({exc})." if fmt == "markdown" else "")
    return [p for p in parts if p]


def _sweep(cr, campaign, results_dir: Path, plot: Path | None):
    rows, curves = cr.sweep_rows(campaign, results_dir)
    if plot is not None and any(len(points) > 1 for points in curves.values()):  # a line, not a lone point
        cr.plot_sweep(curves, campaign.sweep_dataset, plot)
    return rows


def figure_links(figures) -> str:
    """Markdown image links (figures.Figure: title, path, caption) with their captions, for the
    figures drawn beside the report (same folder); skipped ones (no path) are left out."""
    return "\n\n".join(f"![{f.title}]({f.path.name})\n\nFigure {i}: {f.caption}"
                         for i, f in enumerate((f for f in figures if f.path is not None), 1))


def table_selection(results_dir: Path, campaign=None) -> Selection:
    """What Table 1 leaves out and prefers (tables.Selection). Left out: a campaign's tuning
    trials that are no final cell. A trial is a run of one configuration among several being
    tried; only the winner's is a result (it is the seed-0 run of its row), and a ranking
    variant's row must not show a losing trial. Preferred: the final cells."""
    if campaign is None:
        return Selection()
    from hashbench import campaign_report

    finals = campaign_report.final_hashes(campaign, results_dir)
    return Selection(campaign_report.tuning_only(campaign, results_dir, finals), finals)


def render_report(results_dir: Path, fmt: str = "markdown", bits: int = 64, protocol: str = DEFAULT_PROTOCOL,
                  campaign=None, plot: Path | None = None, datasets: list[str] | None = None,
                  figures=(), campaign_tables: bool = True) -> str:
    """The report in `fmt`; `figures` (markdown only): figures.Figure drawn beside it, linked under Table 1.
    `campaign` decides Table 1's rows (table_selection) and, with `campaign_tables`, adds its Tables 3-6."""
    if fmt not in FORMATS:
        raise HashbenchError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    selection = table_selection(results_dir, campaign)
    if fmt == "csv":  # one file with every metric: the paper's N values sit beside our N* (ndcg_retrieved)
        return render_csv(build_table(results_dir, bits, protocol, MAIN_METRICS + RETRIEVED_METRICS,
                                      datasets=datasets, selection=selection))
    main = build_table(results_dir, bits, protocol, datasets=datasets, selection=selection)
    add_significance(main, results_dir)
    caption = (f"Table 1: test Recall@K (R) and NDCG@K (N), {bits}-bit codes, {protocol} split, tie-exact "
               "Hamming ranking; mean ± std over seeds. Best hashing row bold, second underlined; ≈: not "
               "significantly different from the best (Table 1c). " + CAP_NOTE
               + (" The paper's rows give its Recall only: its N values most likely use the hits-based IDCG and "
                  "stand beside our N* in Table 1b." if main.published else ""))
    if campaign is not None and bits == campaign.bits and protocol == DEFAULT_PROTOCOL:
        from hashbench.campaign_report import provenance_note

        caption += " " + provenance_note(campaign, main, selection.prefer)
    stats_header = ["dataset", "users", "items", "interactions", "density"]
    stats = dataset_rows(results_dir, main.datasets)
    alt = build_table(results_dir, bits, protocol, RETRIEVED_METRICS, datasets=datasets, selection=selection)
    alt_caption = ("Table 1b: NDCG with the hits-based IDCG of the BGCH/HashGNN code (non-standard, N*), "
                   "the variant the paper's N columns most likely use. Our N*@K counts the hits in the top K; "
                   "HashGNN's code counts those in its top-100 list and BGCH's in its top-max_k list, never "
                   "fewer, so N*@100 is HashGNN's own and N*@50 an upper bound of both codes' N@50.")
    extra = campaign_sections(results_dir, main, alt, fmt, campaign if campaign_tables else None, plot)
    if fmt == "markdown":
        links = figure_links(figures)
        parts = [render_markdown(main, f"### {caption}"), *([links] if links else []),
                 "### Table 2: datasets\n\n" + tabulate(stats, stats_header, tablefmt="github", disable_numparse=True),
                 render_markdown(alt, f"### {alt_caption}")]
        if main.published:
            parts.append(f"Paper's numbers: {load_published()[0]}.")
        return "\n\n".join(parts + extra) + "\n"
    refs = latex_refs(main)
    stats_tex = latex_table([latex_text(h) for h in stats_header], [[latex_text(c) for c in row] for row in stats],
                            "dataset statistics", LABELS["2"])
    return "\n\n".join([render_latex(main, strip_number(caption)[1], "results", refs), stats_tex,
                         render_latex(alt, strip_number(alt_caption)[1], "ndcg-retrieved", refs), *extra]) + "\n"
