"""How fast is evaluation of all Gowalla users? (protocol.md §7 target: <= 0.5 s from 64-bit codes)

    python benchmarks/eval_speed.py [--repeats 5] [--alternatives] [--no-cold]

Real Gowalla (the cached canonical copy if `hashbench fetch gowalla` ran, else built from
../shared/datasets/gowalla/interactions.tsv.gz), split random-8-1-1 seed 0, evaluated on
test (train + valid masked), K = 50 and 100, random 64-bit codes (random codes put the
top-100 cut through big tie groups, the expensive case for the tie handling). Reports:

- cold: a fresh process with an empty numba cache (JIT compile + first run), and a fresh
  process with the cache filled (what every CLI run after the first pays);
- warm: median and best of --repeats calls in this process, and the distance-histogram
  kernel alone;
- the float path (evaluate_scores) with 64-d float32 embeddings, score = inner product;
- with --alternatives, the distance histogram done without numba (numpy bitwise_count,
  torch matmul + scatter_add_), timed on a user subset and scaled to all users.

The machine is shared: run it a few times and quote the median.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from timing import load_note, timed

REPO = Path(__file__).resolve().parents[1]
SHARED_TSV = REPO.parent / "shared" / "datasets" / "gowalla" / "interactions.tsv.gz"
BITS = 64
KS = (50, 100)


def load_gowalla():
    from hashbench import datasets
    from hashbench.data import from_pairs

    if datasets.cached_path("gowalla").is_file():
        return datasets.load_dataset("gowalla"), "cache"
    import pandas as pd

    frame = pd.read_csv(SHARED_TSV, sep="\t")
    return from_pairs("gowalla", frame["user_id"].to_numpy(), frame["item_id"].to_numpy()), str(SHARED_TSV)


def random_codes(n: int, seed: int) -> np.ndarray:
    bits = np.random.default_rng(seed).integers(0, 2, (n, BITS), dtype=np.uint8)
    return np.packbits(bits, axis=1)


CHILD = """
import sys, time, json, numpy as np
t0 = time.perf_counter()
from hashbench.evaluate import evaluate_codes
z = np.load(sys.argv[1])
t1 = time.perf_counter()
evaluate_codes(z["u"], z["i"], z["rel"], z["exc"], ks=(50, 100))
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t2 - t1}))
"""


def cold_runs(arrays: dict, tmp: Path) -> dict:
    """First call in fresh processes: with an empty numba cache, then with it filled."""
    data = tmp / "case.npz"
    np.savez(data, **arrays)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "numba-cache"), PYTHONPATH=str(REPO))
    out = {}
    for label in ("empty cache", "filled cache"):
        run = subprocess.run([sys.executable, "-c", CHILD, str(data)], env=env, capture_output=True,
                             text=True, check=True)
        out[label] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


def alternative_histograms(user_codes, item_codes, n_sample: int, repeats: int) -> dict[str, tuple]:
    """(wall, CPU) seconds per user of the histogram step without numba, for the table."""
    import torch

    u = user_codes[:n_sample]
    uw = np.ascontiguousarray(u).view(np.uint64)[:, 0]
    iw = np.ascontiguousarray(item_codes).view(np.uint64)[:, 0]
    n_bins = BITS + 1

    def numpy_hist(chunk=256):
        out = np.empty((len(uw), n_bins), np.int64)
        for s in range(0, len(uw), chunk):
            d = np.bitwise_count(uw[s:s + chunk, None] ^ iw[None, :]).astype(np.int64)
            d += np.arange(d.shape[0])[:, None] * n_bins
            out[s:s + chunk] = np.bincount(d.ravel(), minlength=d.shape[0] * n_bins).reshape(-1, n_bins)
        return out

    ub = torch.from_numpy(np.unpackbits(u, axis=1).astype(np.float32) * 2 - 1)
    ib = torch.from_numpy(np.unpackbits(item_codes, axis=1).astype(np.float32) * 2 - 1)

    def torch_hist(chunk=512):
        out = torch.zeros((ub.shape[0], n_bins), dtype=torch.int32)
        for s in range(0, ub.shape[0], chunk):
            dist = ((BITS - ub[s:s + chunk] @ ib.T) / 2).round().to(torch.int64)
            out[s:s + chunk].scatter_add_(1, dist, torch.ones_like(dist, dtype=torch.int32))
        return out

    from hashbench import hamming

    ref = hamming.distance_histograms(uw[:, None], iw[:, None], BITS)
    assert np.array_equal(numpy_hist(), ref) and np.array_equal(torch_hist().numpy(), ref)
    return {name: tuple(float(np.median(t)) / n_sample for t in timed(fn, repeats))
            for name, fn in (("numpy bitwise_count + bincount", numpy_hist),
                             ("torch ±1 matmul + scatter_add_", torch_hist))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--alternatives", action="store_true", help="also time numpy / torch histograms")
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process runs")
    args = parser.parse_args()

    import numba
    import torch

    from hashbench import hamming
    from hashbench.evaluate import evaluate_codes, evaluate_scores, held_out
    from hashbench.splits import make_split

    data, source = load_gowalla()
    split = make_split(data, "random-8-1-1", 0)
    relevant, exclude = held_out(split, "test")
    user_codes, item_codes = random_codes(split.n_users, 1), random_codes(split.n_items, 2)
    print(f"gowalla from {source}: {split.n_users} users x {split.n_items} items, "
          f"{len(relevant)} relevant, {len(exclude)} excluded pairs; {BITS}-bit codes, K={KS}; "
          f"threads: numba {numba.get_num_threads()}, torch {torch.get_num_threads()}, cores {os.cpu_count()}")

    rows = []
    if not args.no_cold:
        with tempfile.TemporaryDirectory() as tmp:
            cold = cold_runs({"u": user_codes, "i": item_codes, "rel": relevant, "exc": exclude}, Path(tmp))
        for label, r in cold.items():
            rows.append((f"codes, first call, new process, {label}", [r["first"]], [np.nan]))
        rows.append(("  (import hashbench.evaluate, not included)", [r["import"]], [np.nan]))

    evaluate_codes(user_codes, item_codes, relevant, exclude, ks=KS)  # compile / load kernels
    rows.append(("codes, evaluate_codes (warm)",
                 *timed(lambda: evaluate_codes(user_codes, item_codes, relevant, exclude, ks=KS), args.repeats)))
    uw, iw = hamming.pack_words(user_codes, BITS), hamming.pack_words(item_codes, BITS)
    rows.append(("  of which the distance histogram kernel",
                 *timed(lambda: hamming.distance_histograms(uw, iw, BITS), args.repeats)))
    rows.append(("  (held_out(split, 'test'), not included)", *timed(lambda: held_out(split, "test"), args.repeats)))

    rng = np.random.default_rng(3)
    user_emb = torch.from_numpy(rng.standard_normal((split.n_users, 64), dtype=np.float32))
    item_emb_t = torch.from_numpy(rng.standard_normal((split.n_items, 64), dtype=np.float32)).T.contiguous()
    score_fn = lambda users: user_emb[torch.from_numpy(users)] @ item_emb_t
    n_float = max(2, args.repeats // 2)
    with torch.no_grad():
        rows.append(("floats, evaluate_scores, 64-d float32", *timed(
            lambda: evaluate_scores(score_fn, split.n_users, split.n_items, relevant, exclude, ks=KS), n_float)))
        batches = [np.arange(s, min(s + 2048, split.n_users)) for s in range(0, split.n_users, 2048)]
        rows.append(("  of which score_fn (the matmul)", *timed(lambda: [score_fn(b) for b in batches], n_float)))

    if args.alternatives:
        n_sample = 2048
        for name, (wall, cpu) in alternative_histograms(user_codes, item_codes, n_sample, 2).items():
            rows.append((f"histogram via {name} (scaled from {n_sample} users)", [wall * split.n_users],
                         [cpu * split.n_users]))

    width = max(len(r[0]) for r in rows)
    print(f"\n{'step':<{width}}  {'wall med':>8}  {'wall min':>8}  {'cpu med':>8}")
    for name, wall, cpu in rows:
        print(f"{name:<{width}}  {np.median(wall):8.3f}  {min(wall):8.3f}  {np.median(cpu):8.3f}")
    print(f"(seconds; {load_note()})")


if __name__ == "__main__":
    main()
