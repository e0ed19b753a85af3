"""Test-only methods that fail on purpose: raise, diverge to a NaN loss, or kill their process.

Not registered on import (the method contract requires every registered method to pass
it): tests register them with `registered()`. Worker processes and Ray tasks import this
module by path, the way a sweep ships any method registered at run time (RunnerSpec).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import torch

from hashbench.core.trained_method import TorchMethod
from hashbench.registry import _REGISTRY, TrainData, register


class Faulty(TorchMethod):
    """A tiny embedding model on the shared training driver; `fault` decides how it goes wrong."""

    name = "faulty"
    fault = "none"
    defaults = {"epochs": 4, "marker": "", "lr": 1e-2, "eval_every": 2, "patience": 10}

    def fit(self, data: TrainData) -> None:
        if self.fault == "raise":
            raise RuntimeError("planted failure in fit")
        if self.fault == "die" or (self.fault == "die-once" and not Path(self.params["marker"]).exists()):
            if self.fault == "die-once":
                Path(self.params["marker"]).touch()
            os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer or a lost node looks like
        super().fit(data)

    def build(self, data: TrainData) -> torch.nn.Module:
        torch.manual_seed(0)
        self.users = torch.nn.Parameter(torch.randn(data.n_users, self.bits))
        self.items = torch.nn.Parameter(torch.randn(data.n_items, self.bits))
        self.pairs = torch.from_numpy(data.train)
        return torch.nn.ParameterList([self.users, self.items])

    def epoch_batches(self, epoch, rng):
        return [None]

    def batch_loss(self, batch, epoch):
        scores = (self.users[self.pairs[:, 0]] * self.items[self.pairs[:, 1]]).sum(1)
        loss = torch.nn.functional.softplus(-scores).mean()
        if self.fault == "nan" and epoch >= 2:
            loss = loss * float("nan")  # diverged
        return loss

    def code_embeddings(self):
        return self.users, self.items

    def extras(self):
        extras = super().extras()
        try:  # inside a Ray task: what the scheduler granted this cell
            import ray

            if ray.is_initialized():
                extras["ray_resources"] = ray.get_runtime_context().get_assigned_resources()
        except ImportError:
            pass
        return extras


class Raises(Faulty):
    name, fault = "faulty-raise", "raise"


class NanLoss(Faulty):
    name, fault = "faulty-nan", "nan"


class DiesOnce(Faulty):
    name, fault = "faulty-die-once", "die-once"


class Dies(Faulty):
    name, fault = "faulty-die", "die"


class TwoCpus(Faulty):
    name = "faulty-two-cpus"
    resources = {"num_cpus": 2}


ALL = (Faulty, Raises, NanLoss, DiesOnce, Dies, TwoCpus)


@contextlib.contextmanager
def registered():
    """Register the faulty methods for the duration of a test, then remove them again."""
    for cls in ALL:
        register(cls)
    try:
        yield
    finally:
        for cls in ALL:
            _REGISTRY.pop(cls.name, None)
