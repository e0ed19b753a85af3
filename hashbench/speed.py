"""Retrieval efficiency (protocol.md §6): time top-K retrieval the ways a user could do it.

Each way is a thin `Retriever` (ann-benchmarks' cut): `fit` on the catalogue, `query` a
batch of users, `index_bytes`. They all answer the same queries in one process with the
same pinned thread count; each measurement is warm-up calls, then repeated timed calls
(wall and process CPU seconds), summarised by median, min, max and quartiles.

- `torch-float-ip`: float32 inner product + torch.topk, users in batches and items in
  chunks (never more than `SCORE_BUDGET` floats at once), training items set to -inf;
- `hashbench-hamming`: hashbench's engine (retrieval.py), masked or not;
- `faiss-float-ip`: faiss IndexFlatIP (exhaustive, unmasked);
- `faiss-binary-flat`: faiss IndexBinaryFlat (exhaustive Hamming, unmasked);
- `faiss-binary-hash` / `faiss-binary-multihash`: hash-table lookup (the survey's first
  search strategy): the items in the buckets of the user's code prefix(es) and of their
  neighbours up to `nflip` flipped bits, re-ranked by Hamming distance. Approximate: their
  recall against exhaustive search is measured.

Recall of an approximate top-K is tie-aware (as in ann-benchmarks): a returned item counts
if its distance is at most the exact K-th distance of that user; recall = hits / K.

faiss is optional (`pip install hashbench[faiss]`): without it the faiss rows are skipped
and `faiss_missing` says so.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from hashbench.files import save_figure
from hashbench.retrieval import Exclusions, HammingIndex

# OpenMP's default spin-wait makes faiss ~10x slower on a machine shared with other jobs
# (measured: IndexBinaryFlat on 3,000 Gowalla-sized queries, 2 threads, load ~15: 6.0 s
# spinning, 0.52 s passive). Set before faiss (or torch) first loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SCORE_BUDGET = 1 << 26  # floats in one torch score block (256 MB)
USER_BATCH = 256


def load_faiss():
    """The faiss module, or None when the optional extra is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def pin_threads(n: int) -> dict[str, int]:
    """Use n threads in numba, torch and faiss (OpenMP); returns what each library reports."""
    import numba
    import torch

    numba.set_num_threads(n)
    torch.set_num_threads(n)
    out = {"numba": numba.get_num_threads(), "torch": torch.get_num_threads()}
    faiss = load_faiss()
    if faiss is not None:
        faiss.omp_set_num_threads(n)
        out["faiss"] = faiss.omp_get_max_threads()
    return out


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        w = np.asarray(self.wall)
        return {"seconds_median": float(np.median(w)), "seconds_min": float(w.min()),
                "seconds_max": float(w.max()), "seconds_q25": float(np.quantile(w, 0.25)),
                "seconds_q75": float(np.quantile(w, 0.75)), "cpu_seconds_median": float(np.median(self.cpu)),
                "repeats": len(w)}


def measure(fn: Callable[[], Any], warmup: int = 1, repeats: int = 5, budget_s: float = 60.0) -> Timing:
    """`warmup` untimed calls, then up to `repeats` timed ones; stops early once the timed
    calls have taken `budget_s` (after 3 calls, or after 1 that alone took longer), so the
    10^7-item float rows stay affordable. `repeats` in the summary says how many ran."""
    for _ in range(warmup):
        fn()
    timing = Timing()
    while len(timing.wall) < repeats:
        w, c = time.perf_counter(), time.process_time()
        fn()
        timing.wall.append(time.perf_counter() - w)
        timing.cpu.append(time.process_time() - c)
        if timing.wall[-1] > budget_s or (len(timing.wall) >= 3 and sum(timing.wall) > budget_s):
            break
    return timing


