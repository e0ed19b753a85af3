"""Tie-aware top-K metrics from binary codes or float scores (protocol.md §4).

Every user with at least one relevant (held-out) item ranks all items except its excluded
(training, and at test time validation) items. Ties are resolved by the exact expectation
under a uniformly random order inside each group of equal score (McSherry & Najork, ECIR
2008): a group of g candidates holding h relevant ones at ranks a..b adds h/g hits per rank
position and h/g·1/log2(r+1) of DCG at each rank r, clipped at K. Both paths reduce to the
same description, one (start, g) per relevant pair: `start` candidates score strictly
higher, `g` candidates (itself included) score the same. `_group_metrics` turns that into
the metrics.

- Codes: per user a histogram of the f+1 Hamming distances to all items (hamming.py, the
  one dense step), minus a histogram of the excluded pairs, computed sparsely. No sort.
- Floats: per batch of users, one compiled pass per user (score_ranks.py) keeps the scores
  above a sampled threshold and counts, for each relevant item, the candidates above and
  tied with it: no top-K selection, no masked copies.

Metric keys, for each K: recall@K, ndcg@K (standard: IDCG over min(K, |rel|) positions),
recall_micro@K (hits over all users / relevant pairs over all users, Proposed paper Eq. 1),
ndcg_retrieved@K (NON-STANDARD, methods.md E1: IDCG over the hits actually retrieved, as in
the BGCH/BiGeaR/HashGNN code; its exact expectation under ties, see `_ndcg_retrieved`). The
hits counted are those in the top K, an upper bound of those codes' N*, which count the hits of
a longer list (HashGNN's top 100, BGCH's top max_k = 1000); asked for with `lists`, the N*@K
over the hits of a top-L list is ndcg_retrieved_topL@K (`retrieved_key`), each code's own.

Relevant and excluded pairs must be disjoint (checked) and each free of duplicates (checked).

Speed (benchmarks/eval_speed.py; all Gowalla users, 29,858 x 40,981 items, random 64-bit
codes, K = 50 and 100, test split: 103k relevant and 924k excluded pairs; 2-core AMD EPYC
shared with other jobs, load average 11-13, so CPU seconds are the steadier figure):
- evaluate_codes, warm: 0.57-0.63 CPU s, 1.1 s wall under that load; the histogram kernel is
  0.48-0.51 CPU s of it and ran in 0.25 s wall on the idle machine, so about 0.3-0.35 s
  wall when idle (target <= 0.5 s). The rest (pair checks, sparse histograms, metrics) is
  serial numpy, ~0.06-0.1 s.
- First call in a new process: 5-8 s with an empty numba cache (JIT compile, once per
  install), 2.1-2.3 s under load with the cache filled (numba import, loading the kernels).
- evaluate_scores, 64-d float32 torch embeddings: 10-12.5 CPU s (20-26 s wall under load),
  most of it the benchmark's own score matmul (writing 4.9 GB of scores); the ranking was
  torch.topk ~3 CPU s. With score_ranks (valid split, 1 thread, load 4-6 on 2 cores, A/B in one
  process): 11.7-12.5 s against 13.0-13.2 s for topk, the matmul alone 9.2-9.4 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import gammaln

from hashbench.errors import HashbenchError
from hashbench.splits import Split

DEFAULT_KS = (50, 100)
# the lengths of the lists whose hits the released codes' IDCG counts (methods.md E1): HashGNN's
# top 100, BGCH's top max(topks) = 1000 with its default topks
RELEASED_CODE_LISTS = (100, 1000)


def retrieved_key(k: int, length: int) -> str:
    """The N*@K whose IDCG counts the hits of a top-`length` list (length = K: `ndcg_retrieved@K`)."""
    return f"ndcg_retrieved@{k}" if length == k else f"ndcg_retrieved_top{length}@{k}"


@dataclass
class EvalResult:
    metrics: dict[str, float]  # recall@K, ndcg@K, recall_micro@K, ndcg_retrieved@K for each K
    users: np.ndarray  # evaluated users (>= 1 relevant item), ascending
    per_user: dict[str, np.ndarray]  # the metric keys minus recall_micro, one value per user

    @property
    def n_users(self) -> int:
        return len(self.users)


EVALUATION_SETS = ("valid", "test", "test-unmasked")


def held_out(split: Split, on: str) -> tuple[np.ndarray, np.ndarray]:
    """(relevant, exclude): on="valid" -> (valid, train); on="test" -> (test, train + valid);
    on="test-unmasked" -> (test, nothing): training and validation items stay in the ranking,
    as in the HashGNN code (methods.md E2) — protocol evidence only, never a main metric."""
    if on == "valid":
        return split.valid, split.train
    if on == "test":
        return split.test, np.concatenate([split.train, split.valid])
    if on == "test-unmasked":
        return split.test, np.empty((0, 2), dtype=np.int64)
    raise HashbenchError(f"unknown evaluation set {on!r}: use one of {', '.join(EVALUATION_SETS)}")


# --- inputs ----------------------------------------------------------------------------------

def _check_ks(ks, n_items: int) -> tuple[int, ...]:
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise HashbenchError(f"cut-offs K must be positive integers, got {ks}")
    if ks[-1] > n_items:
        raise HashbenchError(f"K = {ks[-1]} is larger than the catalogue ({n_items} items)")
    return ks


def _check_lists(lists) -> tuple[int, ...]:
    lists = tuple(sorted({int(n) for n in lists}))
    if lists and lists[0] < 1:
        raise HashbenchError(f"retrieved list lengths must be positive integers, got {lists}")
    return lists


def _sorted_pairs(pairs, label: str, n_users: int, n_items: int):
    """(keys, users, items) sorted by key = user * n_items + item; rejects bad shapes,
    out-of-range ids and duplicates."""
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or (len(pairs) and pairs.dtype.kind not in "iu"):
        raise HashbenchError(f"{label} pairs must be an integer [n, 2] array, got shape {pairs.shape}")
    users, items = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)  # (axis-0 reductions of [n, 2] are slow)
    if len(pairs) and (min(users.min(), items.min()) < 0 or users.max() >= n_users or items.max() >= n_items):
        raise HashbenchError(
            f"{label} pairs refer to user {users.max()} / item {items.max()} (or a negative id), outside "
            f"the {n_users} users x {n_items} items scored: do the codes/scores match the split?")
    keys = users * n_items + items
    if len(keys) > 1 and not np.all(keys[1:] > keys[:-1]):
        order = np.argsort(keys, kind="stable")  # timsort: train + valid is two sorted runs, merged in O(n)
        keys, users, items = keys[order], users[order], items[order]
        dup = keys[1:] == keys[:-1]
        if dup.any():
            k = keys[1:][dup][0]
            raise HashbenchError(f"{label} pairs hold duplicates, e.g. (user {k // n_items}, item {k % n_items})")
    return keys, users, items


@dataclass
class _Pairs:
    users: np.ndarray  # evaluated users, ascending
    n_relevant: np.ndarray  # per evaluated user
    rel_row: np.ndarray  # per relevant pair: row in `users`; ascending
    rel_item: np.ndarray
    exc_row: np.ndarray  # per excluded pair of an evaluated user: row in `users`; ascending
    exc_item: np.ndarray


def _prepare(relevant, exclude, n_users: int, n_items: int) -> _Pairs:
    rel, rel_user, rel_item = _sorted_pairs(relevant, "relevant", n_users, n_items)
    if len(rel) == 0:
        raise HashbenchError("the relevant set is empty: no user has a held-out item to evaluate")
    exc, exc_user, exc_item = _sorted_pairs(exclude, "exclude", n_users, n_items)
    if len(exc):
        at = np.minimum(np.searchsorted(exc, rel), len(exc) - 1)
        clash = exc[at] == rel
        if clash.any():
            k = rel[clash][0]
            raise HashbenchError(
                f"{int(clash.sum())} relevant pairs are also excluded, e.g. (user {k // n_items}, "
                f"item {k % n_items}): held-out items must not be masked")
    first = np.flatnonzero(np.r_[True, rel_user[1:] != rel_user[:-1]])  # rel_user is sorted
    users = rel_user[first]
    n_relevant = np.diff(np.r_[first, len(rel_user)])
    row_of = np.full(n_users, -1, dtype=np.int64)
    row_of[users] = np.arange(len(users))
    exc_row = row_of[exc_user]
    keep = exc_row >= 0
    if not keep.all():
        exc_row, exc_item = exc_row[keep], exc_item[keep]
    return _Pairs(users, n_relevant, row_of[rel_user], rel_item, exc_row, exc_item)


# --- metrics from tie groups -----------------------------------------------------------------

def _discount_prefix(k_max: int) -> np.ndarray:
    """C[r] = sum_{j=1..r} 1/log2(j+1), C[0] = 0."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k_max + 2)))])


