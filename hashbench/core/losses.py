"""Losses: BPR, BCE, and the smooth recall loss (SRLoss) of the Proposed method.

SRLoss (methods.md §1) for observed pairs (u, i) ∈ Ω:

    π̂_ui = 1 + Σ_{j ≠ i} σ((s_uj − s_ui)/ψ)          (smooth rank of i among u's items)
    L    = −(1/|Ω|) Σ_{(u,i)∈Ω} σ((N − π̂_ui)/φ)        (smooth 1[π_ui ≤ N])

The outer kernel is σ((N − π̂)/φ), not σ((π̂ − N)/φ): minimising −σ(π̂ − N) would push
positives *down* the list (the sign caveat in methods.md).

Two ways to get the inner sum:

- `smooth_recall_loss_sampled`: over M sampled items, rescaled by (n_items − 1)/M so that N
  keeps its meaning. O(pairs · M).
- `smooth_recall_loss_histogram` / `_exact`: for scores that take only a few values — ±1
  codes give s = bᵀd/f ∈ {−1, −1 + 2/f, …, 1}, f + 1 values — the sum over items is
      Σ_j σ((s_uj − s_ui)/ψ) = Σ_v count_u(v) σ((v − s_ui)/ψ),
  a per-user histogram of the batch score matrix, and ∂L/∂s_uj depends only on the value of
  s_uj. The custom autograd function costs O(|U_b| · C + pairs · (f+1)) for C columns (all
  items: exact; or M shared sampled items, rescaled) instead of O(pairs · C), so every
  training positive of a batch user can be a pair at no extra cost.
"""

from __future__ import annotations

import numpy as np
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


class _HistogramRecallLoss(torch.autograd.Function):
    """Forward: SRLoss with the smooth rank from a per-row histogram of quantised scores.
    Backward: dL/dscores (dense, from per-row, per-value gradients) and dL/dpos_scores."""

    @staticmethod
    def forward(ctx, scores, pos_scores, pos_rows, pos_cols, levels, top_n, phi, psi, scale,
                exclude_positives, chunk):
        n_rows = scores.shape[0]
        half = (levels - 1) / 2.0
        counts = torch.zeros(n_rows, levels, dtype=scores.dtype, device=scores.device)
        for start in range(0, n_rows, chunk):
            block = scores[start:start + chunk]
            counts[start:start + chunk].scatter_add_(1, _quantise(block, half), torch.ones_like(block))
        loss, present, per_value, own = _histogram_loss_terms(counts, pos_scores, pos_rows, pos_cols, top_n, phi,
                                                              psi, scale, exclude_positives)
        ctx.save_for_backward(scores, pos_rows[present], pos_cols[present], per_value, own)
        ctx.constants = (half, exclude_positives, chunk)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        scores, rows_present, cols_present, per_value, own = ctx.saved_tensors
        half, exclude_positives, chunk = ctx.constants
        grad = torch.empty_like(scores)
        for start in range(0, len(scores), chunk):
            idx = _quantise(scores[start:start + chunk], half)
            torch.gather(per_value[start:start + chunk], 1, idx, out=grad[start:start + chunk])
        if exclude_positives:  # positives are nobody's "other item"
            grad.index_put_((rows_present, cols_present), torch.zeros(len(rows_present), dtype=grad.dtype,
                                                                      device=grad.device))
        grad.mul_(grad_out)
        return grad, own * grad_out, None, None, None, None, None, None, None, None, None


