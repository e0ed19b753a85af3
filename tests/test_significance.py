"""The paired tests behind Table 1c: Holm's correction and the per-user Wilcoxon test."""

import numpy as np
import pytest

from hashbench.files import atomic_save_npz
from hashbench.significance import compare_to_best, holm, paired_test


def test_holm_matches_a_hand_computed_family():
    # sorted: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_paired_test_sees_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    a = rng.random(400)
    assert paired_test(a, a) == 1.0
    assert paired_test(a + 0.05, a) < 1e-6
    noise = rng.normal(0, 0.1, 400)
    assert paired_test(a + noise, a - noise[::-1]) > 0.01


def test_paired_test_ignores_users_without_test_items():
    a, b = np.array([np.nan, 0.5, 0.6, 0.7] * 50), np.array([0.1, 0.4, 0.5, 0.6] * 50)
    assert np.isfinite(paired_test(a, b)) and paired_test(a, b) < 1e-6


def _record(tmp_path, method, seed, values):
    name = f"per_user/{method}-{seed}.npz"
    atomic_save_npz(tmp_path / name, recall_at_50=np.asarray(values, dtype=np.float32))
    return {"method": method, "seed": seed, "per_user_file": name}


def test_compare_to_best_pairs_common_seeds_and_corrects_the_family(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.random(300)
    recs = {
        "best": [_record(tmp_path, "best", s, base + 0.2) for s in (0, 1)],
        # half the users 0.125 better, half 0.125 worse: exactly balanced, p = 1
        "close": [_record(tmp_path, "close", s, base + 0.2 + np.resize([0.125, -0.125], 300)) for s in (0, 1)],
        "far": [_record(tmp_path, "far", s, base) for s in (0, 1)],
        "other_seed": [_record(tmp_path, "other_seed", 5, base)],  # no common seed: left out
        "old": [{"method": "old", "seed": 0}],  # a record from before per-user files
    }
    out = compare_to_best(tmp_path, recs, "best", "recall@50")
    assert set(out) == {"close", "far"}
    assert out["far"].significant and out["far"].p_adjusted == pytest.approx(min(1, 2 * out["far"].p_value))
    assert not out["close"].significant