def _log_choose(n, k):
    return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)


def _ndcg_retrieved(row, start, g, dcg, k: int, length: int, disc: np.ndarray, n_rows: int) -> np.ndarray:
    """E[DCG@K / IDCG] per user, IDCG = C[min(hits in the top `length`, K)] (0/0 := 0): the IDCG
    of a code that sorts the hit vector of its retrieved list (length >= K) and keeps K of it.

    Groups wholly inside the top `length` give fixed hits H. The one group that straddles rank
    `length` (g candidates, h relevant, s above it, m = length - s of its slots inside) puts
    Z ~ Hypergeometric(g, h, m) relevant items in the list. When that group starts at rank K or
    later (s >= K), the DCG@K of the groups before it does not depend on Z, so E[DCG@K | Z] is
    the expected DCG@K, `dcg`. When it starts before rank K (s < K) it also straddles K; given Z
    its relevant slots among its m listed ones are uniform, so its DCG@K is Z/m per slot over
    ranks s+1..K in place of h/g: E[ratio] = sum_z P(Z=z) (dcg - (h/g - z/m) S) / C[min(H + z, K)],
    with S the discount mass of ranks s+1..K (0 when s >= K).
    """
    inside = start + g <= length
    fixed = np.bincount(row[inside], minlength=n_rows)
    ratio = np.divide(dcg, disc[np.minimum(fixed, k)], out=np.zeros(n_rows), where=fixed > 0)

    straddle = (start < length) & ~inside
    if straddle.any():
        h_b = np.bincount(row[straddle], minlength=n_rows)
        users = np.flatnonzero(h_b)
        g_all = np.zeros(n_rows, np.int64)
        s_all = np.zeros(n_rows, np.int64)
        g_all[row[straddle]] = g[straddle]
        s_all[row[straddle]] = start[straddle]
        h, gg, s = h_b[users], g_all[users], s_all[users]
        m = length - s
        z_lo = np.maximum(0, m - (gg - h))
        z_hi = np.minimum(h, m)
        n_z = z_hi - z_lo + 1
        owner = np.repeat(np.arange(len(users)), n_z)
        z = z_lo[owner] + np.arange(n_z.sum()) - np.repeat(np.cumsum(n_z) - n_z, n_z)
        h, gg, m, s = h[owner], gg[owner], m[owner], s[owner]
        p = np.exp(_log_choose(h, z) + _log_choose(gg - h, m - z) - _log_choose(gg, m))
        hits = np.minimum(fixed[users][owner] + z, k)
        slots_in_k = disc[k] - disc[np.minimum(s, k)]  # 0 when the group starts below K
        gain = dcg[users][owner] - (h / gg - z / m) * slots_in_k
        value = np.divide(gain, disc[hits], out=np.zeros(len(z)), where=hits > 0)
        ratio[users] = np.bincount(owner, p * value, minlength=len(users))
    return ratio


