"""One training loop for every graph method: epochs over mini-batches, early stopping on a
validation metric, checkpoints that make a killed run resume to bitwise the same result.

A method supplies three callables and an nn.Module:

    result = train_loop(method, module, TrainConfig(...),
                        epoch_batches=lambda epoch, rng: [...],   # numpy Generator owned by the loop
                        batch_loss=lambda batch, epoch: loss,      # a scalar tensor
                        on_epoch_start=lambda epoch: ...)           # e.g. a β schedule

The loop evaluates `ctx.validate(method)` every `eval_every` epochs, keeps the best state
(by `monitor`, default valid recall@50), stops after `patience` evaluations without
improvement, and restores the best state at the end. At every evaluation it writes a
checkpoint (module, optimiser, lr schedule, best state, torch and numpy RNG states, history)
atomically to `ctx.checkpoint_dir/train_state.pt`; a restarted run with the same
fingerprint continues from it and ends in exactly the state an uninterrupted run would have.
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import json
import resource
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from hashbench.core.checkpoints import load_checkpoint, save_checkpoint
from hashbench.seeds import torch_seed

CHECKPOINT_NAME = "train_state.pt"


@dataclass
class TrainConfig:
    lr: float = 1e-3
    epochs: int = 1000
    eval_every: int = 5
    patience: int = 5  # evaluations without improvement before stopping
    lr_decay: float = 1.0  # multiplicative, per epoch (1.0 = constant learning rate)
    monitor: str = "recall@50"
    max_minutes: float | None = None  # stop (keeping the best state) after this much training time


@dataclass
class TrainResult:
    best_epoch: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)
    epochs_run: int = 0
    stopped: str = ""  # "patience", "epochs", "time", or "no-validation"
    train_seconds: float = 0.0  # training + validation time, summed over resumptions
    seconds_to_best: float = 0.0
    seconds_per_epoch: float = 0.0  # training only, without validation
    resumed_from_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def child_seed(seq: np.random.SeedSequence, purpose: int) -> np.random.SeedSequence:
    """A reproducible child of `seq` (SeedSequence.spawn would depend on how often it was called)."""
    return np.random.SeedSequence(seq.entropy, spawn_key=tuple(seq.spawn_key) + (purpose,))


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def fingerprint(**config) -> str:
    """A short hash of a run's configuration: a checkpoint is only resumed by the same config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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


def _load_checkpoint(ctx, config_hash: str) -> dict | None:
    if ctx.checkpoint_dir is None:
        return None
    return load_checkpoint(Path(ctx.checkpoint_dir) / CHECKPOINT_NAME, config_hash)


def train_loop(method, module: nn.Module, config: TrainConfig,
               epoch_batches: Callable[[int, np.random.Generator], Iterable[Any]],
               batch_loss: Callable[[Any, int], torch.Tensor],
               on_epoch_start: Callable[[int], None] | None = None,
               config_hash: str = "", params: Iterable[nn.Parameter] | None = None) -> TrainResult:
    """Train `module` (the parameters of `params`, default all) and leave it in its best state.

    Runs with torch's deterministic algorithms on: the backward of embedding lookups with
    repeated indices (index_put_ with accumulate) otherwise sums in a thread-dependent order,
    and a resumed run would drift from an uninterrupted one in the last float bits.
    """
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deterministic.*")
            return _train_loop(method, module, config, epoch_batches, batch_loss, on_epoch_start, config_hash, params)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _train_loop(method, module, config, epoch_batches, batch_loss, on_epoch_start, config_hash, params):
    ctx = method.ctx
    tune_malloc()
    torch.manual_seed(torch_seed(ctx.seed))
    rng = np.random.default_rng(child_seed(ctx.seed, 1))
    params = list(params if params is not None else module.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    result = TrainResult()
    best_state = None
    bad_evals = 0
    start_epoch = 1
    elapsed_before = 0.0
    train_only = 0.0

    state = _load_checkpoint(ctx, config_hash)
    if state is not None:
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = state["numpy_rng"]
        best_state, bad_evals = state["best_state"], state["bad_evals"]
        result = TrainResult(**state["result"])
        result.resumed_from_epoch = state["epoch"]
        start_epoch, elapsed_before, train_only = state["epoch"] + 1, state["elapsed"], state["train_only"]
        if state.get("finished"):
            module.load_state_dict(best_state if best_state is not None else state["module"])
            return result

    def checkpoint(epoch: int, finished: bool = False) -> None:
        if ctx.checkpoint_dir is None:
            return
        save_checkpoint(Path(ctx.checkpoint_dir) / CHECKPOINT_NAME, {
            "fingerprint": config_hash, "epoch": epoch, "finished": finished,
            "module": module.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
            "numpy_rng": rng.bit_generator.state, "best_state": best_state, "bad_evals": bad_evals,
            "result": result.as_dict(), "elapsed": elapsed_before + (time.perf_counter() - t0),
            "train_only": train_only,
        })

    t0 = time.perf_counter()
    name = getattr(method, "name", "train")
    result.stopped = "epochs"
    epoch = start_epoch - 1
    for epoch in range(start_epoch, config.epochs + 1):
        t_epoch = time.perf_counter()
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        module.train()
        total, steps = 0.0, 0
        for batch in epoch_batches(epoch, rng):
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(batch, epoch)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            steps += 1
        scheduler.step()
        train_only += time.perf_counter() - t_epoch
        record: dict[str, Any] = {"epoch": epoch, "loss": total / max(steps, 1)}
        result.epochs_run = epoch
        result.seconds_per_epoch = train_only / (epoch - 0)  # epochs so far, incl. resumed ones
        elapsed = elapsed_before + (time.perf_counter() - t0)
        evaluate = ctx.validate is not None and (epoch % config.eval_every == 0 or epoch == config.epochs)
        out_of_time = config.max_minutes is not None and elapsed >= 60 * config.max_minutes
        if evaluate or (out_of_time and ctx.validate is not None):
            module.eval()
            with torch.no_grad():
                valid = {k: float(v) for k, v in ctx.validate(method).items()}
            elapsed = elapsed_before + (time.perf_counter() - t0)
            record["valid"] = valid
            score = valid[config.monitor]
            if best_state is None or score > result.best_valid.get(config.monitor, -np.inf):
                best_state = copy.deepcopy(module.state_dict())
                result.best_epoch, result.best_valid = epoch, valid
                result.seconds_to_best = elapsed
                bad_evals = 0
            else:
                bad_evals += 1
        record["seconds"] = round(elapsed, 3)
        result.history.append(record)
        result.train_seconds = elapsed
        stop = None
        if ctx.validate is not None and bad_evals >= config.patience:
            stop = "patience"
        elif out_of_time:
            stop = "time"
        if "valid" in record or stop:
            checkpoint(epoch)
        ctx.progress(f"{name}", epoch, config.epochs, loss=record["loss"],
                     valid=record.get("valid", {}).get(config.monitor),
                     best=result.best_valid.get(config.monitor))
        if stop:
            result.stopped = stop
            break
    if ctx.validate is None:
        result.stopped = "no-validation"
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    result.train_seconds = elapsed_before + (time.perf_counter() - t0)
    checkpoint(epoch, finished=True)
    return result
