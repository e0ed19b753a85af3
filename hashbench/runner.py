"""Run cells (method × dataset × bits × seed): split → fit → codes → evaluate → record.

One cell is one record in runs.jsonl and, for a hashing method, one codes file. A cell
whose record exists is skipped (ann-benchmarks' rule), so a killed sweep re-run with the
same command finishes only what is missing; a training run killed mid-way resumes from
the checkpoint in results/checkpoints/<cell>/.

Computing a cell (Runner.compute_cell) and saving it (save_result) are separate steps so
that a cell can be computed in a worker process or on another node while the driver stays
the single writer of the results directory (hashbench/executors/).
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
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import numpy as np

import hashbench
from hashbench import records, seeds
from hashbench.data import Interactions
from hashbench.datasets import load_dataset
from hashbench.errors import HashbenchError
from hashbench.evaluate import EvalResult, evaluate_split_codes, evaluate_split_scores
from hashbench.cells import OVERWRITE, Cell, checkpoint_dir_for, parse_param, plan_cells, should_run  # noqa: F401
from hashbench.files import atomic_save_npz
from hashbench.registry import FitContext, Method, TrainData, get_method, method_spec
from hashbench.splits import Split, make_split
from hashbench.tuning import pruner_for

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


def protocol_evidence(split: Split) -> Callable[[Method], dict[str, dict[str, float]]]:
    """What the papers' evaluation habits would have seen of a model (issue: protocol effects):
    test Recall/NDCG@50 under our protocol and with training and validation items left in the
    ranking. Recorded in a record's `protocol_evidence`, apart from everything that selects or
    reports a model: the report's protocol-effect table is its only reader."""

    def evidence(method: Method) -> dict[str, dict[str, float]]:
        return {"test": evaluate_method(method, split, "test", (50,)),
                "test_unmasked": evaluate_method(method, split, "test-unmasked", (50,))}

    return evidence


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
        if result.cell.refit and not record["extras"]["refit"]["selection_record"]:
            # the selection run's finished state, trained inside this cell
            shutil.rmtree(checkpoint_dir_for(results_dir, result.cell.selection()), ignore_errors=True)
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
                                     f"({split.n_items} items); pick smaller cut-offs with --ks")
            record.update(dataset_hash=split.dataset_hash, split_hash=split.hash, split_sizes=split.sizes(),
                          dataset_stats=data.stats())
            _reset_peak_rss()

            def validate(m: Method) -> dict[str, float]:
                return evaluate_method(m, split, "valid", (50,))

            ctx = FitContext(seed=seeds.seed_sequence(cell.seed, "method"), device=self.device,
                             checkpoint_dir=checkpoint_dir_for(self.results_dir, cell), validate=validate,
                             progress=self._checked_progress(cell), evidence=protocol_evidence(split),
                             prune=pruner_for(cell.trial) if cell.trial is not None else None)
            started = time.perf_counter()
            if cell.refit:
                selection = self._select(cell, cls, split, ctx)
                method = self._refit(cell, cls, split, ctx, selection)
            else:
                method = _fit_plain(cell, cls, split, ctx)
                selection = None
            record["train_seconds"] = time.perf_counter() - started
            started = time.perf_counter()
            test = evaluate_method_full(method, split, "test", cell.ks)
            valid = selection.valid if selection else evaluate_method(method, split, "valid", cell.ks)
            metrics = {"valid": valid, "test": test.metrics}
            record["eval_seconds"] = time.perf_counter() - started
            record["protocol_evidence"] = {"curve": selection.curve if selection else method.evidence_curve(),
                                           "final": protocol_evidence(split)(method)}
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
            record["extras"] = (method.extras() if selection is None else
                                selection.extras_with(method, len(split.train) + len(split.valid)))
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
        # this process's CPU, plus what killed runs of this cell did before it resumed their work
        earlier = (record.get("extras") or {}).get("earlier_cpu_seconds", 0.0)
        record["cpu_seconds"] = time.process_time() - cpu_started + earlier
        record["finished_at"] = _now()
        return CellResult(cell, record, codes, per_user)

    def _select(self, cell: Cell, cls, split: Split, ctx: FitContext) -> "Selection":
        """A refit's first half: the plain run of the same configuration, from its record when
        there is one, else trained here (checkpointed where the plain run would be)."""
        plain = cell.selection()
        rec = records.latest_by_cell(self.results_dir).get(plain.config_hash())
        if rec is not None and rec.get("status") == "ok":
            return Selection(rec["metrics"]["valid"], rec.get("extras") or {},
                             (rec.get("protocol_evidence") or {}).get("curve", []), plain.config_hash())
        plain_ctx = replace(ctx, checkpoint_dir=checkpoint_dir_for(self.results_dir, plain))
        chooser = _fit_plain(cell, cls, split, plain_ctx)
        return Selection(evaluate_method(chooser, split, "valid", cell.ks), chooser.extras(),
                         chooser.evidence_curve(), None)

    def _refit(self, cell: Cell, cls, split: Split, ctx: FitContext, selection: "Selection") -> Method:
        """A fresh model (same seed) trained on train + valid for the selected number of epochs,
        without validation (DaisyRec's practice, protocol §2); test is then evaluated once."""
        refit_ctx = replace(ctx, validate=None, prune=None, evidence=None, epochs=selection.epochs)
        method = cls(cell.bits, refit_ctx, **cell.params)
        both = np.concatenate([split.train, split.valid])
        method.fit(TrainData(cell.dataset, split.n_users, split.n_items, both, split.valid[:0]))
        return method

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        """compute_cell + save_result, in this process."""
        return save_result(self.results_dir, self.compute_cell(cell))


def _fit_plain(cell: Cell, cls, split: Split, ctx: FitContext) -> Method:
    """The plain run: trained on the training split, selected on the validation split. A refit's
    selection run is this same fit (only its checkpoint folder differs), so both call it."""
    method = cls(cell.bits, ctx, **cell.params)
    method.fit(TrainData(cell.dataset, split.n_users, split.n_items, split.train, split.valid))
    return method


# the training keys of a refit record that describe the selection run (how it stopped, its curve)
SELECTION_EXTRAS = ("best_epoch", "epochs_run", "stopped", "best_valid", "seconds_to_best", "seconds_per_epoch",
                    "resumed_from_epoch", "curve")


@dataclass
class Selection:
    """What a refit takes from its selection run: validation metrics, extras, evidence curve."""

    valid: dict[str, float]
    extras: dict[str, Any]
    curve: list[dict[str, Any]]
    reused: str | None  # the config hash of the plain run's record it came from, or None: trained here

    @property
    def epochs(self) -> int | None:
        """The selected epoch (None: an untrained method, refit on train + valid as it is)."""
        return self.extras.get("best_epoch")

    def extras_with(self, refit: Method, n_train: int) -> dict[str, Any]:
        """The refit model's extras, with the selection's stopping story and a `refit` entry."""
        extras = refit.extras()
        # a selection trained in this cell (not read from a record) was resumed work of this cell too
        earlier = extras.get("earlier_cpu_seconds", 0.0) + (
            self.extras.get("earlier_cpu_seconds", 0.0) if self.reused is None else 0.0)
        return {**extras, **{k: self.extras[k] for k in SELECTION_EXTRAS if k in self.extras},
                "earlier_cpu_seconds": earlier,
                "refit": {"epochs": self.epochs, "epochs_run": extras.get("epochs_run"), "n_train": n_train,
                          "train_seconds": extras.get("train_seconds"), "selection_record": self.reused}}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
