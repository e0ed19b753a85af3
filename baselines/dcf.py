"""DCF — Discrete Collaborative Filtering (Zhang, Shen, Liu, He, Luan, Chua, SIGIR 2016).

Spec: ../shared/design/methods.md §6, read from the reference code
hanwangzhang/Discrete-Collaborative-Filtering @ 14f72cc6 (DCF.m, DCFinit.m, DCDmex.c,
UpdateSVD.m, my_MGS.m, ScaleScore.m). Codes B ∈ {±1}^{m×r}, D ∈ {±1}^{n×r} and auxiliary
real X, Y in the balanced / decorrelated sets {1ᵀX = 0, XᵀX = m I}, {1ᵀY = 0, YᵀY = n I}:

    min  Σ_{(u,i)∈Ω} (s_ui − b_uᵀd_i)²  − 2α tr(BᵀX) − 2β tr(DᵀY)

Algorithm 1, one outer iteration: B-step (per user, discrete coordinate descent bit by
bit: b_uk ← sgn(v_k − Σ_{k'≠k} M_kk' b_uk'), M = D_uᵀD_u, v = D_uᵀs_u + α x_u, unchanged
when the argument is 0, up to `inner_passes` passes or until no bit flips), D-step (the
same per item with β y_i), X-step and Y-step (X = √m [P P̂][Q Q̂]ᵀ from the SVD of the
column-centred B, completed by Gram–Schmidt when B is rank-deficient). Initialisation
DCFinit (Eq. 17): the relaxed problem by alternating ridge solves
u_i = (V_iᵀV_i + α|Ω_i| I)⁻¹(V_iᵀs_i + 2α x_i) from U, V ~ U(0,1), then B₀ = sgn(U),
D₀ = sgn(V). Retrieval: Hamming ranking (score b_uᵀd_i), as in the paper.

Not gradient-based: its trainer (DCFTrainer) is one outer iteration per "epoch" of the
shared driver (core.training.run_training), which validates Recall@50 after DCFinit and
after every iteration, keeps the best iteration's codes, stops after `patience` iterations
without improvement (or when no bit flips), and checkpoints B, D, X, Y for bitwise
resumption (every outer iteration draws its negatives from its own seed stream, so no RNG
state has to be carried over).

Speed: the bitwise coordinate descent runs in numba, parallel over users (items), with a
per-row residual e_j = s_uj − b_uᵀd_j instead of M = D_uᵀD_u: the argument of bit k is
Σ_j d_jk e_j + |Ω_u| b_uk + α x_uk (identical to the paper's, as M_kk = |Ω_u|), and a flip
updates e in O(|Ω_u|) — O(|Ω_u|·r) per pass instead of O(|Ω_u|·r²) for forming M.

Deviations from the paper / code, and why:

1. Implicit feedback needs negatives (methods.md §6 pitfall). With all observed s = 1,
   ScaleScore divides by zero, and fitting constant targets on observed entries only makes
   every code agree. Here Ω = the training pairs with target +r plus `negatives` uniformly
   sampled unobserved items per training pair with target −r (r = bits, the ends of the
   paper's [−r, r] rating range), re-sampled at every outer iteration (and once for
   DCFinit). The sampled Ω is fixed within an iteration, so each B/D bit update still never
   increases the objective of that iteration.
2. Early stopping on validation Recall@50 (the code runs `max_iters` = 50 iterations or
   until no bit changes — with re-sampled negatives bits keep changing), best iteration kept.
3. DCFinit runs at most `init_iters` alternations and stops when the relaxed objective
   changes by less than `init_tol` · max(m, n) (the code's tolerance); the ridge term uses
   α·max(|Ω_i|, 1) so that a row without entries stays solvable.
4. The code's per-row `DCDmex` loops are parallelised over rows (exactly the paper's
   "in parallel over users/items"); the result does not depend on the number of threads.
5. Defaults α = β = 0.001 are DCF.m's recommended "good default"; r = bits (64).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numba
import numpy as np
import torch

from hashbench.codes import pack_signs
from hashbench.core.graph import UserItemIndex
from hashbench.core.trained_method import TrainedMethod
from hashbench.core.training import TrainConfig
from hashbench.csr import group_by_row
from hashbench.registry import TrainData, register


# --------------------------------------------------------------------------- kernels

@numba.njit(parallel=True, cache=True)
def dcd_rows(codes, other, indptr, indices, targets, aux, weight, max_passes, bit_lo, bit_hi):
    """Bitwise discrete coordinate descent for every row of `codes` (in place).

    Row i fits targets[indptr[i]:indptr[i+1]] against other[indices[...]] and is pulled
    towards aux[i] with `weight`; only bits bit_lo..bit_hi−1 are visited. Returns the number
    of bit flips per row.
    """
    m, r = codes.shape
    flips = np.zeros(m, np.int64)
    for i in numba.prange(m):
        start = indptr[i]
        cnt = indptr[i + 1] - start
        local = np.empty((r, cnt))
        for t in range(cnt):
            j = indices[start + t]
            for k in range(r):
                local[k, t] = other[j, k]
        b = codes[i].copy()
        e = np.empty(cnt)
        for t in range(cnt):
            s = 0.0
            for k in range(r):
                s += b[k] * local[k, t]
            e[t] = targets[start + t] - s
        for _ in range(max_passes):
            changed = 0
            for k in range(bit_lo, bit_hi):
                g = weight * aux[i, k] + cnt * b[k]
                for t in range(cnt):
                    g += local[k, t] * e[t]
                if g != 0.0:
                    new = 1.0 if g > 0.0 else -1.0
                    if new != b[k]:
                        delta = new - b[k]
                        for t in range(cnt):
                            e[t] -= delta * local[k, t]
                        b[k] = new
                        changed += 1
            flips[i] += changed
            if changed == 0:
                break
        codes[i] = b
    return flips


@numba.njit(parallel=True, cache=True)
def ridge_rows(out, other, indptr, indices, targets, aux, weight):
    """DCFinit's relaxed row update u_i = (V_iᵀV_i + α|Ω_i| I)⁻¹(V_iᵀs_i + 2α x_i), in place.

    Plain loops and a hand-written Cholesky solve: BLAS/LAPACK calls inside numba's parallel
    loop fight OpenBLAS's own threads (and were 10x slower here).
    """
    m, r = out.shape
    for i in numba.prange(m):
        start = indptr[i]
        cnt = indptr[i + 1] - start
        a = np.zeros((r, r))
        rhs = 2.0 * weight * aux[i]
        for t in range(cnt):
            v = other[indices[start + t]]
            s = targets[start + t]
            for k in range(r):
                vk = v[k]
                rhs[k] += s * vk
                for l in range(k + 1):
                    a[k, l] += vk * v[l]
        ridge = weight * max(cnt, 1)
        for k in range(r):
            a[k, k] += ridge
        # Cholesky a = L Lᵀ (lower triangle, in place), then two triangular solves
        for k in range(r):
            d = a[k, k]
            for l in range(k):
                d -= a[k, l] * a[k, l]
            d = np.sqrt(d)
            a[k, k] = d
            for j in range(k + 1, r):
                x = a[j, k]
                for l in range(k):
                    x -= a[j, l] * a[k, l]
                a[j, k] = x / d
        y = np.empty(r)
        for k in range(r):
            x = rhs[k]
            for l in range(k):
                x -= a[k, l] * y[l]
            y[k] = x / a[k, k]
        for k in range(r - 1, -1, -1):
            x = y[k]
            for l in range(k + 1, r):
                x -= a[l, k] * out[i, l]
            out[i, k] = x / a[k, k]


@numba.njit(parallel=True, cache=True)
def squared_error(left, right, rows, cols, targets):
    """Σ_p (targets[p] − left[rows[p]]·right[cols[p]])²."""
    total = 0.0
    r = left.shape[1]
    for p in numba.prange(len(rows)):
        s = 0.0
        for k in range(r):
            s += left[rows[p], k] * right[cols[p], k]
        d = targets[p] - s
        total += d * d
    return total


# --------------------------------------------------------------------------- pieces

class Entries:
    """The sampled Ω of one iteration, as CSR by user and CSR by item."""

    def __init__(self, users: np.ndarray, items: np.ndarray, targets: np.ndarray, n_users: int, n_items: int):
        self.users, self.items, self.targets = users, items, targets
        self.by_user = group_by_row(users, items, n_users, targets, sort_cols=False)
        self.by_item = group_by_row(items, users, n_items, targets, sort_cols=False)


def sample_entries(index: UserItemIndex, train: np.ndarray, negatives: int, scale: float,
                   rng: np.random.Generator) -> Entries:
    """Training pairs with target +scale plus `negatives` uniform unobserved items per pair at −scale."""
    users, items = train[:, 0], train[:, 1]
    neg_users = np.repeat(users, negatives)
    neg_items = index.sample_negatives(neg_users, rng)
    all_users = np.concatenate([users, neg_users])
    all_items = np.concatenate([items, neg_items])
    targets = np.concatenate([np.full(len(users), scale), np.full(len(neg_users), -scale)])
    return Entries(all_users, all_items, targets, index.n_users, index.n_items)


def balanced_decorrelated(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """UpdateSVD: the X maximising tr(BᵀX) s.t. 1ᵀX = 0, XᵀX = m I (rows = users here).

    X = √m Q Pᵀ from the thin SVD B̄ = Q Σ Pᵀ of the column-centred codes; when B̄ has rank
    r' < r, P is completed with the remaining eigenvectors and Q with orthonormal vectors
    orthogonal to [1, Q] (Gram–Schmidt of random vectors, as my_MGS.m).
    """
    m, r = codes.shape
    centred = codes - codes.mean(0)
    w, p = np.linalg.eigh(centred.T @ centred)
    keep = w > 1e-10 * max(float(w.max()), 1.0)
    q = centred @ p[:, keep] / np.sqrt(w[keep])
    if keep.sum() < r:
        basis = np.column_stack([np.full(m, 1.0 / np.sqrt(m)), q])
        z = rng.standard_normal((m, r - int(keep.sum())))
        for _ in range(2):
            z -= basis @ (basis.T @ z)
        q_hat, _ = np.linalg.qr(z)
        q = np.column_stack([q, q_hat])
        p = np.column_stack([p[:, keep], p[:, ~keep]])
    else:
        p = p[:, keep]
    return np.sqrt(m) * q @ p.T


def objective(B, D, X, Y, entries: Entries, alpha: float, beta: float) -> float:
    """Σ_Ω (s − bᵀd)² − 2α tr(BᵀX) − 2β tr(DᵀY) on the sampled entries."""
    loss = squared_error(B, D, entries.users, entries.items, entries.targets)
    return float(loss - 2 * alpha * np.sum(B * X) - 2 * beta * np.sum(D * Y))


def b_step(B, D, X, entries: Entries, alpha: float, passes: int, bits: tuple[int, int] | None = None) -> int:
    lo, hi = bits or (0, B.shape[1])
    return int(dcd_rows(B, D, *entries.by_user, X, alpha, passes, lo, hi).sum())


def d_step(B, D, Y, entries: Entries, beta: float, passes: int, bits: tuple[int, int] | None = None) -> int:
    lo, hi = bits or (0, D.shape[1])
    return int(dcd_rows(D, B, *entries.by_item, Y, beta, passes, lo, hi).sum())


def sgn(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 1.0, -1.0)


# --------------------------------------------------------------------------- trainer and method

class DCFTrainer:
    """Algorithm 1 for the shared driver: initialise() is DCFinit, an epoch one outer iteration."""

    def __init__(self, method: "DCF", index: UserItemIndex, train: np.ndarray):
        self.method, self.index, self.train = method, index, train
        self.p, self.r = method.params, method.bits
        self.init_iters_run = 0
        self.B = self.D = self.X = self.Y = None

    def initialise(self) -> None:
        """DCFinit: alternating ridge solves of the relaxed problem, then sgn."""
        p, r, index = self.p, self.r, self.index
        m, n = index.n_users, index.n_items
        rng = np.random.default_rng(self.method.seed("init"))
        U, V = rng.random((m, r)), rng.random((n, r))
        X, Y = balanced_decorrelated(U, rng), balanced_decorrelated(V, rng)
        entries = sample_entries(index, self.train, p["negatives"], float(r), rng)
        previous = None
        tol = p["init_tol"] * max(m, n)
        for k in range(1, p["init_iters"] + 1):
            ridge_rows(U, V, *entries.by_user, X, p["alpha"])
            ridge_rows(V, U, *entries.by_item, Y, p["beta"])
            X, Y = balanced_decorrelated(U, rng), balanced_decorrelated(V, rng)
            value = objective(U, V, X, Y, entries, p["alpha"], p["beta"])
            self.init_iters_run = k
            self.method.ctx.progress(f"{self.method.name} init", k, p["init_iters"], objective=value)
            if previous is not None and abs(previous - value) < tol:
                break
            previous = value
        self.B, self.D = sgn(U), sgn(V)
        self.X, self.Y = balanced_decorrelated(self.B, rng), balanced_decorrelated(self.D, rng)
        self.method.set_codes(self.B, self.D)

    def train_epoch(self, epoch: int, rng: np.random.Generator) -> dict[str, Any]:
        p = self.p
        own = np.random.default_rng(self.method.seed("iteration", epoch))
        entries = sample_entries(self.index, self.train, p["negatives"], float(self.r), own)
        flips_b = b_step(self.B, self.D, self.X, entries, p["alpha"], p["inner_passes"])
        flips_d = d_step(self.B, self.D, self.Y, entries, p["beta"], p["inner_passes"])
        self.X = balanced_decorrelated(self.B, own)
        self.Y = balanced_decorrelated(self.D, own)
        self.method.set_codes(self.B, self.D)
        record = {"flips_B": flips_b, "flips_D": flips_d,
                  "loss": objective(self.B, self.D, self.X, self.Y, entries, p["alpha"], p["beta"])}
        if flips_b + flips_d == 0:
            record["stop"] = "converged"
        return record

    def state(self) -> dict[str, Any]:
        if self.B is None:
            return {}  # before initialise(): nothing to resume from
        return {"B": torch.from_numpy(self.B.astype(np.int8)), "D": torch.from_numpy(self.D.astype(np.int8)),
                "X": torch.from_numpy(self.X), "Y": torch.from_numpy(self.Y), "init_iters_run": self.init_iters_run}

    def load_state(self, state: dict[str, Any]) -> None:
        if not state:
            self.B = self.D = self.X = self.Y = None
            return
        self.B, self.D = (state[k].numpy().astype(np.float64) for k in ("B", "D"))
        self.X, self.Y = (state[k].numpy() for k in ("X", "Y"))
        self.init_iters_run = state["init_iters_run"]
        self.method.set_codes(self.B, self.D)

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {"B": torch.from_numpy(self.B.astype(np.int8)), "D": torch.from_numpy(self.D.astype(np.int8))}

    def restore(self, snapshot: dict[str, torch.Tensor]) -> None:
        self.method.set_codes(snapshot["B"].numpy(), snapshot["D"].numpy())

    def session(self):
        return contextlib.nullcontext()

    def evaluating(self):
        return contextlib.nullcontext()


@register
class DCF(TrainedMethod):
    name = "dcf"  # parameters, description: dcf.toml
    devices = ("cpu",)  # numba kernels

    def train_config(self) -> TrainConfig:
        # an outer iteration is an epoch; validate after DCFinit and after every iteration
        p = self.params
        return TrainConfig(epochs=p["max_iters"], eval_every=1, patience=p["patience"], validate_initial=True)

    def trainer(self, data: TrainData) -> DCFTrainer:
        train = np.asarray(data.train, dtype=np.int64)
        self.dcf = DCFTrainer(self, UserItemIndex(train, data.n_users, data.n_items), train)
        return self.dcf

    def set_codes(self, B, D):
        self.B, self.D = B.copy(), D.copy()  # ±1

    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        return pack_signs(self.B), pack_signs(self.D)

    def method_extras(self) -> dict[str, Any]:
        p = self.params
        return {
            "init_iterations": self.dcf.init_iters_run,
            "deviations": [
                f"implicit feedback: observed pairs target +{self.bits}, {p['negatives']} uniformly sampled "
                "unobserved item(s) per observed pair target -bits, re-sampled every outer iteration "
                "(the paper's ScaleScore is undefined on all-ones data)",
                "early stopping on validation recall@50 (patience "
                f"{p['patience']} outer iterations), best iteration's codes kept",
                f"DCFinit: at most {p['init_iters']} alternations, tolerance {p['init_tol']}*max(m,n); "
                "ridge uses alpha*max(|Omega_i|,1)",
                "per-row coordinate descent parallelised over rows (numba), residual form (same updates)",
            ],
        }
