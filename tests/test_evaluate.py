"""The evaluator against brute-force references that share no code with it.

Two references, both exact:
- `permutation_reference`: every order of the candidates consistent with the scores (all
  permutations inside each tie group), each equally likely; metrics averaged. Tiny cases.
- `subset_reference`: under a random order inside a tie group the set of slots the group's
  relevant items take is uniform over all C(g, h) subsets; enumerate those subsets for every
  group that reaches into the top K. Medium cases full of ties.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashbench.errors import HashbenchError
from hashbench.evaluate import (
    EvalResult, evaluate_codes, evaluate_scores, evaluate_split_codes, evaluate_split_scores,
    held_out, retrieved_key,
)
from hashbench.splits import Split

# --- references ------------------------------------------------------------------------------


def _metrics_of_ranking(rel_ranks: list[int], n_rel: int, k: int) -> tuple[float, float, float]:
    """(recall, ndcg, ndcg_retrieved) of one concrete ranking; rel_ranks are 1-based."""
    hit_ranks = [r for r in rel_ranks if r <= k]
    dcg = sum(1 / math.log2(r + 1) for r in hit_ranks)
    idcg = sum(1 / math.log2(r + 1) for r in range(1, min(k, n_rel) + 1))
    idcg_retrieved = sum(1 / math.log2(r + 1) for r in range(1, len(hit_ranks) + 1))
    return len(hit_ranks) / n_rel, dcg / idcg, dcg / idcg_retrieved if hit_ranks else 0.0


def _groups(scores: dict[int, float]) -> list[list[int]]:
    """Candidates grouped by equal score, best group first."""
    by_score: dict[float, list[int]] = {}
    for item, s in scores.items():
        by_score.setdefault(s, []).append(item)
    return [by_score[s] for s in sorted(by_score, reverse=True)]


def permutation_reference(score_of, n_users, n_items, relevant, exclude, ks):
    """Average over every tie-consistent order (product of g! orders: tiny cases only)."""
    return _reference(score_of, n_users, n_items, relevant, exclude, ks, _orders_by_permutation)


def subset_reference(score_of, n_users, n_items, relevant, exclude, ks):
    return _reference(score_of, n_users, n_items, relevant, exclude, ks, _orders_by_subsets)


def _orders_by_permutation(groups, rel, k):
    """Yield the relevant items' ranks for every equally likely order of the candidates."""
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        order = [i for p in perms for i in p]
        yield [r + 1 for r, i in enumerate(order) if i in rel]


def _orders_by_subsets(groups, rel, k):
    """Yield relevant ranks for every equally likely choice of slots inside each group."""
    choices, offset = [], 0
    for g in groups:
        h = sum(i in rel for i in g)
        if offset < k and h:
            choices.append([[offset + 1 + s for s in c] for c in itertools.combinations(range(len(g)), h)])
        offset += len(g)
    for pick in itertools.product(*choices):
        yield [r for ranks in pick for r in ranks]


def _reference(score_of, n_users, n_items, relevant, exclude, ks, orders):
    rel_by_user = {}
    for u, i in relevant:
        rel_by_user.setdefault(int(u), set()).add(int(i))
    excl = {(int(u), int(i)) for u, i in exclude}
    users = sorted(rel_by_user)
    per_user = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg", "ndcg_retrieved")}
    hits_total = {k: 0.0 for k in ks}
    for u in users:
        rel = rel_by_user[u]
        groups = _groups({i: score_of(u, i) for i in range(n_items) if (u, i) not in excl})
        for k in ks:
            samples = [_metrics_of_ranking(ranks, len(rel), k) for ranks in orders(groups, rel, k)]
            recall, ndcg, ndcg_r = np.mean(samples, axis=0)
            per_user[f"recall@{k}"].append(recall)
            per_user[f"ndcg@{k}"].append(ndcg)
            per_user[f"ndcg_retrieved@{k}"].append(ndcg_r)
            hits_total[k] += recall * len(rel)
    n_pairs = sum(len(r) for r in rel_by_user.values())
    metrics = {key: float(np.mean(v)) for key, v in per_user.items()}
    metrics.update({f"recall_micro@{k}": hits_total[k] / n_pairs for k in ks})
    return np.array(users), metrics, {key: np.array(v) for key, v in per_user.items()}


