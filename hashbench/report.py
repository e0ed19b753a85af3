"""Tables from results/runs.jsonl: Table 1 (methods × datasets × metrics) and Table 2 (data).

Rows are methods, column groups datasets, cells mean ± std over seeds. The best hashing
row of each column is bold and the second underlined, as in the paper; float reference rows
(not hashing) are listed after a rule and never marked. Published numbers appear in their
own block, labelled as the paper's.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tabulate import tabulate

from hashbench import records
from hashbench.errors import HashbenchError

FORMATS = ("markdown", "latex", "csv")
MAIN_METRICS = ("recall@50", "recall@100", "ndcg@50", "ndcg@100")
RETRIEVED_METRICS = ("ndcg_retrieved@50", "ndcg_retrieved@100")
SHORT = {"recall": "R", "ndcg": "N", "ndcg_retrieved": "N*", "recall_micro": "Rµ"}
# the paper's row order first; anything else alphabetically after
ORDER = ("proposed", "bgch", "hashgnn", "hashrec", "ccsr", "dcf", "lsh", "mostpop", "lightgcn")


# why a trained cell stopped (records' extras.stopped): these are safety-net caps, not convergence
CAP_STOPS = ("epochs", "time", "max_iters")
CAP_MARK = "†"
CAP_NOTE = (f"{CAP_MARK}: at least one seed stopped on its epoch or time cap, not by patience "
            "(its validation score may still have been improving).")


def stopped_on_cap(record: dict) -> bool:
    """True when a trained cell's training ended on an epoch/time cap instead of patience."""
    return (record.get("extras") or {}).get("stopped") in CAP_STOPS


def cap_marker(records_: list[dict]) -> str:
    """CAP_MARK when any of a cell's seeds stopped on a cap, else ''."""
    return CAP_MARK if any(stopped_on_cap(r) for r in records_) else ""


def short(metric: str) -> str:
    name, k = metric.split("@")
    return f"{SHORT.get(name, name)}@{k}"


@dataclass
class Cell:
    values: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else math.nan


@dataclass
class Table:
    datasets: list[str]
    metrics: tuple[str, ...]
    rows: dict[str, dict[tuple[str, str], Cell]]  # method -> (dataset, metric) -> Cell
    hashing: dict[str, bool]
    published: dict[str, dict[tuple[str, str], float]]
    records: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # (method, dataset) -> seeds' records
    # (dataset, metric) -> (best hashing method, {other method: Comparison}); filled by add_significance
    tests: dict[tuple[str, str], tuple[str, dict]] = field(default_factory=dict)


