"""The shell every trained method shares, so that a method module is only its model, its
batches, its loss and its codes.

`TrainedMethod` (any trainer) resolves the device once, names its seed streams, builds the
training config from its parameters, ties checkpoints to the run's configuration, runs the
shared driver (core.training.run_training) and reports the same `extras` keys for every
method. `TorchMethod` adds the torch/Adam trainer: a subclass implements

    build(data) -> nn.Module                  the model, on self.device
    epoch_batches(epoch, rng) -> iterable     one epoch's batches (rng: the driver's numpy Generator)
    batch_loss(batch, epoch) -> tensor        a scalar loss
    code_embeddings() -> (users, items)       real-valued tensors whose signs are the codes

and optionally `on_epoch_start(epoch)`, `trainable_parameters()`, `make_optimizer(params, lr)`
and `method_extras()`.
Peak memory is measured per cell by the runner (records' `peak_rss_mb`), not here.
"""

from __future__ import annotations

import abc
from dataclasses import replace
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from hashbench.codes import pack_signs
from hashbench.core.training import (TorchTrainer, TrainConfig, Trainer, TrainResult, fingerprint, resolve_device,
                                     run_training)
from hashbench.registry import Method, TrainData
from hashbench.seeds import method_stream, torch_seed

# the parameters the driver reads, when a method declares them (with these names)
DRIVER_PARAMS = ("epochs", "eval_every", "patience", "max_minutes", "min_epochs")
# keys every trained method's extras() carries, whatever trains it
STANDARD_EXTRAS = ("best_epoch", "epochs_run", "stopped", "best_valid", "train_seconds", "busy_seconds",
                   "seconds_to_best", "seconds_per_epoch", "resumed_from_epoch", "device", "curve", "deviations")


def parameter_versions(module: nn.Module) -> tuple[int, ...]:
    """The in-place version counters of a module's parameters: a cache key for tensors derived
    from them (an optimiser step and load_state_dict, e.g. the restore of the best state, bump it)."""
    return tuple(p._version for p in module.parameters())


def inner_product_scores(user_rows: torch.Tensor, item_rows: torch.Tensor, users: np.ndarray) -> np.ndarray:
    """Float scores [len(users), n_items] = user_rows[users] · item_rowsᵀ, for a float-scored row."""
    users_t = torch.as_tensor(np.asarray(users, dtype=np.int64), device=user_rows.device)
    return (user_rows[users_t] @ item_rows.T).cpu().numpy()


class TrainedMethod(Method):
    """A method trained by the shared driver. Subclasses give `trainer(data)`."""

    # devices this method's code can train on ("cpu" only: a CUDA request trains on the CPU, and
    # the record says so)
    devices: tuple[str, ...] = ("cpu", "cuda")
    deviations: tuple[str, ...] = ()  # fixed deviations from the paper / reference code

    def seed(self, stream: str, index: int = 0) -> np.random.SeedSequence:
        """The seed of a named stream: "init", "sampling", "inference", "iteration"."""
        return method_stream(self.ctx.seed, stream, index)

    def torch_generator(self, stream: str) -> torch.Generator:
        return torch.Generator().manual_seed(torch_seed(self.seed(stream)))

    def train_config(self) -> TrainConfig:
        p = self.params
        return TrainConfig(**{k: p[k] for k in DRIVER_PARAMS if k in p})

    @abc.abstractmethod
    def trainer(self, data: TrainData) -> Trainer:
        """Build the model (on self.device) and the trainer that trains it."""

    def fit(self, data: TrainData) -> None:
        device = resolve_device(self.ctx.device)
        self.device = device if device.type in self.devices else torch.device("cpu")
        config_hash = fingerprint(method=self.name, bits=self.bits, params=self.params, dataset=data.dataset,
                                  n_users=data.n_users, n_items=data.n_items, n_train=len(data.train))
        config = self.train_config()
        if getattr(self.ctx, "epochs", None) is not None:  # a refit: the selected number of epochs, no validation
            config = replace(config, epochs=self.ctx.epochs, min_epochs=0)
        self.result: TrainResult = run_training(self, self.trainer(data), config, config_hash)

    def evidence_curve(self) -> list[dict[str, Any]]:
        return self.result.evidence

    def method_extras(self) -> dict[str, Any]:
        """Method-specific extras (estimator, layout, reference settings changed, ...)."""
        return {}

    def extras(self) -> dict[str, Any]:
        r = self.result
        return {
            "best_epoch": r.best_epoch, "epochs_run": r.epochs_run, "stopped": r.stopped,
            "best_valid": r.best_valid, "train_seconds": round(r.train_seconds, 2),
            "busy_seconds": round(r.busy_seconds, 2),  # the time max_minutes is counted in
            "seconds_to_best": round(r.seconds_to_best, 2), "seconds_per_epoch": round(r.seconds_per_epoch, 3),
            "resumed_from_epoch": r.resumed_from_epoch, "earlier_cpu_seconds": round(r.earlier_cpu_seconds, 2),
            "device": str(self.device),
            "curve": [h for h in r.history if "valid" in h],
            "deviations": list(self.deviations), **self.method_extras(),
        }


class TorchMethod(TrainedMethod):
    """A trained method whose trainer is Adam over an nn.Module (core.training.TorchTrainer)."""

    @abc.abstractmethod
    def build(self, data: TrainData) -> nn.Module:
        """The model, its tensors on self.device, initialised from self.torch_generator("init")."""

    @abc.abstractmethod
    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> Iterable[Any]:
        """One epoch's batches."""

    @abc.abstractmethod
    def batch_loss(self, batch: Any, epoch: int) -> torch.Tensor:
        """The scalar loss of one batch."""

    def on_epoch_start(self, epoch: int) -> None:
        """Per-epoch schedules (β continuation, ...)."""

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return self.model.parameters()

    def make_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer | None:
        """The method's own optimiser over `params`; None: the trainer's Adam."""
        return None

    def trainer(self, data: TrainData) -> Trainer:
        self.model = self.build(data)
        p = self.params
        return TorchTrainer(self.model, lr=p["lr"], seed=torch_seed(self.ctx.seed),
                            epoch_batches=self.epoch_batches, batch_loss=self.batch_loss,
                            on_epoch_start=self.on_epoch_start, params=self.trainable_parameters(),
                            lr_decay=p.get("lr_decay", 1.0), optimizer=self.make_optimizer)

    def code_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{self.name} gives float scores, not codes")

    @torch.no_grad()
    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        users, items = self.code_embeddings()
        return pack_signs(users), pack_signs(items)
