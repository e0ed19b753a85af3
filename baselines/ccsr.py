"""CCSR — Compact Cross-Similarity Recommender (Shi & Chung, AdKDD 2022), the CCSR-S variant.

Spec: ../shared/design/methods.md §5 and the full paper (../shared/papers/003_*.txt, §4);
no public code. Two autoencoders: the user AE reads the user's row of the training matrix
(X = R), the item AE the item's column (Y = Rᵀ). Each has a one-layer encoder and a
one-layer decoder of hidden size 128 and a dropout layer before the last encoder layer:
    encoder  x → Linear(·,128) → ReLU → Dropout → Linear(128, r) = F      (r = bits)
    decoder  F → Linear(r,128) → ReLU → Linear(128, ·) = x̂
Loss (paper Eq. 1–4): L = L_sim + λ_b L_b + λ_ae L_ae with
    L_sim = Σ_{a,b} log(1 + e^{⟨F_a,F_b⟩}) − S_ab⟨F_a,F_b⟩   (MAP / BCE on inner products),
    L_b   = ‖mean F^u‖² + ‖mean F^i‖² over a batch's pairs      (bit balance: bit means → 0),
    L_ae  = Σ_{a,b} ‖X_a − X̂_a‖² + ‖Y_b − Ŷ_b‖²              (squared reconstruction error),
all three over the same sampled pairs (a, b) and averaged over them (see 2).
Binarisation CCSR-S: train continuous, codes = sgn(F) (sgn(0) = +1), Hamming ranking.
Defaults: λ_b = 1e-4 (the paper's, all datasets), λ_ae = 1e-3 (see 2), dropout 0.2 (the
paper's "0.8" read as keep-probability, see 7), 1 sampled negative per training pair.

Trained with the shared driver (core.training.run_training: Adam, validation Recall@50 of the
sgn codes every `eval_every` epochs, best state kept, checkpoints, resumption). The BCE is
written out (not core.losses.bce_loss, a plain mean) because `full_sum` weights its terms.

Implementation notes (exact, not approximations): the sparse input rows enter the first
layer as an EmbeddingBag sum (= Linear on the 0/1 row; core.bags.sum_bag, torch's bag with a
cheaper, bit-identical weight gradient); the squared reconstruction error
over all n columns is computed without materialising x̂ ∈ R^{B×n}, from
‖x − x̂‖² = ‖x̂‖² − 2 Σ_{j∈x} x̂_j + |x| with ‖x̂‖² = hᵀ(WᵀW)h + 2hᵀWᵀc + ‖c‖² (x̂ = Wh + c).

Choices the paper leaves open, and deviations, with reasons:

1. The sum over all pairs (a, b) of L_sim is replaced by the training pairs (S = 1) plus
   `negatives` uniformly sampled unobserved items per pair (S = 0), re-drawn every epoch
   [assumption in methods.md §5]: the full user × item sum is 1.2e9 pairs on Gowalla.
   `full_sum = True` instead weights each sampled negative of u by
   (n_items − deg_u)/(negatives · deg_u), an unbiased estimate of the paper's full sum.
2. Weighting of the terms, per pair. Eq. 1 writes L_ae as Σ_{a,b}, over the same pairs
   (a, b) as L_sim (Eq. 3) and L_b, so each pair carries all three: its BCE, the
   reconstruction errors ‖X_a − X̂_a‖² + ‖Y_b − Ŷ_b‖² of its user and its item, and the
   balance of the batch's bit means ‖mean_p F_p‖² (the paper's L_b formula is garbled; its
   stated intent is bit means at zero, and ‖Fᵀ1‖² over B rows grows as B², so the mean is the
   batch-size-free form). A batch's loss is the mean over its pairs of L_sim + λ_b L_b +
   λ_ae L_ae (`loss_terms`), an estimate of Eq. 4 over the sampled pairs whose terms keep
   their ratio whatever the batch size (a batch repeated k times gives the same loss). The
   first implementation summed L_ae over the batch's *distinct* rows and divided by the pair
   count, so the ratio moved with the batch, and with 65,536-pair batches L_ae and L_b were
   ~95% of the loss: Gowalla valid R@50 0.028, below popularity (0.050).
   λ_ae: per pair, L_ae is large on Gowalla (≈ 459 at init against L_sim ≈ 0.69: the item
   column of a positive pair is a popular item's, thousands of entries), so the paper's
   λ_ae = 0.1 (MovieLens-1M) or 10 (sparse data) would make the similarity term a rounding
   error; the default 1e-3 puts λ_ae·L_ae just below L_sim at init (a regulariser, as Eq. 4
   intends), and λ_ae and λ_b are in the tuning space, 0 included (λ_ae = 0 also skips the
   width-n decoder products, ~2× faster steps).
3. Mini-batches: one epoch = the shuffled training pairs in batches of `batch_size` (16,384
   pairs: ~50 Adam steps an epoch on Gowalla; 65,536 gave 13 steps an epoch, too few).
4. Hidden nonlinearity tanh, Adam with lr 1e-2, PyTorch's default Linear init: the paper
   does not say (lr 1e-2 reached synthetic validation Recall@50 0.64 within 3 epochs). With
   ReLU and lr 1e-2 the Gowalla run collapsed (loss flat from epoch 2, every hidden unit
   dead, codes constant: test Recall@50 0.0019, the first record); tanh cannot die.
   Known weakness on real data (measured, Gowalla, 1 epoch): the continuous features first
   learn popularity, which lives in their magnitude (float-score valid Recall@50 0.047)
   and is lost by the sign (codes: 0.006); CCSR-S needs many epochs to put user/item
   agreement into the signs.
5. Early stopping on validation Recall@50 (hashbench protocol); the paper does not state
   its stopping rule.
6. Only CCSR-S (sign after training) is the hashing row: CCSR-ST outputs continuous codes
   (not hashing), CCSR-SST was worse than S in the paper.
7. Dropout: the paper sets the "dropout rate" to 0.6 for codes of 5–20 bits and 0.8 for 40
   bits, on a 128-unit hidden layer feeding the code layer. Read as a drop probability, a
   40-bit code would be fed by ~26 surviving units in training (fewer than its own
   dimensions, so the code is rank-limited), and longer codes would get *fewer* inputs; read
   as a keep probability (TF1's `keep_prob`, the API of the paper's era), longer codes get
   more surviving units, which is why a longer code would raise the rate. We read it as
   keep-probability: torch's drop probability 1 − 0.8 = 0.2 for 40 and more bits. `dropout`
   is torch's drop probability and is in the tuning space.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hashbench.core.bags import sum_bag
from hashbench.core.graph import UserItemIndex
from hashbench.core.trained_method import TorchMethod
from hashbench.csr import group_by_row
from hashbench.registry import TrainData, register
from hashbench.seeds import torch_seed


class SparseRows:
    """Rows of a 0/1 matrix in CSR form, handed to EmbeddingBag as (indices, offsets)."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, n_rows: int):
        self.indptr, cols = group_by_row(rows, cols, n_rows)
        self.cols = torch.from_numpy(cols)
        self.n_rows = n_rows

    def select(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        counts = ends - starts
        offsets = np.zeros(len(rows), dtype=np.int64)
        np.cumsum(counts[:-1], out=offsets[1:])
        flat = np.repeat(starts - offsets, counts) + np.arange(counts.sum())
        return self.cols[torch.from_numpy(flat)], torch.from_numpy(offsets)


ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


class RowAutoencoder(nn.Module):
    """x (a sparse 0/1 row of length `width`) → F ∈ R^r → x̂ ∈ R^width."""

    def __init__(self, width: int, code_dim: int, hidden: int, dropout: float, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"ccsr: activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.act = ACTIVATIONS[activation]
        enc_in = nn.Linear(width, hidden)  # PyTorch's default Linear init, used as an EmbeddingBag
        self.enc_in = nn.EmbeddingBag(width, hidden, mode="sum", _weight=enc_in.weight.detach().T.contiguous())
        self.enc_bias = nn.Parameter(enc_in.bias.detach().clone())
        self.dropout = nn.Dropout(dropout)
        self.enc_out = nn.Linear(hidden, code_dim)
        self.dec_in = nn.Linear(code_dim, hidden)
        self.dec_out = nn.Linear(hidden, width)

    def encode(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        h = self.act(sum_bag(self.enc_in.weight, indices, offsets) + self.enc_bias)  # = self.enc_in(indices, offsets)
        return self.enc_out(self.dropout(h))

    def row_errors(self, features: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """‖x − x̂‖² of each row, exactly, without forming x̂ [rows × width]."""
        h = self.act(self.dec_in(features))
        w, c = self.dec_out.weight, self.dec_out.bias  # x̂ = h wᵀ + c
        sq_norm = ((h @ (w.T @ w)) * h).sum(1) + 2.0 * h @ (w.T @ c) + (c * c).sum()
        at_ones = (h * sum_bag(w, indices, offsets)).sum(1) + sum_bag(c[:, None], indices, offsets)[:, 0]
        counts = torch.diff(offsets, append=torch.tensor([len(indices)], device=offsets.device))
        return sq_norm - 2.0 * at_ones + counts.to(h.dtype)

    def reconstruction_error(self, features: torch.Tensor, indices: torch.Tensor,
                             offsets: torch.Tensor) -> torch.Tensor:
        """Σ over rows of ‖x − x̂‖²."""
        return self.row_errors(features, indices, offsets).sum()


def balance_loss(features: torch.Tensor) -> torch.Tensor:
    """‖Fᵀ1‖²: zero when every bit's continuous value sums to zero over the rows."""
    return features.sum(0).pow(2).sum()


def mean_balance(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """‖Σ w_p F_p / Σ w_p‖²: the balance of the bit means over a batch's (weighted) pairs, which
    does not grow with the batch (‖Fᵀ1‖² of B rows grows as B²)."""
    return (weights[:, None] * features).sum(0).div(weights.sum()).pow(2).sum()


class CCSRModel(nn.Module):
    def __init__(self, n_users: int, n_items: int, code_dim: int, hidden: int, dropout: float,
                 activation: str = "relu"):
        super().__init__()
        self.user_ae = RowAutoencoder(n_items, code_dim, hidden, dropout, activation)
        self.item_ae = RowAutoencoder(n_users, code_dim, hidden, dropout, activation)


@register
class CCSR(TorchMethod):
    name = "ccsr"  # parameters, description: ccsr.toml

    def build(self, data: TrainData) -> CCSRModel:
        p = self.params
        torch.manual_seed(torch_seed(self.seed("init")))  # the layers' default init
        model = CCSRModel(data.n_users, data.n_items, self.bits, p["hidden"], p["dropout"], p["activation"])
        self.train_pairs = train = np.asarray(data.train, dtype=np.int64)
        self.user_rows = SparseRows(train[:, 0], train[:, 1], data.n_users)
        self.item_rows = SparseRows(train[:, 1], train[:, 0], data.n_items)
        self.index = UserItemIndex(train, data.n_users, data.n_items)
        # a sampled negative of u stands for (n_items − deg_u) / (negatives · deg_u) unobserved pairs
        degree = np.maximum(self.index.degree, 1)
        self.neg_weight = ((data.n_items - degree) / (p["negatives"] * degree) if p["full_sum"]
                           else np.ones(data.n_users))
        return model.to(self.device)

    def epoch_batches(self, epoch, rng):
        p, train = self.params, self.train_pairs
        order = rng.permutation(len(train))
        for start in range(0, len(order), p["batch_size"]):
            pairs = train[order[start:start + p["batch_size"]]]
            neg_users = np.repeat(pairs[:, 0], p["negatives"])
            neg_items = self.index.sample_negatives(neg_users, rng)
            users = np.concatenate([pairs[:, 0], neg_users])
            items = np.concatenate([pairs[:, 1], neg_items])
            labels = np.concatenate([np.ones(len(pairs)), np.zeros(len(neg_users))])
            weights = np.concatenate([np.ones(len(pairs)), self.neg_weight[neg_users]])
            yield users, items, labels, weights

    def loss_terms(self, batch, reconstruction: bool = True) -> dict[str, torch.Tensor]:
        """Eq. 4's three terms for one batch of sampled pairs, each a mean over the pairs.

        Every pair (a, b) carries all three terms, as Eq. 1, 3 and the balance are all sums over
        the same pairs (a, b): L_sim of the pair, ‖X_a − X̂_a‖² + ‖Y_b − Ŷ_b‖², and the balance
        of the batch's bit means. A user or item enters L_ae once per pair it is in, so the
        terms keep their relative weight whatever the batch size (a batch repeated k times
        gives the same three numbers).
        """
        users, items, labels, weights = batch
        device = self.device
        uniq_u, inv_u = np.unique(users, return_inverse=True)
        uniq_i, inv_i = np.unique(items, return_inverse=True)
        u_idx, u_off = (t.to(device) for t in self.user_rows.select(uniq_u))
        i_idx, i_off = (t.to(device) for t in self.item_rows.select(uniq_i))
        fu = self.model.user_ae.encode(u_idx, u_off)
        fi = self.model.item_ae.encode(i_idx, i_off)
        inv_u, inv_i = torch.from_numpy(inv_u).to(device), torch.from_numpy(inv_i).to(device)
        pair_u, pair_i = fu[inv_u], fi[inv_i]
        w = torch.from_numpy(np.asarray(weights, dtype=np.float32)).to(device)
        n = float(len(labels))  # a sampled negative standing for w pairs counts w times (full_sum)
        logits = (pair_u * pair_i).sum(1)
        sim = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels).float().to(device),
                                                 reduction="none")
        terms = {"sim": (w * sim).sum() / n, "balance": mean_balance(pair_u, w) + mean_balance(pair_i, w)}
        if reconstruction:  # the costly term (width-n decoder products): skipped when λ_ae = 0
            rec = (self.model.user_ae.row_errors(fu, u_idx, u_off)[inv_u]
                   + self.model.item_ae.row_errors(fi, i_idx, i_off)[inv_i])
            terms["reconstruction"] = (w * rec).sum() / n
        return terms

    def batch_loss(self, batch, epoch):
        p = self.params
        terms = self.loss_terms(batch, reconstruction=bool(p["lambda_ae"]))
        loss = terms["sim"]
        if p["lambda_b"]:
            loss = loss + p["lambda_b"] * terms["balance"]
        if p["lambda_ae"]:
            loss = loss + p["lambda_ae"] * terms["reconstruction"]
        return loss

    @torch.no_grad()
    def features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Continuous bottleneck features of all users and items (eval mode: no dropout)."""
        was_training = self.model.training
        self.model.eval()
        out = []
        for ae, rows in ((self.model.user_ae, self.user_rows), (self.model.item_ae, self.item_rows)):
            idx, off = rows.select(np.arange(rows.n_rows))
            out.append(ae.encode(idx.to(self.device), off.to(self.device)))
        self.model.train(was_training)
        return out[0], out[1]

    def code_embeddings(self):
        return self.features()

    def method_extras(self) -> dict:
        p = self.params
        return {
            "variant": "CCSR-S (sign of the continuous bottleneck after training)",
            "deviations": [
                f"similarity loss over training pairs + {p['negatives']} sampled unobserved item(s) "
                "per pair (re-drawn each epoch) instead of all user-item pairs"
                + (", negatives weighted to estimate the full sum" if p["full_sum"] else ""),
                f"lambda_ae = {p['lambda_ae']} (paper: 0.1 on MovieLens-1M, 10 on sparse data; per pair "
                "these swamp the sampled similarity loss on Gowalla)",
                "mini-batches of sampled pairs; every pair carries its BCE, its user's and item's "
                "reconstruction error and the batch's bit-mean balance; mean over the pairs",
                f"dropout (drop probability) {p['dropout']}: the paper's 0.8 read as keep-probability",
                f"{p['activation']} hidden units, Adam lr {p['lr']}, PyTorch default init (unspecified in the paper)",
                "early stopping on validation recall@50",
            ],
        }
