"""How much each paper's evaluation habit moves its numbers, measured on our own trained models.

The habits (methods.md E1–E4), each switched on alone and then all together:

- **test-epoch**: the epoch with the best *test* Recall@50 instead of the one validation chose
  (BGCH, BiGeaR, HashGNN code). From the test curve recorded at every validation point.
- **unmasked**: training (and validation) items left in the ranking (HashGNN code). From the
  selected model's test metrics with nothing excluded.
- **hits IDCG** (NDCG only): IDCG over the hits retrieved instead of min(K, |test|) (BGCH,
  BiGeaR, HashGNN code), over the hits of the list the row's released code retrieves
  (`released_code_ndcg_list` in its TOML: BGCH's top 1000, HashGNN's top 100; N*@50 as
  `ndcg_retrieved_top1000@50`, recorded in the evidence since it existed, "–" for a record
  made before), or of the top 50 for a row whose code declares none (`ndcg_retrieved@50`: the
  largest N* any list length gives), against `ndcg@50`.
- **real-valued**: real-valued scores at query time instead of pure Hamming (BGCH's α
  scales, HashGNN's continuous re-ranking of Hamming candidates): the method's ranking-variant
  row (registered `based_on` it: bgch-scaled, hashgnn-rerank) against the pure-Hamming row,
  paired by seed.
- **all**: every habit at once (the variant row's unmasked test curve at its best epoch, with
  the hits IDCG for NDCG), less those the row's released code is known not to have: its masked
  curve where the code masks training items (BGCH's, CIGAR's, LightGCN's:
  `released_code_masks_training` in its TOML), the standard NDCG where its code's is
  (LightGCN's: `released_code_standard_ndcg`); beside the paper's published number. For a row
  with no released code (Proposed's abstract, CCSR) every habit stays in: what an evaluation
  with all of them would add, not what its authors are known to have done.

All of it comes from the records' `protocol_evidence`, which training writes and never reads
(method_eval.protocol_evidence); records made before it existed show "–". Differences are
per seed, then mean ± std over the seeds; "all" is left out for a seed whose real-valued
ranking is not recorded (for a row that has one: it would not be every habit) or recorded over
part of the run only (added when its base resumed from a checkpoint), and for a refit,
whose recorded curve is its selection run's, another model. A seed without the metric (a run
with other cut-offs) is left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hashbench.errors import HashbenchError
from hashbench.evaluate import retrieved_key
from hashbench.params import MethodSpec
from hashbench.registry import method_names, method_spec
from hashbench.tables import cap_marker

METRICS = ("recall@50", "ndcg@50")


def based_on(method: str) -> str | None:
    """The method whose trained model `method` ranks its own way (None: it is no such variant,
    or no longer registered)."""
    try:
        return method_spec(method).based_on
    except HashbenchError:
        return None


def _curve(rec: dict) -> list[dict]:
    return (rec.get("protocol_evidence") or {}).get("curve") or []


def _at_best_test_epoch(rec: dict, which: str) -> dict[str, float] | None:
    """The `which` ("test" or "test_unmasked") metrics at the epoch whose `which` Recall@50 is best."""
    curve = [point for point in _curve(rec) if which in point]
    if not curve:
        return None
    return max(curve, key=lambda point: point[which]["recall@50"])[which]


def _ours(rec: dict, metric: str) -> float | None:
    return ((rec.get("metrics") or {}).get("test") or {}).get(metric)


def has_real_valued_ranking(method: str) -> bool:
    """Whether a registered row ranks `method`'s model with real-valued scores (bgch-scaled for bgch)."""
    return any(based_on(name) == method for name in method_names())


def hits_idcg_metric(metric: str, code_list: int | None) -> str:
    """The N* key of `metric` (ndcg@K) whose IDCG counts the hits of the released code's list."""
    k = int(metric.split("@")[1])
    return retrieved_key(k, code_list if code_list and code_list > k else k)


