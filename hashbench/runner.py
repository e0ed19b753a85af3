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
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from hashbench import records, seeds
from hashbench.data import Interactions
from hashbench.datasets import load_dataset
from hashbench.errors import HashbenchError
from hashbench.environment import environment, peak_rss_mb, reset_peak_rss, resolve_device
from hashbench.method_eval import evaluate_method, evaluate_method_full, protocol_evidence, ranked_as, training_class
from hashbench.cells import OVERWRITE, Cell, checkpoint_dir_for, should_run
from hashbench.files import atomic_save_npz
from hashbench.registry import FitContext, Method, TrainData, get_method, method_spec
from hashbench.splits import Split, make_split
from hashbench.tuning import pruner_for


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
    companions: list["CellResult"] = field(default_factory=list)  # the same model ranked as a variant


def save_result(results_dir: Path, result: CellResult) -> dict[str, Any]:
    """Codes first (atomic rename), then the record (atomic append); then drop the checkpoint.

    Killed between the two steps, a re-run finds no record, recomputes the cell (from its
    finished checkpoint) and replaces the codes file with identical bytes.
    """
    results_dir = Path(results_dir)
    for companion in result.companions:  # before the cell's own record, as their files are before theirs
        save_result(results_dir, companion)
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
        if result.cell.refit is True and not record["extras"]["refit"]["selection_record"]:
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
                 progress: Callable[..., None] | None = None, command: str | None = None,
                 methods: Iterable[str] = ()):
        if overwrite not in OVERWRITE:
            raise HashbenchError(f"--overwrite must be one of {', '.join(OVERWRITE)}, got {overwrite!r}")
        # absolute: checkpoints must land in the same place whatever a worker's cwd is
        self.results_dir = Path(results_dir).absolute()
        self.cache_dir, self.mirror, self.overwrite = cache_dir, mirror, overwrite
        self.device = resolve_device(device)
        self.progress = progress or (lambda *a, **k: None)
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self.methods = frozenset(methods)  # the sweep's: which ranking variants to compute beside their base
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

    def companions(self, cell: Cell) -> list[Cell]:
        """The cells of the same configuration that rank `cell`'s model another way (its method's
        ranking variants: bgch-scaled for bgch) and that this runner's sweep also runs: computed
        from the model `cell` trains instead of training it again. Not for refits. A tuning trial's
        are trials too (the same tag): the campaign's seed-0 cell of a variant row is its base's
        winning trial ranked its way, so no trial's model has to be trained again for it."""
        if not self.methods or cell.refit:
            return []
        defaults = method_spec(cell.method).defaults
        wanted = [replace(cell, method=name) for name in sorted(self.methods)
                  if method_spec(name).based_on == cell.method and method_spec(name).defaults == defaults]
        if not wanted:
            return []
        latest = records.latest_by_cell(self.results_dir)
        return [c for c in wanted if should_run(c, latest, self.overwrite)]  # not already recorded

    @staticmethod
    def _pruner(cell: Cell):
        """A tuning trial's pruner; none for a ranking variant's trial (bgch-scaled), which is the
        completed base trial's model trained again only when that trial predates companions: it was
        not pruned, and a pruned copy would stand as the variant row's seed-0 final cell."""
        if cell.trial is None or method_spec(cell.method).based_on is not None:
            return None
        return pruner_for(cell.trial)

    def compute_cell(self, cell: Cell) -> CellResult:
        """Split → fit → evaluate one cell (and its companions: the same model ranked as a
        variant). A method's exception or NaN loss gives a `failed` record with its traceback;
        bad input (HashbenchError) is raised to stop the sweep."""
        head: dict[str, Any] = {"started_at": _now(), "device": self.device, "command": self.command}
        if self._env is None:
            self._env = environment()
        head.update(self._env)
        cls = get_method(cell.method)
        record = {**cell.config(), "config_hash": cell.config_hash(), **head, "hashing": cls.hashing}
        cpu_started = time.process_time()  # all threads of this process: the campaign's compute bill
        result, companions = CellResult(cell, record), []
        try:
            split = self.split(cell.dataset, cell.protocol, cell.seed)
            data = self.dataset(cell.dataset)
            if max(cell.ks) > split.n_items:
                raise HashbenchError(f"K = {max(cell.ks)} is larger than the catalogue of {cell.dataset} "
                                     f"({split.n_items} items); pick smaller cut-offs with --ks")
            head.update(dataset_hash=split.dataset_hash, split_hash=split.hash, split_sizes=split.sizes(),
                        dataset_stats=data.stats())
            record.update(head)
            reset_peak_rss()

            def validate(m: Method) -> dict[str, float]:
                return evaluate_method(m, split, "valid", (50,))

            companion_cells = self.companions(cell)
            rankings = (cls, *(get_method(c.method) for c in companion_cells))
            ctx = FitContext(seed=seeds.seed_sequence(cell.seed, "method"), device=self.device,
                             checkpoint_dir=checkpoint_dir_for(self.results_dir, cell), validate=validate,
                             progress=self._checked_progress(cell), evidence=protocol_evidence(split, rankings),
                             prune=self._pruner(cell))
            started = time.perf_counter()
            trainer_cls = training_class(cls)
            if cell.refit:
                selection = self._select(cell, cls, split, ctx)
                trained = self._refit(cell, trainer_cls, split, ctx, selection)
            else:
                trained = _fit_plain(cell, trainer_cls, split, ctx)
                selection = None
            record["train_seconds"] = time.perf_counter() - started
            self._evaluate_into(result, ranked_as(trained, cls), split, selection)
            record["peak_rss_mb"] = peak_rss_mb()
            if (record.get("extras") or {}).get("stopped") == "pruned":
                companion_cells = []  # a cut-short model is no run of its configuration, ranked any way
            for other in companion_cells:
                # the same model ranked as a variant: its own record, billed its evaluation only
                cpu_other = time.process_time()
                companion = CellResult(other, {**other.config(), "config_hash": other.config_hash(), **head,
                                               "hashing": get_method(other.method).hashing, "train_seconds": 0.0})
                try:
                    self._evaluate_into(companion, ranked_as(trained, get_method(other.method)), split, None,
                                        model_of=cell.config_hash())
                    companion.record["peak_rss_mb"] = peak_rss_mb()
                except HashbenchError:
                    raise
                except Exception as exc:  # its ranking failed, not the training: the base cell stands
                    _mark_failed(companion, exc)
                companion.record["cpu_seconds"] = time.process_time() - cpu_other
                companion.record["finished_at"] = _now()
                companions.append(companion)
        except KeyboardInterrupt:
            raise
        except HashbenchError:
            raise  # bad input: stop the sweep with the one-line message
        except Exception as exc:  # a method's failure is recorded; the sweep goes on
            _mark_failed(result, exc)
            companions = []
        # this process's CPU, plus what killed runs of this cell did before it resumed their work
        earlier = (record.get("extras") or {}).get("earlier_cpu_seconds", 0.0)
        record["cpu_seconds"] = (time.process_time() - cpu_started + earlier
                                 - sum(c.record["cpu_seconds"] for c in companions))
        record["finished_at"] = _now()
        result.companions = companions
        return result

    def _evaluate_into(self, result: CellResult, method: Method, split: Split, selection: "Selection | None",
                       model_of: str | None = None) -> None:
        """Test (and, without a selection, validation) metrics, protocol evidence, per-user
        results, extras and codes of one ranking of a trained model, into `result`."""
        cell, record = result.cell, result.record
        started = time.perf_counter()
        test = evaluate_method_full(method, split, "test", cell.ks)
        valid = selection.valid if selection else evaluate_method(method, split, "valid", cell.ks)
        metrics = {"valid": valid, "test": test.metrics}
        record["eval_seconds"] = time.perf_counter() - started
        if selection:
            curve = selection.curve
        else:
            # a variant's points are those its base's training recorded for it (none before a
            # resumption that added it: a checkpoint from a sweep without the variant)
            curve = [{"epoch": p["epoch"], **point} for p in method.evidence_curve()
                     if (point := ((p.get("rankings") or {}).get(cell.method) if model_of else
                                   {k: v for k, v in p.items() if k not in ("epoch", "rankings")})) is not None]
        record["protocol_evidence"] = {"curve": curve, "final": protocol_evidence(split)(method)}
        # users are the evaluated ones (>= 1 test item), ascending; fill the rest with NaN
        per_user = {}
        for key in (f"{name}@{k}" for name in ("recall", "ndcg") for k in cell.ks):
            full = np.full(split.n_users, np.nan, dtype=np.float32)
            full[test.users] = test.per_user[key]
            per_user[key] = full
        record["per_user_file"] = (Path("per_user") / cell.codes_name()).as_posix()
        bad = sorted(f"{on} {k}" for on, m in metrics.items() for k, v in m.items() if not math.isfinite(v))
        if bad:
            raise FloatingPointError(f"{cell.method}: non-finite metrics ({', '.join(bad)})")
        record["metrics"] = metrics
        extras = (method.extras() if selection is None else
                  selection.extras_with(method, len(split.train) + len(split.valid)))
        if model_of:
            # trained once, by the cell named here: its curve and stopping story are that model's
            extras = {**extras, "model_of": model_of, "earlier_cpu_seconds": 0.0}
        record["extras"] = extras
        if method.hashing:
            codes = method.codes()
            record["codes_file"] = (Path("codes") / cell.codes_name()).as_posix()
            record["storage_bytes"] = int(codes[0].nbytes + codes[1].nbytes)
            result.codes = codes
        record["status"] = "ok"
        result.per_user = per_user

    def _select(self, cell: Cell, cls, split: Split, ctx: FitContext) -> "Selection":
        """A refit's first half: the plain run of the same configuration, from its record when
        there is one, else trained here (checkpointed where the plain run would be; as
        training_class(cls), validated as the cell ranks)."""
        if cell.fixed_epochs is not None:  # the reference's schedule: nothing to choose
            return Selection({}, {"best_epoch": cell.fixed_epochs}, [], None, fixed=True)
        plain = cell.selection()
        rec = records.latest_by_cell(self.results_dir).get(plain.config_hash())
        if rec is not None and rec.get("status") == "ok":
            return Selection(rec["metrics"]["valid"], rec.get("extras") or {},
                             (rec.get("protocol_evidence") or {}).get("curve", []), plain.config_hash())
        plain_ctx = replace(ctx, checkpoint_dir=checkpoint_dir_for(self.results_dir, plain))
        chooser = ranked_as(_fit_plain(cell, training_class(cls), split, plain_ctx), cls)
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


def _mark_failed(result: CellResult, exc: Exception) -> None:
    """A cell whose method raised: a `failed` record with the traceback, and no result files."""
    for key in ("metrics", "codes_file", "per_user_file", "storage_bytes"):
        result.record.pop(key, None)
    result.record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    result.codes = result.per_user = None


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
    fixed: bool = False  # no selection run: a fixed number of epochs (Cell.fixed_epochs)

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
                "refit": {"epochs": self.epochs, "fixed_schedule": self.fixed, "epochs_run": extras.get("epochs_run"), "n_train": n_train,
                          "train_seconds": extras.get("train_seconds"), "selection_record": self.reused}}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
