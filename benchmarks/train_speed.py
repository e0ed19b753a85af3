"""Training speed of every trained method on real data: seconds per epoch against the method's floor.

For each method (64 bits, default parameters, random-8-1-1 split, seed 0) one fresh process
builds the model as `hashbench run` would, then times `--steps` optimiser steps after
`--warmup` (batch generation + loss + backward + Adam, exactly TorchTrainer's step) and
extrapolates to an epoch: seconds/epoch = first step (it carries the epoch's setup: the
permutation, BGCH's per-epoch sampling) + (steps per epoch − 1) × the median timed step. A
whole epoch is not run, to keep the benchmark affordable on 2 cores; the extrapolation is
printed with every row.

The *floor* is measured in the same process, on random data of the same shapes: the time of
the products a step cannot avoid at the method's batch sizes (its sparse propagations over
the normalised adjacency, its dense matmuls, its embedding-bag products) plus one dense Adam
update of its parameters (part of what the method computes), times the steps of an epoch.
ratio = s/epoch ÷ floor/epoch, in wall seconds and in process CPU seconds (with one thread the
CPU seconds are what a step costs whatever else shares the machine: the steadier figure). The process then runs one validation (the evaluation the
driver runs every `eval_every` epochs: Hamming histograms for hashing methods, the float
ranking for LightGCN, whose own matmul time is given beside it) and reports its peak RSS
(the whole process: data, model, steps, validation).

`--baseline-ref SHA` times that commit too, from a `git worktree` of it, interleaved with the
working tree (baseline, new, baseline, new, … per method) so both see the same machine load.

    PYTHONPATH=. python benchmarks/train_speed.py --threads 1 --baseline-ref 3002c26 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

from timing import load_note, pin_threads, timed

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = REPO.parent / "shared" / "datasets"
METHODS = ("proposed", "hashgnn", "lightgcn", "ccsr", "bgch", "hashrec")
BITS = 64


# --- child: one method, one process ---------------------------------------------------------

def steps_per_epoch(name: str, method, data) -> int:
    """How many optimiser steps one epoch of `method` takes (its epoch_batches, counted)."""
    p = method.params
    if name == "proposed":
        return math.ceil(len(method.index.active_users) / p["batch_users"])
    if name in ("lightgcn", "hashgnn", "ccsr"):
        return math.ceil(len(data.train) / p["batch_size"])
    if name == "bgch":
        return math.ceil(len(method.index.active_users) * method.per_user / p["batch_size"])
    if name == "hashrec":
        return method.batches
    raise ValueError(f"no step count for {name}")


def floor_products(name: str, method, data) -> list[tuple]:
    """The products one step of `method` cannot avoid: ("adj", width, count) sparse products
    with the normalised adjacency, ("mm", m, k, n, count) dense [m,k]@[k,n] (and "mm_t", the
    same through a transposed operand), ("bag", rows, nnz, width, dim, count) embedding-bag
    sums, ("sampled", rows, nodes, per_row, dim, count) products with a sparse matrix of
    `per_row` random entries per row."""
    p, u, i, b = method.params, data.n_users, data.n_items, method.bits
    if name == "lightgcn":
        return [("adj", p["dim"] or b, 2 * p["layers"])]  # forward and backward of each layer
    if name == "proposed":
        cols = i if p["rank"] == "exact" else p["sampled_items"]
        # dL/db = G d and dL/dd = Gᵀ b over the batch × columns (the forward is a popcount)
        return [("adj", b, 2 * p["layers"]), ("mm", p["batch_users"], cols, b, 1), ("mm_t", cols, p["batch_users"], b, 1)]
    if name == "bgch":
        n, per_layer = u + i, method.per_layer
        # dispersion of each table: draws × iterations × (X v, Xᵀ y) + the final X v, v-outer,
        # forward and both gradients of each (all of it differentiable in X)
        disperse = 3 * (2 * p["rp_avg"] * p["rp_iterations"] + 2)
        # h⁽⁰⁾ = x Wᵀ once, then h⁽ˡ⁺¹⁾ = Â h⁽ˡ⁾: the sparse products run at the code width
        return [("adj", per_layer, 2 * p["layers"]),  # forward and backward of each layer
                ("mm", n, p["con_dim"], per_layer, 2),  # x Wᵀ and its input gradient
                ("mm", u, p["con_dim"], 1, disperse), ("mm", i, p["con_dim"], 1, disperse)]
    if name == "hashgnn":
        bs, k = p["batch_size"], p["neg_num"]
        f1, f2 = p["user_fanout"]
        h, d = p["hidden"], p["id_dim"]
        n_items_rows = bs * (1 + k)
        shapes = [(u, d, h), (i, d, h),  # ID encoders over the tables
                  (bs, 2 * h, h), (bs * f1, 2 * h, h), (bs, 2 * h, h),  # u_agg_0 (users, hop-1 items), u_agg_1
                  (n_items_rows, 2 * h, h),  # i_agg_0
                  (bs, h, b), (n_items_rows, h, b)]  # u_proj, i_proj
        fan_i = p["item_fanout"]
        means = [("sampled", bs, i, f1, h, 2), ("sampled", bs * f1, u, f2, h, 2),  # S x and Sᵀ g
                 ("sampled", n_items_rows, u, fan_i, h, 2)]
        return [("mm", m, kk, n, 3) for m, kk, n in shapes] + means  # forward, input and weight gradients
    if name == "ccsr":
        hidden, bs = p["hidden"], p["batch_size"] * (1 + p["negatives"])
        n_train = len(data.train)
        # each autoencoder over its distinct rows (≈ every row at these batch sizes): the
        # encoder's and the decoder's bags (forward and backward), the Gram wᵀw [hidden × width],
        # h (wᵀw), enc_out and dec_in (forward and both gradients)
        return [("bag", u, n_train, i, hidden, 4), ("bag", i, n_train, u, hidden, 4),
                ("mm", hidden, i, hidden, 3), ("mm", hidden, u, hidden, 3),
                ("mm", u, hidden, hidden, 3), ("mm", i, hidden, hidden, 3),
                ("mm", min(bs, u), b, hidden, 6), ("mm", min(bs, i), b, hidden, 6)]
    if name == "hashrec":
        return []
    raise ValueError(f"no floor for {name}")


def time_floor(products, data, method, repeats: int = 3) -> tuple[dict[str, float], dict[str, float]]:
    """Wall and CPU seconds per step of each product kind (median of `repeats`), and of one Adam update."""
    import numpy as np
    import torch

    from hashbench.core.graph import normalized_adjacency

    def best(fn):
        wall, cpu = timed(fn, repeats, warmup=1)
        return float(np.median(wall)), float(np.median(cpu))

    gen = torch.Generator().manual_seed(0)
    out: dict[str, float] = {}
    out_cpu: dict[str, float] = {}
    adj = None
    for prod in products:
        kind, count = prod[0], prod[-1]
        if kind == "adj":
            if adj is None:
                adj = normalized_adjacency(data.train, data.n_users, data.n_items)
            x = torch.randn(adj.shape[0], prod[1], generator=gen)
            secs = best(lambda: adj @ x)
        elif kind == "mm":
            _, m, k, n, _ = prod
            a, w = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
            secs = best(lambda: a @ w)
        elif kind == "mm_t":  # Aᵀ @ W with A stored [k, m] (a gradient through a transposed product)
            _, m, k, n, _ = prod
            a, w = torch.randn(k, m, generator=gen), torch.randn(k, n, generator=gen)
            secs = best(lambda: a.t().mm(w))
        elif kind == "sampled":
            _, rows, nodes, per_row, dim, _ = prod
            cols = torch.randint(0, nodes, (rows, per_row), generator=gen).sort(1).values.reshape(-1)
            crow = torch.arange(0, rows * per_row + 1, per_row)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                mat = torch.sparse_csr_tensor(crow, cols, torch.full((rows * per_row,), 1.0 / per_row),
                                              size=(rows, nodes))
            x = torch.randn(nodes, dim, generator=gen)
            secs = best(lambda: mat @ x)
        elif kind == "bag":
            _, rows, nnz, width, dim, _ = prod
            idx = torch.randint(0, width, (nnz,), generator=gen)
            offsets = torch.from_numpy(np.sort(np.random.default_rng(0).integers(0, nnz, rows)))
            offsets[0] = 0
            weight = torch.randn(width, dim, generator=gen)
            secs = best(lambda: torch.nn.functional.embedding_bag(idx, weight, offsets, mode="sum"))
        key = " ".join(str(v) for v in prod[:-1])
        out[key] = out.get(key, 0.0) + count * secs[0]
        out_cpu[key] = out_cpu.get(key, 0.0) + count * secs[1]
    params = [torch.zeros_like(q, requires_grad=True) for q in method.trainable_parameters()]
    for q in params:
        q.grad = torch.randn(q.shape, generator=gen)
    adam = torch.optim.Adam(params, lr=1e-3)
    out["adam"], out_cpu["adam"] = best(adam.step)
    return out, out_cpu


def warm_up_evaluation() -> None:
    """Load (or compile) the evaluators' numba kernels on a tiny case, so the timed validation
    is a warm one, as every validation after a run's first is."""
    import numpy as np

    from hashbench.evaluate import evaluate_codes, evaluate_scores

    rng = np.random.default_rng(0)
    rel, exc = np.array([[0, 1], [1, 2]]), np.array([[0, 0], [1, 3]])
    codes = np.packbits(rng.integers(0, 2, (4, BITS)).astype(np.uint8), axis=1)
    evaluate_codes(codes[:2], codes, rel, exc, ks=(2,))
    scores = rng.standard_normal((2, 4)).astype(np.float32)
    evaluate_scores(lambda users: scores[users], 2, 4, rel, exc, ks=(2,))