def _group_metrics(pairs: _Pairs, start: np.ndarray, g: np.ndarray, ks, lists=()) -> EvalResult:
    """Metrics from, per relevant pair, `start` candidates above it and `g` tied with it
    (exact up to rank max(ks + lists); beyond it a pair may be clipped to start = that, g = 1)."""
    row, n_rows, n_rel = pairs.rel_row, len(pairs.users), pairs.n_relevant
    disc = _discount_prefix(max((*ks, *lists)))
    metrics, per_user = {}, {}
    for k in ks:
        lo, hi = np.minimum(start, k), np.minimum(start + g, k)
        hits = np.bincount(row, (hi - lo) / g, minlength=n_rows)
        dcg_pair = (disc[hi] - disc[lo]) / g
        dcg = np.bincount(row, dcg_pair, minlength=n_rows)
        per_user[f"recall@{k}"] = hits / n_rel
        per_user[f"ndcg@{k}"] = dcg / disc[np.minimum(k, n_rel)]
        per_user[f"ndcg_retrieved@{k}"] = _ndcg_retrieved(row, start, g, dcg, k, k, disc, n_rows)
        for length in (n for n in lists if n > k):
            per_user[retrieved_key(k, length)] = _ndcg_retrieved(row, start, g, dcg, k, length, disc, n_rows)
        metrics[f"recall@{k}"] = float(per_user[f"recall@{k}"].mean())
        metrics[f"ndcg@{k}"] = float(per_user[f"ndcg@{k}"].mean())
        metrics[f"recall_micro@{k}"] = float(hits.sum() / n_rel.sum())
        metrics[f"ndcg_retrieved@{k}"] = float(per_user[f"ndcg_retrieved@{k}"].mean())
        for length in (n for n in lists if n > k):
            metrics[retrieved_key(k, length)] = float(per_user[retrieved_key(k, length)].mean())
    return EvalResult(metrics=metrics, users=pairs.users, per_user=per_user)


