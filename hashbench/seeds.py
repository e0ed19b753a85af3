"""Seeds are derived, not scattered: one SeedSequence per run seed, one child per purpose.

The split depends only on (seed, "split"), so every method of a seed sees the same split;
the method's own randomness (init, sampling) comes from (seed, "method").
"""

import numpy as np

PURPOSES = ("split", "method", "synthetic")


def seed_sequence(seed: int, purpose: str) -> np.random.SeedSequence:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}")
    return np.random.SeedSequence(seed, spawn_key=(PURPOSES.index(purpose),))


def rng(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng(seed_sequence(seed, purpose))


def torch_seed(seq: np.random.SeedSequence) -> int:
    """A 63-bit integer for torch.manual_seed, derived from a SeedSequence."""
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
