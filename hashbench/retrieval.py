"""Hamming top-K retrieval: each user's K nearest items by Hamming distance, training items masked.

The engine behind `hashbench speed`, and what a user calls to serve recommendations from
codes. No users x items matrix is ever built: users are processed in parallel, one at a
time per thread, with one small per-thread buffer of n_items distances (1 byte each).

Per user (hamming.py's 64-bit words and LLVM popcount intrinsic):

1. distances: XOR + popcount of every item into a uint8 buffer (vectorised; AVX-512
   VPOPCNTQ where the CPU has it); the user's masked items get a sentinel (255);
2. candidates: every item within a guessed distance g, collected in item-id order by a scan
   that tests 8 distances per uint64 at once (SWAR "has a byte <= g") and looks at single
   bytes only in the few words that hold one; g is the previous user's threshold and is
   widened by 2 until at least K items are in. Users are processed in code order, so
   neighbours share most of their code and the guess is usually right;
3. threshold: from the candidates' distance histogram, the smallest t with >= K items
   within t;
4. order: a counting sort of the candidates by distance, stable in item id, cut at K.

The result is deterministic: ranked by distance, ties broken by the smaller item id (so
the tie group cut at rank K keeps its lowest ids). Users with fewer than K unmasked items
get their row padded with id -1 and distance -1. Batches of a few users run in the calling
thread (single-user latency ~0.04 ms on Gowalla), larger ones in numba's thread pool.

Why this design: all Gowalla users (29,858 x 40,981, 64-bit codes, 820,622 training pairs
masked, K = 100), process CPU seconds (the machine was shared, load 12-20 on 2 cores, so
wall time was 2-3x CPU / threads; CPU seconds are what the design changes):

    random codes                                                 CPU s
    distances only (pass 1)                                      0.11
    hamming.distance_histograms (the evaluator's kernel)         0.47
    v1: passes counting items <= t from the previous t, then
        a block-minimum scan and a per-item collection            1.25
    v2: SWAR candidate collection (this module), users by id     0.31
      first guess previous t - 1 / + 1, widening step 1 / 2      0.41-0.53
    trained codes (gowalla-dcf-64b-seed0; thresholds vary more)
    v2, users by id                                              0.48
    v2, users in code order (this module)                        0.35
    faiss IndexBinaryFlat, unmasked (OMP_WAIT_POLICY=PASSIVE)    ~2.3

numpy alternatives need a users x items distance matrix (benchmarks/eval_speed.py measures
them ~10x slower for the histogram alone). results/speed/ holds the committed run.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from hashbench.csr import group_by_row
from hashbench.errors import HashbenchError
from hashbench.hamming import popcount64, pack_words

USERS_PER_TASK = 32  # users per parallel task: buffers are allocated once per task


@dataclass
class TopK:
    ids: np.ndarray  # int32 [n_users, K]: item ids, nearest first, ties by ascending id; -1 pads
    distances: np.ndarray  # int32 [n_users, K]: their Hamming distances; -1 pads


_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)


@njit(inline="always")
def _collect_range(dist, start, stop, lo, hi, cand_ids, cand_d, n_cand, hist):
    """Append items start..stop-1 with lo < distance <= hi to (cand_ids, cand_d)."""
    for i in range(start, stop):
        d = np.int64(dist[i])
        if lo < d <= hi:
            cand_ids[n_cand] = i
            cand_d[n_cand] = d
            hist[d] += 1
            n_cand += 1
    return n_cand


@njit(inline="always")
def _collect(dist, dist_words, lo, hi, cand_ids, cand_d, n_cand, hist):
    """Append the items with lo < distance <= hi to (cand_ids, cand_d), in item-id order."""
    if dist_words.shape[0] and hi < 127:
        # 8 distances per uint64: (w - (hi+1)·ones) & ~w & highs is non-zero iff some byte of w
        # is <= hi (exact for hi+1 <= 128; the sentinel 255 never matches), so the scalar
        # check runs only on the few words that hold a candidate
        limit = np.uint64(hi + 1) * _ONES
        for w in range(dist_words.shape[0]):
            x = dist_words[w]
            if (x - limit) & ~x & _HIGHS:
                n_cand = _collect_range(dist, 8 * w, 8 * w + 8, lo, hi, cand_ids, cand_d, n_cand, hist)
        return n_cand
    return _collect_range(dist, 0, dist.shape[0], lo, hi, cand_ids, cand_d, n_cand, hist)


def _topk(user_words, item_words_t, k, mask_ptr, mask_items, mask_rows, proto, first_guess, order):
    n_users, n_words = user_words.shape
    n_items = item_words_t.shape[1]
    n_padded = -(-n_items // 8) * 8
    bits_max = n_words * 64
    ids = np.full((n_users, k), -1, np.int32)
    dists = np.full((n_users, k), -1, np.int32)
    n_tasks = (n_users + USERS_PER_TASK - 1) // USERS_PER_TASK
    for task in prange(n_tasks):
        sentinel = proto[0]
        dist = np.full(n_padded, sentinel, proto.dtype)  # padding stays at the sentinel
        # the 8-per-word test needs 1-byte distances (sentinel 255; uint16 uses 65535)
        dist_words = dist.view(np.uint64) if sentinel == 255 else dist.view(np.uint64)[:0]
        cand_ids = np.empty(n_items, np.int32)
        cand_d = np.empty(n_items, np.int32)
        hist = np.zeros(bits_max + 1, np.int64)
        guess = first_guess
        for p in range(task * USERS_PER_TASK, min((task + 1) * USERS_PER_TASK, n_users)):
            u = order[p]  # row of user_words and of the output
            m = mask_rows[u]  # row of the mask lists
            # 1. distances (vectorised), masked items set to the sentinel
            x = user_words[u, 0]
            row = item_words_t[0]
            for i in range(n_items):
                dist[i] = popcount64(x ^ row[i])
            for w in range(1, n_words):
                x = user_words[u, w]
                row = item_words_t[w]
                for i in range(n_items):
                    dist[i] += popcount64(x ^ row[i])
            n_masked = 0
            for j in range(mask_ptr[m], mask_ptr[m + 1]):
                if dist[mask_items[j]] != sentinel:
                    dist[mask_items[j]] = sentinel
                    n_masked += 1
            kk = min(k, n_items - n_masked)
            if kk <= 0:
                continue
            # 2. candidates: all items within the previous user's threshold, widened until >= kk
            hist[:] = 0
            lo, hi = -1, min(max(guess, 0), bits_max)
            n_cand = _collect(dist, dist_words, lo, hi, cand_ids, cand_d, 0, hist)
            while n_cand < kk:
                lo, hi = hi, min(hi + 2, bits_max)
                n_cand = _collect(dist, dist_words, lo, hi, cand_ids, cand_d, n_cand, hist)
            # 3. threshold t: fewer than kk candidates closer than t, at least kk within t
            t, below = 0, 0
            while below + hist[t] < kk:
                below += hist[t]
                t += 1
            guess = t
            # 4. counting sort by distance; each distance's items arrive in id order
            start = 0
            for d in range(t):
                count = hist[d]
                hist[d] = start
                start += count
            hist[t] = below
            for j in range(n_cand):
                d = cand_d[j]
                if d <= t:
                    pos = hist[d]
                    if pos < kk:
                        ids[u, pos] = cand_ids[j]
                        dists[u, pos] = d
                        hist[d] = pos + 1
    return ids, dists


def _renamed(fn, name: str):
    """The same function under another name: numba's on-disk cache is keyed by name and
    bytecode, not by the `parallel` flag, so two builds of one function must not share a name."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = name
    return copy