# --- codes -----------------------------------------------------------------------------------

def check_codes(user_codes, item_codes, bits: int | None) -> int:
    """The bit length of packed user and item codes, checked (one-line error when malformed)."""
    for label, codes in (("user", user_codes), ("item", item_codes)):
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 2:
            got = f"{codes.dtype} {codes.shape}" if isinstance(codes, np.ndarray) else type(codes).__name__
            raise HashbenchError(f"{label} codes must be a 2-D uint8 numpy.packbits array, got {got}")
    n_bytes = user_codes.shape[1]
    if item_codes.shape[1] != n_bytes:
        raise HashbenchError(f"user codes have {n_bytes} bytes per row, item codes {item_codes.shape[1]}")
    bits = n_bytes * 8 if bits is None else int(bits)
    if bits < 1 or -(-bits // 8) != n_bytes:
        raise HashbenchError(f"{bits}-bit codes take {-(-bits // 8)} packed bytes per row, got {n_bytes}")
    return bits


def evaluate_codes(user_codes: np.ndarray, item_codes: np.ndarray, relevant: np.ndarray,
                   exclude: np.ndarray, ks=DEFAULT_KS, bits: int | None = None, lists=()) -> EvalResult:
    """Tie-aware metrics of the ranking by Hamming similarity s(u, i) = bits - 2·Ham(b_u, d_i).

    Codes are numpy.packbits rows: uint8 [n_users, ceil(bits/8)] and [n_items, ceil(bits/8)];
    `bits` defaults to 8 x bytes per row. `lists`: lengths L of retrieved lists whose hits an
    N*@K (K < L) counts, as `retrieved_key(K, L)`.
    """
    from hashbench import hamming  # numba import + cached kernels: only when codes are evaluated

    bits = check_codes(user_codes, item_codes, bits)
    n_items = item_codes.shape[0]
    ks, lists = _check_ks(ks, n_items), _check_lists(lists)
    pairs = _prepare(relevant, exclude, user_codes.shape[0], n_items)
    user_words = hamming.pack_words(user_codes[pairs.users], bits)
    item_words = hamming.pack_words(item_codes, bits)
    n_bins = bits + 1

    hist = hamming.distance_histograms(user_words, item_words, bits)  # [rows, bits+1], all items
    if len(pairs.exc_row):
        d = hamming.pair_distances(user_words, item_words, pairs.exc_row, pairs.exc_item)
        hist -= np.bincount(pairs.exc_row * n_bins + d, minlength=hist.size).reshape(hist.shape).astype(np.int32)
    above = np.cumsum(hist, axis=1, dtype=np.int64) - hist  # candidates strictly closer than d
    d = hamming.pair_distances(user_words, item_words, pairs.rel_row, pairs.rel_item)
    return _group_metrics(pairs, above[pairs.rel_row, d], hist[pairs.rel_row, d].astype(np.int64), ks, lists)


# --- float scores ----------------------------------------------------------------------------

def _as_float_tensor(scores, n_rows: int, n_items: int):
    import torch

    if isinstance(scores, np.ndarray):
        if not scores.flags.writeable or any(st < 0 for st in scores.strides):
            scores = scores.copy()
        scores = torch.from_numpy(scores)
    if not isinstance(scores, torch.Tensor):
        raise HashbenchError(f"score_fn must return a numpy array or torch tensor, got {type(scores).__name__}")
    if tuple(scores.shape) != (n_rows, n_items):
        raise HashbenchError(f"score_fn returned shape {tuple(scores.shape)}, expected ({n_rows}, {n_items})")
    scores = scores.detach()
    if scores.device.type != "cpu":
        scores = scores.cpu()
    scores = scores.contiguous()
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)  # exact for any integer scores a hashing method gives
    elif scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    return scores