@dataclass
class Case:
    """One retrieval problem: users and items as codes and as float vectors, an optional mask."""

    name: str
    user_codes: np.ndarray  # uint8 packbits [n_users, bits/8]
    item_codes: np.ndarray
    bits: int
    user_vecs: np.ndarray | None = None  # float32 [n_users, dim]
    item_vecs: np.ndarray | None = None
    mask: Exclusions | None = None  # training items, for the masked rows

    @property
    def n_users(self) -> int:
        return self.user_codes.shape[0]

    @property
    def n_items(self) -> int:
        return self.item_codes.shape[0]


def random_case(name: str, n_users: int, n_items: int, bits: int = 64, dim: int = 64, seed: int = 0,
                mask: Exclusions | None = None, floats: bool = True) -> Case:
    """Uniform random codes and standard normal float32 vectors (the survey's Fig. 2 setup)."""
    rng = np.random.default_rng(seed)
    codes = [rng.integers(0, 256, (n, bits // 8), dtype=np.uint8) for n in (n_users, n_items)]
    vecs = [rng.standard_normal((n, dim), dtype=np.float32) for n in (n_users, n_items)] if floats else [None, None]
    return Case(name, codes[0], codes[1], bits, vecs[0], vecs[1], mask)


# --- the ways to retrieve -------------------------------------------------------------------

class Retriever:
    name = ""
    exact = True
    float_inputs = False

    def __init__(self, masked: bool = False, **params):
        self.masked, self.params = masked, params

    def fit(self, case: Case) -> None:
        self.case = case

    def query(self, users: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances or scores) of the given users' top K."""
        raise NotImplementedError

    def index_bytes(self) -> int:
        raise NotImplementedError

    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}{' masked' if self.masked else ''}{f' ({extra})' if extra else ''}"


class TorchFloatIP(Retriever):
    name, float_inputs = "torch-float-ip", True

    def fit(self, case):
        import torch

        super().fit(case)
        self.items = torch.from_numpy(case.item_vecs)
        self.users = torch.from_numpy(case.user_vecs)

    def query(self, users, k):
        import torch

        n_items = self.items.shape[0]
        chunk = max(k, min(n_items, SCORE_BUDGET // USER_BATCH))
        mask = self.case.mask if self.masked else None
        ids_out, val_out = [], []
        with torch.inference_mode():
            for b0 in range(0, len(users), USER_BATCH):
                batch = users[b0:b0 + USER_BATCH]
                q = self.users[torch.from_numpy(batch)]
                if mask is not None:
                    rows, cols = _masked_pairs(mask, batch)
                best_v = best_i = None
                for c0 in range(0, n_items, chunk):
                    scores = q @ self.items[c0:c0 + chunk].T
                    if mask is not None:
                        inside = (cols >= c0) & (cols < c0 + scores.shape[1])
                        scores[torch.from_numpy(rows[inside]), torch.from_numpy(cols[inside] - c0)] = -torch.inf
                    v, i = torch.topk(scores, min(k, scores.shape[1]), dim=1)
                    i += c0
                    if best_v is not None:
                        v, pos = torch.topk(torch.cat([best_v, v], 1), k, dim=1)
                        i = torch.gather(torch.cat([best_i, i], 1), 1, pos)
                    best_v, best_i = v, i
                ids_out.append(best_i)
                val_out.append(best_v)
        return torch.cat(ids_out).numpy(), torch.cat(val_out).numpy()

    def index_bytes(self):
        return self.case.item_vecs.nbytes


def _masked_pairs(mask: Exclusions, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row in batch, item) of every masked item of the batch's users."""
    lo, n = mask.indptr[batch], mask.indptr[batch + 1] - mask.indptr[batch]
    rows = np.repeat(np.arange(len(batch)), n)
    return rows, mask.items[np.repeat(lo - np.cumsum(n) + n, n) + np.arange(n.sum())]


class HashbenchHamming(Retriever):
    name = "hashbench-hamming"

    def fit(self, case):
        super().fit(case)
        self.index = HammingIndex(case.item_codes, case.bits)

    def query(self, users, k):
        mask = self.case.mask if self.masked else None
        top = self.index.search(self.case.user_codes, k, mask, users=users)
        return top.ids, top.distances

    def index_bytes(self):
        return self.index.nbytes


class FaissRetriever(Retriever):
    def fit(self, case):
        super().fit(case)
        self.faiss = load_faiss()
        self.index = self.build(case)

    def query(self, users, k):
        queries = self.case.user_vecs if self.float_inputs else self.case.user_codes
        values, ids = self.index.search(np.ascontiguousarray(queries[users]), k)
        return ids, values

    def index_bytes(self):
        if isinstance(self.index, (self.faiss.IndexFlat, self.faiss.IndexBinaryFlat)):
            return int(self.index.ntotal * self.index.code_size)  # no 2.5 GB serialisation copy
        return int(self.faiss.serialize_index_binary(self.index).size)


class FaissFloatIP(FaissRetriever):
    name, float_inputs = "faiss-float-ip", True

    def build(self, case):
        index = self.faiss.IndexFlatIP(case.item_vecs.shape[1])
        index.add(case.item_vecs)
        return index


class FaissBinaryFlat(FaissRetriever):
    name = "faiss-binary-flat"

    def build(self, case):
        index = self.faiss.IndexBinaryFlat(case.bits)
        index.add(case.item_codes)
        return index


class FaissBinaryFlatCounting(FaissBinaryFlat):
    """IndexBinaryFlat with use_heap=False: faiss's counting-sort top-K, its faster path for large K."""

    name = "faiss-binary-flat-counting"

    def build(self, case):
        index = super().build(case)
        index.use_heap = False
        return index


class FaissBinaryHash(FaissRetriever):
    name, exact = "faiss-binary-hash", False

    def build(self, case):
        index = self.faiss.IndexBinaryHash(case.bits, self.params["b"])
        index.add(case.item_codes)
        index.nflip = self.params["nflip"]
        return index


class FaissBinaryMultiHash(FaissRetriever):
    name, exact = "faiss-binary-multihash", False

    def build(self, case):
        index = self.faiss.IndexBinaryMultiHash(case.bits, self.params["nhash"], self.params["b"])
        index.add(case.item_codes)
        index.nflip = self.params["nflip"]
        return index


def lookup_grid(bits: int) -> list[Retriever]:
    """Hash-table lookup settings from nearly exhaustive to very selective."""
    grid = [FaissBinaryHash(b=b, nflip=f) for b in (8, 12, 16, 20) for f in (0, 1, 2) if b <= bits]
    grid += [FaissBinaryMultiHash(nhash=n, b=b, nflip=f) for n in (2, 4) for b in (8, 16) for f in (0, 1)
             if n * b <= bits]
    return grid


# --- measuring --------------------------------------------------------------------------------

def tie_aware_recall(distances: np.ndarray, ids: np.ndarray, exact_kth: np.ndarray) -> float:
    """Mean over users of |returned items with distance <= the exact K-th distance| / K."""
    hits = ((distances <= exact_kth[:, None]) & (ids >= 0)).sum(1)
    return float(np.mean(hits / ids.shape[1]))


def time_retriever(r: Retriever, case: Case, k: int, warmup: int, repeats: int, budget_s: float,
                   latency_queries: int = 0, exact_kth: np.ndarray | None = None, seed: int = 0) -> dict:
    """One row: build time, batch timing over all users, single-user latency, memory, recall."""
    started = time.perf_counter()
    r.fit(case)
    build_s = time.perf_counter() - started
    users = np.arange(case.n_users)
    result: dict[str, Any] = {}

    def run():
        result["out"] = r.query(users, k)

    summary = measure(run, warmup, repeats, budget_s).summary()
    row = {"method": r.name, "label": r.label(), "params": r.params, "exact": r.exact, "masked": r.masked,
           "case": case.name, "n_users": case.n_users, "n_items": case.n_items, "k": k,
           "representation": "float32" if r.float_inputs else f"{case.bits}-bit codes",
           "build_seconds": build_s, **summary, "qps": case.n_users / summary["seconds_median"],
           "item_bytes": int(case.item_vecs.nbytes if r.float_inputs else case.item_codes.nbytes),
           "user_bytes": int(case.user_vecs.nbytes if r.float_inputs else case.user_codes.nbytes),
           "index_bytes": int(r.index_bytes()),
           "mask_bytes": int(case.mask.nbytes) if r.masked and case.mask is not None else 0}
    if latency_queries:
        one = np.random.default_rng(seed).choice(case.n_users, min(latency_queries, case.n_users), replace=False)
        lat = []
        for u in one:
            w = time.perf_counter()
            r.query(np.array([u]), k)
            lat.append(time.perf_counter() - w)
        row.update(latency_ms_median=1e3 * float(np.median(lat)), latency_ms_p95=1e3 * float(np.quantile(lat, 0.95)))
    if exact_kth is not None and not r.float_inputs:
        ids, dist = result["out"]
        row["recall_vs_exhaustive"] = tie_aware_recall(np.asarray(dist), np.asarray(ids), exact_kth)
    return row


def environment_block(threads: dict) -> dict:
    from hashbench.environment import environment

    env = environment()
    faiss = load_faiss()
    env["packages"]["faiss"] = getattr(faiss, "__version__", None) if faiss else None
    import numba

    env["numba_threading_layer"] = numba.threading_layer()
    env["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    return {**env, "threads": threads, "load_average_1_5_15": list(os.getloadavg()),
            "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# --- plots ----------------------------------------------------------------------------------

def plot_fig2(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["n_items"])
        n = [r["n_items"] for r in mine]
        med = np.array([r["seconds_median"] for r in mine])
        err = [med - [r["seconds_min"] for r in mine], [r["seconds_max"] for r in mine] - med]
        style = "--" if mine[0]["representation"] == "float32" else "-"
        left.errorbar(n, med, yerr=err, fmt=style + "o", ms=4, capsize=2, label=label)
    for rep in dict.fromkeys(r["representation"] for r in rows):
        mine = {r["n_items"]: r["item_bytes"] for r in rows if r["representation"] == rep}
        n = sorted(mine)
        right.plot(n, [mine[x] / 2**20 for x in n], ("--" if rep == "float32" else "-") + "o", ms=4,
                   label=f"{rep} ({'64-d ' if rep == 'float32' else ''}items)")
    users, k = rows[0]["n_users"], rows[0]["k"]
    left.set(xscale="log", yscale="log", xlabel="items", ylabel="seconds (median; bars: min-max)",
             title=f"Inference time: top-{k} of {users:,} users")
    right.set(xscale="log", yscale="log", xlabel="items", ylabel="MiB", title="Storage of the item catalogue")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
    plt.close(fig)


def plot_lookup(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    n_cols = min(3, len(cases))
    n_rows = -(-len(cases) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.6 * n_cols, 4.4 * n_rows), squeeze=False)
    for ax in axes.flat[len(cases):]:
        ax.set_visible(False)
    for ax, case in zip(axes.flat, cases):
        mine = [r for r in rows if r["case"] == case]
        for method in dict.fromkeys(r["method"] for r in mine):
            pts = [r for r in mine if r["method"] == method]
            ax.plot([r["qps"] for r in pts], [r.get("recall_vs_exhaustive", 1.0) for r in pts],
                    "o" if len(pts) == 1 else ".", ms=7 if len(pts) == 1 else 9, label=method)
            if len(pts) > 1:
                for r in pts:
                    ax.annotate(",".join(str(v) for v in r["params"].values()), (r["qps"], r["recall_vs_exhaustive"]),
                                fontsize=6, alpha=0.7, xytext=(3, 2), textcoords="offset points")
        ax.set(xscale="log", xlabel="queries per second (all users, batch)", ylabel=f"recall@{mine[0]['k']} vs exhaustive",
               title=case, ylim=(-0.02, 1.02))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Hash-table lookup against exhaustive Hamming search; point labels: b,nflip (hash), "
                 "nhash,b,nflip (multihash)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
    plt.close(fig)
