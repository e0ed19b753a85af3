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
from hashbench.core.training import (TrainConfig, child_seed, fingerprint, peak_rss_mib, resolve_device,
                                     train_loop)
from hashbench.registry import Method, TrainData, register
from hashbench.seeds import torch_seed


def pack_codes(embeddings: torch.Tensor) -> np.ndarray:
    """sgn codes as numpy.packbits rows: bit 1 ↔ +1 (embedding ≥ 0)."""
    return np.packbits((embeddings >= 0).cpu().numpy(), axis=1)


@register
class Proposed(Method):
    name = "proposed"
    description = "SRLoss + AAGE on LightGCN (Luo & Wu, AAAI-24 student abstract)"
    hashing = True
    defaults = {
        "layers": 3, "init_std": 0.1,
        "rank": "exact", "sampled_items": 1000, "exclude_positives": False,
        "top_n": 50.0, "phi": 50.0, "psi": 0.05,
        "estimator": "signswish", "beta": 15.0, "beta_schedule": "constant", "beta_end": None,
        "anneal_epochs": 0,
        "lr": 1e-2, "lr_decay": 1.0, "l2": 1e-4, "batch_users": 2048, "positives": 16,
        "epochs": 400, "eval_every": 5, "patience": 5, "max_minutes": None,
    }

    def _estimator(self):
        p = self.params
        if p["estimator"] in ("signswish", "tanh"):
            return get_estimator(p["estimator"], beta=p["beta"], schedule=p["beta_schedule"],
                                 beta_end=p["beta_end"], anneal_epochs=p["anneal_epochs"])
        return get_estimator(p["estimator"])

    def fit(self, data: TrainData) -> None:
        p = self.params
        if p["rank"] not in ("exact", "sampled"):
            raise ValueError(f"proposed: rank must be 'exact' or 'sampled', got {p['rank']!r}")
        device = resolve_device(self.ctx.device)
        self.device = device
        gen = torch.Generator().manual_seed(torch_seed(child_seed(self.ctx.seed, 0)))
        self.encoder = LightGCNEncoder(data.train, data.n_users, data.n_items, dim=self.bits,
                                       layers=p["layers"], init_std=p["init_std"], device=device,
                                       generator=gen)
        self.estimator = self._estimator()
        index = UserItemIndex(data.train, data.n_users, data.n_items)
        n_items, bits = data.n_items, self.bits

        def epoch_batches(epoch, rng):
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

        def batch_loss(batch, epoch):
            users, rows, items, sampled = batch
            users_t = torch.from_numpy(users).to(device)
            rows_t, items_t = torch.from_numpy(rows).to(device), torch.from_numpy(items).to(device)
            user_emb, item_emb = self.encoder()
            b = self.estimator(user_emb[users_t])
            if p["rank"] == "exact":
                cols_t, d = items_t, self.estimator(item_emb)
                scale = 1.0
            else:
                sampled, cols = sampled
                cols_t = torch.from_numpy(cols).to(device)
                d = self.estimator(item_emb[torch.from_numpy(sampled).to(device)])
                scale = (n_items - 1) / len(sampled)
            scores = b @ d.T / bits
            s_pos = (b[rows_t] * self.estimator(item_emb[items_t])).sum(1) / bits
            loss = smooth_recall_loss_histogram(scores, s_pos, rows_t, cols_t, bits, p["top_n"], p["phi"],
                                                p["psi"], scale, exclude_positives=p["exclude_positives"])
            reg = 0.5 * (self.encoder.ego_users(users_t).pow(2).sum()
                         + self.encoder.ego_items(items_t).pow(2).sum()) / len(users)
            return loss + p["l2"] * reg

        config = TrainConfig(lr=p["lr"], epochs=p["epochs"], eval_every=p["eval_every"],
                             patience=p["patience"], lr_decay=p["lr_decay"], max_minutes=p["max_minutes"])
        config_hash = fingerprint(method=self.name, bits=bits, params=p, dataset=data.dataset,
                                  n_users=data.n_users, n_items=data.n_items, n_train=len(data.train))
        self.result = train_loop(self, self.encoder, config, epoch_batches, batch_loss,
                                 on_epoch_start=self.estimator.set_epoch, config_hash=config_hash)
        self.peak_rss_mib = peak_rss_mib()

    @torch.no_grad()
    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        user_emb, item_emb = self.encoder()
        return pack_codes(user_emb), pack_codes(item_emb)

    def extras(self) -> dict:
        r = self.result
        return {
            "best_epoch": r.best_epoch, "epochs_run": r.epochs_run, "stopped": r.stopped,
            "best_valid": r.best_valid, "train_seconds": round(r.train_seconds, 2),
            "seconds_to_best": round(r.seconds_to_best, 2),
            "seconds_per_epoch": round(r.seconds_per_epoch, 3),
            "resumed_from_epoch": r.resumed_from_epoch, "peak_rss_mib": round(self.peak_rss_mib, 1),
            "estimator": self.estimator.describe(), "device": str(self.device),
            "curve": [{k: v for k, v in h.items()} for h in r.history if "valid" in h],
        }