def evaluate_scores(score_fn: Callable, n_users: int, n_items: int, relevant: np.ndarray,
                    exclude: np.ndarray, ks=DEFAULT_KS, batch_users: int = 2048, lists=()) -> EvalResult:
    """Tie-aware metrics of the ranking by float scores (the non-hashing reference rows).

    score_fn(users: int64 array) -> numpy array or torch tensor [len(users), n_items]. The
    returned array is modified while a batch is ranked (excluded entries set to -inf) and
    restored before returning. Scores must not be NaN; candidates must not score -inf. `lists`:
    as in evaluate_codes (the ranks are then counted exactly down to the longest list).
    """
    from hashbench.score_ranks import BAD_NAN, RankWorkspace, rank_relevant  # numba: only for scores

    ks, lists = _check_ks(ks, n_items), _check_lists(lists)
    pairs = _prepare(relevant, exclude, n_users, n_items)
    k_max = min(max((*ks, *lists)), n_items)
    n_rows = len(pairs.users)
    start = np.empty(len(pairs.rel_row), np.int64)
    g = np.empty(len(pairs.rel_row), np.int64)
    # per-row CSR pointers into the (row-sorted) excluded and relevant pairs
    exc_ptr = np.searchsorted(pairs.exc_row, np.arange(n_rows + 1))
    rel_ptr = np.searchsorted(pairs.rel_row, np.arange(n_rows + 1))
    workspace = RankWorkspace()
    for r0 in range(0, n_rows, batch_users):
        r1 = min(r0 + batch_users, n_rows)
        scores = _as_float_tensor(score_fn(pairs.users[r0:r1]), r1 - r0, n_items).numpy()
        ex, rel = slice(exc_ptr[r0], exc_ptr[r1]), slice(rel_ptr[r0], rel_ptr[r1])
        start[rel], g[rel], bad = rank_relevant(scores, exc_ptr[r0:r1 + 1] - exc_ptr[r0], pairs.exc_item[ex],
                                                rel_ptr[r0:r1 + 1] - rel_ptr[r0], pairs.rel_item[rel], k_max,
                                                workspace)
        del scores  # before the next batch's scores exist: one batch of scores alive at a time
        if bad.any():
            what = "NaN" if (bad == BAD_NAN).any() else "-inf for an item that is not excluded"
            raise HashbenchError(f"score_fn returned {what} (scores must not be NaN; candidates must not be -inf)")
    return _group_metrics(pairs, start, g, ks, lists)


# --- split conveniences ----------------------------------------------------------------------

def evaluate_split_codes(user_codes, item_codes, split: Split, on: str, ks=DEFAULT_KS,
                         bits: int | None = None, lists=()) -> EvalResult:
    relevant, exclude = held_out(split, on)
    if user_codes.shape[0] != split.n_users or item_codes.shape[0] != split.n_items:
        raise HashbenchError(
            f"codes cover {user_codes.shape[0]} users x {item_codes.shape[0]} items, the split "
            f"{split.n_users} x {split.n_items}")
    return evaluate_codes(user_codes, item_codes, relevant, exclude, ks=ks, bits=bits, lists=lists)


def evaluate_split_scores(score_fn: Callable, split: Split, on: str, ks=DEFAULT_KS,
                          batch_users: int = 2048, lists=()) -> EvalResult:
    relevant, exclude = held_out(split, on)
    return evaluate_scores(score_fn, split.n_users, split.n_items, relevant, exclude, ks=ks,
                           batch_users=batch_users, lists=lists)