def habit_values(rec: dict, metric: str, scaled: dict | None, real_valued_ranking: bool = False,
                 code: MethodSpec | None = None) -> dict[str, float | None]:
    """One seed's metric under each habit (None where the record cannot say). `real_valued_ranking`:
    the method has a real-valued ranking row, so "all" needs its record `scaled` of this model;
    `code`: the row's spec, whose released_code_* fields say which habits its code is known not to
    have (it masks training items, or its NDCG is the standard one: "all" leaves those out) and
    the list whose hits its code's IDCG counts (None, or no spec: the top K)."""
    code_list = code.released_code_ndcg_list if code else None
    final = (rec.get("protocol_evidence") or {}).get("final") or {}
    star = hits_idcg_metric(metric, code_list) if metric.startswith("ndcg") else metric
    hits_idcg = None
    if metric.startswith("ndcg"):
        hits_idcg = (final.get("test") or {}).get(star)
        if hits_idcg is None and star == metric.replace("ndcg", "ndcg_retrieved"):
            hits_idcg = rec["metrics"]["test"].get(star)  # the top-K N* is in every record's metrics
    # a refit's curve is its selection run's: another model than the one `ours` measures
    best_test = None if rec.get("refit") else _at_best_test_epoch(rec, "test")
    values: dict[str, float | None] = {
        "ours": _ours(rec, metric),
        "test-epoch": best_test[metric] if best_test else None,
        "unmasked": final["test_unmasked"][metric] if "test_unmasked" in final else None,
        "hits IDCG": hits_idcg,
        "real-valued": _ours(scaled, metric) if scaled is not None else None,
    }
    every = None
    # a variant added when its base resumed from a checkpoint has a curve from that epoch on only:
    # its best test epoch would be the best of part of the run
    partial = scaled is not None and {p["epoch"] for p in _curve(scaled)} < {p["epoch"] for p in _curve(rec)}
    if not rec.get("refit") and not partial and (scaled is not None or not real_valued_ranking):
        every = _at_best_test_epoch(scaled if scaled is not None else rec,
                                    "test" if code and code.released_code_masks_training else "test_unmasked")
    values["all"] = (every or {}).get(metric if code and code.released_code_standard_ndcg else star)
    return values


def measured(recs: list[dict], metric: str) -> list[dict]:
    """The records a row's "ours" counts: those that measured `metric` (their cap marks are the row's)."""
    return [r for r in recs if _ours(r, metric) is not None]


HABITS = ("test-epoch", "unmasked", "hits IDCG", "real-valued", "all")


