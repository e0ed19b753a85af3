import numpy as np
import pytest

from hashbench.data import from_pairs
from hashbench.datasets import load_dataset
from hashbench.errors import HashbenchError
from hashbench.splits import Split, make_split


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")


def as_set(pairs):
    return set(map(tuple, pairs.tolist()))


def test_random_split_partitions_every_interaction(data):
    split = make_split(data, "random-8-1-1", seed=0)
    parts = [as_set(split.train), as_set(split.valid), as_set(split.test)]
    assert sum(map(len, parts)) == data.n_interactions
    assert parts[0] | parts[1] | parts[2] == as_set(data.pairs)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_random_split_is_8_1_1_per_user_and_keeps_a_training_item(data):
    split = make_split(data, "random-8-1-1", seed=0)
    n = np.bincount(data.pairs[:, 0], minlength=data.n_users)
    train = np.bincount(split.train[:, 0], minlength=data.n_users)
    valid = np.bincount(split.valid[:, 0], minlength=data.n_users)
    test = np.bincount(split.test[:, 0], minlength=data.n_users)
    assert (train >= 1).all()
    assert np.array_equal(valid, test)
    assert np.abs(valid - 0.1 * n).max() <= 0.5
    assert abs(len(split.train) / data.n_interactions - 0.8) < 0.01


def test_same_inputs_same_split_and_hash_other_seed_differs(data):
    a, b = make_split(data, seed=3), make_split(data, seed=3)
    assert a.hash == b.hash and np.array_equal(a.test, b.test)
    assert make_split(data, seed=4).hash != a.hash


def test_split_roundtrips_through_npz(tmp_path, data):
    split = make_split(data, seed=1)
    split.save(tmp_path / "s.npz")
    loaded = Split.load(tmp_path / "s.npz")
    assert loaded.hash == split.hash and loaded.train.dtype == np.int64 and loaded.train.shape[1] == 2


def test_lightgcn_protocol_keeps_upstream_test_and_carves_valid_from_train(data):
    split = make_split(data, "lightgcn", seed=0)
    assert as_set(split.test) == as_set(data.pairs[data.fold == 1])
    assert as_set(split.train) | as_set(split.valid) == as_set(data.pairs[data.fold == 0])
    assert 0.05 < len(split.valid) / (len(split.train) + len(split.valid)) < 0.15


def test_lightgcn_protocol_needs_folds():
    data = from_pairs("x", np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    with pytest.raises(HashbenchError, match="folds"):
        make_split(data, "lightgcn", 0)


def test_empty_split_is_an_error():
    # one interaction per user: nothing can be held out
    data = from_pairs("tiny", np.arange(5), np.arange(5))
    with pytest.raises(HashbenchError, match="empty valid"):
        make_split(data, "random-8-1-1", 0)


def test_unknown_protocol_suggests_the_nearest(data):
    with pytest.raises(HashbenchError, match="did you mean 'lightgcn'"):
        make_split(data, "lightgnc", 0)
