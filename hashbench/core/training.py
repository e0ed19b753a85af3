"""One outer training driver for every trained method, over a small trainer protocol.

A trainer knows how to train one epoch and how to hand over and take back its state; the
driver (`run_training`) owns everything around that, once: epochs, validation every
`eval_every` epochs, early stopping after `patience` evaluations without improvement, the
best state kept and restored, epoch and time caps, the progress display, and a checkpoint
written atomically at every evaluation from which a killed run resumes to bitwise the state
an uninterrupted run reaches.

Two trainers exist: `TorchTrainer` (Adam over an nn.Module, mini-batches and a loss given by
the method; core.trained_method.TorchMethod builds it) and DCF's discrete coordinate-descent
sweeps (baselines/dcf.py). A trainer implements:

    initialise()                 fresh start only (not when resuming), e.g. DCF's relaxed init
    train_epoch(epoch, rng)      -> dict of the epoch's record fields ("loss", ...; "stop": why)
    state() / load_state(s)      everything needed to resume
    snapshot() / restore(s)      the part that defines the outputs, kept for the best epoch
    session()                    a context manager around the whole run (e.g. torch settings)
    evaluating()                 a context manager around one validation
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
from torch import nn

from hashbench.core.checkpoints import load_checkpoint, save_checkpoint
from hashbench.errors import HashbenchWarning
from hashbench.seeds import method_stream

CHECKPOINT_NAME = "train_state.pt"
STOP_REASONS = ("patience", "epochs", "time", "converged", "no-validation", "pruned")


@dataclass
class TrainConfig:
    epochs: int = 1000
    eval_every: int = 5
    patience: int = 5  # evaluations without improvement before stopping
    monitor: str = "recall@50"
    # stop (keeping the best state) after this much training time, counted on the busy clock
    # (BusyClock): a loaded machine slows a run down but does not cut it short
    max_minutes: float | None = None
    validate_initial: bool = False  # also evaluate the state before epoch 1 (epoch 0)
    min_epochs: int = 0  # patience cannot stop the run before this epoch (a schedule that must run out)


@dataclass
class TrainResult:
    best_epoch: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)
    epochs_run: int = 0
    stopped: str = ""  # one of STOP_REASONS
    train_seconds: float = 0.0  # training + validation time, summed over resumptions
    seconds_to_best: float = 0.0
    seconds_per_epoch: float = 0.0  # training only, without validation
    busy_seconds: float = 0.0  # what max_minutes is measured against (BusyClock), summed over resumptions
    # process CPU seconds (all threads) of the training segments before the last resume: the
    # work a killed run left for this one to continue, which this process's own clock misses
    earlier_cpu_seconds: float = 0.0
    resumed_from_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # ctx.evidence at each validation point: written here, read by nothing in training
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Trainer(Protocol):
    def initialise(self) -> None: ...
    def train_epoch(self, epoch: int, rng: np.random.Generator) -> dict[str, Any]: ...
    def state(self) -> dict[str, Any]: ...
    def load_state(self, state: dict[str, Any]) -> None: ...
    def snapshot(self) -> Any: ...
    def restore(self, snapshot: Any) -> None: ...
    def session(self) -> contextlib.AbstractContextManager: ...
    def evaluating(self) -> contextlib.AbstractContextManager: ...


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def fingerprint(**config) -> str:
    """A short hash of a run's configuration: a checkpoint is only resumed by the same config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tune_malloc() -> None:
    """Keep freed heap memory instead of returning it to the OS after every step.

    Training allocates and frees the same large per-step arrays over and over; glibc's default
    serves them with mmap and unmaps them at free, so every step pays page faults on fresh
    zeroed pages. Equivalent to MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<huge>; glibc only.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**30)
    except (OSError, AttributeError):
        pass


class TorchTrainer:
    """Adam (or the method's optimiser) over `params` of `module`; an epoch is `epoch_batches(epoch, rng)` through `batch_loss`.

    Runs with torch's deterministic algorithms on: the backward of embedding lookups with
    repeated indices (index_put_ with accumulate) otherwise sums in a thread-dependent order,
    and a resumed run would drift from an uninterrupted one in the last float bits.
    """

    def __init__(self, module: nn.Module, lr: float, seed: int,
                 epoch_batches: Callable[[int, np.random.Generator], Iterable[Any]],
                 batch_loss: Callable[[Any, int], torch.Tensor],
                 on_epoch_start: Callable[[int], None] | None = None,
                 params: Iterable[nn.Parameter] | None = None, lr_decay: float = 1.0,
                 optimizer: Callable[[list[nn.Parameter], float], torch.optim.Optimizer] | None = None):
        tune_malloc()
        torch.manual_seed(seed)  # after the model's init: dropout and other in-training draws
        self.module = module
        self.epoch_batches, self.batch_loss, self.on_epoch_start = epoch_batches, batch_loss, on_epoch_start
        params = list(params if params is not None else module.parameters())
        # a method may bring its own optimiser (e.g. HashRec's lazy Adam); Adam otherwise
        own = optimizer(params, lr) if optimizer is not None else None
        self.optimizer = own if own is not None else torch.optim.Adam(params, lr=lr)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=lr_decay)

    def initialise(self) -> None:
        pass

    def train_epoch(self, epoch: int, rng: np.random.Generator) -> dict[str, Any]:
        if self.on_epoch_start is not None:
            self.on_epoch_start(epoch)
        self.module.train()
        total, steps = 0.0, 0
        for batch in self.epoch_batches(epoch, rng):
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.batch_loss(batch, epoch)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach())
            steps += 1
        self.scheduler.step()
        return {"loss": total / max(steps, 1)}

    def state(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])

    def snapshot(self) -> Any:
        return copy.deepcopy(self.module.state_dict())

    def restore(self, snapshot: Any) -> None:
        self.module.load_state_dict(snapshot)
        self.module.eval()

    @contextlib.contextmanager
    def session(self):
        previous = (torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled(),
                    torch.utils.deterministic.fill_uninitialized_memory)
        torch.use_deterministic_algorithms(True, warn_only=True)
        # deterministic mode also fills every torch.empty with NaN (a guard against reading
        # memory never written); nothing here reads such memory, and the fills cost a pass over
        # each new tensor (HashGNN: ~15 ms of a ~500 ms step). The values computed are the same.
        torch.utils.deterministic.fill_uninitialized_memory = False
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*deterministic.*")
                yield
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
            torch.utils.deterministic.fill_uninitialized_memory = previous[2]

    @contextlib.contextmanager
    def evaluating(self):
        self.module.eval()
        with torch.no_grad():
            yield


def run_training(method, trainer: Trainer, config: TrainConfig, config_hash: str) -> TrainResult:
    """Train until patience (or a cap) and leave the trainer in its best state.

    `method` gives the context (ctx.seed, ctx.validate, ctx.progress, ctx.checkpoint_dir) and
    is what ctx.validate evaluates; `config_hash` ties a checkpoint to this configuration.
    """
    with trainer.session():
        return _run(method, trainer, config, config_hash)


class BusyClock:
    """Training time as the time cap counts it: wall seconds, or the process's CPU seconds per
    thread when that is less.

    On a machine shared with other jobs a run gets a fraction of its cores, so wall time
    overstates the work done and a wall-clock cap would stop the same run at an earlier epoch
    the busier the machine is (the same seed, different numbers). CPU time per thread counts
    the work; the minimum never fires later than the work warrants on an idle machine. On a GPU
    the CPU spin-waits for the device by default (CUDA's scheduling for a process with cores to
    spare), so the busy clock stays close to the wall clock there; a run that made the CPU sleep
    while it waits would be capped late, never early. Time spent outside training (the test
    evidence) is paused out of both clocks.
    """

    def __init__(self, wall_before: float = 0.0, busy_before: float = 0.0, cpu_before: float = 0.0):
        self.wall_before, self.busy_before, self.cpu_before = wall_before, busy_before, cpu_before
        self.wall0, self.cpu0, self.wall_paused, self.cpu_paused = time.perf_counter(), time.process_time(), 0.0, 0.0

    @contextlib.contextmanager
    def paused(self):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall_paused += time.perf_counter() - wall
            self.cpu_paused += time.process_time() - cpu

    def wall(self) -> float:
        return self.wall_before + (time.perf_counter() - self.wall0) - self.wall_paused

    def busy(self) -> float:
        wall = time.perf_counter() - self.wall0 - self.wall_paused
        cpu_per_thread = (time.process_time() - self.cpu0 - self.cpu_paused) / max(1, torch.get_num_threads())
        return self.busy_before + min(wall, cpu_per_thread)

    def cpu(self) -> float:
        """Process CPU seconds of training (all threads), summed over resumptions: the compute bill."""
        return self.cpu_before + (time.process_time() - self.cpu0 - self.cpu_paused)


def _run(method, trainer: Trainer, config: TrainConfig, config_hash: str) -> TrainResult:
    ctx = method.ctx
    name = getattr(method, "name", "train")
    rng = np.random.default_rng(method_stream(ctx.seed, "sampling"))
    path = Path(ctx.checkpoint_dir) / CHECKPOINT_NAME if ctx.checkpoint_dir is not None else None
    result, best, bad_evals = TrainResult(), None, 0
    start_epoch, train_only = 1, 0.0
    clock = BusyClock()  # evidence (test curves) is not training: left out of every time reported

    def checkpoint(epoch: int, finished: bool = False) -> None:
        if path is not None:
            save_checkpoint(path, {
                "fingerprint": config_hash, "epoch": epoch, "finished": finished, "trainer": trainer.state(),
                "numpy_rng": rng.bit_generator.state, "best": best, "bad_evals": bad_evals,
                "result": result.as_dict(), "elapsed": clock.wall(), "busy": clock.busy(), "cpu": clock.cpu(), "train_only": train_only,
            })

    def validate(epoch: int, record: dict[str, Any]) -> None:
        nonlocal best, bad_evals
        with trainer.evaluating():
            valid = {k: float(v) for k, v in ctx.validate(method).items()}
            if ctx.evidence is not None:
                with clock.paused():
                    result.evidence.append({"epoch": epoch, **ctx.evidence(method)})
        record["valid"] = valid
        if best is None or valid[config.monitor] > result.best_valid.get(config.monitor, -np.inf):
            best = trainer.snapshot()
            result.best_epoch, result.best_valid, result.seconds_to_best = epoch, valid, clock.wall()
            bad_evals = 0
        else:
            bad_evals += 1

    state = load_checkpoint(path, config_hash) if path is not None else None
    if state is not None:
        fresh = copy.deepcopy(trainer.state()), rng.bit_generator.state
        try:
            trainer.load_state(state["trainer"])
            rng.bit_generator.state = state["numpy_rng"]
            best, bad_evals = state["best"], state["bad_evals"]
            result = TrainResult(**state["result"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            # well-formed but not this model's state (shapes, keys): refuse it like a damaged file
            warnings.warn(f"ignoring checkpoint {path}: it does not fit this model ({type(exc).__name__}); "
                          "the cell starts from scratch", HashbenchWarning, stacklevel=2)
            trainer.load_state(fresh[0])
            rng.bit_generator.state = fresh[1]
            best, bad_evals, result, state = None, 0, TrainResult(), None
    if state is not None:
        result.resumed_from_epoch = state["epoch"]
        start_epoch, train_only = state["epoch"] + 1, state["train_only"]
        # a checkpoint from before the busy clock counts its wall time (the cap as it was then)
        busy = state.get("busy", state["elapsed"])
        # a checkpoint from before the CPU count: its busy time per thread is a lower bound
        cpu = state.get("cpu", busy * max(1, torch.get_num_threads()))
        clock = BusyClock(state["elapsed"], busy, cpu)
        result.earlier_cpu_seconds = cpu
        ctx.progress(name, state["epoch"], config.epochs, resumed=True, best=result.best_valid.get(config.monitor))
        if state["finished"]:
            if best is not None:
                trainer.restore(best)
            return result
    else:
        trainer.initialise()
        if config.validate_initial and ctx.validate is not None:
            record: dict[str, Any] = {"epoch": 0}
            validate(0, record)
            record["seconds"] = round(clock.wall(), 3)
            result.history.append(record)

    result.stopped = "epochs"
    epoch = start_epoch - 1
    for epoch in range(start_epoch, config.epochs + 1):
        t_epoch = time.perf_counter()
        record = {"epoch": epoch, **trainer.train_epoch(epoch, rng)}
        trainer_stop = record.pop("stop", None)
        train_only += time.perf_counter() - t_epoch
        result.epochs_run = epoch
        result.seconds_per_epoch = train_only / epoch  # epochs so far, incl. resumed ones
        result.busy_seconds = clock.busy()
        out_of_time = config.max_minutes is not None and result.busy_seconds >= 60 * config.max_minutes
        due = epoch % config.eval_every == 0 or epoch == config.epochs
        if ctx.validate is not None and (due or out_of_time or trainer_stop):
            validate(epoch, record)
        record["seconds"] = round(clock.wall(), 3)
        result.history.append(record)
        result.train_seconds = clock.wall()
        stop = trainer_stop
        prune = getattr(ctx, "prune", None)  # a tuning trial: hopeless against the earlier trials' curves?
        if stop is None and prune is not None and "valid" in record and prune(
                [(h["epoch"], h["valid"][config.monitor]) for h in result.history if "valid" in h]):
            stop = "pruned"
        if stop is None and ctx.validate is not None and bad_evals >= config.patience and epoch >= config.min_epochs:
            stop = "patience"
        elif stop is None and out_of_time:
            stop = "time"
        # at every validation; without validation (a refit) on the same cadence, so a long
        # refit killed mid-way resumes too instead of starting over
        if "valid" in record or stop or (ctx.validate is None and due):
            checkpoint(epoch)
        # patience: validations without a new best so far, out of the patience that stops the
        # run, so a log shows how close a run is to stopping (its epoch cap is a safety net)
        ctx.progress(name, epoch, config.epochs, loss=record.get("loss"),
                     valid=record.get("valid", {}).get(config.monitor), best=result.best_valid.get(config.monitor),
                     **({"patience": f"{bad_evals}/{config.patience}"} if ctx.validate is not None else {}))
        if stop:
            result.stopped = stop
            break
    if ctx.validate is None:
        result.stopped = "no-validation"
    trainer.restore(best if best is not None else trainer.snapshot())  # no validation: the last state
    result.train_seconds, result.busy_seconds = clock.wall(), clock.busy()
    checkpoint(epoch, finished=True)
    return result
