"""Quality floor on the planted-cluster synthetic dataset: the graph methods clearly beat MostPop."""

import numpy as np
import pytest

from hashbench import seeds
from hashbench.core.graph import normalized_adjacency, propagate
from hashbench.registry import FitContext, TrainData, get_method
from hashbench.method_eval import evaluate_method

FAST = {
    "proposed": {"epochs": 10, "eval_every": 5, "batch_users": 128, "sampled_items": 400},
    "proposed-exact": {"epochs": 10, "eval_every": 5, "batch_users": 128, "rank": "exact", "positives": 0},
    "lightgcn": {"epochs": 10, "eval_every": 5, "batch_size": 2048, "lr": 1e-2},
}


def fit(name, split, **params):
    ctx = FitContext(seed=seeds.seed_sequence(0, "method"),
                     validate=lambda m: evaluate_method(m, split, "valid", (50,)))
    m = get_method(name)(64, ctx, **params)
    m.fit(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid))
    return m


@pytest.fixture(scope="module")
def popularity(split):
    return evaluate_method(fit("mostpop", split), split, "test", (50,))["recall@50"]


@pytest.mark.parametrize("variant", sorted(FAST))
def test_graph_method_clearly_beats_popularity(variant, split, popularity):
    method = fit(variant.split("-")[0], split, **FAST[variant])
    recall = evaluate_method(method, split, "test", (50,))["recall@50"]
    assert recall > 1.5 * popularity, (variant, recall, popularity)
    extras = method.extras()
    assert extras["best_epoch"] > 0 and extras["seconds_per_epoch"] > 0


def test_adjacency_is_symmetric_normalised_without_self_loops():
    import torch

    train = np.array([[0, 0], [0, 1], [1, 1], [2, 2]])
    adj = normalized_adjacency(train, 3, 3).to_dense()
    assert torch.allclose(adj, adj.T) and torch.all(adj.diagonal() == 0)
    # user 0 (degree 2) – item 1 (degree 2): 1/sqrt(2·2)
    assert adj[0, 3 + 1].item() == pytest.approx(0.5)
    assert adj[2, 3 + 2].item() == pytest.approx(1.0)


def test_propagation_backward_is_the_same_symmetric_operator():
    import torch

    rng = np.random.default_rng(0)
    train = np.unique(np.stack([rng.integers(0, 20, 200), rng.integers(0, 30, 200)], 1), axis=0)
    adj = normalized_adjacency(train, 20, 30)
    x = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    dense = adj.to_dense().double()
    out = propagate(adj, x.float(), 3, "mean").double()
    expected = sum(torch.linalg.matrix_power(dense, l) @ x for l in range(4)) / 4
    assert torch.allclose(out, expected, atol=1e-5)
    weights = torch.randn(50, 8, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    (grad_ref,) = torch.autograd.grad((expected * weights).sum(), x)
    assert torch.allclose(grad, grad_ref, atol=1e-5)


def test_training_item_membership_matches_the_training_pairs():
    from hashbench.core.graph import UserItemIndex

    rng = np.random.default_rng(3)
    train = np.unique(rng.integers(0, [40, 25], size=(300, 2)), axis=0)
    train = train[train[:, 0] != 7]  # user 7 has no training items
    index = UserItemIndex(train, 40, 25)
    pairs = set(map(tuple, train.tolist()))
    users, items = rng.integers(0, 40, size=5000), rng.integers(0, 25, size=5000)
    expected = [(u, i) in pairs for u, i in zip(users.tolist(), items.tolist())]
    assert index.is_positive(users, items).tolist() == expected
    negatives = index.sample_negatives(users, rng)
    assert not index.is_positive(users, negatives).any()  # seeded: 10 tries find a negative for each here


def test_negative_sampling_draws_as_checking_every_item_each_round():
    """Only redrawn items are checked again: the same draws, from the same generator state on."""
    from hashbench.core.graph import UserItemIndex

    def check_all(index, users, rng, tries=10):
        items = rng.integers(index.n_items, size=len(users))
        for _ in range(tries):
            hit = index.is_positive(users, items)
            if not hit.any():
                break
            items[hit] = rng.integers(index.n_items, size=int(hit.sum()))
        return items

    rng = np.random.default_rng(4)
    train = np.unique(rng.integers(0, [30, 12], size=(200, 2)), axis=0)  # dense: hits in several rounds
    index = UserItemIndex(train, 30, 12)
    for tries in (10, 2):
        users = rng.integers(0, 30, size=400)
        ours, theirs = np.random.default_rng(tries), np.random.default_rng(tries)
        assert np.array_equal(index.sample_negatives(users, ours, tries), check_all(index, users, theirs, tries))
        assert ours.integers(1 << 30) == theirs.integers(1 << 30)


def test_lightgcn_record_states_the_schedule_it_actually_ran(split):
    """A refit trains for its fixed number of epochs and may anneal the learning rate: the
    deviations from LightGCN's reference settings must say so, not repeat the defaults."""
    ctx = FitContext(seed=seeds.seed_sequence(0, "method"), epochs=3)
    m = get_method("lightgcn")(64, ctx, epochs=10, batch_size=4096, lr=1e-2, lr_decay=0.99)
    m.fit(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid[:0]))
    deviations = m.extras()["deviations"]
    assert deviations["epochs"] == {"reference": 1000, "here": 3}
    assert deviations["lr_decay"] == {"reference": 1.0, "here": 0.99}
    assert m.extras()["epochs_run"] == 3