def assert_matches(result: EvalResult, reference, ks):
    users, metrics, per_user = reference
    np.testing.assert_array_equal(result.users, users)
    assert set(result.metrics) == {f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "recall_micro", "ndcg_retrieved")}
    for key, value in metrics.items():
        assert result.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    for key, values in per_user.items():
        np.testing.assert_allclose(result.per_user[key], values, rtol=1e-9, atol=1e-12, err_msg=key)


# --- fixtures --------------------------------------------------------------------------------


def random_case(rng, n_users, n_items, bits, rel_per_user=(0, 4), excl_per_user=(0, 6)):
    """Random ±1 codes (as bits) and disjoint relevant / excluded pairs."""
    user_bits = rng.integers(0, 2, (n_users, bits), dtype=np.uint8)
    item_bits = rng.integers(0, 2, (n_items, bits), dtype=np.uint8)
    relevant, exclude = [], []
    for u in range(n_users):
        n_rel = rng.integers(rel_per_user[0], rel_per_user[1] + 1)
        n_exc = rng.integers(excl_per_user[0], excl_per_user[1] + 1)
        items = rng.permutation(n_items)[: n_rel + n_exc]
        relevant += [(u, i) for i in items[:n_rel]]
        exclude += [(u, i) for i in items[n_rel:]]
    as_pairs = lambda p: np.array(p, dtype=np.int64).reshape(-1, 2)
    return user_bits, item_bits, as_pairs(relevant), as_pairs(exclude)


def tiny_case(seed, n_items, bits):
    """4 users: small enough for every tie order to be enumerated."""
    return random_case(np.random.default_rng(seed), 4, n_items, bits, rel_per_user=(0, 3), excl_per_user=(0, 2))


def pm1_scores(user_bits, item_bits):
    return ((2 * user_bits.astype(np.int64) - 1) @ (2 * item_bits.astype(np.int64) - 1).T)


def pack(b):
    return np.packbits(b, axis=1)


# --- against the references ------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_items=st.integers(2, 7), bits=st.integers(1, 3))
def test_codes_match_every_tie_order_on_tiny_cases(seed, n_items, bits):
    ub, ib, rel, exc = tiny_case(seed, n_items, bits)
    if len(rel) == 0:
        return
    ks = tuple(sorted({1, 2, n_items}))
    s = pm1_scores(ub, ib)
    ref = permutation_reference(lambda u, i: s[u, i], 4, n_items, rel, exc, ks)
    assert_matches(evaluate_codes(pack(ub), pack(ib), rel, exc, ks=ks, bits=bits), ref, ks)


@pytest.mark.parametrize("seed", range(4))
def test_codes_match_subset_reference_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    ub, ib, rel, exc = random_case(rng, 25, 24, 6)
    ks = (1, 3, 5, 10, 24)
    s = pm1_scores(ub, ib)
    ref = subset_reference(lambda u, i: s[u, i], 25, 24, rel, exc, ks)
    assert_matches(evaluate_codes(pack(ub), pack(ib), rel, exc, ks=ks, bits=6), ref, ks)


@pytest.mark.parametrize("seed", range(3))
def test_float_scores_match_subset_reference(seed):
    rng = np.random.default_rng(100 + seed)
    _, _, rel, exc = random_case(rng, 25, 24, 1)
    scores = rng.integers(0, 5, (25, 24)).astype(np.float32) / 4  # few values: big tie groups
    scores[0] = rng.random(24)  # and a user without ties
    ks = (1, 4, 10, 24)
    ref = subset_reference(lambda u, i: scores[u, i], 25, 24, rel, exc, ks)
    result = evaluate_scores(lambda u: scores[u], 25, 24, rel, exc, ks=ks, batch_users=6)
    assert_matches(result, ref, ks)


def test_the_two_references_agree():
    rng = np.random.default_rng(7)
    ub, ib, rel, exc = random_case(rng, 6, 6, 2, rel_per_user=(1, 3), excl_per_user=(0, 1))
    s = pm1_scores(ub, ib)
    ks = (1, 2, 4)
    a = permutation_reference(lambda u, i: s[u, i], 6, 6, rel, exc, ks)
    b = subset_reference(lambda u, i: s[u, i], 6, 6, rel, exc, ks)
    assert a[1] == pytest.approx(b[1])


