"""Each sgn estimator: forward is sgn with sgn(0) = +1; backward equals its analytic derivative."""

import math

import pytest
import torch

from hashbench.core.estimators import ESTIMATORS, BetaSchedule, get_estimator

X = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64)


def backward_of(est, x):
    x = x.clone().requires_grad_()
    est(x).backward(torch.ones_like(x))
    return x.grad


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_forward_is_sign_with_zero_mapped_to_plus_one(name):
    est = get_estimator(name)
    out = est(torch.tensor([-2.0, -1e-9, 0.0, 1e-9, 3.0]))
    assert out.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("beta", [1.0, 5.0, 15.0, 40.0])
def test_signswish_backward_is_autograd_derivative_of_signswish(beta):
    est = get_estimator("signswish", beta=beta)
    x = X.clone().requires_grad_()
    (expected,) = torch.autograd.grad(est.surrogate(x).sum(), x)
    assert torch.allclose(backward_of(est, X), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("beta", [1.0, 5.0, 15.0])
def test_signswish_backward_matches_the_papers_closed_form(beta):
    """Eq. 5 of the abstract, 2[(β²x+2β)e^{−2βx} − (β²x−2β)e^{−βx}]/(1+e^{−βx})³, where it does not overflow."""
    x = torch.linspace(-1.0, 3.0, 401, dtype=torch.float64) / beta
    e1, e2 = torch.exp(-beta * x), torch.exp(-2 * beta * x)
    paper = 2 * ((beta**2 * x + 2 * beta) * e2 - (beta**2 * x - 2 * beta) * e1) / (1 + e1) ** 3
    assert torch.allclose(backward_of(get_estimator("signswish", beta=beta), x), paper, atol=1e-9, rtol=0)


def test_signswish_peak_integral_and_stability():
    est = get_estimator("signswish", beta=10.0)
    assert backward_of(est, torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(10.0)  # β (methods.md says 2β: it is β(2 − 0)/(1 + cosh 0) = β)
    grid = torch.linspace(-5, 5, 200001, dtype=torch.float64)
    assert torch.trapezoid(est.derivative(grid), grid).item() == pytest.approx(2.0, abs=1e-4)  # jump of sgn
    huge = backward_of(get_estimator("signswish", beta=1e3), torch.tensor([-1e3, 1e3]))
    assert torch.isfinite(huge).all()


@pytest.mark.parametrize("beta", [0.5, 3.0])
def test_tanh_backward(beta):
    assert torch.allclose(backward_of(get_estimator("tanh", beta=beta), X),
                          beta * (1 - torch.tanh(beta * X) ** 2), atol=1e-12)


def test_ste_identity_and_clipped():
    assert torch.equal(backward_of(get_estimator("ste"), X), torch.ones_like(X))
    clipped = backward_of(get_estimator("ste", clip=1.0), X)
    assert torch.equal(clipped, (X.abs() <= 1.0).double())


def test_fourier_backward_is_bgch_formula():
    x = X.clone()
    series = sum(torch.cos(k * x) for k in (1, 3, 5, 7))
    expected = (4 / math.pi * series).clamp(-1, 1)
    assert torch.allclose(backward_of(get_estimator("fourier", terms=8, w=1.0), X), expected, atol=1e-12)
    # inside the clamp it is the derivative of the truncated Fourier series of the square wave
    est = get_estimator("fourier")
    xg = X.clone().requires_grad_()
    (auto,) = torch.autograd.grad(est.surrogate(xg).sum(), xg)
    inside = auto.abs() < 1
    assert inside.any() and torch.allclose(backward_of(est, X)[inside], auto[inside], atol=1e-10)


@pytest.mark.parametrize("terms, w", [(8, 1.0), (4, 0.5), (16, 2.0), (1, 1.0)])
def test_fourier_derivative_in_place_has_the_formulas_roundings(terms, w):
    # the in-place derivative (BGCH's hot path) against the out-of-place series, to the bit
    gen = torch.Generator().manual_seed(terms)
    x = torch.cat([torch.randn(5000, generator=gen) * 0.3, torch.randn(500, generator=gen) * 1e3,
                   torch.tensor([0.0, -0.0, 1e-30, math.pi / 2, -math.pi])])
    series = torch.zeros_like(x)
    for k in range(1, terms, 2):
        series = series + torch.cos(k * w * x)
    expected = (4.0 * w / math.pi * series).clamp(-1.0, 1.0)
    got = get_estimator("fourier", terms=terms, w=w).derivative(x)
    assert torch.equal(got, expected) and torch.equal(got.signbit(), expected.signbit())


@pytest.mark.parametrize("a", [1.0, 2.5])
def test_gaussian_backward_is_bigear_formula(a):
    expected = (a / math.sqrt(math.pi) * torch.exp(-(a * X) ** 2)).clamp(1e-8, 1)
    assert torch.allclose(backward_of(get_estimator("gaussian", a=a), X), expected, atol=1e-12)


def test_beta_schedules():
    assert BetaSchedule(5.0)(100) == 5.0
    lin = BetaSchedule(5.0, 25.0, 10, "linear")
    assert [lin(e) for e in (0, 5, 10, 20)] == [5.0, 15.0, 25.0, 25.0]
    exp = BetaSchedule(1.0, 100.0, 10, "exponential")
    assert exp(5) == pytest.approx(10.0) and exp(30) == pytest.approx(100.0)
    est = get_estimator("signswish", beta=2.0, schedule="linear", beta_end=4.0, anneal_epochs=2)
    est.set_epoch(1)
    assert est.beta == 3.0


def test_unknown_estimator_names_the_valid_ones():
    with pytest.raises(ValueError, match="signswish"):
        get_estimator("nope")
