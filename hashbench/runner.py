"""Run cells (method × dataset × bits × seed): split → fit → codes → evaluate → record.

One cell is one record in runs.jsonl and, for a hashing method, one codes file. A cell
whose record exists is skipped (ann-benchmarks' rule), so a killed sweep re-run with the
same command finishes only what is missing; a training run killed mid-way resumes from
the checkpoint in results/checkpoints/<cell>/.

Computing a cell (Runner.compute_cell) and saving it (save_result) are separate steps so
that a cell can be computed in a worker process or on another node while the driver stays
the single writer of the results directory (hashbench/executors.py).
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import numpy as np

import hashbench
from hashbench import records, seeds
from hashbench.data import Interactions, atomic_save_npz
from hashbench.datasets import load_dataset
from hashbench.errors import HashbenchError
from hashbench.evaluate import EvalResult, evaluate_split_codes, evaluate_split_scores
from hashbench.registry import FitContext, Method, TrainData, check_bits, get_method, method_spec
from hashbench.splits import Split, make_split
from hashbench.tuning import TrialTag, pruner_for

OVERWRITE = ("never", "failed", "always")


@dataclass(frozen=True)
class Cell:
    method: str
    dataset: str
    bits: int
    seed: int
    protocol: str = "random-8-1-1"
    params: dict[str, Any] = field(default_factory=dict)  # overrides of the method's defaults
    ks: tuple[int, ...] = (50, 100)
    trial: TrialTag | None = None  # a tuning trial (hashbench.tuning): pruned on its validation curve

    def config(self) -> dict[str, Any]:
        config = {
            "method": self.method, "dataset": self.dataset, "bits": self.bits, "seed": self.seed,
            "protocol": self.protocol, "ks": list(self.ks), "params": {**method_spec(self.method).defaults, **self.params},
        }
        if self.trial is not None:  # a pruned trial is not the same result as a full run of its params
            config["tuning"] = self.trial.config()
        return config

    def config_hash(self) -> str:
        return records.config_hash(self.config())

    def codes_name(self) -> str:
        """<dataset>-<method>-<bits>b-seed<seed>.npz, plus a tag when protocol or params differ.

        The same name is used under codes/ (the codes) and per_user/ (per-user test metrics)."""
        name = f"{self.dataset}-{self.method}-{self.bits}b-seed{self.seed}"
        if self.protocol != "random-8-1-1" or self.params or tuple(self.ks) != (50, 100) or self.trial:
            name += f"-{self.config_hash()[:8]}"
        return name + ".npz"


def parse_param(text: str) -> tuple[str | None, str, Any]:
    """'beta=20' or 'proposed.beta=20' -> (method or None, key, value parsed as int/float/bool/str)."""
    if "=" not in text:
        raise HashbenchError(f"--param expects KEY=VALUE or METHOD.KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    method, _, key = key.rpartition(".")
    value: Any = raw
    for cast in (int, float):
        try:
            value = cast(raw)
            break
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    return method or None, key, value


def params_for(method: str, overrides: list[tuple[str | None, str, Any]]) -> dict[str, Any]:
    defaults = method_spec(method).defaults
    return {k: v for m, k, v in overrides if (m == method) or (m is None and k in defaults)}


def plan_cells(methods: list[str], datasets: list[str], bits: int, seeds_: list[int], protocol: str,
               overrides: list, ks: tuple[int, ...]) -> list[Cell]:
    for m, key, _ in overrides:
        targets = [m] if m else methods
        if not any(key in method_spec(t).defaults for t in targets if t in methods or m):
            raise HashbenchError(f"--param {key}: no selected method has a parameter {key!r}")
    return [Cell(m, d, check_bits(bits), s, protocol, params_for(m, overrides), ks)
            for d in datasets for m in methods for s in seeds_]


def environment() -> dict[str, Any]:
    def pkg(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        rev = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
        sha = rev.stdout.strip() if rev.returncode == 0 and len(rev.stdout.strip()) == 40 else None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "hashbench": hashbench.__version__, "git_sha": sha, "git_dirty": dirty,
        "python": platform.python_version(),
        "packages": {n: pkg(n) for n in ("torch", "numpy", "scipy", "numba", "pandas")},
        "hardware": {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                     "platform": platform.platform()},
    }


def _reset_peak_rss() -> None:
    try:  # Linux: writing 5 to clear_refs resets VmHWM, so each cell reports its own peak
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise HashbenchError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device


def evaluate_method_full(method: Method, split: Split, on: str, ks) -> EvalResult:
    if method.hashing:
        user_codes, item_codes = method.codes()
        return evaluate_split_codes(user_codes, item_codes, split, on, ks)
    return evaluate_split_scores(method.scores, split, on, ks)


def evaluate_method(method: Method, split: Split, on: str, ks) -> dict[str, float]:
    return evaluate_method_full(method, split, on, ks).metrics


class NonFiniteLoss(FloatingPointError):
    """A method reported a NaN or infinite training loss: its cell is recorded as failed."""


@dataclass
class CellResult:
    """What computing a cell gives the driver: the record and (hashing methods) the codes.

    Workers never write results; the driver saves the codes file and then appends the
    record (save_result), so one process is the only writer of a results directory's files.
    """

    cell: Cell
    record: dict[str, Any]
    codes: tuple[np.ndarray, np.ndarray] | None = None
    per_user: dict[str, np.ndarray] | None = None  # test metrics per user, for paired significance tests


def checkpoint_dir_for(results_dir: Path, cell: Cell) -> Path:
    return Path(results_dir) / "checkpoints" / cell.config_hash()[:16]


def should_run(cell: Cell, existing: dict[str, dict], overwrite: str) -> bool:
    record = existing.get(cell.config_hash())
    if record is None or overwrite == "always":
        return True
    return overwrite == "failed" and record.get("status") != "ok"


def save_result(results_dir: Path, result: CellResult) -> dict[str, Any]:
    """Codes first (atomic rename), then the record (atomic append); then drop the checkpoint.

    Killed between the two steps, a re-run finds no record, recomputes the cell (from its
    finished checkpoint) and replaces the codes file with identical bytes.
    """
    results_dir = Path(results_dir)
    record = result.record
    if result.codes is not None and record.get("status") == "ok":
        user_codes, item_codes = result.codes
        cell = result.cell
        atomic_save_npz(results_dir / record["codes_file"], user_codes=user_codes, item_codes=item_codes,
                        bits=cell.bits, split_hash=record["split_hash"], dataset=cell.dataset, method=cell.method,
                        seed=cell.seed, protocol=cell.protocol)
    if result.per_user is not None and record.get("status") == "ok":
        # float32: the values are ratios of small integers; 4 metrics x 30k users is ~0.5 MB raw
        atomic_save_npz(results_dir / record["per_user_file"], compressed=True, split_hash=record["split_hash"],
                        **{k.replace("@", "_at_"): v.astype(np.float32) for k, v in result.per_user.items()})
    records.append_record(results_dir, record)
    if record.get("status") == "ok":
        shutil.rmtree(checkpoint_dir_for(results_dir, result.cell), ignore_errors=True)
    return record


def failed_record(cell: Cell, error: str, trace: str = "", **fields) -> dict[str, Any]:
    """A failed record for a cell whose worker never returned one (process or node lost)."""
    now = _now()
    return {**cell.config(), "config_hash": cell.config_hash(), "hashing": method_spec(cell.method).hashing, "status": "failed",
            "error": error, "traceback": trace, "started_at": now, "finished_at": now, **fields}


class Runner:
    """Computes cells for a results directory; caches datasets and splits across cells.

    compute_cell() writes nothing but the training checkpoint, so it can run in a worker
    process or on another machine; run_cell() computes and saves, for one-process use.
    """

    def __init__(self, results_dir: Path, cache_dir: Path | None = None, mirror: str | None = None,
                 device: str = "auto", overwrite: str = "failed",
                 progress: Callable[..., None] | None = None, command: str | None = None):
        if overwrite not in OVERWRITE:
            raise HashbenchError(f"--overwrite must be one of {', '.join(OVERWRITE)}, got {overwrite!r}")
        # absolute: checkpoints must land in the same place whatever a worker's cwd is
        self.results_dir = Path(results_dir).absolute()
        self.cache_dir, self.mirror, self.overwrite = cache_dir, mirror, overwrite
        self.device = resolve_device(device)
        self.progress = progress or (lambda *a, **k: None)
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self._datasets: dict[str, Interactions] = {}
        self._splits: dict[tuple, Split] = {}
        self._env = None

    def dataset(self, name: str) -> Interactions:
        if name not in self._datasets:
            self._datasets[name] = load_dataset(name, self.cache_dir, self.mirror)
        return self._datasets[name]

    def split(self, dataset: str, protocol: str, seed: int) -> Split:
        key = (dataset, protocol, seed)
        if key not in self._splits:
            self._splits[key] = make_split(self.dataset(dataset), protocol, seed)
        return self._splits[key]

    def should_run(self, cell: Cell, existing: dict[str, dict]) -> bool:
        return should_run(cell, existing, self.overwrite)

    def _checked_progress(self, cell: Cell) -> Callable[..., None]:
        """The progress callback, which also stops a run whose loss is no longer a number."""

        def progress(description, completed, total=None, **fields):
            loss = fields.get("loss")
            if isinstance(loss, (float, np.floating)) and not math.isfinite(loss):
                raise NonFiniteLoss(f"{cell.method}: training loss is {loss} at step {completed} "
                                    "(diverged; try a smaller learning rate)")
            self.progress(description, completed, total, **fields)

        return progress

    def compute_cell(self, cell: Cell) -> CellResult:
        """Split → fit → evaluate one cell. A method's exception or NaN loss gives a `failed`
        record with its traceback; bad input (HashbenchError) is raised to stop the sweep."""
        key = cell.config_hash()
        record: dict[str, Any] = {
            **cell.config(), "config_hash": key, "started_at": _now(), "device": self.device,
            "command": self.command,
        }
        if self._env is None:
            self._env = environment()
        record.update(self._env)
        cls = get_method(cell.method)
        record["hashing"] = cls.hashing
        cpu_started = time.process_time()  # all threads of this process: the campaign's compute bill
        codes = per_user = None
        try:
            split = self.split(cell.dataset, cell.protocol, cell.seed)
            data = self.dataset(cell.dataset)
            if max(cell.ks) > split.n_items:
                raise HashbenchError(f"K = {max(cell.ks)} is larger than the catalogue of {cell.dataset} "
                                     f"({split.n_items} items)")
            record.update(dataset_hash=split.dataset_hash, split_hash=split.hash, split_sizes=split.sizes(),
                          dataset_stats=data.stats())
            _reset_peak_rss()

            def validate(m: Method) -> dict[str, float]:
                return evaluate_method(m, split, "valid", (50,))

            ctx = FitContext(seed=seeds.seed_sequence(cell.seed, "method"), device=self.device,
                             checkpoint_dir=checkpoint_dir_for(self.results_dir, cell), validate=validate,
                             progress=self._checked_progress(cell),
                             prune=pruner_for(cell.trial) if cell.trial is not None else None)
            method = cls(cell.bits, ctx, **cell.params)
            started = time.perf_counter()
            method.fit(TrainData(cell.dataset, split.n_users, split.n_items, split.train, split.valid))
            record["train_seconds"] = time.perf_counter() - started
            started = time.perf_counter()
            test = evaluate_method_full(method, split, "test", cell.ks)
            metrics = {"valid": evaluate_method(method, split, "valid", cell.ks), "test": test.metrics}
            record["eval_seconds"] = time.perf_counter() - started
            # users are the evaluated ones (>= 1 test item), ascending; fill the rest with NaN
            per_user = {}
            for key in (f"{name}@{k}" for name in ("recall", "ndcg") for k in cell.ks):
                full = np.full(split.n_users, np.nan, dtype=np.float32)
                full[test.users] = test.per_user[key]
                per_user[key] = full
            record["per_user_file"] = str(Path("per_user") / cell.codes_name())
            bad = sorted(f"{on} {k}" for on, m in metrics.items() for k, v in m.items() if not math.isfinite(v))
            if bad:
                raise FloatingPointError(f"{cell.method}: non-finite metrics ({', '.join(bad)})")
            record["metrics"] = metrics
            record["peak_rss_mb"] = _peak_rss_mb()
            record["extras"] = method.extras()
            if method.hashing:
                codes = method.codes()
                record["codes_file"] = str(Path("codes") / cell.codes_name())
                record["storage_bytes"] = int(codes[0].nbytes + codes[1].nbytes)
            record["status"] = "ok"
        except KeyboardInterrupt:
            raise
        except HashbenchError:
            raise  # bad input: stop the sweep with the one-line message
        except Exception as exc:  # a method's failure is recorded; the sweep goes on
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            codes = per_user = None
        record["cpu_seconds"] = time.process_time() - cpu_started
        record["finished_at"] = _now()
        return CellResult(cell, record, codes, per_user)

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        """compute_cell + save_result, in this process."""
        return save_result(self.results_dir, self.compute_cell(cell))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