# --- codes path == float path ----------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 13, 64, 100, 300])
def test_codes_equal_float_pm1_inner_products(bits):
    rng = np.random.default_rng(bits)
    ub, ib, rel, exc = random_case(rng, 150, 300, bits, rel_per_user=(0, 8), excl_per_user=(0, 40))
    s = pm1_scores(ub, ib)
    ks = (1, 10, 50, 300)
    a = evaluate_codes(pack(ub), pack(ib), rel, exc, ks=ks, bits=bits)
    b = evaluate_scores(lambda u: s[u].astype(np.float32), 150, 300, rel, exc, ks=ks, batch_users=64)
    c = evaluate_scores(lambda u: s[u], 150, 300, rel, exc, ks=ks)  # integer scores
    for other in (b, c):
        np.testing.assert_array_equal(a.users, other.users)
        for key in a.metrics:
            assert a.metrics[key] == pytest.approx(other.metrics[key], rel=1e-12), key
            np.testing.assert_allclose(a.per_user[key.replace("_micro", "")], other.per_user[key.replace("_micro", "")], rtol=1e-12)


def test_stray_bits_past_the_code_length_are_ignored():
    rng = np.random.default_rng(3)
    ub, ib, rel, exc = random_case(rng, 40, 60, 13)
    clean = evaluate_codes(pack(ub), pack(ib), rel, exc, ks=(5,), bits=13)
    dirty_u, dirty_i = pack(ub), pack(ib)
    dirty_u[:, -1] |= rng.integers(0, 8, 40, dtype=np.uint8)  # the 3 unused low bits
    dirty_i[:, -1] |= rng.integers(0, 8, 60, dtype=np.uint8)
    assert evaluate_codes(dirty_u, dirty_i, rel, exc, ks=(5,), bits=13).metrics == clean.metrics


# --- behaviour -------------------------------------------------------------------------------


def test_excluded_items_take_no_rank():
    scores = np.array([[9.0, 8.0, 1.0, 0.0]])
    relevant = np.array([[0, 1]])
    masked = evaluate_scores(lambda u: scores[u], 1, 4, relevant, np.array([[0, 0]]), ks=(1,))
    unmasked = evaluate_scores(lambda u: scores[u], 1, 4, relevant, np.empty((0, 2), np.int64), ks=(1,))
    assert masked.metrics["recall@1"] == 1.0 and masked.metrics["ndcg@1"] == 1.0
    assert unmasked.metrics["recall@1"] == 0.0


def test_excluded_items_take_no_rank_codes():
    # item 0 equals the user's code, item 1 differs in one bit, item 2 in all bits
    user = np.packbits(np.zeros((1, 8), np.uint8), axis=1)
    items = np.packbits(np.array([[0] * 8, [1] + [0] * 7, [1] * 8], np.uint8), axis=1)
    relevant = np.array([[0, 1]])
    masked = evaluate_codes(user, items, relevant, np.array([[0, 0]]), ks=(1,))
    unmasked = evaluate_codes(user, items, relevant, np.empty((0, 2), np.int64), ks=(1,))
    assert masked.metrics["recall@1"] == 1.0 and unmasked.metrics["recall@1"] == 0.0


def test_users_without_relevant_items_are_skipped():
    rng = np.random.default_rng(5)
    ub, ib, rel, exc = random_case(rng, 30, 50, 8, rel_per_user=(1, 3))
    base = evaluate_codes(pack(ub), pack(ib), rel, exc, ks=(5,))
    keep = rel[:, 0] % 3 != 0  # users 0, 3, 6, ... lose their relevant items
    fewer = evaluate_codes(pack(ub), pack(ib), rel[keep], exc, ks=(5,))
    np.testing.assert_array_equal(fewer.users, np.unique(rel[keep, 0]))
    assert all(u % 3 for u in fewer.users)
    on_base = np.isin(base.users, fewer.users)
    for key, values in fewer.per_user.items():
        np.testing.assert_array_equal(values, base.per_user[key][on_base])
        assert fewer.metrics[key] == pytest.approx(values.mean())