def child(args) -> dict:
    import numpy as np
    import torch

    pin_threads(args.threads)
    from hashbench import seeds
    from hashbench.datasets import load_dataset
    from hashbench.registry import FitContext, TrainData, available_methods
    from hashbench.method_eval import evaluate_method
    from hashbench.splits import make_split

    data_set = load_dataset(args.dataset, cache_dir=args.cache_dir, mirror=str(args.mirror))
    split = make_split(data_set, "random-8-1-1", 0)
    data = TrainData(args.dataset, split.n_users, split.n_items, split.train, split.valid)
    ctx = FitContext(seed=seeds.seed_sequence(0, "method"))
    method = available_methods()[args.method](BITS, ctx)
    method.device = torch.device("cpu")
    trainer = method.trainer(data)
    n_steps = steps_per_epoch(args.method, method, data)
    rng = np.random.default_rng(0)
    with trainer.session():
        method.on_epoch_start(1)
        batches = iter(method.epoch_batches(1, rng))

        def step():  # exactly TorchTrainer's step, batch generation included
            batch = next(batches)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss = method.batch_loss(batch, 1)
            loss.backward()
            trainer.optimizer.step()
            float(loss.detach())

        step_times, step_cpu = timed(step, min(args.warmup + args.steps, n_steps))
    counted = step_times[args.warmup:] or step_times  # after the warm-up (step 0 also stands for the epoch setup)
    counted_cpu = step_cpu[args.warmup:] or step_cpu
    epoch = step_times[0] + (n_steps - 1) * float(np.median(counted))
    epoch_cpu = step_cpu[0] + (n_steps - 1) * float(np.median(counted_cpu))

    with torch.no_grad():
        warm_up_evaluation()
        t = time.perf_counter()
        evaluate_method(method, split, "valid", (50,))
        eval_seconds = time.perf_counter() - t
        eval_matmul = None
        if not method.hashing:  # the float ranking's own product: all users × all items
            user_emb, item_emb = method.embeddings()
            t = time.perf_counter()
            for s in range(0, split.n_users, 2048):
                user_emb[s:s + 2048] @ item_emb.T
            eval_matmul = time.perf_counter() - t
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # training steps + validation
    floor, floor_cpu = time_floor(floor_products(args.method, method, data), data, method)
    floor_step, floor_step_cpu = sum(floor.values()), sum(floor_cpu.values())
    return {
        "method": args.method, "dataset": args.dataset, "threads": args.threads,
        "steps_per_epoch": n_steps, "steps_timed": len(counted), "step_seconds": counted,
        "first_step_seconds": step_times[0], "seconds_per_epoch": epoch,
        "floor_per_step": floor, "floor_per_epoch": floor_step * n_steps, "ratio": epoch / (floor_step * n_steps)
        if floor_step > 0 else None,
        # CPU seconds of the process: steadier than wall time on a shared machine (1 thread)
        "step_cpu_seconds": counted_cpu, "cpu_seconds_per_epoch": epoch_cpu, "floor_cpu_per_step": floor_cpu,
        "floor_cpu_per_epoch": floor_step_cpu * n_steps,
        "ratio_cpu": epoch_cpu / (floor_step_cpu * n_steps) if floor_step_cpu > 0 else None,
        "eval_seconds": eval_seconds, "eval_matmul_seconds": eval_matmul,
        "peak_rss_mb": peak_rss_mb,
    }


