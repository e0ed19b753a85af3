"""What a worker process needs to compute cells: the RunnerSpec the driver sends it, one
Runner per spec built from it, and the worker's share of the cores."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Iterable

from hashbench.cells import Cell
from hashbench.registry import available_methods, get_method, register
from hashbench.runner import Runner


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a worker process (here or on another node) needs to compute cells."""

    results_dir: str  # absolute; workers write checkpoints under it
    cache_dir: str | None = None
    mirror: str | None = None
    device: str = "auto"
    command: str = ""
    # methods registered in the driver at run time (a notebook, a test, a plug-in not on the
    # entry-point group): name -> "module:QualName", imported and registered in the worker
    method_imports: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # the driver's HASHBENCH_* variables

    @classmethod
    def for_cells(cls, cells: Iterable[Cell], results_dir: Path, cache_dir: Path | None = None,
                  mirror: str | None = None, device: str = "auto", command: str | None = None,
                  methods: Iterable[str] = ()) -> "RunnerSpec":
        """`methods`: others the sweep may run besides the cells' (cells it adds as records land,
        such as a campaign's ranking-variant rows: their base cells then compute them)."""
        imports = {}
        for name in sorted({c.method for c in cells} | set(methods)):
            method = get_method(name)
            imports[name] = f"{method.__module__}:{method.__qualname__}"
        return cls(
            results_dir=str(Path(results_dir).absolute()),
            cache_dir=str(Path(cache_dir).absolute()) if cache_dir else None,
            mirror=mirror, device=device,
            command=command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            method_imports=tuple(imports.items()),
            env=tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("HASHBENCH_"))),
        )

    def make_runner(self, progress=None, device: str | None = None) -> Runner:
        # the sweep's methods: a cell computes the ranking variants of its model the sweep also runs
        return Runner(Path(self.results_dir), Path(self.cache_dir) if self.cache_dir else None, self.mirror,
                      device or self.device, "failed", progress, self.command,
                      methods=[name for name, _ in self.method_imports])


_RUNNERS: dict[tuple[RunnerSpec, str], Runner] = {}


def worker_runner(spec: RunnerSpec, device: str | None = None) -> Runner:
    """One Runner per worker process and spec, so datasets and splits are loaded once."""
    key = (spec, device or spec.device)
    if key not in _RUNNERS:
        os.environ.update(dict(spec.env))
        registered = available_methods()
        for name, target in spec.method_imports:
            if name not in registered:
                module, _, qualname = target.partition(":")
                register(reduce(getattr, qualname.split("."), importlib.import_module(module)))
        _RUNNERS[key] = spec.make_runner(device=device)
    return _RUNNERS[key]


def set_threads(threads: int) -> None:
    """Pin torch and numba to this worker's share of the cores (no oversubscription)."""
    import torch

    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):
        pass