def effects(by_cell: dict[tuple[str, str], list[dict]], metric: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(method, dataset) -> {"ours": [per seed], habit: [per-seed change], "together": [per-seed
    value under all habits, for the seeds that have "all"]} for the pure rows."""
    out = {}
    variant_of = {based_on(method): method for method, _ in by_cell if based_on(method)}
    for (method, dataset), recs in by_cell.items():
        if based_on(method):
            continue  # shown as the real-valued habit of its pure-Hamming row
        # the variant's record of this very model (extras.model_of: the base cell it ranked), never
        # just one of the same seed: while a row's shown seeds are an earlier configuration's, a
        # variant of the tuned model would otherwise be compared with another model
        ranked = {model: r for r in by_cell.get((variant_of.get(method), dataset), [])
                  if (model := (r.get("extras") or {}).get("model_of"))}
        real_valued = has_real_valued_ranking(method)
        try:
            code = method_spec(method)
        except HashbenchError:  # a method no longer registered: its code's habits are not known
            code = None
        row: dict[str, list[float]] = {"ours": []}
        for rec in sorted(measured(recs, metric), key=lambda r: r["seed"]):
            values = habit_values(rec, metric, ranked.get(rec.get("config_hash")), real_valued, code)
            row["ours"].append(values["ours"])
            for habit in HABITS:
                if values[habit] is not None:
                    row.setdefault(habit, []).append(values[habit] - values["ours"])
            if values["all"] is not None:
                row.setdefault("together", []).append(values["all"])
        out[(method, dataset)] = row
    return out


def together(row: dict[str, list[float]]) -> float | None:
    """The mean under every habit at once, over the seeds that measure it (not ours' mean over
    every seed plus the change's mean over fewer), or None."""
    return float(np.mean(row["together"])) if row.get("together") else None


def _mean_std(values: list[float] | None, signed: bool, seeds: int | None = None) -> str:
    """Absolute values to 4 decimals; changes to 3 (with the seeds' spread), so the table fits a
    page; FEWER_SEEDS where a change is measured on fewer of the row's `seeds` than ours (a
    count would widen the table past a page; the CSV gives it)."""
    if not values:
        return "–"
    mean = float(np.mean(values))
    text = f"{mean:+.3f}" if signed else f"{mean:.4f}"
    if len(values) > 1:
        text += f" ± {float(np.std(values, ddof=1)):.{3 if signed else 4}f}"
    if seeds is not None and len(values) < seeds:
        text += FEWER_SEEDS
    return text


FEWER_SEEDS = "*"


def effect_rows(by_cell: dict[tuple[str, str], list[dict]], metric: str,
                published: dict[str, dict[tuple[str, str], float]],
                dataset: str | None = None) -> tuple[list[str], list[list[str]]]:
    """A table: one row per (method, dataset) — or per method of one `dataset` —; ours, the
    change each habit causes, all habits together, the paper."""
    table = effects(by_cell, metric)
    habits = [h for h in HABITS if h != "hits IDCG" or metric.startswith("ndcg")]
    header = [*(["method", "dataset"] if dataset is None else ["method"]), metric,
              *[f"Δ {h}" for h in habits if h != "all"], "all", "paper"]
    body = []
    for (method, d), row in table.items():
        if dataset is not None and d != dataset:
            continue
        paper = published.get(method, {}).get((d, metric))
        every, seeds = together(row), len(row["ours"])
        # Table 1's cap marks: a seed stopped on a cap is no converged number here either
        ours = _mean_std(row["ours"], False) + cap_marker(measured(by_cell[(method, d)], metric))
        body.append([method, *([d] if dataset is None else []), ours,
                     *[_mean_std(row.get(h), True, seeds) for h in habits if h != "all"],
                     "–" if every is None else f"{every:.4f}" + (FEWER_SEEDS if len(row["together"]) < seeds else ""),
                     "–" if paper is None else f"{paper:.4f}"])
    return header, body


TITLE = ("Table {number}: protocol effects on {metric}: ours (validation-selected epoch, training and "
                    "validation items masked{ndcg}, pure Hamming for the hashing rows) and the change each habit of "
                    "the papers' code causes on the same trained models, mean ± std over seeds: the epoch with the "
                    "best test Recall@50, training and validation items left in the ranking{idcg}, real-valued "
                    "scores (the method's real-valued ranking row{ranking_rows}, ranking the same model); then all "
                    "the habits together, less those the row's released code is known not to have ({masking}{standard}"
                    "every habit for a row whose code is not known to differ; mean over the seeds where each is measured), "
                    "beside the paper's number; –: not measured for this row; *: measured on fewer of the row's seeds than "
                    "ours (the CSV's seeds column says how many); † and ‡ as in Table 1")


def _hits_idcg_text(shown: list[str]) -> str:
    lists = [f"{m}'s top {method_spec(m).released_code_ndcg_list}" for m in shown
             if method_spec(m).released_code_ndcg_list and not method_spec(m).based_on]
    return (", the hits-based IDCG (over the hits of the list the row's released code retrieves: "
            + ", ".join(lists) + "; of the top 50 for the others, the most any list gives)" if lists else
            ", the hits-based IDCG (over the hits of the top 50: the most any list gives)")


def title(number: str, metric: str, shown: list[str]) -> str:
    """The caption names only methods among the `shown` rows: a report of what was run mentions nothing else."""
    ndcg = metric.startswith("ndcg")
    registered = [m for m in shown if m in method_names()]
    ranking_rows = [m for m in method_names() if method_spec(m).based_on in registered]
    masking = [m for m in registered if method_spec(m).released_code_masks_training and not method_spec(m).based_on]
    standard = [m for m in registered if method_spec(m).released_code_standard_ndcg and not method_spec(m).based_on]
    return TITLE.format(
        number=number, metric=metric, ndcg=", standard NDCG" if ndcg else "",
        idcg=_hits_idcg_text(registered) if ndcg else "",
        ranking_rows=": " + ", ".join(ranking_rows) if ranking_rows else "",
        masking=f"training items stay masked for {' and '.join(masking)}, whose code masks them; " if masking else "",
        standard=f"standard NDCG for {' and '.join(standard)}; " if standard and ndcg else "")


def has_evidence(by_cell: dict[tuple[str, str], list[dict]]) -> bool:
    return any(_curve(r) or (r.get("protocol_evidence") or {}).get("final")
               for recs in by_cell.values() for r in recs)


def csv_rows(by_cell: dict[tuple[str, str], list[dict]]) -> list[list]:
    """Long-format rows (source "protocol:<habit>", method, dataset, metric, mean change, std, seeds)."""
    rows = []
    for metric in METRICS:
        for (method, dataset), row in effects(by_cell, metric).items():
            for habit in HABITS:
                values = row.get(habit)
                if values:
                    std = f"{float(np.std(values, ddof=1)):.6f}" if len(values) > 1 else ""
                    rows.append([f"protocol:{habit}", method, dataset, metric, f"{float(np.mean(values)):.6f}",
                                 std, len(values)])
    return rows
