"""CCSR: the balance term pushes bit means to zero, the sparse reconstruction error equals
the dense definition, and the method learns the planted data reproducibly."""

import numpy as np
import pytest
import torch

from baselines.ccsr import RowAutoencoder, SparseRows, balance_loss
from helpers import assert_learns_reproducibly, fit_method

FAST = {"batch_size": 4096, "epochs": 6, "eval_every": 3, "lr": 0.01}
pytestmark = pytest.mark.usefixtures("one_thread")


def fit(split, **params):
    return fit_method("ccsr", split, **{**FAST, **params})


@pytest.fixture(scope="module")
def fitted(split):
    return fit(split)


def test_balance_term_pushes_bit_means_to_zero():
    torch.manual_seed(0)
    features = (torch.randn(500, 16) + torch.linspace(-2, 2, 16)).requires_grad_()  # biased bits
    opt = torch.optim.SGD([features], lr=1e-4)
    means = [features.detach().mean(0).abs().mean().item()]
    for _ in range(50):
        opt.zero_grad()
        balance_loss(features).backward()
        opt.step()
        means.append(features.detach().mean(0).abs().mean().item())
    assert all(b <= a + 1e-7 for a, b in zip(means, means[1:]))
    assert means[-1] < 0.01 * means[0]
    # and the fraction of +1 per bit moves toward one half
    ones = (features.detach() >= 0).float().mean(0)
    assert (ones - 0.5).abs().max() < 0.2


def test_balance_weight_balances_the_learned_codes(split, fitted):
    heavy = fit(split, lambda_b=1.0, epochs=3, eval_every=3)
    fu_heavy, fi_heavy = heavy.features()
    fu, fi = fitted.features()
    assert fu_heavy.mean(0).abs().mean() < fu.mean(0).abs().mean()
    assert fi_heavy.mean(0).abs().mean() < fi.mean(0).abs().mean()


def test_sparse_reconstruction_error_matches_dense():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(20, size=120), rng.integers(30, size=120)
    keep = np.unique(rows * 30 + cols)
    rows, cols = keep // 30, keep % 30
    ae = RowAutoencoder(30, 8, 16, 0.0)
    sparse = SparseRows(rows, cols, 20)
    batch = np.array([3, 0, 7, 19, 11])
    idx, off = sparse.select(batch)
    f = ae.encode(idx, off)
    dense = torch.zeros(20, 30)
    dense[rows, cols] = 1.0
    x_hat = ae.dec_out(torch.relu(ae.dec_in(f)))
    expected = ((dense[batch] - x_hat) ** 2).sum()
    assert torch.allclose(ae.reconstruction_error(f, idx, off), expected, rtol=1e-5)
    # and the EmbeddingBag first layer is the Linear layer on the 0/1 row
    h = ae.enc_in(idx, off)
    assert torch.allclose(h, dense[batch] @ ae.enc_in.weight, atol=1e-6)


def test_beats_popularity_and_is_deterministic(split, fitted):
    assert_learns_reproducibly(fitted, split, lambda: fit(split))


def built(split, **params):
    from hashbench import seeds
    from hashbench.registry import FitContext, TrainData, get_method

    method = get_method("ccsr")(32, FitContext(seed=seeds.seed_sequence(0, "method"), device="cpu"),
                                **{**FAST, **params})
    method.device = torch.device("cpu")
    method.model = method.build(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid))
    method.model.eval()  # no dropout: the same batch gives the same features
    return method


@pytest.mark.parametrize("full_sum", [False, True])
def test_loss_terms_keep_their_relative_weight_when_the_batch_grows(split, full_sum):
    method = built(split, full_sum=full_sum)
    batch = next(iter(method.epoch_batches(1, np.random.default_rng(0))))
    users, items, labels, weights = (a[:500] for a in batch)
    # the same pairs three times over: a batch 3x as large with the same distribution
    bigger = tuple(np.concatenate([a] * 3) for a in (users, items, labels, weights))
    with torch.no_grad():
        one = method.loss_terms((users, items, labels, weights))
        three = method.loss_terms(bigger)
    for name in ("sim", "reconstruction", "balance"):
        assert torch.allclose(one[name], three[name], rtol=1e-4), name
    # and a larger batch of fresh pairs keeps the reconstruction/similarity ratio of a small one
    big = tuple(a[:4000] for a in batch)
    with torch.no_grad():
        large = method.loss_terms(big)
    ratio_small = (one["reconstruction"] / one["sim"]).item()
    ratio_large = (large["reconstruction"] / large["sim"]).item()
    assert ratio_large == pytest.approx(ratio_small, rel=0.25)


def test_lambdas_can_be_zero(split):
    method = built(split, lambda_ae=0.0, lambda_b=0.0)
    batch = next(iter(method.epoch_batches(1, np.random.default_rng(0))))
    with torch.no_grad():
        terms = method.loss_terms(batch)
        assert torch.equal(method.batch_loss(batch, 1), terms["sim"])
