"""Losses: BPR, BCE, and the smooth recall loss (SRLoss) of the Proposed method.

SRLoss (methods.md §1) for observed pairs (u, i) ∈ Ω:

    π̂_ui = 1 + Σ_{j ≠ i} σ((s_uj − s_ui)/ψ)          (smooth rank of i among u's items)
    L    = −(1/|Ω|) Σ_{(u,i)∈Ω} σ((N − π̂_ui)/φ)        (smooth 1[π_ui ≤ N])

The outer kernel is σ((N − π̂)/φ), not σ((π̂ − N)/φ): minimising −σ(π̂ − N) would push
positives *down* the list (the sign caveat in methods.md).

Two ways to get the inner sum:

- `smooth_recall_loss_sampled`: over M sampled items, rescaled by (n_items − 1)/M so that N
  keeps its meaning. O(pairs · M).
- `smooth_recall_loss_exact`: over *all* items, exactly, for scores that take only a few
  values — ±1 codes give s = bᵀd/f ∈ {−1, −1 + 2/f, …, 1}, f + 1 values. Then
      Σ_j σ((s_uj − s_ui)/ψ) = Σ_v count_u(v) σ((v − s_ui)/ψ),
  a per-user histogram of the batch score matrix, and ∂L/∂s_uj depends only on the value of
  s_uj (plus a correction at u's own positives). The custom autograd function costs
  O(|U_b| · I) in memory and time instead of O(pairs · I).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: mean softplus(s_neg − s_pos) = −mean log σ(s_pos − s_neg)."""
    return F.softplus(neg_scores - pos_scores).mean()


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits (mean)."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def l2_penalty(*tensors: torch.Tensor) -> torch.Tensor:
    """½ Σ ||t||² / batch (LightGCN's regulariser on the batch's ego embeddings); batch = len(first)."""
    return 0.5 * sum(t.pow(2).sum() for t in tensors) / len(tensors[0])


def smooth_recall_loss_sampled(pos_scores: torch.Tensor, sampled_scores: torch.Tensor, n_items: int,
                               top_n: float = 50.0, phi: float = 50.0, psi: float = 0.05,
                               same_item: torch.Tensor | None = None) -> torch.Tensor:
    """SRLoss with the rank estimated from M sampled items.

    pos_scores [P] are s_ui; sampled_scores [P, M] the scores s_uj of the M sampled items for the
    same user; same_item [P, M] (bool) marks samples equal to i, which are left out of the sum.
    """
    terms = torch.sigmoid((sampled_scores - pos_scores[:, None]) / psi)
    if same_item is not None:
        terms = terms.masked_fill(same_item, 0.0)
    m = sampled_scores.shape[1]
    rank = 1.0 + (n_items - 1) / m * terms.sum(1)
    return -torch.sigmoid((top_n - rank) / phi).mean()


