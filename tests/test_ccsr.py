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
