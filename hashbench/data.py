"""The canonical interaction table every later step reads, and where it is cached."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashbench.errors import HashbenchError
from hashbench.files import atomic_save_npz, read_npz  # noqa: F401  (baselines/dcf.py imports atomic_save_npz from here)

TRAIN_FOLD, TEST_FOLD = 0, 1


@dataclass(frozen=True)
class Interactions:
    """Implicit feedback: unique (user, item) pairs sorted by user then item.

    `fold` holds the upstream LightGCN train/test label of each pair (0 train, 1 test) when
    the source published it, else None; only the `lightgcn` split protocol needs it.
    """

    name: str
    n_users: int
    n_items: int
    pairs: np.ndarray  # int64 [n, 2]
    fold: np.ndarray | None = None  # int8 [n]

    def __post_init__(self):
        if self.pairs.ndim != 2 or self.pairs.shape[1] != 2:
            raise HashbenchError(f"{self.name}: interactions must be an [n, 2] array")

    @property
    def n_interactions(self) -> int:
        return len(self.pairs)

    @property
    def density(self) -> float:
        return self.n_interactions / (self.n_users * self.n_items)

    def content_hash(self) -> str:
        """sha256 of the interaction set (not of its fold labels or the file it came from)."""
        h = hashlib.sha256(f"{self.n_users},{self.n_items};".encode())
        h.update(np.ascontiguousarray(self.pairs, dtype="<i8").tobytes())
        return h.hexdigest()

    def stats(self) -> dict:
        return {
            "dataset": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "density": self.density,
        }

    def save(self, path: Path) -> None:
        arrays = {"pairs": self.pairs, "n_users": self.n_users, "n_items": self.n_items}
        if self.fold is not None:
            arrays["fold"] = self.fold
        atomic_save_npz(path, **arrays)

    @classmethod
    def load(cls, path: Path, name: str) -> "Interactions":
        z = read_npz(path)
        return cls(
            name=name,
            n_users=int(z["n_users"]),
            n_items=int(z["n_items"]),
            pairs=z["pairs"],
            fold=z.get("fold"),
        )


def from_pairs(name: str, users: np.ndarray, items: np.ndarray, fold: np.ndarray | None = None,
               n_users: int | None = None, n_items: int | None = None) -> Interactions:
    """Build the canonical table: sort by (user, item), reject duplicates and negative ids."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if len(users) == 0:
        raise HashbenchError(f"{name}: no interactions")
    if users.min() < 0 or items.min() < 0:
        raise HashbenchError(f"{name}: negative user or item id")
    order = np.lexsort((items, users))
    pairs = np.stack([users[order], items[order]], axis=1)
    dup = np.all(pairs[1:] == pairs[:-1], axis=1)
    if dup.any():
        u, i = pairs[1:][dup][0]
        raise HashbenchError(f"{name}: duplicate interaction (user {u}, item {i}), {int(dup.sum())} in all")
    return Interactions(
        name=name,
        n_users=int(n_users if n_users is not None else users.max() + 1),
        n_items=int(n_items if n_items is not None else items.max() + 1),
        pairs=pairs,
        fold=None if fold is None else np.asarray(fold, dtype=np.int8)[order],
    )


def default_cache_dir() -> Path:
    """$HASHBENCH_CACHE_DIR, else $XDG_CACHE_HOME/hashbench, else ~/.cache/hashbench."""
    if env := os.environ.get("HASHBENCH_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hashbench"
