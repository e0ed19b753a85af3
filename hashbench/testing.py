"""The method contract, shipped with hashbench so a third-party method is held to the same
behaviour as the built-in ones (pytest required).

    # tests/test_myhash.py in your package
    from hashbench.testing import MethodContract

    class TestMyHash(MethodContract):
        method = "myhash"              # registered (entry point or @register)
        params = {"epochs": 20}        # small settings: the contract fits a few times

Every case runs on the built-in synthetic dataset (planted user/item clusters with a
popularity skew, generated, never downloaded): the method gives codes (or float scores) of
the right shape for every user and item, at a second code length and with a user that has no
training items; the same seed gives the same output whatever the test set holds (so `fit`
cannot have used it); it beats popularity; it resumes after an interruption to identical
output; it trains on the device it was asked for; its `extras()` are JSON and, for a method
on the shared training driver, carry the standard keys.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

import numpy as np
import pytest

from hashbench import seeds
from hashbench.registry import FitContext, Method, TrainData, method_names
from hashbench.splits import DEFAULT_PROTOCOL, Split

__all__ = ["MethodContract", "planted_split", "fit"]


class Interrupt(Exception):
    """Raised from the progress callback to stop a fit half-way (what a kill looks like)."""


_SPLIT: Split | None = None


def planted_split() -> Split:
    """The synthetic dataset's seed-0 random 8:1:1 split (cached for the test session)."""
    global _SPLIT
    if _SPLIT is None:
        from hashbench.datasets import load_dataset
        from hashbench.splits import make_split

        _SPLIT = make_split(load_dataset("synthetic"), DEFAULT_PROTOCOL, 0)
    return _SPLIT


def fit(name: str, split: Split, bits: int, params: dict[str, Any], checkpoint_dir=None,
        interrupt_at: int | None = None, device: str = "cpu") -> tuple[Method, int]:
    """Fit method `name` as the runner does; returns it and the number of progress calls.
    `interrupt_at`: raise Interrupt from the n-th progress call."""
    from hashbench.registry import get_method
    from hashbench.method_eval import evaluate_method

    calls = [0]

    def progress(*args, **kwargs):
        calls[0] += 1
        if interrupt_at is not None and calls[0] == interrupt_at:
            raise Interrupt

    ctx = FitContext(seed=seeds.seed_sequence(0, "method"), device=device, checkpoint_dir=checkpoint_dir,
                     progress=progress, validate=lambda m: evaluate_method(m, split, "valid", (50,)))
    method = get_method(name)(bits, ctx, **params)
    method.fit(TrainData(split.dataset, split.n_users, split.n_items, split.train, split.valid))
    return method, calls[0]


def output(method: Method, n_users: int) -> tuple[np.ndarray, ...]:
    if method.hashing:
        return tuple(method.codes())
    return (np.asarray(method.scores(np.arange(n_users))),)


