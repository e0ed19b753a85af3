"""The built-in synthetic dataset: planted user/item clusters plus a popularity skew.

Users mostly interact with items of their own cluster, so a method that learns the
clusters beats popularity ranking by a wide, measurable margin; the popularity skew makes
MostPop a real baseline rather than a random one. Generated deterministically from the
spec's generator_seed: no download, identical on every machine.
"""

from __future__ import annotations

import numpy as np

from hashbench.data import Interactions, from_pairs
from hashbench.specs import DatasetSpec


def generate(spec: DatasetSpec) -> Interactions:
    p = spec.params
    rng = np.random.default_rng(int(p.get("generator_seed", 0)))
    n_users, n_items, n_clusters = spec.users, spec.items, int(p.get("clusters", 8))
    mean_degree, in_cluster = float(p.get("mean_degree", 30)), float(p.get("in_cluster", 0.85))

    user_cluster = rng.integers(n_clusters, size=n_users)
    item_cluster = rng.integers(n_clusters, size=n_items)
    # a moderate popularity skew: MostPop is a real baseline but the clusters carry more signal
    popularity = rng.lognormal(0.0, float(p.get("popularity_sigma", 1.0)), size=n_items)

    users, items, folds = [], [], []
    for u in range(n_users):
        degree = int(np.clip(rng.poisson(mean_degree), 10, n_items // 4))
        own = item_cluster == user_cluster[u]
        weight = popularity * np.where(own, in_cluster / popularity[own].sum(),
                                       (1 - in_cluster) / popularity[~own].sum())
        chosen = rng.choice(n_items, size=degree, replace=False, p=weight / weight.sum())
        users.append(np.full(degree, u))
        items.append(chosen)
        # an upstream-style 80/20 fold so the `lightgcn` protocol also runs on this data
        fold = np.zeros(degree, dtype=np.int8)
        fold[rng.permutation(degree)[: max(1, round(0.2 * degree))]] = 1
        folds.append(fold)
    return from_pairs(spec.name, np.concatenate(users), np.concatenate(items), np.concatenate(folds),
                      n_users=n_users, n_items=n_items)
