"""The Hamming top-K engine against a brute-force numpy ranking (distance, then item id)."""

import numpy as np
import pytest

from hashbench.errors import HashbenchError
from hashbench.retrieval import Exclusions, HammingIndex, hamming_topk


def brute_topk(user_codes, item_codes, k, exclude, bits):
    """Full distance matrix, masked pairs dropped, stable sort by (distance, item id); -1 pads."""
    ub = np.unpackbits(user_codes, axis=1)[:, :bits].astype(np.int64)
    ib = np.unpackbits(item_codes, axis=1)[:, :bits].astype(np.int64)
    dist = (ub[:, None, :] != ib[None, :, :]).sum(2)
    allowed = np.ones_like(dist, dtype=bool)
    if exclude is not None and len(exclude):
        allowed[exclude[:, 0], exclude[:, 1]] = False
    ids = np.full((len(user_codes), k), -1)
    dists = np.full((len(user_codes), k), -1)
    for u in range(len(user_codes)):
        order = np.lexsort((np.arange(dist.shape[1]), dist[u]))
        order = order[allowed[u, order]][:k]
        ids[u, :len(order)], dists[u, :len(order)] = order, dist[u, order]
    return ids, dists


def random_problem(rng, bits, n_users, n_items, tied: bool, n_excluded: int):
    n_bytes = -(-bits // 8)
    if tied:  # few distinct item codes: big tie groups at every distance
        pool = rng.integers(0, 256, (int(rng.integers(1, 6)), n_bytes), dtype=np.uint8)
        items = pool[rng.integers(0, len(pool), n_items)]
    else:
        items = rng.integers(0, 256, (n_items, n_bytes), dtype=np.uint8)
    users = rng.integers(0, 256, (n_users, n_bytes), dtype=np.uint8)
    exclude = np.stack([rng.integers(0, n_users, n_excluded), rng.integers(0, n_items, n_excluded)], 1)
    return users, items, exclude


@pytest.mark.parametrize("bits", [8, 20, 64, 128, 192, 256])
@pytest.mark.parametrize("tied", [False, True])
def test_engine_equals_brute_force_with_masking_and_id_tie_order(bits, tied):
    rng = np.random.default_rng(bits + tied)
    for _ in range(6):
        n_users, n_items = int(rng.integers(1, 80)), int(rng.integers(1, 400))
        k = int(rng.integers(1, n_items + 1))
        users, items, exclude = random_problem(rng, bits, n_users, n_items, tied, int(rng.integers(0, 3 * n_items)))
        top = hamming_topk(users, items, k, exclude, bits)
        ids, dists = brute_topk(users, items, k, exclude, bits)
        assert top.ids.dtype == np.int32 and top.ids.shape == (n_users, k)
        np.testing.assert_array_equal(top.ids, ids)
        np.testing.assert_array_equal(top.distances, dists)


def test_far_codes_and_fully_masked_users():
    # every item far from the user (thresholds above 127 for 192 bits), one user with no item left
    users = np.zeros((3, 24), np.uint8)
    items = np.full((40, 24), 255, np.uint8)
    items[::5, :3] = 0
    exclude = np.array([(2, i) for i in range(40)] + [(0, 5), (0, 5)])
    top = hamming_topk(users, items, 10, exclude)
    ids, dists = brute_topk(users, items, 10, exclude, 192)
    np.testing.assert_array_equal(top.ids, ids)
    np.testing.assert_array_equal(top.distances, dists)
    assert (top.ids[2] == -1).all() and (top.distances[2] == -1).all()


def test_user_subsets_and_single_queries_match_the_batch():
    rng = np.random.default_rng(7)
    users, items, exclude = random_problem(rng, 64, 100, 600, False, 3000)
    index = HammingIndex(items)
    mask = Exclusions.from_pairs(exclude, 100, 600)
    full = index.search(users, 25, mask)
    subset = [99, 3, 3, 50]
    np.testing.assert_array_equal(index.search(users, 25, mask, users=subset).ids, full.ids[subset])
    np.testing.assert_array_equal(index.search(users, 25, mask, users=[42]).ids, full.ids[[42]])


def test_bad_inputs_are_one_line_errors():
    codes = np.zeros((4, 8), np.uint8)
    with pytest.raises(HashbenchError, match="between 1 and"):
        hamming_topk(codes, codes, 5)
    with pytest.raises(HashbenchError, match="outside"):
        hamming_topk(codes, codes, 2, np.array([[0, 4]]))
    with pytest.raises(HashbenchError, match="bytes per row"):
        hamming_topk(codes, np.zeros((4, 4), np.uint8), 2)
