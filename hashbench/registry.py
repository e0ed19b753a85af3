"""The method interface and its registry.

A method is one class in one module: it fits on the training interactions (validation
available for early stopping, test never) and then gives user and item codes as packed
bits — or, for a non-hashing reference row, float scores. It registers itself with
`@register`; third-party packages add methods through the `hashbench.methods` entry-point
group (`name = "package.module:Class"`).

A method's parameters (defaults, types, ranges, choices), description and hashing flag are
data in a TOML file beside its module (hashbench.params), so `method_names()` and
`method_spec()` answer without importing torch or any method module; `get_method()` imports
the one module asked for.
"""

from __future__ import annotations

import abc
import functools
import importlib
import importlib.util
import pkgutil
import sys
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from hashbench.errors import HashbenchError
from hashbench.params import MethodSpec
from hashbench.specs import unknown_name_error

ENTRY_POINT_GROUP = "hashbench.methods"
BUILT_IN_PACKAGES = ("hashbench.methods", "baselines")
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
    # prune(curve) -> True to stop a tuning trial whose validation curve [(epoch, value)] is hopeless
    prune: Callable[[list], bool] | None = None
    # evidence(method) -> test-time metrics at each validation point (protocol effects): recorded
    # apart from everything else and never used to select an epoch or stop
    evidence: Callable[["Method"], dict[str, Any]] | None = None
    # train exactly this many epochs without validation: the refit on train + valid (runner)
    epochs: int | None = None


class Method(abc.ABC):
    """Subclass, set `name` (and `defaults`), implement fit + codes (or scores)."""

    name: ClassVar[str]
    # description, hashing and defaults come from the module's TOML file when it has one
    description: ClassVar[str] = ""
    hashing: ClassVar[bool] = True  # False: a float-score reference row (scores() instead of codes())
    defaults: ClassVar[dict[str, Any]] = {}
    spec: ClassVar[MethodSpec]
    # what one cell asks a Ray cluster for (Ray's num_cpus / num_gpus / custom resources);
    # a method that trains on a GPU declares {"num_cpus": 1, "num_gpus": 1} (or a fraction)
    resources: ClassVar[dict[str, float]] = {"num_cpus": 1}

    def __init__(self, bits: int, ctx: FitContext, **params):
        self.bits = bits
        self.ctx = ctx
        self.params = {**self.defaults, **self.spec.check_params(params)}

    @abc.abstractmethod
    def fit(self, data: TrainData) -> None:
        """Train on data.train (data.valid only through ctx.validate / early stopping)."""

    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(user_codes, item_codes): numpy.packbits uint8 arrays of shape [n, bits // 8]."""
        raise NotImplementedError(f"{self.name} is not a hashing method")

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Float scores [len(users), n_items] for a non-hashing reference row."""
        raise NotImplementedError(f"{self.name} gives codes, not float scores")

    def scores_excluding(self, excluded) -> Callable[[np.ndarray], np.ndarray]:
        """The score function for an evaluation that removes `excluded` (a retrieval.Exclusions:
        each user's training items, say) from every ranking: `scores` itself, unless a method's
        scores depend on what can be recommended (a re-ranker whose candidates are drawn from
        the items left: hashgnn-rerank)."""
        return self.scores

    def extras(self) -> dict[str, Any]:
        """Anything worth recording beside the metrics (best epoch, training curve...)."""
        return {}

    def evidence_curve(self) -> list[dict[str, Any]]:
        """ctx.evidence's output at each validation point of training ([] for untrained methods)."""
        return []


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available under its `name`, with the spec of its
    module's TOML file (or, without one, its class attributes)."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__qualname__} needs a `name` to be registered")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"method name {cls.name!r} is registered twice")
    module_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    specs = _module_specs(Path(module_file).with_suffix(".toml")) if module_file else {}
    if cls.name in specs:
        spec = specs[cls.name]
        cls.description, cls.hashing, cls.defaults = spec.description, spec.hashing, spec.defaults
    else:
        spec = MethodSpec.from_defaults(cls.name, cls.description, cls.hashing, dict(cls.defaults))
    cls.spec = spec
    _REGISTRY[cls.name] = cls
    return cls


def _module_specs(path: Path) -> dict[str, MethodSpec]:
    """The method specs of one TOML file (one table per method name); {} when there is none."""
    if not path.is_file():
        return {}
    try:
        tables = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise HashbenchError(f"cannot read method spec {path}: {exc}") from None
    return {name: MethodSpec.from_table(name, _based_on(tables, name, str(path)), str(path)) for name in tables}


def _based_on(tables: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    """A table with `based_on = "other"` takes the other method's params (its own override them)
    and description/hashing unless it gives its own: a variant row of a method (bgch-scaled)."""
    table = dict(tables[name])
    base_name = table.pop("based_on", None)
    if base_name is None:
        return table
    if base_name not in tables or "based_on" in tables[base_name]:
        raise HashbenchError(f"{where}: [{name}] based_on = {base_name!r} is not a method table of this file")
    base = tables[base_name]
    return {**base, **table, "params": {**base.get("params", {}), **table.get("params", {})},
            "search": table.get("search", base.get("search", {})), "based_on": base_name}


@functools.cache  # read once per process: a campaign asks for specs thousands of times (every cell's hash)
def built_in_specs() -> dict[str, tuple[str, MethodSpec]]:
    """{method name: (module to import, spec)} from the built-in packages' TOML files."""
    found: dict[str, tuple[str, MethodSpec]] = {}
    for package in BUILT_IN_PACKAGES:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for path in sorted(Path(folder).glob("*.toml")):
                for name, method_spec_ in _module_specs(path).items():
                    found[name] = (f"{package}.{path.stem}", method_spec_)
    return found


def _plugin_names() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def method_names() -> list[str]:
    """Every registered method's name, without importing any method module."""
    return sorted({*built_in_specs(), *_plugin_names(), *_REGISTRY})


def method_spec(name: str) -> MethodSpec:
    """A method's declared parameters, description and hashing flag; imports nothing but a
    third-party plug-in (whose spec lives on its class)."""
    if name in _REGISTRY:
        return _REGISTRY[name].spec
    built_in = built_in_specs()
    if name in built_in:
        return built_in[name][1]
    return get_method(name).spec


_loaded = False


def _load_all() -> None:
    """Import the built-in method modules and the entry-point plug-ins once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in BUILT_IN_PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
    for name, ep in _plugin_names().items():
        if name not in _REGISTRY:
            register(ep.load())


def available_methods() -> dict[str, type[Method]]:
    """Every method class; imports every method module (torch with them)."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> type[Method]:
    """The class of one method, importing only its module (or a plug-in's)."""
    if name not in _REGISTRY:
        built_in = built_in_specs()
        if name in built_in:
            importlib.import_module(built_in[name][0])
        elif name in _plugin_names():
            register(_plugin_names()[name].load())
    if name not in _REGISTRY:
        raise unknown_name_error("method", name, method_names())
    return _REGISTRY[name]


def check_bits(bits: int) -> int:
    if bits <= 0 or bits % 8:
        raise HashbenchError(f"--bits must be a positive multiple of 8 (codes are stored as bytes), got {bits}")
    return bits
