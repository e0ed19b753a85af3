"""HashRec (Kang & McAuley, CIKM 2019) — the binary-code learner of CIGAR (its coarse model).

Spec: ../shared/design/methods.md §4, read from kang205/CIGAR @ 29fed7ee (main.py,
model.py CoarseGrainedModel, sampler.py). Free embeddings P ∈ R^{U×d}, Q ∈ R^{I×d} (d = bits,
glorot-uniform init as TF's default); training scores use the relaxed codes
p̃ = tanh(β_e p), q̃ = tanh(β_e q) with the continuation β_e = √(1 + 10(e − 1)) at epoch
e = 1, 2, … (β = 1 → ≈ 31.5 at epoch 100); s_ui = α⟨p̃_u, q̃_i⟩ with α = 10/d; loss = BPR
summed over the batch + C_lam·½(‖P_u‖² + ‖Q_i‖² + ‖Q_j‖²) on the gathered rows. Samples:
uniform user (with ≥ 1 training item), uniform positive of that user, uniform negative not
in the user's training items; batches of 10,000, min(#train, 1e7) // 10,000 batches per
epoch; LazyAdam, lr 1e-3; 100 epochs. Codes: sgn(P), sgn(Q) (sgn(0) = +1), at test time only.

Trained with the shared loop (core.training.train_loop: Adam, validation every
`eval_every` epochs, best state kept, checkpoints and resumption); the β continuation is
the loop's `on_epoch_start` hook setting the β of core.estimators.TanhEstimator, whose
`surrogate` tanh(βx) is the relaxation (HashRec uses tanh(βx) itself in the forward pass,
not sgn with a tanh backward, so the estimator's __call__ is not used). BPR is
core.losses.bpr_loss (a mean) times the batch size, i.e. the code's sum.

Deviations from the code, and why:

1. Retrieval is exhaustive Hamming ranking of all items (training items masked), not
   multi-index-hashing lookup: the MIH lookup returns an unordered candidate set when it
   finds fewer than the requested number (methods.md §4), so ranking metrics on it would be
   meaningless; exhaustive ranking gives the same top of the list MIH approximates.
2. Early stopping on validation Recall@50 (hashbench protocol) instead of leave-one-out
   validation HR@200; same cadence (evaluate every 10 epochs, stop after 30 epochs without
   improvement = 3 evaluations).
3. The optimiser is CIGAR's LazyAdam by default (`optimizer = "lazy_adam"`): torch's
   SparseAdam (computed by core.optim.LazyAdam, bitwise the same and ~7× cheaper on CPU) over
   sparse embedding gradients, which, like TF's LazyAdam, updates the moments
   and the values of only the rows gathered in the batch (duplicates summed), with the bias
   correction of the global step. A 10,000-sample batch touches only ~28% of Gowalla's users
   and ~36% of its items; with dense Adam the other rows keep moving on stale momentum.
   `optimizer = "adam"` (dense) is kept to compare, and is in the tuning space: measured on
   Gowalla (seed 0, defaults otherwise) LazyAdam reached valid R@50 0.1168 / 0.1268 at
   epochs 5 / 10, dense Adam 0.124 / 0.1311 — LazyAdam is not better early on.
4. The epoch cap is a safety net (1000: at 300 the converged campaign's Gowalla trial 1, lr
   6.2e-4, stopped on it still rising: valid R@50 0.1838 → 0.1877 over epochs 230–280);
   `min_epochs` = 100 keeps patience from stopping the
   run before CIGAR's 100-epoch β continuation has run out (β ≈ 31.5), after which validation
   patience stops it (β keeps growing by the same formula).
5. Only the coarse (HashRec) model: CIGAR's real-valued re-ranker would break the pure
   Hamming protocol (methods.md E4).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hashbench.core.estimators import TanhEstimator
from hashbench.core.graph import UserItemIndex
from hashbench.core.losses import bpr_loss, l2_penalty
from hashbench.core.optim import LazyAdam
from hashbench.core.trained_method import TorchMethod
from hashbench.registry import TrainData, register


def beta_at(epoch: int) -> float:
    """CIGAR's continuation: β_e = √(1 + 10(e − 1)) for epoch e ≥ 1."""
    return math.sqrt(1.0 + 10.0 * (epoch - 1))


def glorot_uniform(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    limit = math.sqrt(6.0 / (rows + cols))
    return (torch.rand(rows, cols, generator=generator) * 2.0 - 1.0) * limit


class FreeEmbeddings(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, generator: torch.Generator):
        super().__init__()
        self.users = nn.Parameter(glorot_uniform(n_users, dim, generator))
        self.items = nn.Parameter(glorot_uniform(n_items, dim, generator))


@register
class HashRec(TorchMethod):
    name = "hashrec"  # parameters, description: hashrec.toml

    def build(self, data: TrainData) -> FreeEmbeddings:
        p = self.params
        self.relax = TanhEstimator(beta=1.0)
        self.betas: list[float] = []
        self.index = UserItemIndex(data.train, data.n_users, data.n_items)
        self.batches = max(1, min(len(data.train), p["max_batches"]) // p["batch_size"])
        return FreeEmbeddings(data.n_users, data.n_items, self.bits, self.torch_generator("init")).to(self.device)

    def on_epoch_start(self, epoch: int) -> None:
        self.relax.beta = beta_at(epoch)
        self.betas.append(self.relax.beta)

    def make_optimizer(self, params, lr):
        if self.params["optimizer"] == "lazy_adam":
            return LazyAdam(params, lr=lr)  # torch's SparseAdam, bitwise, without sparse algebra
        return None  # the trainer's dense Adam

    def rows(self, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """table[index], with a sparse gradient under lazy Adam (only the gathered rows)."""
        return F.embedding(index, table, sparse=self.params["optimizer"] == "lazy_adam")

    def epoch_batches(self, epoch, rng):
        index, size = self.index, self.params["batch_size"]
        for _ in range(self.batches):
            users = index.active_users[rng.integers(len(index.active_users), size=size)]
            pos = index.items[index.indptr[users] + rng.integers(index.degree[users])]
            neg = index.sample_negatives(users, rng)
            yield tuple(torch.from_numpy(a).to(self.device) for a in (users, pos, neg))

    def batch_loss(self, batch, epoch):
        users, pos, neg = batch
        pu, qi, qj = self.rows(self.model.users, users), self.rows(self.model.items, pos), self.rows(self.model.items, neg)
        bu, bi, bj = self.relax.surrogate(pu), self.relax.surrogate(qi), self.relax.surrogate(qj)
        alpha = 10.0 / self.bits
        s_pos, s_neg = alpha * (bu * bi).sum(1), alpha * (bu * bj).sum(1)
        n = len(users)
        return n * (bpr_loss(s_pos, s_neg) + self.params["c_lam"] * l2_penalty(pu, qi, qj))

    def code_embeddings(self):
        return self.model.users, self.model.items

    def method_extras(self) -> dict:
        p = self.params
        return {
            "beta_at_best_epoch": beta_at(max(self.result.best_epoch, 1)),
            "deviations": [
                "exhaustive Hamming ranking of all items instead of multi-index-hashing lookup",
                "early stopping on validation recall@50 (every "
                f"{p['eval_every']} epochs, patience {p['patience']}) instead of LOO HR@200",
                *([] if p["optimizer"] == "lazy_adam" else ["dense Adam instead of LazyAdam"]),
                "coarse HashRec model only, no CIGAR real-valued re-ranking",
            ],
        }