# --- parent: plan, interleave, report -------------------------------------------------------

def baseline_tree(ref: str) -> Path:
    sha = subprocess.run(["git", "rev-parse", ref], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"hashbench-baseline-{sha[:12]}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=REPO, check=True,
                       capture_output=True)
    return path


def run_child(tree: Path, method: str, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--method", method, "--dataset", args.dataset,
           "--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--mirror", str(args.mirror), "--cache-dir", str(args.cache_dir)]
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    load = os.getloadavg()[0]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        return {"method": method, "error": run.stderr.strip().splitlines()[-1:] or ["failed"], "load": load}
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result["load"] = round((load + os.getloadavg()[0]) / 2, 2)
    result["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True,
                                      text=True).stdout.strip()
    result["time_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    return result


def fmt(x, spec=".2f"):
    return "—" if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    lines = ["| method | tree | s/epoch | CPU s/epoch | floor s/epoch (CPU) | ratio wall / CPU | step s (median) "
             "| steps | valid eval s | eval matmul s | peak RSS MB | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['tree']} | failed: {r['error'][0][:60]} ||||||||||")
            continue
        median = sorted(r["step_seconds"])[len(r["step_seconds"]) // 2]
        lines.append(
            f"| {r['method']} | {r['tree']} | {r['seconds_per_epoch']:.1f} | {r['cpu_seconds_per_epoch']:.1f} "
            f"| {r['floor_per_epoch']:.1f} ({r['floor_cpu_per_epoch']:.1f}) | {fmt(r['ratio'])} / {fmt(r['ratio_cpu'])} "
            f"| {median:.3f} | {r['steps_per_epoch']} | {r['eval_seconds']:.2f} | {fmt(r['eval_matmul_seconds'])} "
            f"| {r['peak_rss_mb']:.0f} | {r['load']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated trained methods")
    parser.add_argument("--dataset", default="gowalla", help="gowalla or yelp2018 (random-8-1-1, seed 0)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="torch and numba threads of every timed process")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per method (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (the first counts once in the epoch)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds (baseline, new) per method")
    parser.add_argument("--baseline-ref", help="also time this commit (a git worktree of it), interleaved")
    parser.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR, help="local dataset mirror")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "hashbench-cache")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    trees = [("new", REPO)]
    if args.baseline_ref:
        trees.insert(0, (f"base {args.baseline_ref[:10]}", baseline_tree(args.baseline_ref)))
    methods = args.methods.split(",")
    print(f"{args.dataset}, {BITS} bits, {args.threads} thread(s); {args.warmup} warm-up + {args.steps} timed steps "
          f"per method, extrapolated to an epoch; trees: {', '.join(f'{n} ({p})' for n, p in trees)}; "
          f"{len(methods) * len(trees) * args.repeats} processes", flush=True)
    rows = []
    for method in methods:
        for _ in range(args.repeats):
            for label, tree in trees:
                r = run_child(tree, method, args)
                r["tree"] = label
                rows.append(r)
                print(table([r]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    print(f"({load_note()})")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                        indent=1))


if __name__ == "__main__":
    main()