def _check_shapes(method: Method, split: Split, bits: int) -> None:
    if method.hashing:
        user_codes, item_codes = method.codes()
        assert user_codes.dtype == np.uint8 and item_codes.dtype == np.uint8, "codes must be uint8 packbits rows"
        assert user_codes.shape == (split.n_users, bits // 8), f"user codes {user_codes.shape}"
        assert item_codes.shape == (split.n_items, bits // 8), f"item codes {item_codes.shape}"
    else:
        scores = np.asarray(method.scores(np.arange(5)))
        assert scores.shape == (5, split.n_items) and np.isfinite(scores).all()


class MethodContract:
    """Subclass with `method` (and `params`); pytest collects the cases below for it."""

    method: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}
    bits: ClassVar[int] = 32
    second_bits: ClassVar[int] = 16  # a second code length, fitted once with the cold user
    margin: ClassVar[float] = 1.3  # test Recall@50 must exceed this × popularity's

    @pytest.fixture(scope="class")
    @classmethod
    def split(cls) -> Split:
        return planted_split()

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, split) -> tuple[Method, int]:
        assert cls.method in method_names(), f"{cls.method} is not registered"
        return fit(cls.method, split, cls.bits, cls.params)

    def test_is_registered(self):
        # a method that stops registering fails here instead of being skipped
        assert self.method in method_names(), f"{self.method} is not registered"

    def test_output_shape_and_dtype(self, fitted, split):
        _check_shapes(fitted[0], split, self.bits)

    def test_same_seed_same_output_whatever_the_test_set(self, fitted, split):
        # the same training and validation pairs with another test set: fit sees no test data,
        # so the refit must reproduce the output bit for bit
        other_test = split.test.copy()
        other_test[:, 1] = (other_test[:, 1] + 1) % split.n_items
        again, _ = fit(self.method, dataclasses.replace(split, test=other_test), self.bits, self.params)
        for a, b in zip(output(fitted[0], split.n_users), output(again, split.n_users)):
            assert np.array_equal(a, b), "same seed, different output (not deterministic, or fit read test data)"

    def test_beats_popularity_on_planted_clusters(self, fitted, split):
        from hashbench.method_eval import evaluate_method

        if self.method == "mostpop":
            pytest.skip("the floor itself")
        popularity = evaluate_method(fit("mostpop", split, self.bits, {})[0], split, "test", (50,))["recall@50"]
        recall = evaluate_method(fitted[0], split, "test", (50,))["recall@50"]
        assert recall > self.margin * popularity, (self.method, recall, popularity)

    def test_resumes_after_interruption_with_identical_output(self, fitted, split, tmp_path):
        method, progress_calls = fitted
        if progress_calls < 2:
            pytest.skip(f"{self.method} trains in one step: nothing to interrupt")
        with pytest.raises(Interrupt):
            fit(self.method, split, self.bits, self.params, checkpoint_dir=tmp_path,
                interrupt_at=progress_calls // 2 + 1)
        resumed, _ = fit(self.method, split, self.bits, self.params, checkpoint_dir=tmp_path)
        if hasattr(resumed, "result"):  # on the shared driver: it did resume, not start over
            assert resumed.result.resumed_from_epoch is not None, "the checkpoint was not used"
        for a, b in zip(output(method, split.n_users), output(resumed, split.n_users)):
            assert np.array_equal(a, b), "a resumed run must end with the output of an uninterrupted one"

    def test_second_code_length_and_a_user_without_training_items(self, split):
        cold = int(split.train[0, 0])
        keep = split.train[:, 0] != cold  # the user keeps its validation and test items
        cold_split = dataclasses.replace(split, train=split.train[keep])
        method, _ = fit(self.method, cold_split, self.second_bits, self.params)
        _check_shapes(method, cold_split, self.second_bits)

    def test_trains_on_the_requested_device(self, fitted):
        from hashbench.core.trained_method import TrainedMethod

        method = fitted[0]
        if not isinstance(method, TrainedMethod):
            pytest.skip(f"{self.method} is not trained on a device")
        assert method.extras()["device"] == "cpu"
        model = getattr(method, "model", None)
        if model is not None and hasattr(model, "parameters"):
            assert all(p.device.type == "cpu" for p in model.parameters())

    def test_trains_on_a_gpu_when_asked(self, split):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("no CUDA device here")
        method, _ = fit(self.method, split, self.bits, self.params, device="cuda")
        wanted = "cuda" if "cuda" in getattr(method, "devices", ("cuda",)) else "cpu"
        assert method.extras().get("device", wanted).startswith(wanted)
        model = getattr(method, "model", None)
        if model is not None and hasattr(model, "parameters"):
            assert all(p.device.type == wanted for p in model.parameters())

    def test_extras_are_json_with_the_standard_keys(self, fitted):
        from hashbench.core.trained_method import STANDARD_EXTRAS, TrainedMethod

        method = fitted[0]
        extras = method.extras()
        json.dumps(extras, allow_nan=False)
        if isinstance(method, TrainedMethod):
            missing = set(STANDARD_EXTRAS) - set(extras)
            assert not missing, f"extras lack {sorted(missing)}"
            assert extras["stopped"] and extras["epochs_run"] >= extras["best_epoch"]
