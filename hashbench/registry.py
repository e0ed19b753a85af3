"""The method interface and its registry.

A method is one class in one module: it fits on the training interactions (validation
available for early stopping, test never) and then gives user and item codes as packed
bits — or, for a non-hashing reference row, float scores. It registers itself with
`@register`; third-party packages add methods through the `hashbench.methods` entry-point
group (`name = "package.module:Class"`).
"""

from __future__ import annotations

import abc
import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from hashbench.errors import HashbenchError
from hashbench.specs import unknown_name_error

ENTRY_POINT_GROUP = "hashbench.methods"
_REGISTRY: dict[str, type["Method"]] = {}


@dataclass(frozen=True)
class TrainData:
    """What a method may see: the training pairs, and validation pairs for early stopping."""

    dataset: str
    n_users: int
    n_items: int
    train: np.ndarray  # int64 [n, 2]
    valid: np.ndarray  # int64 [n, 2]

    def train_matrix(self):
        """Users x items CSR matrix of training interactions (float32 ones)."""
        import scipy.sparse as sp

        ones = np.ones(len(self.train), dtype=np.float32)
        return sp.csr_matrix((ones, (self.train[:, 0], self.train[:, 1])), shape=(self.n_users, self.n_items))


@dataclass
class FitContext:
    """Everything a method needs from the runner besides the data."""

    seed: np.random.SeedSequence
    device: str = "cpu"
    checkpoint_dir: Path | None = None
    # validate(method) -> validation metrics (recall@50, ...) of the method's current state
    validate: Callable[["Method"], dict[str, float]] | None = None
    # progress(description, completed, total, **fields): a no-op unless the CLI provides one
    progress: Callable[..., None] = field(default=lambda *a, **k: None)


class Method(abc.ABC):
    """Subclass, set `name` (and `defaults`), implement fit + codes (or scores)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    hashing: ClassVar[bool] = True  # False: a float-score reference row (scores() instead of codes())
    defaults: ClassVar[dict[str, Any]] = {}
    # what one cell asks a Ray cluster for (Ray's num_cpus / num_gpus / custom resources);
    # a method that trains on a GPU declares {"num_cpus": 1, "num_gpus": 1} (or a fraction)
    resources: ClassVar[dict[str, float]] = {"num_cpus": 1}

    def __init__(self, bits: int, ctx: FitContext, **params):
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise HashbenchError(f"{self.name}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                                 f"valid: {', '.join(sorted(self.defaults)) or 'none'}")
        self.bits = bits
        self.ctx = ctx
        self.params = {**self.defaults, **params}

    @abc.abstractmethod
    def fit(self, data: TrainData) -> None:
        """Train on data.train (data.valid only through ctx.validate / early stopping)."""

    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(user_codes, item_codes): numpy.packbits uint8 arrays of shape [n, bits // 8]."""
        raise NotImplementedError(f"{self.name} is not a hashing method")

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Float scores [len(users), n_items] for a non-hashing reference row."""
        raise NotImplementedError(f"{self.name} gives codes, not float scores")

    def extras(self) -> dict[str, Any]:
        """Anything worth recording beside the metrics (best epoch, training curve...)."""
        return {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available under its `name`."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__qualname__} needs a `name` to be registered")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"method name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


_loaded = False


def _load_all() -> None:
    """Import the built-in method modules and the entry-point plug-ins once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in ("hashbench.methods", "baselines"):
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if ep.name not in _REGISTRY:
            register(cls)


def available_methods() -> dict[str, type[Method]]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> type[Method]:
    methods = available_methods()
    if name not in methods:
        raise unknown_name_error("method", name, list(methods))
    return methods[name]


def check_bits(bits: int) -> int:
    if bits <= 0 or bits % 8:
        raise HashbenchError(f"--bits must be a positive multiple of 8 (codes are stored as bytes), got {bits}")
    return bits
