"""LSH: random-hyperplane sign codes of a truncated SVD of the training matrix.

The classic two-stage hashing baseline: learn real factors (SVD, X ≈ U S Vᵀ), then hash
them with sign random projections (Charikar 2002), whose Hamming distance estimates the
angle between factors. Nothing is learned through the codes, which is exactly why it is
a useful reference for methods that are.
"""

import numpy as np
import scipy.sparse.linalg as spla

from hashbench.codes import pack_signs
from hashbench.registry import Method, TrainData, register


@register
class LSH(Method):
    name = "lsh"
    # parameters, description: lsh.toml

    def fit(self, data: TrainData) -> None:
        rng = np.random.default_rng(self.ctx.seed)
        matrix = data.train_matrix().astype(np.float64)
        k = min(self.params["svd_dim"], min(matrix.shape) - 1)
        # ARPACK's start vector is the only randomness; seed it so codes are reproducible
        u, s, vt = spla.svds(matrix, k=k, v0=rng.standard_normal(min(matrix.shape)))
        scale = np.sqrt(s)
        hyperplanes = rng.standard_normal((k, self.bits))
        self.user_projections = (u * scale) @ hyperplanes
        self.item_projections = (vt.T * scale) @ hyperplanes

    def codes(self):
        return pack_signs(self.user_projections), pack_signs(self.item_projections)
