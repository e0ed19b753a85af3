"""sgn with pluggable backwards: the gradient estimators of the hashing literature.

Every estimator has the same forward, sgn(x) with sgn(0) := +1, and differs only in the
derivative it pretends sgn has. Each is a custom autograd Function (`_SignFunction`) calling
the estimator's `derivative(x)`; where the derivative comes from a smooth surrogate of sgn,
`surrogate(x)` gives it too, so tests can check the backward against autograd.

    est = get_estimator("signswish", beta=15)   # by name: methods and ablations pick a string
    codes = est(embeddings)                     # ±1 forward, SS'_β backward

β schedules (SignSwish and tanh): `schedule="linear"|"exponential"` moves β from `beta` to
`beta_end` over `anneal_epochs` epochs; the training loop calls `set_epoch(epoch)`.

`mix_straight_through(z, uniform, β)`: each row z or sgn(z) (HashGNN's continuous/hash
mixing), with the straight-through backward, in one autograd step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from numba import njit


def sgn(x: torch.Tensor) -> torch.Tensor:
    """±1 with sgn(0) = +1 (torch.sign would give 0, which is not a code)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class _SignFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, estimator: "GradientEstimator") -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.estimator = estimator
        return sgn(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * ctx.estimator.derivative(x), None


class BetaSchedule:
    """β per epoch: constant, or linear / exponential from `start` to `end` over `epochs`."""

    KINDS = ("constant", "linear", "exponential")

    def __init__(self, start: float, end: float | None = None, epochs: int = 0, kind: str = "constant"):
        if kind not in self.KINDS:
            raise ValueError(f"unknown beta schedule {kind!r}; valid: {', '.join(self.KINDS)}")
        if kind != "constant" and (end is None or epochs <= 0 or start <= 0 or end <= 0):
            raise ValueError(f"a {kind} beta schedule needs beta > 0, beta_end > 0 and anneal_epochs > 0")
        self.start, self.end, self.epochs, self.kind = float(start), end, int(epochs), kind

    def __call__(self, epoch: int) -> float:
        if self.kind == "constant":
            return self.start
        t = min(max(epoch, 0) / self.epochs, 1.0)
        if self.kind == "linear":
            return self.start + t * (self.end - self.start)
        return self.start * (self.end / self.start) ** t


class GradientEstimator:
    """Forward sgn; backward grad · derivative(x). Subclasses set `name` and `derivative`."""

    name = ""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _SignFunction.apply(x, self)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """The smooth function whose derivative is the backward (None if there is none)."""
        raise NotImplementedError(f"{self.name} has no smooth surrogate")

    def set_epoch(self, epoch: int) -> None:
        """Estimators with a schedule update their temperature here; others ignore it."""

    def describe(self) -> dict[str, Any]:
        return {"estimator": self.name}


class StraightThroughEstimator(GradientEstimator):
    """STE: the identity (HashGNN), or 1[|x| ≤ clip] (the hardtanh derivative) when clipped."""

    name = "ste"

    def __init__(self, clip: float | None = None):
        self.clip = clip

    def derivative(self, x):
        if self.clip is None:
            return torch.ones_like(x)
        return (x.abs() <= self.clip).to(x.dtype)

    def surrogate(self, x):
        return x if self.clip is None else x.clamp(-self.clip, self.clip)

    def describe(self):
        return {"estimator": self.name, "clip": self.clip}


class _Annealed(GradientEstimator):
    def __init__(self, beta: float = 1.0, schedule: str = "constant", beta_end: float | None = None,
                 anneal_epochs: int = 0):
        if beta <= 0:
            raise ValueError(f"{self.name}: beta must be > 0, got {beta}")
        self.schedule = BetaSchedule(beta, beta_end, anneal_epochs, schedule)
        self.beta = float(beta)

    def set_epoch(self, epoch: int) -> None:
        self.beta = self.schedule(epoch)

    def describe(self):
        s = self.schedule
        return {"estimator": self.name, "beta": s.start, "schedule": s.kind, "beta_end": s.end,
                "anneal_epochs": s.epochs}


class TanhEstimator(_Annealed):
    """d/dx tanh(βx) = β(1 − tanh²(βx)) (HashRec/CIGAR-style continuation)."""

    name = "tanh"

    def derivative(self, x):
        t = torch.tanh(self.beta * x)
        return self.beta * (1.0 - t * t)

    def surrogate(self, x):
        return torch.tanh(self.beta * x)


class SignSwishEstimator(_Annealed):
    """AAGE (the Proposed method): SS'_β, the derivative of SignSwish (BNN+).

    SS_β(x) = 2σ(βx)[1 + βx(1 − σ(βx))] − 1,
    SS'_β(x) = 2βσ(βx)(1 − σ(βx))·[2 + βx(1 − 2σ(βx))]  — the σ-form: no exp/cosh overflow.
    Peak β at 0 (methods.md says 2β; β(2−0)/(1+cosh 0) = β), integral 2; slightly negative beyond |βx| ≈ 2.4 (SignSwish overshoots ±1).
    """

    name = "signswish"

    def derivative(self, x):
        bx = self.beta * x
        s = torch.sigmoid(bx)
        return 2.0 * self.beta * s * (1.0 - s) * (2.0 + bx * (1.0 - 2.0 * s))

    def surrogate(self, x):
        bx = self.beta * x
        s = torch.sigmoid(bx)
        return 2.0 * s * (1.0 + bx * (1.0 - s)) - 1.0


class FourierEstimator(GradientEstimator):
    """BGCH: clamp((4w/π) Σ_{odd k < N} cos(k w x), −1, 1), the clipped derivative of the truncated
    Fourier series (4/π) Σ sin(k w x)/k of a square wave; N = 8, w = 1 in BGCH's run_all.py."""

    name = "fourier"

    def __init__(self, terms: int = 8, w: float = 1.0):
        self.terms, self.w = int(terms), float(w)

    def derivative(self, x):
        # in place, with the roundings of clamp(4w/π · (0 + cos(w x) + cos(3w x) + …)): BGCH takes
        # it over every node's codes at every step. The leading 0 + is left out (cos is never ±0
        # at a float, so 0 + c = c) and so is the product by k·w where it is 1 (x · 1 = x).
        odd = range(1, self.terms, 2)
        if not odd:
            return torch.zeros_like(x)
        total = self._cos_term(x, odd[0], torch.empty_like(x))
        term = torch.empty_like(x)
        for k in odd[1:]:
            total.add_(self._cos_term(x, k, term))
        return total.mul_(4.0 * self.w / math.pi).clamp_(-1.0, 1.0)

    def _cos_term(self, x, k, out):
        """cos(k w x) written into `out`."""
        scale = k * self.w
        return torch.cos(x, out=out) if scale == 1.0 else torch.mul(x, scale, out=out).cos_()

    def surrogate(self, x):  # the unclipped series (its derivative equals the backward where |.| < 1)
        total = torch.zeros_like(x)
        for k in range(1, self.terms, 2):
            total = total + torch.sin(k * self.w * x) / k
        return 4.0 / math.pi * total

    def describe(self):
        return {"estimator": self.name, "terms": self.terms, "w": self.w}


class GaussianEstimator(GradientEstimator):
    """BiGeaR's Dirac-delta approximation: clamp((a/√π) exp(−(a x)²), 1e-8, 1), a = 1."""

    name = "gaussian"

    def __init__(self, a: float = 1.0):
        self.a = float(a)

    def derivative(self, x):
        return (self.a / math.sqrt(math.pi) * torch.exp(-(self.a * x) ** 2)).clamp(1e-8, 1.0)

    def surrogate(self, x):  # ½ erf(a x): derivative (a/√π) e^{−(ax)²}, equal to the backward inside the clamp
        return 0.5 * torch.erf(self.a * x)

    def describe(self):
        return {"estimator": self.name, "a": self.a}


ESTIMATORS: dict[str, type[GradientEstimator]] = {
    cls.name: cls for cls in (StraightThroughEstimator, TanhEstimator, SignSwishEstimator,
                              FourierEstimator, GaussianEstimator)
}


def get_estimator(name: str, **params) -> GradientEstimator:
    """An estimator by name; unknown names get the list of valid ones."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown gradient estimator {name!r}; valid: {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name](**params)


def mix(continuous: torch.Tensor, hashed: torch.Tensor, uniform: torch.Tensor, beta: float) -> torch.Tensor:
    """Row-wise: the continuous vector where uniform > β, the hash code otherwise."""
    return torch.where((uniform > beta)[:, None], continuous, hashed)


@njit(cache=True, nogil=True)
def _mix_sign_rows(z, uniform, beta, out):
    """out[r] = z[r] where uniform[r] > β, else sgn(z[r]) (sgn(0) = +1; NaN gives −1, as sgn)."""
    for r in range(z.shape[0]):
        if uniform[r] > beta:
            for d in range(z.shape[1]):
                out[r, d] = z[r, d]
        else:
            for d in range(z.shape[1]):
                out[r, d] = 1.0 if z[r, d] >= 0 else -1.0


class _MixStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, uniform: torch.Tensor, beta: float) -> torch.Tensor:
        if (z.device.type == "cpu" and z.dtype == torch.float32 and z.dim() == 2 and z.is_contiguous()
                and uniform.dtype == torch.float64 and uniform.is_contiguous()):
            out = torch.empty_like(z)  # one compiled pass instead of sgn's and the mix's where
            _mix_sign_rows(z.detach().numpy(), uniform.numpy(), float(beta), out.numpy())
            return out
        return torch.where((uniform > beta)[:, None], z, sgn(z))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


def mix_straight_through(z: torch.Tensor, uniform: torch.Tensor, beta: float) -> torch.Tensor:
    """mix(z, StraightThroughEstimator()(z), uniform, β) in one step: the same values, and the
    same gradient (identity), since the plain STE passes the gradient on unchanged, so both
    branches of the mix hand z the incoming gradient (one of the two is 0). Autograd through
    `mix` forms it from two zero-filled where-gradients, a ones-multiply and a sum, on every
    [B·11, 64] row block of every step."""
    return _MixStraightThrough.apply(z, uniform, beta)