_topk_parallel = njit(parallel=True, cache=True, nogil=True)(_topk)
# a query of a few users runs in the calling thread: waking the pool costs more than it saves
_topk_serial = njit(cache=True, nogil=True)(_renamed(_topk, "_topk_serial"))


@dataclass
class Exclusions:
    """Each user's masked items as CSR: items[indptr[u]:indptr[u + 1]]."""

    indptr: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int64

    @classmethod
    def none(cls, n_users: int) -> "Exclusions":
        return cls(np.zeros(n_users + 1, np.int64), np.zeros(0, np.int64))

    @classmethod
    def from_pairs(cls, pairs: np.ndarray | None, n_users: int, n_items: int) -> "Exclusions":
        """(user, item) pairs, e.g. split.train; duplicates are harmless."""
        if pairs is None or len(pairs) == 0:
            return cls.none(n_users)
        pairs = np.asarray(pairs)
        if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind not in "iu":
            raise HashbenchError(f"exclude must be an integer [n, 2] array of (user, item), got {pairs.dtype} "
                                 f"{pairs.shape}")
        users, items = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
        if min(users.min(), items.min()) < 0 or users.max() >= n_users or items.max() >= n_items:
            raise HashbenchError(f"exclude refers to user {users.max()} / item {items.max()} (or a negative "
                                 f"id), outside the {n_users} users x {n_items} items")
        indptr, items = group_by_row(users, items, n_users, sort_cols=False)
        return cls(indptr, items)

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.items.nbytes


