"""What every table of the report is made of: a Table of per-seed values, which records it
shows (select_records), metric short names and the paper's published numbers. The report (report.py) and the campaign's sections
(campaign_report.py) both build on it, so neither imports the other back.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hashbench import records

MAIN_METRICS = ("recall@50", "recall@100", "ndcg@50", "ndcg@100")
RETRIEVED_METRICS = ("ndcg_retrieved@50", "ndcg_retrieved@100")
SHORT = {"recall": "R", "ndcg": "N", "ndcg_retrieved": "N*", "recall_micro": "Rµ"}
# the paper's row order first; anything else alphabetically after
ORDER = ("proposed", "bgch", "bgch-scaled", "hashgnn", "hashgnn-rerank", "hashrec", "ccsr", "dcf", "lsh", "mostpop",
         "lightgcn")  # (rows that are not pure Hamming, such as bgch-scaled, go in the lower block)


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


def load_published() -> tuple[str, dict]:
    data = tomllib.loads((Path(__file__).parent / "published.toml").read_text())
    return data.pop("source"), data


def published_values() -> dict[str, dict[tuple[str, str], float]]:
    """method -> (dataset, metric as the paper names it) -> the paper's number."""
    return {method: {(d, m): v for d, vals in per.items() for m, v in vals.items()}
            for method, per in load_published()[1].items()}


# --- LaTeX -----------------------------------------------------------------------------------
# Everything the report writes for LaTeX goes through latex_text (Unicode and special
# characters as LaTeX, nothing beyond booktabs needed) and latex_table (caption, \label).

_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$", ">": r"$>$",
    "±": r"$\pm$", "≈": r"$\approx$", "×": r"$\times$", "·": r"$\cdot$", "≥": r"$\geq$", "≤": r"$\leq$",
    "→": r"$\rightarrow$", "µ": r"$\mu$", "μ": r"$\mu$", "α": r"$\alpha$", "β": r"$\beta$", "γ": r"$\gamma$",
    "δ": r"$\delta$", "ε": r"$\epsilon$", "λ": r"$\lambda$", "σ": r"$\sigma$", "τ": r"$\tau$", "φ": r"$\phi$",
    "ψ": r"$\psi$", "ω": r"$\omega$", "–": "--", "—": "---", "§": r"\S{}", "✓": r"$\surd$", "…": r"\ldots{}",
    "‘": "`", "’": "'", "“": "``", "”": "''", "\u00a0": "~", "Δ": r"$\Delta$",
    "†": r"$^\dagger$", "‡": r"$^\ddagger$", "∈": r"$\in$",
}
_TABLE_REF = re.compile(r"\bTables? (1[bc]?|[2-8])\b")


def latex_text(text: str, refs: dict[str, str] | None = None) -> str:
    """Plain text as LaTeX: specials escaped, Unicode as commands; `Table 1c` as a \\ref when known."""
    out = "".join(_LATEX.get(ch, ch if ch.isascii() else _ascii(ch)) for ch in text)
    if refs:
        out = _TABLE_REF.sub(lambda m: rf"{m.group(0).split()[0]}~\ref{{{refs[m.group(1)]}}}" if m.group(1) in refs
                             else m.group(0), out)
    return out


def _ascii(ch: str) -> str:
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return latex_text(plain) if plain else "?"


def latex_table(header: list[str], body: list[list[str]], caption: str, label: str, align: str | None = None,
                wide: bool = False, rules_before: tuple[int, ...] = (), top: str = "") -> str:
    """A booktabs table; header, body and caption are LaTeX already (see latex_text)."""
    env = "table*" if wide else "table"
    # a page-wide table has the most columns: 3 pt a side buys Tables 7-8 their cap marks
    lines = [rf"\begin{{{env}}}[t]", r"\centering", r"\small", rf"\setlength{{\tabcolsep}}{{{3 if wide else 4}pt}}",
             rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{align or 'l' + 'r' * (len(header) - 1)}}}", r"\toprule"]
    if top:
        lines.append(top)
    lines += [" & ".join(header) + r" \\", r"\midrule"]
    for i, row in enumerate(body):
        if i in rules_before:
            lines.append(r"\midrule")
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\end{{{env}}}"]
    return "\n".join(lines)


def strip_number(title: str) -> tuple[str | None, str]:
    """'Table 1c: text' -> ('1c', 'text'): LaTeX numbers its tables itself."""
    match = re.match(r"Table (\w+): (.*)", title, re.S)
    return (match.group(1), match.group(2)) if match else (None, title)


COLUMN_CHARS = 48  # roughly what \small text fits across one column of a two-column page
LONG_TEXT_CHARS = 40  # a column this wide, of words, is wrapped rather than widening the table
TWO_NARROW_LINES_CHARS = 50  # text that wraps to at most two lines a quarter of the page wide


def _widths(header: list[str], body: list[list[str]]) -> list[int]:
    return [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]


def fits_a_column(header: list[str], body: list[list[str]]) -> bool:
    """Roughly: does a plain table fit one column of a two-column page?"""
    widths = _widths(header, body)
    return sum(widths) + 2 * len(widths) <= COLUMN_CHARS


def text_columns(header: list[str], body: list[list[str]]) -> str:
    """Left-aligned columns, except that a column of long text (a tuning trial's parameter list)
    wraps as a paragraph a third of the page wide (a quarter where two lines hold its longest
    cell: Table 6's stop reasons) instead of pushing the table into the margin. Columns of
    numbers never wrap: they cannot break, and a page holds eight of them."""
    def column(i: int) -> str:
        cells = [str(row[i]) for row in body]
        longest = max(map(len, cells), default=0)
        if longest <= LONG_TEXT_CHARS or not any(" " in c for c in cells):
            return "l"
        return r"p{0.25\textwidth}" if longest <= TWO_NARROW_LINES_CHARS else r"p{0.35\textwidth}"

    return "".join(column(i) for i in range(len(header)))


