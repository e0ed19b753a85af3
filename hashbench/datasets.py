"""load_dataset: the one entry point from a dataset name to its canonical interactions."""

from __future__ import annotations

from pathlib import Path

from hashbench import synthetic
from hashbench.data import Interactions, default_cache_dir
from hashbench.specs import get_dataset_spec


def cached_path(name: str, cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / name / "interactions.npz"


def load_dataset(name: str, cache_dir: Path | None = None, mirror: str | None = None,
                 quiet: bool = True) -> Interactions:
    """Builtin datasets are generated; others come from the cache, fetched (and verified) if absent."""
    spec = get_dataset_spec(name)
    if spec.builtin:
        return synthetic.generate(spec)
    path = cached_path(name, cache_dir)
    if path.is_file():
        return Interactions.load(path, name)
    from hashbench.fetch import fetch  # only real datasets need the network code

    return fetch(spec, cache_dir=cache_dir, mirror=mirror, quiet=quiet)