def test_perfect_codes_score_one():
    rng = np.random.default_rng(9)
    n_users, n_items = 20, 200
    user_bits = rng.integers(0, 2, (n_users, 64), dtype=np.uint8)
    item_bits = rng.integers(0, 2, (n_items, 64), dtype=np.uint8)  # ~32 bits from everyone
    relevant = np.array([(u, 10 * u + j) for u in range(n_users) for j in range(3)])
    item_bits[relevant[:, 1]] = user_bits[relevant[:, 0]]  # a user's own items at distance 0
    result = evaluate_codes(pack(user_bits), pack(item_bits), relevant, NO_PAIRS, ks=(3, 50))
    for k in (3, 50):
        for m in ("recall", "ndcg", "recall_micro", "ndcg_retrieved"):
            assert result.metrics[f"{m}@{k}"] == pytest.approx(1.0, abs=1e-12)


def test_item_order_does_not_matter():
    rng = np.random.default_rng(11)
    ub, ib, rel, exc = random_case(rng, 60, 80, 8, excl_per_user=(0, 20))
    perm = rng.permutation(80)  # new id of item i is perm[i]
    ib_perm = np.empty_like(ib)
    ib_perm[perm] = ib
    relabel = lambda p: np.stack([p[:, 0], perm[p[:, 1]]], axis=1)
    a = evaluate_codes(pack(ub), pack(ib), rel, exc, ks=(5, 20))
    b = evaluate_codes(pack(ub), pack(ib_perm), relabel(rel), relabel(exc), ks=(5, 20))
    for key in a.metrics:
        assert a.metrics[key] == pytest.approx(b.metrics[key], rel=1e-12)


def test_fewer_candidates_than_k():
    scores = np.array([[3.0, 2.0, 1.0, 0.0]])
    result = evaluate_scores(lambda u: scores[u], 1, 4, np.array([[0, 3]]), np.array([[0, 0], [0, 1]]), ks=(4,))
    assert result.metrics["recall@4"] == 1.0
    assert result.metrics["ndcg@4"] == pytest.approx(1 / math.log2(3))
    assert result.metrics["ndcg_retrieved@4"] == pytest.approx(1 / math.log2(3))


def test_float_path_batches_agree_and_leave_scores_untouched():
    rng = np.random.default_rng(13)
    _, _, rel, exc = random_case(rng, 50, 70, 1, rel_per_user=(1, 4), excl_per_user=(0, 10))
    scores = rng.integers(0, 6, (50, 70)).astype(np.float64)
    before = scores.copy()
    a = evaluate_scores(lambda u: scores[u[0]:u[-1] + 1], 50, 70, rel, exc, ks=(3, 10), batch_users=7)
    b = evaluate_scores(lambda u: scores[u], 50, 70, rel, exc, ks=(3, 10))
    np.testing.assert_array_equal(scores, before)  # the view-returning score_fn saw its array restored
    assert a.metrics == pytest.approx(b.metrics, rel=1e-12)


def test_float_path_takes_torch_tensors():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(17)
    _, _, rel, exc = random_case(rng, 20, 30, 1)
    scores = rng.random((20, 30)).astype(np.float32)
    a = evaluate_scores(lambda u: torch.from_numpy(scores[u]), 20, 30, rel, exc, ks=(5,))
    b = evaluate_scores(lambda u: scores[u], 20, 30, rel, exc, ks=(5,))
    assert a.metrics == b.metrics


def test_split_conveniences():
    rng = np.random.default_rng(19)
    ub, ib, pairs, _ = random_case(rng, 20, 40, 16, rel_per_user=(3, 9), excl_per_user=(0, 0))
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    part = rng.integers(0, 3, len(pairs))
    split = Split("toy", "random-8-1-1", 0, 20, 40, "x", pairs[part == 0], pairs[part == 1], pairs[part == 2])
    relevant, exclude = held_out(split, "test")
    assert len(exclude) == (part < 2).sum() and relevant is split.test
    s = pm1_scores(ub, ib)
    for on in ("valid", "test"):
        a = evaluate_split_codes(pack(ub), pack(ib), split, on, ks=(5,))
        b = evaluate_split_scores(lambda u: s[u], split, on, ks=(5,))
        assert a.metrics == pytest.approx(b.metrics, rel=1e-12)
    with pytest.raises(HashbenchError, match="valid"):
        held_out(split, "train")


# --- errors ----------------------------------------------------------------------------------


def _codes(n, n_bytes=8):
    return np.zeros((n, n_bytes), np.uint8)


NO_PAIRS = np.empty((0, 2), np.int64)
N, K = 10, (2,)  # catalogue size and cut-offs of the error cases