def select_records(results_dir: Path, bits: int, protocol: str) -> list[dict]:
    """The ok records of each (method, dataset): of its configurations, the one with most seeds."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for rec in records.latest_by_cell(results_dir).values():
        if rec.get("status") != "ok" or rec["bits"] != bits or rec["protocol"] != protocol:
            continue
        config = json.dumps({k: rec[k] for k in ("params", "ks")}, sort_keys=True)
        groups.setdefault((rec["method"], rec["dataset"]), {}).setdefault(config, []).append(rec)
    chosen = []
    for configs in groups.values():
        best = max(configs.values(), key=lambda rs: (len(rs), max(r["finished_at"] for r in rs)))
        chosen.extend(best)
    return chosen


def load_published() -> tuple[str, dict]:
    data = tomllib.loads((Path(__file__).parent / "published.toml").read_text())
    return data.pop("source"), data


def build_table(results_dir: Path, bits: int = 64, protocol: str = "random-8-1-1",
                metrics: tuple[str, ...] = MAIN_METRICS, split: str = "test") -> Table:
    recs = select_records(results_dir, bits, protocol)
    if not recs:
        raise HashbenchError(f"no finished runs with {bits} bits and protocol {protocol} in {results_dir}; "
                             "run `hashbench run` first")
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
    _, pub = load_published()
    # the paper's NDCG most likely is the hits-based variant (methods.md E1): show it in that column
    as_ours = {m.replace("ndcg_retrieved", "ndcg"): m for m in metrics}
    published = {method: {(d, as_ours[m]): v for d, vals in per.items() if d in datasets
                          for m, v in vals.items() if m in as_ours}
                 for method, per in pub.items()} if bits == 64 and protocol == "random-8-1-1" else {}
    published = {k: v for k, v in published.items() if v}
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


def _grid(table: Table, bold, underline, paper_label) -> tuple[list[str], list[list[str]]]:
    marks = ranks(table)
    header = ["method"] + [f"{d} {short(m)}" for d in table.datasets for m in table.metrics]
    body = []
    for method, row in table.rows.items():
        cells = []
        for d in table.datasets:
            for m in table.metrics:
                text = _fmt(row.get((d, m)))
                if (d, m) in row:
                    text += cap_marker(table.records.get((method, d), []))
                test = table.tests.get((d, m), (None, {}))[1].get(method)
                if test is not None and not test.significant:
                    text += " ≈"  # not significantly different from the column's best
                place = marks.get((method, d, m))
                cells.append(bold(text) if place == 1 else underline(text) if place == 2 else text)
        body.append([_label(table, method)] + cells)
    for method, values in table.published.items():
        body.append([paper_label(method)] + [f"{values[(d, m)]:.4f}" if (d, m) in values else "–"
                                             for d in table.datasets for m in table.metrics])
    return header, body


def render_markdown(table: Table, title: str) -> str:
    header, body = _grid(table, lambda t: f"**{t}**", lambda t: f"<u>{t}</u>", lambda m: f"{m} — paper's number")
    return f"{title}\n\n" + tabulate(body, header, tablefmt="github", disable_numparse=True)


def render_latex(table: Table, caption: str) -> str:
    esc = _esc

    header, body = _grid(table, lambda t: rf"\textbf{{{t}}}", lambda t: rf"\underline{{{t}}}",
                         lambda m: rf"{m} (paper)")
    n = len(table.metrics)
    lines = [r"\begin{table*}[t]", r"\centering", rf"\caption{{{esc(caption)}}}",
             r"\begin{tabular}{l" + ("c" * n) * len(table.datasets) + "}", r"\toprule",
             " & " + " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{esc(d)}}}" for d in table.datasets) + r" \\",
             "".join(rf"\cmidrule(lr){{{2 + i * n}-{1 + (i + 1) * n}}}" for i in range(len(table.datasets))),
             "Method & " + " & ".join(esc(short(m)) for _ in table.datasets for m in table.metrics) + r" \\",
             r"\midrule"]
    n_ours = len(table.rows)
    for i, row in enumerate(body):
        if i == n_ours and table.published:
            lines.append(r"\midrule")
        elif 0 < i < n_ours and table.hashing[list(table.rows)[i - 1]] and not table.hashing[list(table.rows)[i]]:
            lines.append(r"\midrule")
        lines.append(" & ".join(esc(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table*}"]
    return "\n".join(lines)


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
    return out.getvalue()


def dataset_rows(results_dir: Path) -> list[list]:
    seen = {}
    for rec in records.latest_by_cell(results_dir).values():
        if rec.get("status") == "ok" and "dataset_stats" in rec:
            seen[rec["dataset"]] = rec["dataset_stats"]
    return [[s["dataset"], f"{s['users']:,}", f"{s['items']:,}", f"{s['interactions']:,}",
             f"{100 * s['density']:.3f}%"] for _, s in sorted(seen.items())]


def _section(title: str, rows, fmt: str) -> str:
    header, body = rows
    if fmt == "markdown":
        return f"### {title}\n\n" + tabulate(body, header, tablefmt="github", disable_numparse=True)
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{_esc(title)}}}",
                      tabulate(body, header, tablefmt="latex_booktabs", disable_numparse=True), r"\end{table}"])


def _esc(text: str) -> str:
    return (text.replace("±", r"$\pm$").replace("≈", r"$\approx$").replace("_", r"\_").replace("–", "--")
            .replace("%", r"\%").replace("✓", r"$\checkmark$").replace("β", r"$\beta$").replace("≥", r"$\geq$")
            .replace(CAP_MARK, r"$^\dagger$"))


def campaign_sections(results_dir: Path, main: Table, alt: Table, fmt: str, campaign=None,
                      plot: Path | None = None) -> list[str]:
    """Significance, deviations, and (with a campaign spec) tuning, ablation, bits sweep, compute."""
    from hashbench import campaign_report as cr

    parts = []
    if main.tests:
        parts.append(_section("Table 1c: Holm-adjusted p-values of paired two-sided Wilcoxon signed-rank tests "
                              "over users (each user's value averaged over the seeds both methods have) of every "
                              "row against the best hashing method of the column, Holm-corrected per column; "
                              "n.s.: p ≥ 0.05, marked ≈ in Table 1 (two-sided: the direction is that of the "
                              "means in Table 1); –: no per-user results",
                              cr.significance_rows(main), fmt))
    lines = cr.deviation_lines(main, alt) if main.published else []
    if lines:
        title = "Deviations from the papers' numbers (generated; threshold and causes in hashbench/deviations.toml)"
        if fmt == "markdown":
            parts.append(f"### {title}\n\n" + "\n".join(lines))
        else:
            items = "\n".join(r"\item " + _esc(l[2:].replace("**", "")) for l in lines)
            parts.append("\n".join([rf"\paragraph{{{_esc(title)}}}", r"\begin{itemize}", items, r"\end{itemize}"]))
    if campaign is None:
        return parts
    parts.append(_section(f"Table 3: tuning on the validation split of each of {', '.join(campaign.tune_datasets)}, "
                          f"seed {campaign.tune_seed}: {campaign.trials} trials per method and dataset, Optuna "
                          f"{campaign.sampler.upper()} sampler (defaults first) with a {campaign.pruner} pruner, over "
                          "the search space declared beside each method (campaign.toml, method TOML files)",
                          cr.tuning_rows(campaign, results_dir), fmt))
    for title, make in (
            (f"Table 4: gradient-estimator ablation, {campaign.ablation_method} on {campaign.ablation_dataset}, "
             f"{campaign.bits} bits, seed 0", lambda: cr.ablation_rows(campaign, results_dir)),
            (f"Table 5: bits sweep on {campaign.sweep_dataset}, seed 0 (Proposed and the two baselines with the "
             "best validation Recall@50)", lambda: _sweep(cr, campaign, results_dir, plot)),
            ("Table 6: what the campaign cost on this machine", lambda: cr.compute_rows(campaign, results_dir))):
        try:
            parts.append(_section(title, make(), fmt))
        except HashbenchError as exc:
            parts.append(f"{title}: not available yet ({exc})." if fmt == "markdown" else "")
    return [p for p in parts if p]


def _sweep(cr, campaign, results_dir: Path, plot: Path | None):
    rows, curves = cr.sweep_rows(campaign, results_dir)
    if plot is not None and curves:
        cr.plot_sweep(curves, campaign.sweep_dataset, plot)
    return rows


def render_report(results_dir: Path, fmt: str = "markdown", bits: int = 64, protocol: str = "random-8-1-1",
                  campaign=None, plot: Path | None = None) -> str:
    if fmt not in FORMATS:
        raise HashbenchError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    main = build_table(results_dir, bits, protocol)
    if fmt == "csv":
        return render_csv(main)
    add_significance(main, results_dir)
    caption = (f"Table 1: test Recall@K (R) and NDCG@K (N), {bits}-bit codes, {protocol} split, tie-exact "
               "Hamming ranking; mean ± std over seeds. Best hashing row bold, second underlined; ≈: not "
               "significantly different from the best (Table 1c). " + CAP_NOTE)
    stats_header = ["dataset", "users", "items", "interactions", "density"]
    stats = dataset_rows(results_dir)
    alt = build_table(results_dir, bits, protocol, RETRIEVED_METRICS)
    alt_caption = ("Table 1b: NDCG with the hits-based IDCG of the BGCH/HashGNN code (non-standard, N*), "
                   "the variant the paper's N columns most likely use.")
    extra = campaign_sections(results_dir, main, alt, fmt, campaign, plot)
    if fmt == "markdown":
        parts = [render_markdown(main, f"### {caption}"),
                 "### Table 2: datasets\n\n" + tabulate(stats, stats_header, tablefmt="github", disable_numparse=True),
                 render_markdown(alt, f"### {alt_caption}")]
        if main.published:
            parts.append(f"Paper's numbers: {load_published()[0]}.")
        return "\n\n".join(parts + extra) + "\n"
    stats_tex = "\n".join([r"\begin{table}[t]", r"\centering", r"\caption{Table 2: dataset statistics}",
                           r"\begin{tabular}{lrrrr}", r"\toprule", " & ".join(stats_header) + r" \\", r"\midrule",
                           *[" & ".join(row).replace("%", r"\%") + r" \\" for row in stats],
                           r"\bottomrule", r"\end{tabular}", r"\end{table}"])
    return "\n\n".join([render_latex(main, caption), stats_tex, render_latex(alt, alt_caption), *extra]) + "\n"
