"""HashRec: the β continuation, and the method learns the planted data reproducibly."""

import math

import pytest

from baselines.hashrec import beta_at
from helpers import assert_learns_reproducibly, fit_method

FAST = {"batch_size": 3000, "epochs": 6, "eval_every": 3, "lr": 0.01}
pytestmark = pytest.mark.usefixtures("one_thread")


def fit(split, **params):
    return fit_method("hashrec", split, **{**FAST, **params})


@pytest.fixture(scope="module")
def fitted(split):
    return fit(split)


def test_beta_schedule():
    assert beta_at(1) == 1.0
    for e in (2, 5, 10, 100):
        assert beta_at(e) == pytest.approx(math.sqrt(1 + 10 * (e - 1)))
    assert beta_at(100) == pytest.approx(31.48, abs=0.01)


def test_training_follows_the_schedule(fitted):
    assert fitted.betas == [beta_at(e) for e in range(1, FAST["epochs"] + 1)]


def test_beats_popularity_and_is_deterministic(split, fitted):
    assert_learns_reproducibly(fitted, split, lambda: fit(split))
