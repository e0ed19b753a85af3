"""Losses point the right way; the exact histogram SRLoss equals the definition."""

import pytest
import torch

from hashbench.core.estimators import get_estimator
from hashbench.core.losses import (bpr_loss, smooth_recall_loss_codes, smooth_recall_loss_dense, smooth_recall_loss_exact,
                                   smooth_recall_loss_histogram,
                                   smooth_recall_loss_sampled)


def test_bpr_prefers_positive_above_negative():
    pos, neg = torch.tensor([2.0], requires_grad=True), torch.tensor([1.0], requires_grad=True)
    loss = bpr_loss(pos, neg)
    loss.backward()
    assert pos.grad.item() < 0 < neg.grad.item()  # descent raises the positive, lowers the negative
    assert bpr_loss(torch.tensor([3.0]), torch.tensor([0.0])) < bpr_loss(torch.tensor([0.0]), torch.tensor([3.0]))


def _codes(n, bits, gen):
    return torch.where(torch.randn(n, bits, generator=gen) >= 0, 1.0, -1.0).double()


def test_exact_histogram_loss_equals_dense_definition_value_and_gradient():
    gen = torch.Generator().manual_seed(0)
    bits = 16
    scores = (_codes(6, bits, gen) @ _codes(400, bits, gen).T / bits).requires_grad_()
    rows = torch.tensor([0, 0, 1, 2, 2, 2, 5, 5])
    items = torch.tensor([3, 7, 5, 1, 9, 100, 399, 3])
    exact = smooth_recall_loss_exact(scores, rows, items, bits, top_n=10, phi=10, psi=0.1, chunk=4)
    dense = smooth_recall_loss_dense(scores, rows, items, top_n=10, phi=10, psi=0.1)
    (g_exact,) = torch.autograd.grad(exact, scores)
    (g_dense,) = torch.autograd.grad(dense, scores)
    assert torch.allclose(exact, dense, atol=1e-12)
    assert torch.allclose(g_exact, g_dense, atol=1e-12)


def test_exact_loss_excluding_positives_ranks_among_the_other_items_only():
    gen = torch.Generator().manual_seed(1)
    bits = 8
    scores = (_codes(3, bits, gen) @ _codes(50, bits, gen).T / bits).requires_grad_()
    rows, items = torch.tensor([0, 0, 0, 2]), torch.tensor([1, 2, 3, 4])
    mask = torch.zeros(scores.shape, dtype=torch.bool)
    mask[rows, items] = True
    s_pos = scores[rows, items]
    terms = torch.sigmoid((scores[rows] - s_pos[:, None]) / 0.2).masked_fill(mask[rows], 0.0)
    dense = -torch.sigmoid((5 - (1 + terms.sum(1))) / 5).mean()
    exact = smooth_recall_loss_exact(scores, rows, items, bits, 5, 5, 0.2, exclude_positives=True)
    (g_exact,) = torch.autograd.grad(exact, scores)
    (g_dense,) = torch.autograd.grad(dense, scores)
    assert torch.allclose(exact, dense, atol=1e-12) and torch.allclose(g_exact, g_dense, atol=1e-12)


def _rank(scores_row, item):
    return 1 + int((scores_row > scores_row[item]).sum())


