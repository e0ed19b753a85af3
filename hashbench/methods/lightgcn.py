"""LightGCN (He et al., SIGIR 2020): the full-precision reference row (float scores, not hashing).

The same encoder as the Proposed method (core.graph: 3 layers, mean of layers, N(0, 0.1²)
init, dim = bits so it stores 32× more than a code) trained with BPR, scores = pᵤᵀqᵢ.

Deviations from LightGCN-PyTorch's defaults (gusye1234/LightGCN-PyTorch `parse.py`), all for
speed on a 2-core CPU; every one is in `extras()["deviations"]`:

- `batch_size` 32768 instead of 2048 and `lr` 1e-2 instead of 1e-3. One step propagates the
  whole graph (its cost hardly depends on the batch), so LightGCN's 400 steps per Gowalla
  epoch cost ~160 s here; 16× larger batches with a 10× learning rate make an epoch 16×
  cheaper (a Gowalla dev run: valid Recall@50 0.21 after 12 epochs).
- `patience` 3 evaluations of every 5 epochs (its curve is smooth; the Proposed method keeps 5).
- An epoch visits every training pair once in a random order with one uniform negative
  (rejecting the user's training items), instead of LightGCN's n_train uniformly drawn
  users with a random positive each: same number of triples, lower variance.
- L2 (`l2`, 1e-4 as LightGCN) on the batch's ego embeddings, ½‖·‖²/batch, as LightGCN.
- Early stopping on validation Recall@50 every `eval_every` epochs (LightGCN reports the
  best test epoch of a fixed 1000-epoch run).
"""

from __future__ import annotations

import numpy as np
import torch

from hashbench.core.graph import LightGCNEncoder, UserItemIndex
from hashbench.core.losses import bpr_loss
from hashbench.core.training import (TrainConfig, child_seed, fingerprint, peak_rss_mib, resolve_device,
                                     train_loop)
from hashbench.registry import Method, TrainData, register
from hashbench.seeds import torch_seed

REFERENCE_DEFAULTS = {"batch_size": 2048, "lr": 1e-3, "l2": 1e-4, "layers": 3, "dim": 64, "epochs": 1000}


@register
class LightGCN(Method):
    name = "lightgcn"
    description = "Full-precision LightGCN with BPR (reference row, float scores, not hashing)"
    hashing = False
    defaults = {
        "layers": 3, "dim": None, "init_std": 0.1, "lr": 1e-2, "lr_decay": 1.0, "l2": 1e-4,
        "batch_size": 32768, "epochs": 400, "eval_every": 5, "patience": 3, "max_minutes": None,
    }

    def fit(self, data: TrainData) -> None:
        p = self.params
        device = self.device = resolve_device(self.ctx.device)
        dim = p["dim"] or self.bits
        gen = torch.Generator().manual_seed(torch_seed(child_seed(self.ctx.seed, 0)))
        self.encoder = LightGCNEncoder(data.train, data.n_users, data.n_items, dim=dim, layers=p["layers"],
                                       init_std=p["init_std"], device=device, generator=gen)
        index = UserItemIndex(data.train, data.n_users, data.n_items)
        train = np.asarray(data.train, dtype=np.int64)
        self._embeddings = None

        def epoch_batches(epoch, rng):
            order = rng.permutation(len(train))
            for start in range(0, len(order), p["batch_size"]):
                pairs = train[order[start:start + p["batch_size"]]]
                yield pairs[:, 0], pairs[:, 1], index.sample_negatives(pairs[:, 0], rng)

        def batch_loss(batch, epoch):
            self._embeddings = None  # parameters are about to change
            users, pos, neg = (torch.from_numpy(a).to(device) for a in batch)
            user_emb, item_emb = self.encoder()
            u = user_emb[users]
            loss = bpr_loss((u * item_emb[pos]).sum(1), (u * item_emb[neg]).sum(1))
            reg = 0.5 * (self.encoder.ego_users(users).pow(2).sum() + self.encoder.ego_items(pos).pow(2).sum()
                         + self.encoder.ego_items(neg).pow(2).sum()) / len(users)
            return loss + p["l2"] * reg

        config = TrainConfig(lr=p["lr"], epochs=p["epochs"], eval_every=p["eval_every"], patience=p["patience"],
                             lr_decay=p["lr_decay"], max_minutes=p["max_minutes"])
        config_hash = fingerprint(method=self.name, bits=self.bits, params=p, dataset=data.dataset,
                                  n_users=data.n_users, n_items=data.n_items, n_train=len(data.train))
        self.result = train_loop(self, self.encoder, config, epoch_batches, batch_loss, config_hash=config_hash)
        self._embeddings = None
        self.peak_rss_mib = peak_rss_mib()

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._embeddings is None:
            self._embeddings = self.encoder()
        return self._embeddings

    @torch.no_grad()
    def scores(self, users: np.ndarray) -> np.ndarray:
        user_emb, item_emb = self.embeddings()
        users_t = torch.as_tensor(np.asarray(users, dtype=np.int64), device=user_emb.device)
        return (user_emb[users_t] @ item_emb.T).cpu().numpy()

    def extras(self) -> dict:
        r = self.result
        deviations = {k: {"reference": v, "here": self.params.get(k) or self.bits}
                      for k, v in REFERENCE_DEFAULTS.items() if (self.params.get(k) or self.bits) != v}
        return {
            "best_epoch": r.best_epoch, "epochs_run": r.epochs_run, "stopped": r.stopped,
            "best_valid": r.best_valid, "train_seconds": round(r.train_seconds, 2),
            "seconds_to_best": round(r.seconds_to_best, 2), "seconds_per_epoch": round(r.seconds_per_epoch, 3),
            "resumed_from_epoch": r.resumed_from_epoch, "peak_rss_mib": round(self.peak_rss_mib, 1),
            "device": str(self.device), "deviations": deviations,
            "sampling": "every training pair once per epoch, one uniform negative (train items rejected)",
            "early_stopping": "valid recall@50",
            "curve": [h for h in r.history if "valid" in h],
        }
