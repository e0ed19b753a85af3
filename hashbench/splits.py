"""Train/valid/test splits (protocol.md §2): a split is a pure function of
(dataset content, protocol, seed), and its content hash goes into every result."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from hashbench import seeds
from hashbench.data import TEST_FOLD, Interactions
from hashbench.errors import HashbenchError
from hashbench.files import atomic_save_npz, read_npz

DEFAULT_PROTOCOL = "random-8-1-1"  # protocol.md §2: the split every campaign cell and every default run uses
PROTOCOLS = (DEFAULT_PROTOCOL, "lightgcn")


@dataclass(frozen=True, eq=False)
class Split:
    dataset: str
    protocol: str
    seed: int
    n_users: int
    n_items: int
    dataset_hash: str
    train: np.ndarray  # int64 [n, 2] (user, item)
    valid: np.ndarray
    test: np.ndarray

    @cached_property
    def hash(self) -> str:
        """Content hash of the three arrays (and the catalogue size): what results cite."""
        h = hashlib.sha256(f"{self.n_users},{self.n_items};".encode())
        for part in (self.train, self.valid, self.test):
            h.update(f"{len(part)};".encode())
            h.update(np.ascontiguousarray(part, dtype="<i8").tobytes())
        return h.hexdigest()

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}

    def save(self, path: Path) -> None:
        atomic_save_npz(
            path, train=self.train, valid=self.valid, test=self.test,
            n_users=self.n_users, n_items=self.n_items, dataset=self.dataset,
            protocol=self.protocol, seed=self.seed, dataset_hash=self.dataset_hash,
        )

    @classmethod
    def load(cls, path: Path) -> "Split":
        z = read_npz(path)
        return cls(
            dataset=str(z["dataset"]), protocol=str(z["protocol"]), seed=int(z["seed"]),
            n_users=int(z["n_users"]), n_items=int(z["n_items"]),
            dataset_hash=str(z["dataset_hash"]),
            train=z["train"], valid=z["valid"], test=z["test"],
        )


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5).astype(np.int64)


def _per_user_positions(users: np.ndarray, rng: np.random.Generator, n_users: int):
    """A seeded random order inside each user's group: (order, position within user, group size)."""
    keys = rng.random(len(users))
    order = np.lexsort((keys, users))
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_users = users[order]
    position = np.arange(len(users)) - starts[sorted_users]
    return order, position, counts[sorted_users]


def split_random_8_1_1(data: Interactions, seed: int) -> Split:
    """Per user: shuffle, then 80% train / 10% valid / 10% test.

    A user with n interactions gets round(0.1·n) (half up) valid and as many test
    interactions, the rest train: valid and test stay the same size (Gowalla: 103,374 each,
    10.06%) and every user keeps at least one training interaction.
    """
    rng = seeds.rng(seed, "split")
    order, position, n = _per_user_positions(data.pairs[:, 0], rng, data.n_users)
    held_out = _round_half_up(0.1 * n)
    train_end = np.maximum(n - 2 * held_out, 1)
    valid_end = np.minimum(train_end + held_out, n)
    shuffled = data.pairs[order]
    parts = [shuffled[position < train_end],
             shuffled[(position >= train_end) & (position < valid_end)],
             shuffled[position >= valid_end]]
    return _make(data, DEFAULT_PROTOCOL, seed, *parts)


def split_lightgcn(data: Interactions, seed: int) -> Split:
    """Upstream LightGCN train/test as published; a seeded 10% of each user's train is valid."""
    if data.fold is None:
        raise HashbenchError(
            f"{data.name}: the lightgcn protocol needs the upstream train/test folds, and this copy "
            "has none (it came from an interactions-only source); fetch the upstream or tsv-folds files")
    train_fold = data.pairs[data.fold != TEST_FOLD]
    test = data.pairs[data.fold == TEST_FOLD]
    rng = seeds.rng(seed, "split")
    order, position, n = _per_user_positions(train_fold[:, 0], rng, data.n_users)
    train_end = np.maximum(n - _round_half_up(0.1 * n), 1)
    shuffled = train_fold[order]
    return _make(data, "lightgcn", seed, shuffled[position < train_end], shuffled[position >= train_end], test)


def _make(data: Interactions, protocol: str, seed: int, train, valid, test) -> Split:
    def canonical(part):  # sorted by (user, item), so equal inputs give equal bytes
        return part[np.lexsort((part[:, 1], part[:, 0]))]

    for label, part in (("train", train), ("valid", valid), ("test", test)):
        if len(part) == 0:
            raise HashbenchError(f"{data.name}: the {protocol} split (seed {seed}) has an empty {label} set")
    return Split(
        dataset=data.name, protocol=protocol, seed=seed, n_users=data.n_users, n_items=data.n_items,
        dataset_hash=data.content_hash(), train=canonical(train), valid=canonical(valid),
        test=canonical(test),
    )


SPLITTERS = {DEFAULT_PROTOCOL: split_random_8_1_1, "lightgcn": split_lightgcn}


def make_split(data: Interactions, protocol: str = DEFAULT_PROTOCOL, seed: int = 0) -> Split:
    if protocol not in SPLITTERS:
        from hashbench.specs import unknown_name_error

        raise unknown_name_error("protocol", protocol, list(SPLITTERS))
    return SPLITTERS[protocol](data, seed)