class _ExactRankRecallLoss(torch.autograd.Function):
    """Forward: SRLoss with the exact smooth rank over all items (histogram of quantised scores).
    Backward: dL/dS as a dense [users, items] matrix, built from per-user, per-value gradients."""

    @staticmethod
    def forward(ctx, scores, pos_rows, pos_items, levels, top_n, phi, psi, exclude_positives, chunk):
        n_rows = scores.shape[0]
        half = (levels - 1) / 2.0
        values = torch.linspace(-1.0, 1.0, levels, dtype=scores.dtype, device=scores.device)
        counts = torch.zeros(n_rows, levels, dtype=scores.dtype, device=scores.device)
        for start in range(0, n_rows, chunk):
            idx = _quantise(scores[start:start + chunk], half)
            counts[start:start + chunk].scatter_add_(1, idx, torch.ones_like(scores[start:start + chunk]))
        s_pos = scores[pos_rows, pos_items]
        v_pos = _quantise(s_pos, half)
        if exclude_positives:  # rank among the non-positive items only (what evaluation does)
            counts.index_put_((pos_rows, v_pos), torch.full_like(s_pos, -1.0), accumulate=True)
        sig = torch.sigmoid((values[None, :] - s_pos[:, None]) / psi)  # [P, levels]
        self_term = 0.0 if exclude_positives else 0.5  # j = i sits in its own bin: σ(0) = ½
        rank = 1.0 + (counts[pos_rows] * sig).sum(1) - self_term
        z = torch.sigmoid((top_n - rank) / phi)
        n_pairs = len(s_pos)
        loss = -z.sum() / n_pairs
        # dL/dπ̂_p = σ'(z)/(φ·P) ≥ 0, and dπ̂_p/ds_uj = σ'((s_uj − s_up)/ψ)/ψ for every other item j
        w = z * (1.0 - z) / (phi * n_pairs)
        dsig = sig * (1.0 - sig) / psi  # [P, levels]
        per_value = torch.zeros(n_rows, levels, dtype=scores.dtype, device=scores.device)
        per_value.index_add_(0, pos_rows, w[:, None] * dsig)
        # the positive's own score: dπ̂_p/ds_up = −Σ_{j≠i} σ'(...)/ψ
        own = -w * ((counts[pos_rows] * dsig).sum(1) - self_term * 0.5 / psi)
        ctx.save_for_backward(scores, pos_rows, pos_items, per_value, own, w)
        ctx.constants = (half, psi, exclude_positives, chunk)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        scores, pos_rows, pos_items, per_value, own, w = ctx.saved_tensors
        half, psi, exclude_positives, chunk = ctx.constants
        grad = torch.empty_like(scores)
        for start in range(0, len(scores), chunk):
            idx = _quantise(scores[start:start + chunk], half)
            torch.gather(per_value[start:start + chunk], 1, idx, out=grad[start:start + chunk])
        if exclude_positives:
            # positives are not "other items" in anyone's rank: only their own-score term remains
            grad.index_put_((pos_rows, pos_items), torch.zeros_like(own))
        else:
            # per_value at i's own bin included the j = i term of pair p (σ'(0)/ψ = ¼/ψ): remove it
            grad.index_put_((pos_rows, pos_items), -w * 0.25 / psi, accumulate=True)
        grad.index_put_((pos_rows, pos_items), own, accumulate=True)
        grad.mul_(grad_out)
        return grad, None, None, None, None, None, None, None, None


def _quantise(s: torch.Tensor, half: float) -> torch.Tensor:
    """Score on the [−1, 1] grid of `levels` values → its bin index 0..levels−1."""
    return torch.round((s + 1.0) * half).long()


def smooth_recall_loss_exact(scores: torch.Tensor, pos_rows: torch.Tensor, pos_items: torch.Tensor,
                             bits: int, top_n: float = 50.0, phi: float = 50.0, psi: float = 0.05,
                             exclude_positives: bool = False, chunk: int = 512) -> torch.Tensor:
    """SRLoss with the exact smooth rank of each positive among all items.

    scores [users, n_items] must be ±1-code scores normalised to s = bᵀd / bits (so they lie on
    the grid of bits + 1 values in [−1, 1]); (pos_rows[p], pos_items[p]) are the observed pairs,
    pos_rows indexing rows of `scores`. With exclude_positives the rank of i counts only the
    items that are not positives of u (i.e. pos_items must list *all* of u's positives).
    """
    return _ExactRankRecallLoss.apply(scores, pos_rows, pos_items, bits + 1, float(top_n), float(phi),
                                      float(psi), bool(exclude_positives), int(chunk))


def smooth_recall_loss_dense(scores: torch.Tensor, pos_rows: torch.Tensor, pos_items: torch.Tensor,
                             top_n: float = 50.0, phi: float = 50.0, psi: float = 0.05) -> torch.Tensor:
    """The definition, O(pairs · items) in memory: the reference the exact version is tested against."""
    s_pos = scores[pos_rows, pos_items]
    terms = torch.sigmoid((scores[pos_rows] - s_pos[:, None]) / psi)
    terms = terms.clone()
    terms[torch.arange(len(s_pos)), pos_items] = 0.0  # j ≠ i
    rank = 1.0 + terms.sum(1)
    return -torch.sigmoid((top_n - rank) / phi).mean()