class _CodeHistogramRecallLoss(torch.autograd.Function):
    """The histogram SRLoss of s = bᵀd/bits straight from ±1 codes, without the score matrix.

    Forward: the per-row level counts are Hamming-distance histograms of the packed codes
    (level = bits − distance; XOR + popcount, hashbench.hamming), bit-for-bit the counts the
    quantised float scores give. Backward: dL/ds_uj = per_value[u, level(u, j)] is spread over
    the columns by distance, then the two products autograd would take through s = b @ dᵀ / bits,
    in the same form (G @ d and Gᵀ @ b), so the gradients equal those of the score-matrix path.
    """

    @staticmethod
    def forward(ctx, b, d, pos_scores, pos_rows, pos_cols, bits, top_n, phi, psi, scale, exclude_positives):
        from hashbench import hamming  # numba: only when a code loss runs

        user_words, item_words = _sign_words(b, bits), _sign_words(d, bits)
        by_distance = hamming.distance_histograms(user_words, item_words, bits)  # [rows, bits+1]
        counts = torch.from_numpy(np.ascontiguousarray(by_distance[:, ::-1])).to(b.dtype)  # index = level
        loss, present, per_value, own = _histogram_loss_terms(counts, pos_scores, pos_rows, pos_cols, top_n, phi,
                                                              psi, scale, exclude_positives)
        ctx.save_for_backward(b, d, pos_rows[present], pos_cols[present], per_value, own)
        ctx.words = (user_words, item_words)
        ctx.constants = (bits, exclude_positives)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        from hashbench import hamming

        b, d, rows_present, cols_present, per_value, own = ctx.saved_tensors
        bits, exclude_positives = ctx.constants
        # dL/ds·grad_out, then the 1/bits of s = b @ dᵀ / bits: the same two roundings as autograd
        table = (per_value * grad_out / bits).flip(1).contiguous()  # index = distance
        grad_scores = torch.from_numpy(hamming.lookup_by_distance(*ctx.words, table.numpy(), bits))
        if exclude_positives:  # positives are nobody's "other item"
            grad_scores.index_put_((rows_present, cols_present),
                                   torch.zeros(len(rows_present), dtype=b.dtype).mul_(grad_out) / bits)
        grad_b = grad_scores.mm(d) if ctx.needs_input_grad[0] else None
        grad_d = grad_scores.t().mm(b) if ctx.needs_input_grad[1] else None
        return grad_b, grad_d, own * grad_out, None, None, None, None, None, None, None, None


def _sign_words(codes: torch.Tensor, bits: int) -> np.ndarray:
    from hashbench import hamming

    signs = codes.detach().numpy()
    if signs.shape[1] != bits or not np.all(np.abs(signs) == 1):
        raise ValueError(f"the code loss needs ±1 codes of {bits} bits, got shape {tuple(signs.shape)} "
                         "or values other than ±1")
    return hamming.pack_words(np.packbits(signs >= 0, axis=1), bits)


def _histogram_loss_terms(counts, pos_scores, pos_rows, pos_cols, top_n, phi, psi, scale, exclude_positives):
    """The SRLoss of the pairs from per-row level counts [rows, levels] (modified in place when
    excluding positives): (loss, present, per-row per-level gradient dL/ds, dL/ds_pos)."""
    n_rows, levels = counts.shape
    half = (levels - 1) / 2.0
    values = torch.linspace(-1.0, 1.0, levels, dtype=counts.dtype, device=counts.device)
    present = pos_cols >= 0  # is item i itself among the columns?
    v_pos = _quantise(pos_scores, half)
    if exclude_positives:  # rank among the non-positive columns only (what evaluation does)
        counts.index_put_((pos_rows[present], v_pos[present]),
                          torch.full_like(pos_scores[present], -1.0), accumulate=True)
        self_term = torch.zeros_like(pos_scores)
    else:  # j = i sits in its own bin with σ(0) = ½: leave it out of Σ_{j≠i}
        self_term = 0.5 * present.to(counts.dtype)
    sig = torch.sigmoid((values[None, :] - pos_scores[:, None]) / psi)  # [P, levels]
    row_counts = counts[pos_rows]
    rank = 1.0 + scale * ((row_counts * sig).sum(1) - self_term)
    z = torch.sigmoid((top_n - rank) / phi)
    n_pairs = len(pos_scores)
    loss = -z.sum() / n_pairs
    # dL/dπ̂_p = σ'(z)/(φ·P) ≥ 0;  dπ̂_p/ds_uj = scale·σ'((s_uj − s_up)/ψ)/ψ for every column j
    w = z * (1.0 - z) / (phi * n_pairs) * scale
    dsig = sig * (1.0 - sig) / psi  # [P, levels]
    per_value = torch.zeros(n_rows, levels, dtype=counts.dtype, device=counts.device)
    per_value.index_add_(0, pos_rows, w[:, None] * dsig)
    # the positive's own score: dπ̂_p/ds_up = −scale·Σ_j σ'(...)/ψ. Where i is a column and
    # counted, its self term here cancels the one its column receives from per_value.
    own = -w * (row_counts * dsig).sum(1)
    return loss, present, per_value, own