ROWS_PER_PAGE = 20  # rows of \small text that fit a page even when each wraps to two lines (parameter lists)
CAPTION_CHARS_PER_ROW = 100  # a long caption (Table 3's search spaces) takes a row's place per ~100 characters


def page_chunks(body: list[list[str]], caption_chars: int = 0) -> list[list[list[str]]]:
    """The rows in runs that fit a page each (the first page under a caption of `caption_chars`),
    cut only where the first column changes (a tuning study, a stage stays whole) unless such a
    run is itself longer than a page."""
    first = max(ROWS_PER_PAGE - caption_chars // CAPTION_CHARS_PER_ROW, 1)
    chunks: list[list[list[str]]] = [[]]
    for _, group in itertools.groupby(body, key=lambda row: row[0]):
        group = list(group)
        for start in range(0, len(group), ROWS_PER_PAGE):
            piece = group[start:start + ROWS_PER_PAGE]
            room = first if len(chunks) == 1 else ROWS_PER_PAGE
            if chunks[-1] and len(chunks[-1]) + len(piece) > room:
                chunks.append([])
            chunks[-1].extend(piece)
    return chunks


# why a trained cell stopped (records' extras.stopped): these are safety-net caps, not convergence
CAP_STOPS = ("epochs", "time", "max_iters")
CAP_MARK = "†"
PEAKED_CAP_MARK = "‡"
CAP_NOTE = (f"{CAP_MARK}: at least one seed stopped on its epoch or time cap, not by patience, with its "
            "validation score at its best at the cap or not recorded (it may still have been improving); "
            f"{PEAKED_CAP_MARK}: seeds stopped on a cap, each with its best validation point before its last "
            "(the cap fell while patience was still counting).")


def stopped_on_cap(record: dict) -> bool:
    """True when a trained cell's training ended on an epoch/time cap instead of patience."""
    return (record.get("extras") or {}).get("stopped") in CAP_STOPS


def _best_and_last(record: dict) -> tuple[int | None, int | None]:
    extras = record.get("extras") or {}
    curve = extras.get("curve") or []
    last = curve[-1].get("epoch") if curve and isinstance(curve[-1], dict) else extras.get("epochs_run")
    return extras.get("best_epoch"), last


def still_improving(record: dict) -> bool:
    """Whether a run's best validation point was its last one (a run stopped on a cap that had
    already peaked was not cut short by it)."""
    best, last = _best_and_last(record)
    return best is not None and best == last


def peaked_before_cap(record: dict) -> bool:
    """Whether the record shows its best validation point before its last one; a record without
    that evidence (first-campaign records) is not assumed to have peaked."""
    best, last = _best_and_last(record)
    return best is not None and last is not None and best < last


def cap_marker(records_: list[dict]) -> str:
    """CAP_MARK when a seed stopped on a cap possibly still improving, PEAKED_CAP_MARK when every
    capped seed had peaked before its cap, else ''."""
    capped = [r for r in records_ if stopped_on_cap(r)]
    if not capped:
        return ""
    return PEAKED_CAP_MARK if all(peaked_before_cap(r) for r in capped) else CAP_MARK


def paper_dataset(name: str) -> bool:
    """A real dataset: built-in generated ones (synthetic) stay out of the tables unless asked for."""
    from hashbench.specs import load_registry

    spec = load_registry().get(name)
    return spec is None or not spec.builtin


class Selection(NamedTuple):
    """What a campaign tells Table 1 about its records (config hashes): `exclude`, the tuning
    trials that are no final cell; `prefer`, the final cells, whose configuration is a row's as
    soon as one of its seeds is recorded (the converged campaign's number replaces a first
    campaign's, seed by seed)."""
    exclude: frozenset[str] = frozenset()
    prefer: frozenset[str] = frozenset()


def select_records(results_dir: Path, bits: int, protocol: str, datasets: list[str] | None = None,
                   selection: Selection = Selection()) -> list[dict]:
    """The ok records of each (method, dataset): of its configurations, a preferred one (see
    Selection), else the one with most seeds.

    `datasets`: which to tabulate; by default every real one (never the synthetic dataset)."""
    exclude, prefer = selection
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for rec in records.latest_by_cell(results_dir).values():
        if rec.get("status") != "ok" or rec.get("bits") != bits or rec.get("protocol") != protocol \
                or rec["config_hash"] in exclude:
            continue
        if not (rec["dataset"] in datasets if datasets is not None else paper_dataset(rec["dataset"])):
            continue
        config = json.dumps({k: rec.get(k) for k in ("params", "ks", "refit")}, sort_keys=True)
        groups.setdefault((rec["method"], rec["dataset"]), {}).setdefault(config, []).append(rec)
    chosen = []
    for configs in groups.values():
        # one record per seed: two cells can share a configuration and a seed (a first campaign's
        # plain run and the converged campaign's tuning trial with the same parameters), and a
        # seed counted twice would weigh twice in the mean; the latest is kept (it carries the
        # evidence the later code records)
        per_seed = [{r["seed"]: r for r in sorted(rs, key=lambda r: r["finished_at"])} for rs in configs.values()]
        best = max(per_seed, key=lambda seeds: (any(r["config_hash"] in prefer for r in seeds.values()), len(seeds),
                                                max(r["finished_at"] for r in seeds.values())))
        chosen.extend(best[seed] for seed in sorted(best))
    return chosen
