"""DCF: the discrete updates really descend, the SVD step satisfies its constraints, and the
method learns the planted data (beats popularity), reproducibly and resumably."""

import numpy as np
import pytest

from baselines import dcf
from hashbench.core.graph import UserItemIndex
from helpers import assert_learns_reproducibly, fit_method

FAST = {"init_iters": 5, "max_iters": 6, "patience": 3}


def fit(split, checkpoint_dir=None, progress=None, **params):
    return fit_method("dcf", split, checkpoint_dir=checkpoint_dir, progress=progress, **{**FAST, **params})


def test_objective_never_increases_across_bit_updates(split):
    rng = np.random.default_rng(1)
    m, n, r = split.n_users, split.n_items, 16  # 16 bits keep the bit-by-bit check fast
    index = UserItemIndex(split.train, m, n)
    B, D = dcf.sgn(rng.standard_normal((m, r))), dcf.sgn(rng.standard_normal((n, r)))
    X, Y = dcf.balanced_decorrelated(B, rng), dcf.balanced_decorrelated(D, rng)
    alpha = beta = 0.5  # large enough that the balance terms matter in every update
    for round_ in range(2):
        entries = dcf.sample_entries(index, split.train, 1, float(r), rng)
        value = dcf.objective(B, D, X, Y, entries, alpha, beta)
        for step in (dcf.b_step, dcf.d_step):
            for k in range(r if round_ == 0 else 0):  # one bit of every row at a time: each must descend
                if step is dcf.b_step:
                    step(B, D, X, entries, alpha, 1, bits=(k, k + 1))
                else:
                    step(B, D, Y, entries, beta, 1, bits=(k, k + 1))
                new = dcf.objective(B, D, X, Y, entries, alpha, beta)
                assert new <= value + 1e-6 * abs(value)
                value = new
            # a whole B-step / D-step (several passes over all bits) descends too
            before = (B if step is dcf.b_step else D).copy()
            flips = (dcf.b_step(B, D, X, entries, alpha, 5) if step is dcf.b_step
                     else dcf.d_step(B, D, Y, entries, beta, 5))
            new = dcf.objective(B, D, X, Y, entries, alpha, beta)
            assert new <= value + 1e-6 * abs(value)
            # every bit that differs now was flipped at least once (a bit may flip back)
            assert (before != (B if step is dcf.b_step else D)).sum() <= flips
            value = new
        # the X/Y-steps maximise tr(BᵀX) over the constraint set: the objective cannot go up
        X, Y = dcf.balanced_decorrelated(B, rng), dcf.balanced_decorrelated(D, rng)
        assert dcf.objective(B, D, X, Y, entries, alpha, beta) <= value + 1e-6 * abs(value)
    assert np.all(np.abs(B) == 1) and np.all(np.abs(D) == 1)


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_balanced_decorrelated_constraints(rank_deficient):
    rng = np.random.default_rng(0)
    B = dcf.sgn(rng.standard_normal((300, 16)))
    if rank_deficient:
        B[:, 8:] = B[:, :8]  # duplicated bits: rank 8 < 16, the Gram–Schmidt completion is needed
    X = dcf.balanced_decorrelated(B, rng)
    assert np.allclose(X.sum(0), 0, atol=1e-8)
    assert np.allclose(X.T @ X, 300 * np.eye(16), atol=1e-6)
    # it maximises tr(BᵀX): no random feasible X does better
    Z = rng.standard_normal((300, 16))
    Q, _ = np.linalg.qr(Z - Z.mean(0))  # orthonormal columns orthogonal to 1
    assert np.sum(B * X) >= np.sum(B * np.sqrt(300) * Q) - 1e-6


@pytest.fixture(scope="module")
def fitted(split):
    return fit(split)


def test_beats_popularity_and_is_deterministic(split, fitted):
    assert_learns_reproducibly(fitted, split, lambda: fit(split))
    extras = fitted.extras()
    assert extras["best_epoch"] >= 1


@pytest.mark.parametrize("kill_at", ["early", "last"])
def test_resumes_after_interruption(split, fitted, tmp_path, kill_at):
    reference = fitted.codes()
    # "last": killed right after the iteration that stopped the run was saved
    at = 3 if kill_at == "early" else fitted.result.epochs_run

    class Killed(Exception):
        pass

    def kill(description, completed, total, **fields):
        if description == "dcf" and completed == at:
            raise Killed

    with pytest.raises(Killed):
        fit(split, checkpoint_dir=tmp_path, progress=kill)
    resumed = fit(split, checkpoint_dir=tmp_path)
    assert resumed.result.resumed_from_epoch == at
    assert resumed.result.epochs_run == fitted.result.epochs_run
    assert np.array_equal(resumed.codes()[0], reference[0])
    assert np.array_equal(resumed.codes()[1], reference[1])
