"""Paired significance tests between methods, over users, Holm-corrected.

The unit is the user: every method of a table column is evaluated on the same users (the
split is a pure function of the dataset and the seed), so a method's per-user metric,
averaged over the seeds it shares with the other method, pairs with the other's. The test
is the two-sided Wilcoxon signed-rank test on the per-user differences (metrics like
Recall@50 are far from normal: most users sit at 0 or 1). The comparisons of one column
(the best method against each other one) form one family, corrected with Holm's step-down
method so that the chance of any false "significant" in the column stays under α.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from hashbench.files import read_npz

ALPHA = 0.05


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (monotone, capped at 1), in the input order."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def paired_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired per-user values a - b."""
    keep = ~(np.isnan(a) | np.isnan(b))
    diff = a[keep] - b[keep]
    if not np.any(diff != 0):
        return 1.0
    # zsplit keeps the zero differences (users both methods score the same) in the ranking
    return float(stats.wilcoxon(diff, zero_method="zsplit", alternative="two-sided").pvalue)


def load_per_user(results_dir: Path, record: dict, metric: str) -> np.ndarray | None:
    """One record's per-user test values of `metric` (NaN for users without test items)."""
    name = record.get("per_user_file")
    if not name or not (Path(results_dir) / name).exists():
        return None
    key = metric.replace("@", "_at_")
    values = read_npz(Path(results_dir) / name).get(key)
    return None if values is None else values.astype(np.float64)


@dataclass
class Comparison:
    method: str
    p_value: float
    p_adjusted: float

    @property
    def significant(self) -> bool:
        return self.p_adjusted < ALPHA


def compare_to_best(results_dir: Path, records_by_method: dict[str, list[dict]], best: str,
                    metric: str) -> dict[str, Comparison]:
    """best vs every other method: per-user values averaged over their common seeds; Holm over the family.

    Methods without per-user files (older records) are left out of the family."""
    def per_seed(method):
        out = {}
        for rec in records_by_method[method]:
            values = load_per_user(results_dir, rec, metric)
            if values is not None:
                out[rec["seed"]] = values
        return out

    best_values = per_seed(best)
    raw = {}
    for method in records_by_method:
        if method == best:
            continue
        other = per_seed(method)
        common = sorted(set(best_values) & set(other))
        if not common:
            continue
        with np.errstate(all="ignore"):
            a = np.nanmean([best_values[s] for s in common], axis=0)
            b = np.nanmean([other[s] for s in common], axis=0)
        raw[method] = paired_test(a, b)
    adjusted = holm(list(raw.values()))
    return {m: Comparison(m, p, q) for (m, p), q in zip(raw.items(), adjusted)}
