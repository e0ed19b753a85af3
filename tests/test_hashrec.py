"""HashRec: the β continuation, and the method learns the planted data reproducibly."""

import math

import numpy as np
import pytest
import torch

from baselines.hashrec import beta_at
from hashbench import seeds
from hashbench.evaluate import evaluate_split_codes
from hashbench.datasets import load_dataset
from hashbench.registry import FitContext, TrainData, get_method
from hashbench.runner import evaluate_method
from hashbench.splits import make_split

FAST = {"batch_size": 3000, "epochs": 6, "eval_every": 3, "lr": 0.01}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny tensors: thread start-up dominates, and on a shared machine it dominates badly
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def split():
    return make_split(load_dataset("synthetic"), "random-8-1-1", 0)


def fit(split, **params):
    ctx = FitContext(seed=seeds.seed_sequence(0, "method"),
                     validate=lambda m: evaluate_method(m, split, "valid", (50,)))
    method = get_method("hashrec")(64, ctx, **{**FAST, **params})
    method.fit(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid))
    return method


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
    pop = get_method("mostpop")(64, FitContext(seed=seeds.seed_sequence(0, "method")))
    pop.fit(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid))
    assert recall > evaluate_method(pop, split, "test", (50,))["recall@50"] + 0.1
    again = fit(split).codes()
    assert np.array_equal(again[0], user_codes) and np.array_equal(again[1], item_codes)
    assert fitted.extras()["deviations"]