@pytest.mark.parametrize("call, match", [
    (lambda: evaluate_codes(_codes(2), _codes(N), np.array([[0, 1]]), NO_PAIRS, ks=(N + 1,)), "larger than the catalogue"),
    (lambda: evaluate_codes(_codes(2), _codes(N), np.array([[0, 1]]), NO_PAIRS, ks=(0,)), "positive"),
    (lambda: evaluate_codes(_codes(2).astype(np.int64), _codes(N), np.array([[0, 1]]), NO_PAIRS, ks=K), "uint8"),
    (lambda: evaluate_codes(_codes(2), _codes(N, 4), np.array([[0, 1]]), NO_PAIRS, ks=K), "bytes per row"),
    (lambda: evaluate_codes(_codes(2), _codes(N), np.array([[0, 1]]), NO_PAIRS, bits=32), "32-bit codes"),
    (lambda: evaluate_codes(_codes(2), _codes(N), np.array([[0, N]]), NO_PAIRS, ks=K), "outside"),
    (lambda: evaluate_codes(_codes(2), _codes(N), NO_PAIRS, NO_PAIRS, ks=K), "empty"),
    (lambda: evaluate_codes(_codes(2), _codes(N), np.array([[0, 1]]), np.array([[0, 1]]), ks=K), "also excluded"),
    (lambda: evaluate_codes(_codes(2), _codes(N), np.array([[0, 1], [0, 1]]), NO_PAIRS, ks=K), "duplicates"),
    (lambda: evaluate_scores(lambda u: np.zeros((len(u), N - 1)), 2, N, np.array([[0, 1]]), NO_PAIRS, ks=K), "shape"),
    (lambda: evaluate_scores(lambda u: np.full((len(u), N), np.nan), 2, N, np.array([[0, 1]]), NO_PAIRS, ks=K), "NaN"),
    (lambda: evaluate_scores(lambda u: np.full((len(u), N), -np.inf), 2, N, np.array([[0, 1]]), NO_PAIRS, ks=K), "-inf"),
])
def test_errors_are_one_line(call, match):
    with pytest.raises(HashbenchError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


# --- the compiled float ranking (score_ranks) -------------------------------------------------


def test_float_ranking_counts_equal_brute_force_counts_with_ties_and_low_relevant_scores():
    """start/g per relevant pair equal counting over the unmasked row, including users whose
    relevant items all score below the sampled threshold (the exact fallback) and heavy ties."""
    from hashbench.score_ranks import rank_relevant

    rng = np.random.default_rng(7)
    rows, n_items, k_max = 40, 500, 20
    scores = rng.integers(-20, 21, (rows, n_items)).astype(np.float32)
    scores[:10] = rng.standard_normal((10, n_items)).astype(np.float32)
    exc = [np.sort(rng.choice(n_items, rng.integers(0, 60), replace=False)) for _ in range(rows)]
    rel = []
    for r in range(rows):
        free = np.setdiff1d(np.arange(n_items), exc[r])
        if r % 3 == 0:  # only the lowest-scoring free items: below any sampled threshold
            chosen = free[np.argsort(scores[r, free], kind="stable")[:3]]
        else:
            chosen = rng.choice(free, rng.integers(1, 12), replace=False)
        rel.append(chosen)
    ptr = lambda lists: np.concatenate([[0], np.cumsum([len(x) for x in lists])])
    before = scores.copy()
    start, g, bad = rank_relevant(scores, ptr(exc), np.concatenate(exc).astype(np.int64), ptr(rel),
                                  np.concatenate(rel).astype(np.int64), k_max)
    assert np.array_equal(scores, before) and not bad.any()  # restored
    p = 0
    for r in range(rows):
        cand = np.delete(scores[r], exc[r])
        for i in rel[r]:
            s = scores[r, i]
            above, tied = int((cand > s).sum()), int((cand == s).sum())
            expect = (k_max, 1) if above >= k_max else (above, tied)
            assert (start[p], g[p]) == expect, (r, i)
            p += 1


def test_float_ranking_rejects_minus_inf_outside_the_top_k():
    scores = np.zeros((1, 300))
    scores[0, 299] = -np.inf  # far below the top K: still a candidate with an invalid score
    with pytest.raises(HashbenchError, match="-inf"):
        evaluate_scores(lambda u: scores[u], 1, 300, np.array([[0, 0]]), np.empty((0, 2), np.int64), ks=(5,))


# --- N* over the hits of a longer list (the released codes' IDCG, methods.md E1) ----------------


def _list_ndcg_reference(score_of, n_users, n_items, relevant, exclude, k, length):
    """Per user, the mean over every equally likely choice of slots inside each tie group that
    reaches into the top `length` of DCG@k / IDCG, IDCG over min(hits in the top `length`, k)."""
    rel_by_user = {}
    for u, i in relevant:
        rel_by_user.setdefault(int(u), set()).add(int(i))
    excl = {(int(u), int(i)) for u, i in exclude}
    values = []
    for u in sorted(rel_by_user):
        rel = rel_by_user[u]
        groups = _groups({i: score_of(u, i) for i in range(n_items) if (u, i) not in excl})
        samples = []
        for ranks in _orders_by_subsets(groups, rel, length):
            dcg = sum(1 / math.log2(r + 1) for r in ranks if r <= k)
            found = min(sum(r <= length for r in ranks), k)
            idcg = sum(1 / math.log2(r + 1) for r in range(1, found + 1))
            samples.append(dcg / idcg if found else 0.0)
        values.append(np.mean(samples))
    return np.array(values)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_items=st.integers(3, 7), bits=st.integers(1, 3))