class HammingIndex:
    """Item codes packed once into 64-bit words; `search` answers batches of users.

    >>> index = HammingIndex(item_codes)                       # numpy.packbits rows
    >>> mask = Exclusions.from_pairs(split.train, n_users, n_items)
    >>> top = index.search(user_codes, 100, mask)              # top.ids int32 [n_users, 100]
    """

    def __init__(self, item_codes: np.ndarray, bits: int | None = None):
        from hashbench.evaluate import check_codes

        self.bits = check_codes(item_codes[:1], item_codes, bits)
        self.n_items = item_codes.shape[0]
        self.item_words_t = np.ascontiguousarray(pack_words(item_codes, self.bits).T)

    @property
    def nbytes(self) -> int:
        return self.item_words_t.nbytes

    def search(self, user_codes: np.ndarray, k: int, mask: Exclusions | None = None,
               users: np.ndarray | None = None) -> TopK:
        """Top-K of the given users (default: every row of user_codes), one output row each.

        `mask` and `users` index the rows of user_codes; masked items are never returned.
        """
        from hashbench.evaluate import check_codes

        check_codes(user_codes, user_codes[:0].reshape(0, user_codes.shape[1]), self.bits)
        if not 1 <= k <= self.n_items:
            raise HashbenchError(f"K = {k} must be between 1 and the catalogue size ({self.n_items} items)")
        users = np.arange(user_codes.shape[0]) if users is None else np.asarray(users, np.int64)
        mask = mask or Exclusions.none(user_codes.shape[0])
        if mask.n_users != user_codes.shape[0]:
            raise HashbenchError(f"the mask covers {mask.n_users} users, the codes {user_codes.shape[0]}")
        words = pack_words(user_codes[users], self.bits)
        n_words = words.shape[1]
        proto = np.full(1, 255, np.uint8) if n_words * 64 < 255 else np.full(1, 65535, np.uint16)
        # users in code order: neighbours in a task share most of their code, so the previous
        # user's threshold is a good first guess (trained Gowalla codes: 0.48 -> 0.35 s CPU)
        order = np.argsort(words[:, 0], kind="stable")
        kernel = _topk_parallel if len(users) > USERS_PER_TASK else _topk_serial
        ids, dists = kernel(words, self.item_words_t, int(k), mask.indptr, mask.items, users, proto,
                           n_words * 16, order)
        return TopK(ids, dists)


def hamming_topk(user_codes: np.ndarray, item_codes: np.ndarray, k: int, exclude: np.ndarray | None = None,
                 bits: int | None = None) -> TopK:
    """Each user's K nearest items by Hamming distance, nearest first, ties by ascending item id.

    Codes are numpy.packbits rows (uint8 [n, ceil(bits/8)]), as methods give them; `exclude`
    holds (user, item) pairs never to return (a user's training items); duplicates are fine.
    """
    from hashbench.evaluate import check_codes

    bits = check_codes(user_codes, item_codes, bits)
    mask = Exclusions.from_pairs(exclude, user_codes.shape[0], item_codes.shape[0])
    return HammingIndex(item_codes, bits).search(user_codes, k, mask)
