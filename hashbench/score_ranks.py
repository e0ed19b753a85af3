"""Compiled float ranking for evaluate_scores: one pass over each user's scores, no top-K sort.

What the tie-aware metrics need of a relevant item i with score s is `start`, the number of
candidates scoring strictly higher, and `g`, the number scoring the same (i included), or
(K_max, 1) when K_max or more candidates score higher (then no part of i's tie group is in
any top K). Both are counts, so per user:

1. a threshold τ from every 16th score: the m-th largest sample, m chosen so that about
   2·K_max scores lie above it (a handful of comparisons per sample);
2. one pass over the row that keeps the scores ≥ τ (a rarely taken branch: the pass costs
   about a comparison per item) and counts NaN and −inf scores for the checks;
3. a relevant score s ≥ τ takes its counts from the kept scores; s < τ has at least as
   many scores above it as were kept, so it is outside every top K when that is ≥ K_max.
   When fewer than K_max were kept and some relevant score lies below τ, τ was too high:
   the pass is redone with τ = the lowest relevant score (rare), and the counts are exact.

Excluded items are set to −inf for the pass and restored. The counts are exact, so the
metrics equal those of the torch.topk formulation this replaced, to the bit (tests).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

BAD_NAN, BAD_NEG_INF = 1, 2
STRIDE = 16


@njit(cache=True, nogil=True)
def _keep_at_least(row, tau, kept):
    """Copy the scores >= tau into `kept`; return (how many, NaN count, −inf scores not kept)."""
    nb, n_nan, n_neg_inf = 0, 0, 0
    for j in range(row.shape[0]):
        x = row[j]
        if x >= tau:
            kept[nb] = x
            nb += 1
        elif x < tau:
            if x == -np.inf:
                n_neg_inf += 1
        else:
            n_nan += 1
    return nb, n_nan, n_neg_inf


@njit(cache=True, nogil=True)
def _sample_threshold(row, m):
    """The m-th largest of row[::STRIDE] (−inf when there are fewer samples)."""
    top = np.full(m, -np.inf)  # descending
    for j in range(0, row.shape[0], STRIDE):
        x = row[j]
        if x > top[m - 1]:
            q = m - 1
            while q > 0 and top[q - 1] < x:
                top[q] = top[q - 1]
                q -= 1
            top[q] = x
    return top[m - 1]


@njit(parallel=True, cache=True, nogil=True)
def _rank_rows(scores, exc_ptr, exc_item, rel_ptr, rel_item, k_max, start, g, bad, saved, kept_rows):
    n_rows, n_items = scores.shape
    n_chunks = kept_rows.shape[0]
    m = max(1, (2 * k_max) // STRIDE + 1)
    per_chunk = (n_rows + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):  # one buffer per chunk of rows, given by the caller
        kept = kept_rows[chunk]
        for r in range(chunk * per_chunk, min(n_rows, (chunk + 1) * per_chunk)):
            _rank_row(scores[r], exc_ptr[r], exc_ptr[r + 1], exc_item, rel_ptr[r], rel_ptr[r + 1], rel_item,
                      k_max, m, saved, kept, start, g, bad, r)
    return start, g


@njit(cache=True, nogil=True)
def _rank_row(row, e0, e1, exc_item, p0, p1, rel_item, k_max, m, saved, kept, start, g, bad, r):
    for e in range(e0, e1):
        saved[e] = row[exc_item[e]]
        row[exc_item[e]] = -np.inf
    lowest = np.inf
    for p in range(p0, p1):
        lowest = min(lowest, row[rel_item[p]])
    tau = _sample_threshold(row, m)
    nb, n_nan, n_neg_inf = _keep_at_least(row, tau, kept)
    if nb < k_max and lowest < tau:  # τ too high for an exact count: keep every score >= lowest
        tau = lowest
        nb, n_nan, n_neg_inf = _keep_at_least(row, tau, kept)
    for q in range(nb):
        if kept[q] == -np.inf:
            n_neg_inf += 1
    for p in range(p0, p1):
        s = row[rel_item[p]]
        if s >= tau:
            above, tied = 0, 0
            for q in range(nb):
                if kept[q] > s:
                    above += 1
                elif kept[q] == s:
                    tied += 1
        else:  # every kept score is above s, and nb >= k_max
            above, tied = nb, 1
        if above >= k_max:
            start[p], g[p] = k_max, 1
        else:
            start[p], g[p] = above, tied
    for e in range(e0, e1):
        row[exc_item[e]] = saved[e]
    if n_nan > 0 or lowest != lowest:
        bad[r] = BAD_NAN
    elif n_neg_inf > e1 - e0:
        bad[r] = BAD_NEG_INF


class RankWorkspace:
    """Buffers reused by every batch of one evaluation: allocating them per batch, between one
    batch's score matrix and the next, fragmented the heap (with training's malloc settings,
    core.training.tune_malloc, the process grew by a score matrix per batch)."""

    def __init__(self):
        self.saved = np.empty(0, np.float64)
        self.kept = np.empty((0, 0), np.float64)

    def buffers(self, dtype, n_excluded: int, n_chunks: int, n_items: int):
        if self.saved.dtype != dtype or len(self.saved) < n_excluded:
            self.saved = np.empty(max(n_excluded, 2 * len(self.saved)), dtype)
        if self.kept.dtype != dtype or self.kept.shape[0] < n_chunks or self.kept.shape[1] != n_items:
            self.kept = np.empty((n_chunks, n_items), dtype)
        return self.saved, self.kept[:n_chunks]


def rank_relevant(scores: np.ndarray, exc_ptr, exc_item, rel_ptr, rel_item, k_max: int,
                  workspace: RankWorkspace | None = None):
    """(start, g, bad) per relevant pair of a batch of rows; `scores` [rows, items] is modified
    while ranked and restored. Pairs are given per row (CSR: *_ptr [rows + 1] into *_item)."""
    n = len(rel_item)
    start, g = np.empty(n, np.int64), np.empty(n, np.int64)
    bad = np.zeros(scores.shape[0], np.int8)
    n_chunks = max(1, min(scores.shape[0], 4 * numba.get_num_threads()))
    saved, kept = (workspace or RankWorkspace()).buffers(scores.dtype, len(exc_item), n_chunks, scores.shape[1])
    _rank_rows(scores, exc_ptr, exc_item, rel_ptr, rel_item, k_max, start, g, bad, saved, kept)
    return start, g, bad