def test_hits_of_a_longer_list_match_every_tie_order_on_tiny_cases(seed, n_items, bits):
    ub, ib, rel, exc = tiny_case(seed, n_items, bits)
    if len(rel) == 0:
        return
    s = pm1_scores(ub, ib)
    result = evaluate_codes(pack(ub), pack(ib), rel, exc, ks=(1, 2), bits=bits, lists=(2, 3, n_items))
    for k, length in ((1, 2), (1, 3), (2, 3), (1, n_items), (2, n_items)):
        expected = _list_ndcg_reference(lambda u, i: s[u, i], 4, n_items, rel, exc, k, length)
        np.testing.assert_allclose(result.per_user[retrieved_key(k, length)], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_hits_of_a_longer_list_match_the_subset_reference_for_codes_and_scores(seed):
    rng = np.random.default_rng(200 + seed)
    ub, ib, rel, exc = random_case(rng, 25, 24, 6)
    s = pm1_scores(ub, ib)
    ks, lists = (3, 5), (5, 10, 24)
    codes = evaluate_codes(pack(ub), pack(ib), rel, exc, ks=ks, bits=6, lists=lists)
    # a batch of scores ranks exactly only down to max(ks + lists): the list must be asked for
    scores = evaluate_scores(lambda u: s[u].astype(np.float32), 25, 24, rel, exc, ks=ks, batch_users=7, lists=lists)
    for k in ks:
        for length in (n for n in lists if n > k):
            expected = _list_ndcg_reference(lambda u, i: s[u, i], 25, 24, rel, exc, k, length)
            for result in (codes, scores):
                np.testing.assert_allclose(result.per_user[retrieved_key(k, length)], expected, rtol=1e-9)
                assert result.metrics[retrieved_key(k, length)] == pytest.approx(expected.mean(), rel=1e-9)


def test_the_longer_the_list_the_closer_n_star_comes_to_standard_ndcg():
    # a user with more held-out items than the top K holds: the longer list finds more of them,
    # its IDCG grows, and N* falls from the top-K upper bound towards standard NDCG
    rng = np.random.default_rng(3)
    ub, ib, rel, exc = random_case(rng, 200, 400, 16, rel_per_user=(5, 30), excl_per_user=(0, 20))
    result = evaluate_codes(pack(ub), pack(ib), rel, exc, ks=(10,), bits=16, lists=(50, 400))
    top_k, top_50, everything = (result.per_user[retrieved_key(10, n)] for n in (10, 50, 400))
    standard = result.per_user["ndcg@10"]
    assert np.all(top_k >= top_50 - 1e-12) and np.all(top_50 >= everything - 1e-12)
    assert top_k.mean() > top_50.mean() > everything.mean()
    # with every candidate in the list, the IDCG is over min(K, |relevant|): standard NDCG
    np.testing.assert_allclose(everything, standard, rtol=1e-12)
    assert set(result.metrics) >= {"ndcg_retrieved@10", "ndcg_retrieved_top50@10", "ndcg_retrieved_top400@10"}