def test_gradient_steps_on_srloss_move_a_positive_item_up_through_the_codes():
    """Real embeddings → sgn (AAGE backward) → codes → exact SRLoss: descent lifts the positive."""
    gen = torch.Generator().manual_seed(3)
    bits, n_items = 32, 300
    user = (0.1 * torch.randn(1, bits, generator=gen)).requires_grad_()
    items = (0.1 * torch.randn(n_items, bits, generator=gen)).requires_grad_()
    est = get_estimator("signswish", beta=10.0)
    with torch.no_grad():
        start = (est(user) @ est(items).T)[0]
    positive = int(torch.argsort(start)[n_items // 3])  # starts in the lower part of the list
    rank_before = _rank(start, positive)
    opt = torch.optim.SGD([user, items], lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        scores = est(user) @ est(items).T / bits
        smooth_recall_loss_exact(scores, torch.tensor([0]), torch.tensor([positive]), bits,
                                 top_n=10, phi=50, psi=0.1).backward()
        opt.step()
    with torch.no_grad():
        rank_after = _rank((est(user) @ est(items).T)[0], positive)
    assert rank_after < rank_before / 2


def test_outer_kernel_direction_lower_rank_means_lower_loss():
    s = torch.tensor([[0.9, 0.1, 0.0, -0.5]])
    high = smooth_recall_loss_dense(s, torch.tensor([0]), torch.tensor([0]), top_n=2, phi=1, psi=0.05)
    low = smooth_recall_loss_dense(s, torch.tensor([0]), torch.tensor([3]), top_n=2, phi=1, psi=0.05)
    assert high < low


def test_sampled_loss_rescales_to_the_catalogue_and_moves_the_positive_up():
    pos = torch.tensor([0.0], requires_grad=True)
    sampled = torch.tensor([[0.5, -0.5, 0.2, 0.0]], requires_grad=True)
    loss = smooth_recall_loss_sampled(pos, sampled, n_items=401, top_n=50, phi=50, psi=0.05,
                                      same_item=torch.tensor([[False, False, False, True]]))
    loss.backward()
    assert pos.grad.item() < 0  # raising s_ui lowers the loss
    assert sampled.grad[0, :3].gt(0).all() and sampled.grad[0, 3] == 0  # the item itself is left out


def test_histogram_loss_over_sampled_columns_equals_the_sampled_definition():
    """Shared sampled columns + (n−1)/M rescaling: the histogram form equals the pairs × M form."""
    gen = torch.Generator().manual_seed(2)
    bits, n_items = 16, 500
    users, items = _codes(4, bits, gen), _codes(n_items, bits, gen)
    sampled = torch.tensor([5, 17, 40, 99, 123, 250, 251, 400, 499])
    rows, pos = torch.tensor([0, 0, 1, 3, 3]), torch.tensor([17, 3, 400, 8, 9])
    u = users.clone().requires_grad_()
    s_cols = u @ items[sampled].T / bits
    s_pos = (u[rows] * items[pos]).sum(1) / bits
    cols = torch.tensor([1, -1, 7, -1, -1])
    hist = smooth_recall_loss_histogram(s_cols, s_pos, rows, cols, bits, 20, 10, 0.1, (n_items - 1) / len(sampled))
    (g_hist,) = torch.autograd.grad(hist, u)
    u2 = users.clone().requires_grad_()
    ref = smooth_recall_loss_sampled((u2[rows] * items[pos]).sum(1) / bits, (u2 @ items[sampled].T / bits)[rows],
                                     n_items, 20, 10, 0.1, same_item=pos[:, None] == sampled[None, :])
    (g_ref,) = torch.autograd.grad(ref, u2)
    assert torch.allclose(hist, ref, atol=1e-12) and torch.allclose(g_hist, g_ref, atol=1e-12)


@pytest.mark.parametrize("bits", [13, 64, 100])
@pytest.mark.parametrize("exclude_positives", [False, True])
def test_code_loss_equals_the_score_matrix_loss_to_the_bit(bits, exclude_positives):
    """Counting the histogram from packed ±1 codes gives the loss and both gradients of the
    quantised score-matrix path exactly (same counts, same products in the backward)."""
    g = torch.Generator().manual_seed(bits)
    n_users, n_items = 37, 301
    b0 = torch.where(torch.randn(n_users, bits, generator=g) >= 0, 1.0, -1.0)
    d0 = torch.where(torch.randn(n_items, bits, generator=g) >= 0, 1.0, -1.0)
    keys = torch.unique(torch.randint(0, n_users * n_items, (300,), generator=g))
    rows, items = keys // n_items, keys % n_items
    cols = items.clone()
    cols[::7] = -1  # some positives are not among the columns (the sampled-rank case)

    def loss_and_grads(loss_fn):
        b, d = b0.clone().requires_grad_(), d0.clone().requires_grad_()
        s_pos = (b[rows] * d[items]).sum(1) / bits
        loss = loss_fn(b, d, s_pos)
        return (loss, *torch.autograd.grad(0.7 * loss, (b, d)))

    args = dict(top_n=10, phi=10, psi=0.1, scale=1.3, exclude_positives=exclude_positives)
    dense = loss_and_grads(lambda b, d, s: smooth_recall_loss_histogram(b @ d.T / bits, s, rows, cols, bits, **args))
    codes = loss_and_grads(lambda b, d, s: smooth_recall_loss_codes(b, d, s, rows, cols, bits, **args))
    for a, c in zip(dense, codes):
        assert torch.equal(a, c)


def test_code_loss_rejects_values_other_than_plus_minus_one():
    b = torch.full((2, 8), 0.5)
    with pytest.raises(ValueError, match="±1"):
        smooth_recall_loss_codes(b, torch.ones(3, 8), torch.zeros(1), torch.tensor([0]), torch.tensor([0]), 8)
