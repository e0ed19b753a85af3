"""The contract every registered method passes on the built-in synthetic dataset.

A new method joins with one line in FAST_PARAMS (small settings so the suite stays quick).
"""

import numpy as np
import pytest

from hashbench import seeds
from hashbench.registry import FitContext, TrainData, available_methods
from hashbench.runner import evaluate_method

BITS = 32
FAST_PARAMS = {
    "mostpop": {},
    "lsh": {"svd_dim": 8},  # 8 planted clusters: the signal is in the top singular directions
    "proposed": {"epochs": 30, "eval_every": 5},
    "lightgcn": {"epochs": 30, "eval_every": 5},
    "bgch": {"epochs": 15, "batch_size": 1024, "eval_every": 5, "lr": 1e-2},
    "bgch-scaled": {"epochs": 15, "batch_size": 1024, "eval_every": 5, "lr": 1e-2},
    "hashgnn": {"epochs": 4, "batch_size": 1024, "lr": 1e-2},
    "dcf": {"init_iters": 5, "max_iters": 6, "patience": 3},
    "ccsr": {"batch_size": 4096, "epochs": 6, "eval_every": 3, "lr": 0.01},
    "hashrec": {"batch_size": 3000, "epochs": 12, "eval_every": 3, "lr": 0.01},
}


class Interrupt(Exception):
    pass


def fit(name, split, checkpoint_dir=None, interrupt_at=None, calls=None):
    """Fit a method; optionally raise from its progress callback at the n-th call."""
    count = [0]

    def progress(*args, **kwargs):
        count[0] += 1
        if interrupt_at is not None and count[0] == interrupt_at:
            raise Interrupt

    cls = available_methods()[name]
    ctx = FitContext(seed=seeds.seed_sequence(0, "method"), checkpoint_dir=checkpoint_dir, progress=progress,
                     validate=lambda m: evaluate_method(m, split, "valid", (50,)))
    method = cls(BITS, ctx, **FAST_PARAMS[name])
    method.fit(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid))
    if calls is not None:
        calls.append(count[0])
    return method


def output(method, split):
    if method.hashing:
        return method.codes()
    return (method.scores(np.arange(split.n_users)),)


def test_every_registered_method_is_in_the_contract():
    assert set(available_methods()) <= set(FAST_PARAMS), "add the new method to FAST_PARAMS"


@pytest.fixture(scope="module", params=sorted(FAST_PARAMS))
def fitted(request, split):
    if request.param not in available_methods():
        pytest.skip(f"{request.param} is not registered")
    calls = []
    return request.param, fit(request.param, split, calls=calls), calls[0]


def test_output_shape_and_dtype(fitted, split):
    name, method, _ = fitted
    if method.hashing:
        user_codes, item_codes = method.codes()
        assert user_codes.dtype == np.uint8 and item_codes.dtype == np.uint8
        assert user_codes.shape == (split.n_users, BITS // 8) and item_codes.shape == (split.n_items, BITS // 8)
    else:
        assert np.asarray(method.scores(np.arange(5))).shape == (5, split.n_items)


def test_same_seed_same_output(fitted, split):
    name, method, _ = fitted
    again = fit(name, split)
    for a, b in zip(output(method, split), output(again, split)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_beats_popularity_on_planted_clusters(fitted, split):
    name, method, _ = fitted
    if name == "mostpop":
        pytest.skip("the floor itself")
    popularity = evaluate_method(fit("mostpop", split), split, "test", (50,))["recall@50"]
    recall = evaluate_method(method, split, "test", (50,))["recall@50"]
    assert recall > 1.3 * popularity, (name, recall, popularity)


def test_resumes_after_interruption_with_identical_output(fitted, split, tmp_path):
    name, method, progress_calls = fitted
    if progress_calls < 2:
        pytest.skip(f"{name} trains in one step: nothing to interrupt")
    with pytest.raises(Interrupt):
        fit(name, split, checkpoint_dir=tmp_path, interrupt_at=progress_calls // 2 + 1)
    resumed = fit(name, split, checkpoint_dir=tmp_path)
    for a, b in zip(output(method, split), output(resumed, split)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
