"""The training loop: same seed → same codes; a killed run resumes to bitwise the same codes."""

import numpy as np
import pytest

from hashbench import seeds
from hashbench.evaluate import evaluate_split_codes
from hashbench.registry import FitContext, TrainData, get_method
from hashbench.method_eval import evaluate_method
from helpers import CountingTrainer

SMALL = {"proposed": {"epochs": 12, "eval_every": 3, "patience": 10, "batch_users": 128, "sampled_items": 200},
         "lightgcn": {"epochs": 6, "eval_every": 2, "patience": 10, "batch_size": 2048}}


class Interrupted(Exception):
    pass


def fit(split, checkpoint_dir=None, crash_at_epoch=None, method="proposed", **params):
    def validate(m):
        return evaluate_method(m, split, "valid", (50,))

    def progress(description, completed, total, **fields):
        if crash_at_epoch is not None and completed == crash_at_epoch:
            raise Interrupted(f"killed at epoch {completed}")

    ctx = FitContext(seed=seeds.seed_sequence(0, "method"), checkpoint_dir=checkpoint_dir, validate=validate,
                     progress=progress)
    m = get_method(method)(64, ctx, **{**SMALL[method], **params})
    m.fit(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid))
    return m


def test_same_seed_same_codes(split):
    a, b = fit(split).codes(), fit(split).codes()
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("crash_at_epoch,rank", [(4, "exact"), (7, "sampled")])
def test_interrupted_run_resumes_to_bitwise_the_same_codes(split, tmp_path, crash_at_epoch, rank):
    reference = fit(split, tmp_path / "uninterrupted", rank=rank)
    with pytest.raises(Interrupted):
        fit(split, tmp_path / "killed", crash_at_epoch=crash_at_epoch, rank=rank)
    assert (tmp_path / "killed" / "train_state.pt").is_file()
    resumed = fit(split, tmp_path / "killed", rank=rank)
    assert resumed.result.resumed_from_epoch == 3 * (crash_at_epoch // 3)  # the last evaluation
    for x, y in zip(reference.codes(), resumed.codes()):
        assert np.array_equal(x, y)
    assert resumed.result.best_epoch == reference.result.best_epoch
    assert [h["loss"] for h in resumed.result.history] == [h["loss"] for h in reference.result.history]


def test_a_finished_run_is_not_trained_again(split, tmp_path):
    first = fit(split, tmp_path)
    again = fit(split, tmp_path)
    assert again.result.resumed_from_epoch == first.result.epochs_run
    for x, y in zip(first.codes(), again.codes()):
        assert np.array_equal(x, y)


def test_early_stopping_keeps_the_best_validation_state(split):
    m = fit(split, epochs=30, eval_every=2, patience=2, lr=0.05)
    curve = [h["valid"]["recall@50"] for h in m.result.history if "valid" in h]
    assert m.result.best_valid["recall@50"] == max(curve)
    final = evaluate_split_codes(*m.codes(), split, "valid", (50,)).metrics["recall@50"]
    assert final == pytest.approx(max(curve))
    if m.result.stopped == "patience":
        assert len(curve) - 1 - int(np.argmax(curve)) == 2


def test_lightgcn_resumes_too(split, tmp_path):
    reference = fit(split, tmp_path / "a", method="lightgcn")
    with pytest.raises(Interrupted):
        fit(split, tmp_path / "b", crash_at_epoch=3, method="lightgcn")
    assert (tmp_path / "b" / "train_state.pt").is_file()
    resumed = fit(split, tmp_path / "b", method="lightgcn")
    assert resumed.result.resumed_from_epoch == 2  # the last evaluation before the crash
    users = np.arange(split.n_users)
    assert np.array_equal(reference.scores(users), resumed.scores(users))


@pytest.mark.parametrize("min_epochs, stops_at", [(0, 2), (7, 7)])
def test_patience_waits_for_min_epochs(min_epochs, stops_at):
    from types import SimpleNamespace

    from hashbench.core.training import TrainConfig, run_training

    ctx = SimpleNamespace(seed=np.random.SeedSequence(0), validate=lambda m: {"recall@50": 0.1},
                          progress=lambda *a, **k: None, checkpoint_dir=None, evidence=None)
    trainer = CountingTrainer()  # its validation never improves: only min_epochs holds patience off
    result = run_training(SimpleNamespace(ctx=ctx, name="constant"), trainer,
                          TrainConfig(epochs=50, eval_every=1, patience=1, min_epochs=min_epochs), "x")
    assert result.stopped == "patience" and trainer.epochs == list(range(1, stops_at + 1))


def test_progress_says_how_much_patience_a_run_has_used():
    """A log line per validation says how close patience is to stopping the run (the epoch cap
    it also prints is only a safety net)."""
    from types import SimpleNamespace

    from hashbench.core.training import TrainConfig, run_training

    seen = []
    ctx = SimpleNamespace(seed=np.random.SeedSequence(0), validate=lambda m: {"recall@50": 0.1},
                          progress=lambda *a, **fields: seen.append(fields.get("patience")),
                          checkpoint_dir=None, evidence=None)
    run_training(SimpleNamespace(ctx=ctx, name="constant"), CountingTrainer(), TrainConfig(epochs=50, eval_every=1,
                                                                                           patience=3), "x")
    assert seen == ["0/3", "1/3", "2/3", "3/3"]  # the first validation is a new best, then none is


def test_scores_come_from_the_restored_best_state_not_the_last(split):
    # high lr + patience 1: the run stops after an evaluation that is not the best
    m = fit(split, method="lightgcn", epochs=12, eval_every=2, patience=1, lr=0.5)
    users = np.arange(split.n_users)
    scores = m.scores(users)
    m._embeddings = None  # a fresh propagation of the parameters the model holds now
    assert np.array_equal(scores, m.scores(users))
    valid = evaluate_method(m, split, "valid", (50,))["recall@50"]
    assert valid == pytest.approx(m.result.best_valid["recall@50"])


def test_a_checkpoint_of_another_shape_is_refused_and_the_cell_starts_afresh(split, tmp_path):
    from hashbench.core.checkpoints import read_checkpoint, save_checkpoint
    from hashbench.core.training import CHECKPOINT_NAME

    reference = fit(split, epochs=4, eval_every=2)
    with pytest.raises(Interrupted):
        fit(split, checkpoint_dir=tmp_path, crash_at_epoch=3, epochs=4, eval_every=2)
    path = tmp_path / CHECKPOINT_NAME
    state = read_checkpoint(path)
    state["trainer"]["module"]["ego"] = state["trainer"]["module"]["ego"][:, :8]  # well-formed, wrong shape
    save_checkpoint(path, state)
    with pytest.warns(UserWarning, match="does not fit this model"):
        again = fit(split, checkpoint_dir=tmp_path, epochs=4, eval_every=2)
    assert again.result.resumed_from_epoch is None
    assert [np.array_equal(a, b) for a, b in zip(again.codes(), reference.codes())] == [True, True]


class SleepingTrainer(CountingTrainer):
    """Each epoch takes wall time but no CPU: what a run sees when other jobs hold the cores."""

    def train_epoch(self, epoch, rng):
        import time

        time.sleep(0.15)
        return super().train_epoch(epoch, rng)


class BusyTrainer(CountingTrainer):
    """Each epoch burns CPU on one thread."""

    def train_epoch(self, epoch, rng):
        import time

        end = time.process_time() + 0.15
        while time.process_time() < end:
            pass
        return super().train_epoch(epoch, rng)


def _capped_run(trainer, checkpoint_dir=None, crash_at_epoch=None):
    from types import SimpleNamespace

    import torch

    from hashbench.core.training import TrainConfig, run_training

    torch.set_num_threads(1)
    def progress(description, completed, total, **fields):
        if completed == crash_at_epoch:
            raise Interrupted(f"killed at epoch {completed}")

    ctx = SimpleNamespace(seed=np.random.SeedSequence(0), validate=lambda m: {"recall@50": 0.1 * m.trainer.epoch},
                          progress=progress, checkpoint_dir=checkpoint_dir, evidence=None)
    method = SimpleNamespace(ctx=ctx, name="capped", trainer=trainer)
    return run_training(method, trainer, TrainConfig(epochs=12, eval_every=1, patience=50, max_minutes=0.6 / 60),
                        "x")


def test_the_time_cap_counts_work_not_waiting_so_a_loaded_machine_does_not_cut_a_run_short():
    waiting = _capped_run(SleepingTrainer())  # 12 × 0.15 s of wall time, next to no CPU
    assert waiting.stopped == "epochs" and waiting.epochs_run == 12
    assert waiting.train_seconds > 0.6 > waiting.busy_seconds
    working = _capped_run(BusyTrainer())  # 0.15 CPU-s an epoch: the 0.6 s cap stops it after ~4
    assert working.stopped == "time" and 4 <= working.epochs_run <= 6
    assert working.busy_seconds >= 0.6


def test_the_busy_clock_carries_over_a_resumption(tmp_path):
    with pytest.raises(Interrupted):
        _capped_run(BusyTrainer(), tmp_path, crash_at_epoch=3)
    resumed = _capped_run(BusyTrainer(), tmp_path)  # the 0.45 busy seconds before the kill count against the cap
    assert resumed.resumed_from_epoch == 3 and resumed.stopped == "time" and 4 <= resumed.epochs_run <= 5
    # the compute bill: the killed run's CPU (3 epochs × 0.15 s) is carried over, not lost
    assert 0.45 <= resumed.earlier_cpu_seconds < 0.45 + 0.3


def _fit_without_validation(split, checkpoint_dir, crash_at_epoch=None):
    """A refit's training: a fixed number of epochs, no validation (runner._refit's context)."""
    def progress(description, completed, total, **fields):
        if crash_at_epoch is not None and completed == crash_at_epoch:
            raise Interrupted(f"killed at epoch {completed}")

    ctx = FitContext(seed=seeds.seed_sequence(0, "method"), checkpoint_dir=checkpoint_dir, progress=progress, epochs=8)
    m = get_method("proposed")(64, ctx, **SMALL["proposed"])
    m.fit(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid[:0]))
    return m


def test_a_run_without_validation_checkpoints_too_and_resumes_to_the_same_codes(split, tmp_path):
    reference = _fit_without_validation(split, tmp_path / "uninterrupted")
    with pytest.raises(Interrupted):
        _fit_without_validation(split, tmp_path / "killed", crash_at_epoch=7)
    resumed = _fit_without_validation(split, tmp_path / "killed")
    assert resumed.result.resumed_from_epoch == 6  # the last multiple of eval_every (3) before the kill
    assert resumed.result.epochs_run == reference.result.epochs_run == 8
    for x, y in zip(reference.codes(), resumed.codes()):
        assert np.array_equal(x, y)