def _quantise(s: torch.Tensor, half: float) -> torch.Tensor:
    """Score on the [−1, 1] grid of `levels` values → its bin index 0..levels−1."""
    return torch.round((s + 1.0) * half).long()


def smooth_recall_loss_histogram(scores: torch.Tensor, pos_scores: torch.Tensor, pos_rows: torch.Tensor,
                                 pos_cols: torch.Tensor, bits: int, top_n: float = 50.0, phi: float = 50.0,
                                 psi: float = 0.05, scale: float = 1.0, exclude_positives: bool = False,
                                 chunk: int = 512) -> torch.Tensor:
    """SRLoss with the smooth rank from a histogram of ±1-code scores.

    scores [rows, C]: s = bᵀd / bits of each batch user (row) against C items (all items, or a
    sample); they must lie on the grid of bits + 1 values in [−1, 1]. Pair p is (user
    pos_rows[p], item i) with score pos_scores[p]; pos_cols[p] is i's column in `scores`, or −1
    if i is not among them. The rank is 1 + scale·Σ_{columns j ≠ i} σ((s_uj − s_ui)/ψ); scale
    = (n_items − 1)/C for sampled columns, 1 for all items. With exclude_positives, columns
    that are positives of the row's user are left out of the sum (then the pairs must cover
    *all* of each user's positives).
    """
    return _HistogramRecallLoss.apply(scores, pos_scores, pos_rows, pos_cols, bits + 1, float(top_n),
                                      float(phi), float(psi), float(scale), bool(exclude_positives), int(chunk))


def smooth_recall_loss_codes(b: torch.Tensor, d: torch.Tensor, pos_scores: torch.Tensor, pos_rows: torch.Tensor,
                             pos_cols: torch.Tensor, bits: int, top_n: float = 50.0, phi: float = 50.0,
                             psi: float = 0.05, scale: float = 1.0, exclude_positives: bool = False) -> torch.Tensor:
    """`smooth_recall_loss_histogram` of scores = b @ dᵀ / bits, from the ±1 codes b [rows, bits]
    and d [C, bits] themselves: the same loss and gradients (to the bit, on CPU), without the
    [rows, C] score matrix's product, quantisation, scatter and gather. Other devices take the
    score-matrix path.
    """
    if b.device.type != "cpu" or d.device.type != "cpu":
        return smooth_recall_loss_histogram(b @ d.T / bits, pos_scores, pos_rows, pos_cols, bits, top_n, phi, psi,
                                            scale, exclude_positives)
    return _CodeHistogramRecallLoss.apply(b, d, pos_scores, pos_rows, pos_cols, int(bits), float(top_n), float(phi),
                                          float(psi), float(scale), bool(exclude_positives))


def smooth_recall_loss_exact(scores: torch.Tensor, pos_rows: torch.Tensor, pos_items: torch.Tensor,
                             bits: int, top_n: float = 50.0, phi: float = 50.0, psi: float = 0.05,
                             exclude_positives: bool = False, chunk: int = 512) -> torch.Tensor:
    """SRLoss with the exact smooth rank of each positive among *all* items (scores [users, n_items])."""
    return smooth_recall_loss_histogram(scores, scores[pos_rows, pos_items], pos_rows, pos_items, bits,
                                        top_n, phi, psi, 1.0, exclude_positives, chunk)


def smooth_recall_loss_dense(scores: torch.Tensor, pos_rows: torch.Tensor, pos_items: torch.Tensor,
                             top_n: float = 50.0, phi: float = 50.0, psi: float = 0.05) -> torch.Tensor:
    """The definition, O(pairs · items) in memory: the reference the exact version is tested against."""
    s_pos = scores[pos_rows, pos_items]
    terms = torch.sigmoid((scores[pos_rows] - s_pos[:, None]) / psi)
    terms = terms.clone()
    terms[torch.arange(len(s_pos)), pos_items] = 0.0  # j ≠ i
    rank = 1.0 + terms.sum(1)
    return -torch.sigmoid((top_n - rank) / phi).mean()
