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
from hashbench.core.trained_method import TorchMethod
from hashbench.registry import TrainData, register

REFERENCE_DEFAULTS = {"batch_size": 2048, "lr": 1e-3, "l2": 1e-4, "layers": 3, "dim": 64, "epochs": 1000}


@register
class LightGCN(TorchMethod):
    name = "lightgcn"  # parameters, description: lightgcn.toml

    def build(self, data: TrainData) -> LightGCNEncoder:
        p = self.params
        self.index = UserItemIndex(data.train, data.n_users, data.n_items)
        self.train_pairs = np.asarray(data.train, dtype=np.int64)
        self._embeddings = None
        return LightGCNEncoder(data.train, data.n_users, data.n_items, dim=p["dim"] or self.bits,
                               layers=p["layers"], init_std=p["init_std"], device=self.device,
                               generator=self.torch_generator("init"))

    def epoch_batches(self, epoch, rng):
        train, size = self.train_pairs, self.params["batch_size"]
        order = rng.permutation(len(train))
        for start in range(0, len(order), size):
            pairs = train[order[start:start + size]]
            yield pairs[:, 0], pairs[:, 1], self.index.sample_negatives(pairs[:, 0], rng)

    def batch_loss(self, batch, epoch):
        self._embeddings = None  # parameters are about to change
        users, pos, neg = (torch.from_numpy(a).to(self.device) for a in batch)
        user_emb, item_emb = self.model()
        u = user_emb[users]
        loss = bpr_loss((u * item_emb[pos]).sum(1), (u * item_emb[neg]).sum(1))
        reg = 0.5 * (self.model.ego_users(users).pow(2).sum() + self.model.ego_items(pos).pow(2).sum()
                     + self.model.ego_items(neg).pow(2).sum()) / len(users)
        return loss + self.params["l2"] * reg

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._embeddings is None:
            self._embeddings = self.model()
        return self._embeddings

    @torch.no_grad()
    def scores(self, users: np.ndarray) -> np.ndarray:
        user_emb, item_emb = self.embeddings()
        users_t = torch.as_tensor(np.asarray(users, dtype=np.int64), device=user_emb.device)
        return (user_emb[users_t] @ item_emb.T).cpu().numpy()

    def method_extras(self) -> dict:
        here = {k: self.params.get(k) or self.bits for k in REFERENCE_DEFAULTS}
        return {
            "deviations": {k: {"reference": v, "here": here[k]} for k, v in REFERENCE_DEFAULTS.items() if here[k] != v},
            "sampling": "every training pair once per epoch, one uniform negative (train items rejected)",
            "early_stopping": "valid recall@50",
        }
