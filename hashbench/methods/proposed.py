"""Proposed (Luo & Wu, AAAI-24 student abstract): SRLoss + AAGE on a LightGCN encoder.

Spec: ../shared/design/methods.md §1. A LightGCN encoder (3 layers, dim = bits, mean of
layers, N(0, 0.1²) init) gives real embeddings P, Q; codes b = sgn(p), d = sgn(q) (sgn(0)=+1);
scores s = bᵀd / bits; the smooth recall loss with outer kernel σ((N − π̂)/φ) and inner kernel
σ((s_uj − s_ui)/ψ); the backward of sgn is SignSwish's derivative SS'_β (AAGE).

Choices the abstract leaves open (all parameters, tuned on validation only):

- `rank = "exact"` (default): the smooth rank of each positive over *all* items, exactly, from a
  per-user histogram of the batch's score matrix (codes give only bits + 1 score values;
  core.losses.smooth_recall_loss_histogram). `rank = "sampled"`: over `sampled_items` = M
  items shared by all users of a step, with the (n_items − 1)/M rescaling (the feasibility
  run in methods.md); the same histogram form makes its cost O(users·M), not O(pairs·M).
- Each step: `batch_users` users (every user once per epoch, shuffled) and up to
  `positives` of each user's training items (0 = all of them) as the pairs Ω of the loss
  (micro-average over pairs, as the paper's 1/|Ω|).
- `exclude_positives`: count only u's non-training items in the rank of i (what evaluation
  measures) instead of all other items (the paper's Σ_{j≠i}); off by default.
- L2 on the batch's ego embeddings (users and their sampled positives), λ = `l2`, as LightGCN.
- Adam with lr `lr`, optional per-epoch decay `lr_decay`; early stopping on valid Recall@50.

Defaults: the feasibility run of methods.md §1 (16 positives per user, lr 1e-2, L2 1e-4,
ψ 0.05, φ = N = 50, β 15) with the exact all-items rank, which won on validation. Tuning
notes (Gowalla, random-8-1-1, seed 0, valid Recall@50):
- `rank="sampled"` (M = 1000, the feasibility setting): 0.154 / 0.178 / 0.215 at epochs
  5 / 10 / 40, best 0.2233 at epoch 115 (3081 s). `rank="exact"`: 0.2143 / 0.2249 at epochs
  5 / 10 (1192 s) — past sampled's best in a tenth of the epochs and ~40% of the time, even
  though a step costs ~4× more on CPU (its loss: three users × all-items dense products,
  2.6–6.8 s a step under load, against 0.1–0.2 s for users × M).
- all of each user's positives per step (`positives=0`, free with the histogram form), sampled
  rank: worse, 0.139 / 0.162 / 0.178 at epochs 5 / 10 / 15 (it weights heavy users more).

Where the time goes (Gowalla, CPU): ~85–90% of a step is the six sparse products of the
3-layer propagation (forward and backward over 1.64 M edges × 64 dims); the loss, sampling
and Adam are the rest.
"""

from __future__ import annotations

import numpy as np
import torch

from hashbench.core.estimators import get_estimator
from hashbench.core.graph import LightGCNEncoder, UserItemIndex
from hashbench.core.losses import smooth_recall_loss_histogram
from hashbench.core.trained_method import TorchMethod
from hashbench.registry import TrainData, register


@register
class Proposed(TorchMethod):
    name = "proposed"  # parameters, description: proposed.toml

    def _estimator(self):
        p = self.params
        if p["estimator"] in ("signswish", "tanh"):
            return get_estimator(p["estimator"], beta=p["beta"], schedule=p["beta_schedule"],
                                 beta_end=p["beta_end"], anneal_epochs=p["anneal_epochs"])
        return get_estimator(p["estimator"])

    def build(self, data: TrainData) -> LightGCNEncoder:
        p = self.params
        self.estimator = self._estimator()
        self.index = UserItemIndex(data.train, data.n_users, data.n_items)
        self.n_items = data.n_items
        return LightGCNEncoder(data.train, data.n_users, data.n_items, dim=self.bits, layers=p["layers"],
                               init_std=p["init_std"], device=self.device, generator=self.torch_generator("init"))

    def on_epoch_start(self, epoch: int) -> None:
        self.estimator.set_epoch(epoch)

    def epoch_batches(self, epoch, rng):
        p, index, n_items = self.params, self.index, self.n_items
        users = rng.permutation(index.active_users)
        for start in range(0, len(users), p["batch_users"]):
            batch = users[start:start + p["batch_users"]]
            per_user = None if p["exclude_positives"] else p["positives"]
            rows, items = index.positives(batch, rng, per_user)
            sampled = None
            if p["rank"] == "sampled":  # M items shared by the whole step, and each positive's column
                items_s = np.sort(rng.choice(n_items, size=min(p["sampled_items"], n_items), replace=False))
                col = np.minimum(np.searchsorted(items_s, items), len(items_s) - 1)
                sampled = items_s, np.where(items_s[col] == items, col, -1)
            yield batch, rows, items, sampled

    def batch_loss(self, batch, epoch):
        p, device, bits, estimator = self.params, self.device, self.bits, self.estimator
        users, rows, items, sampled = batch
        users_t = torch.from_numpy(users).to(device)
        rows_t, items_t = torch.from_numpy(rows).to(device), torch.from_numpy(items).to(device)
        user_emb, item_emb = self.model()
        b = estimator(user_emb[users_t])
        if p["rank"] == "exact":
            cols_t, d = items_t, estimator(item_emb)
            scale = 1.0
        else:
            sampled, cols = sampled
            cols_t = torch.from_numpy(cols).to(device)
            d = estimator(item_emb[torch.from_numpy(sampled).to(device)])
            scale = (self.n_items - 1) / len(sampled)
        scores = b @ d.T / bits
        s_pos = (b[rows_t] * estimator(item_emb[items_t])).sum(1) / bits
        loss = smooth_recall_loss_histogram(scores, s_pos, rows_t, cols_t, bits, p["top_n"], p["phi"],
                                            p["psi"], scale, exclude_positives=p["exclude_positives"])
        reg = 0.5 * (self.model.ego_users(users_t).pow(2).sum()
                     + self.model.ego_items(items_t).pow(2).sum()) / len(users)
        return loss + p["l2"] * reg

    def code_embeddings(self):
        return self.model()

    def method_extras(self) -> dict:
        return {"estimator": self.estimator.describe()}
