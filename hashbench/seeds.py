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


# A method's own streams, children of its (seed, "method") sequence. The numbers are part of
# every recorded result (changing one changes the codes), so they are fixed here, once.
METHOD_STREAMS = {"init": 0, "sampling": 1, "inference": 2, "iteration": 1000}


def child_seed(seq: np.random.SeedSequence, purpose: int) -> np.random.SeedSequence:
    """A reproducible child of `seq` (SeedSequence.spawn would depend on how often it was called)."""
    return np.random.SeedSequence(seq.entropy, spawn_key=tuple(seq.spawn_key) + (purpose,))


def method_stream(seq: np.random.SeedSequence, stream: str, index: int = 0) -> np.random.SeedSequence:
    """The seed of one named stream of a method: "init" (weights), "sampling" (batches),
    "inference" (randomness at code time), "iteration" + index (one per outer iteration)."""
    if stream not in METHOD_STREAMS:
        raise ValueError(f"unknown method seed stream {stream!r}; valid: {', '.join(METHOD_STREAMS)}")
    return child_seed(seq, METHOD_STREAMS[stream] + index)
