"""HashRec: the β continuation, and the method learns the planted data reproducibly."""

import math

import numpy as np
import torch

import pytest

from baselines.hashrec import beta_at
from helpers import assert_learns_reproducibly, fit_method

FAST = {"batch_size": 3000, "epochs": 6, "eval_every": 3, "lr": 0.01}
pytestmark = pytest.mark.usefixtures("one_thread")


def fit(split, **params):
    return fit_method("hashrec", split, **{**FAST, **params})


@pytest.fixture(scope="module")
def fitted(split):
    return fit(split)


def test_beta_schedule():
    assert beta_at(1) == 1.0
    for e in (2, 5, 10, 100):
        assert beta_at(e) == pytest.approx(math.sqrt(1 + 10 * (e - 1)))
    assert beta_at(100) == pytest.approx(31.48, abs=0.01)


def test_training_follows_the_schedule(fitted):
    assert fitted.betas == [beta_at(e) for e in range(1, FAST["epochs"] + 1)]


def test_beats_popularity_and_is_deterministic(split, fitted):
    assert_learns_reproducibly(fitted, split, lambda: fit(split))


def one_step_trainer(split, optimizer):
    """A built HashRec and its trainer, for stepping hand-made batches."""
    from hashbench import seeds
    from hashbench.registry import FitContext, TrainData, get_method

    method = get_method("hashrec")(32, FitContext(seed=seeds.seed_sequence(0, "method"), device="cpu"),
                                   **{**FAST, "optimizer": optimizer})
    method.device = torch.device("cpu")
    trainer = method.trainer(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid))
    method.on_epoch_start(1)
    return method, trainer


def step(method, trainer, users, pos, neg):
    trainer.optimizer.zero_grad(set_to_none=True)
    method.batch_loss(tuple(torch.as_tensor(a) for a in (users, pos, neg)), 1).backward()
    trainer.optimizer.step()


@pytest.mark.parametrize("optimizer, lazy", [("lazy_adam", True), ("adam", False)])
def test_lazy_adam_leaves_rows_outside_the_batch_untouched(split, optimizer, lazy):
    method, trainer = one_step_trainer(split, optimizer)
    # step 1 gives users 0-9 and items 0-19 momentum; step 2's batch holds none of them
    step(method, trainer, np.arange(10), np.arange(10), np.arange(10, 20))
    users, items = method.model.users.detach().clone(), method.model.items.detach().clone()
    step(method, trainer, np.arange(20, 30), np.arange(30, 40), np.arange(40, 50))
    outside_users, outside_items = np.arange(10), np.arange(20)
    moved = (not torch.equal(method.model.users[outside_users], users[outside_users])
             or not torch.equal(method.model.items[outside_items], items[outside_items]))
    assert moved != lazy  # dense Adam moves them on stale momentum; LazyAdam does not
    inside = np.arange(20, 30)
    assert not torch.equal(method.model.users[inside], users[inside])  # the batch's rows did move
    # untouched rows never seen in any batch stay at their initial values under both
    never = np.arange(60, 70)
    assert torch.equal(method.model.users[never], users[never])


def test_lazy_adam_is_the_default_and_trains(fitted):
    assert fitted.params["optimizer"] == "lazy_adam"
    assert not any("LazyAdam" in d for d in fitted.extras()["deviations"])
