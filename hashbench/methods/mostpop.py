"""MostPop: rank items by training popularity, the same list for every user (float path, no codes)."""

import numpy as np

from hashbench.registry import Method, TrainData, register


@register
class MostPop(Method):
    name = "mostpop"  # description, hashing = false: mostpop.toml

    def fit(self, data: TrainData) -> None:
        self.popularity = np.bincount(data.train[:, 1], minlength=data.n_items).astype(np.float32)

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(users), len(self.popularity)))
