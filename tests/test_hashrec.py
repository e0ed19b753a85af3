"""HashRec: the β continuation, and the method learns the planted data reproducibly."""

import math

import numpy as np
import pytest

from baselines.hashrec import beta_at
from hashbench.evaluate import evaluate_split_codes
from helpers import fit_method, popularity_recall

FAST = {"batch_size": 3000, "epochs": 6, "eval_every": 3, "lr": 0.01}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def split(synthetic_split):
    return synthetic_split


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
    user_codes, item_codes = fitted.codes()
    assert user_codes.shape == (split.n_users, 8) and user_codes.dtype == np.uint8
    assert item_codes.shape == (split.n_items, 8)
    recall = evaluate_split_codes(user_codes, item_codes, split, "test", (50,)).metrics["recall@50"]
    assert recall > popularity_recall(split) + 0.1
    again = fit(split).codes()
    assert np.array_equal(again[0], user_codes) and np.array_equal(again[1], item_codes)
    assert fitted.extras()["deviations"]
