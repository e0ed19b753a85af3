"""`hashbench speed` on tiny sizes: every part runs and writes its tables and plots, with and
without faiss; the harness's recall and float top-K agree with exact answers."""

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from hashbench import speed
from hashbench.cli import app
from hashbench.retrieval import Exclusions

runner = CliRunner()

TINY = ["--dataset", "synthetic", "--fig2-users", "15", "--fig2-items", "300,1000", "--k", "20", "--repeats", "2",
        "--warmup", "0", "--latency-queries", "3"]


@pytest.fixture
def codes_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny-lsh-64b-seed0.npz"
    np.savez(path, user_codes=rng.integers(0, 256, (40, 8), dtype=np.uint8),
             item_codes=rng.integers(0, 256, (300, 8), dtype=np.uint8), bits=64)
    return path


def run_speed(tmp_path, codes_file, *extra):
    out = tmp_path / "speed"
    result = runner.invoke(app, ["speed", *TINY, "--codes", str(codes_file), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_speed_writes_every_part(tmp_path, codes_file):
    pytest.importorskip("faiss")
    out, output = run_speed(tmp_path, codes_file)
    for name in ("retrieval-synthetic.json", "retrieval-synthetic.csv", "fig2.json", "fig2.csv", "fig2.png",
                 "lookup.json", "lookup.csv", "lookup.png"):
        assert (out / name).stat().st_size > 0, name
    retrieval = json.loads((out / "retrieval-synthetic.json").read_text())
    methods = {(r["method"], r["masked"]) for r in retrieval["rows"]}
    assert {("hashbench-hamming", True), ("torch-float-ip", True), ("faiss-binary-flat", False)} <= methods
    assert retrieval["environment"]["threads"]["numba"] >= 1 and "load_average_1_5_15" in retrieval["environment"]
    for row in retrieval["rows"]:
        assert row["latency_ms_median"] > 0 and row["index_bytes"] > 0
    fig2 = json.loads((out / "fig2.json").read_text())
    assert sorted({r["n_items"] for r in fig2["rows"]}) == [300, 1000]
    storage = {(r["representation"], r["n_items"]): r["item_bytes"] for r in fig2["rows"]}
    assert storage[("float32", 1000)] == 32 * storage[("64-bit codes", 1000)] == 1000 * 64 * 4
    lookup = json.loads((out / "lookup.json").read_text())["rows"]
    exact = [r for r in lookup if r["exact"]]
    assert exact and all(r["recall_vs_exhaustive"] == 1.0 for r in exact)
    assert all(0.0 <= r["recall_vs_exhaustive"] <= 1.0 for r in lookup)


def test_speed_without_faiss_says_so_and_times_the_rest(tmp_path, codes_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    assert speed.load_faiss() is None
    out, output = run_speed(tmp_path, codes_file)
    assert "faiss is not installed" in " ".join(output.split())
    rows = json.loads((out / "retrieval-synthetic.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"torch-float-ip", "hashbench-hamming"}
    assert json.loads((out / "fig2.json").read_text())["setup"]["faiss_missing"] is True
    assert (out / "fig2.png").is_file() and not (out / "lookup.json").exists()


def test_unknown_part_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["speed", "--parts", "fig3", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "unknown part" in result.output


def test_torch_float_topk_masks_and_matches_numpy(monkeypatch):
    monkeypatch.setattr(speed, "SCORE_BUDGET", 64 * 50)  # force several item chunks per user batch
    rng = np.random.default_rng(3)
    pairs = np.stack([rng.integers(0, 30, 400), rng.integers(0, 500, 400)], 1)
    case = speed.random_case("t", 30, 500, mask=Exclusions.from_pairs(pairs, 30, 500))
    way = speed.TorchFloatIP(masked=True)
    way.fit(case)
    ids, _ = way.query(np.arange(30), 10)
    scores = case.user_vecs @ case.item_vecs.T
    scores[pairs[:, 0], pairs[:, 1]] = -np.inf
    np.testing.assert_array_equal(ids, np.argsort(-scores, axis=1, kind="stable")[:, :10])


def test_tie_aware_recall_counts_items_within_the_exact_kth_distance():
    kth = np.array([3, 5])
    ids = np.array([[4, 1, -1], [0, 2, 9]])
    dist = np.array([[3, 4, -1], [5, 5, 5]])
    assert speed.tie_aware_recall(dist, ids, kth) == pytest.approx((1 / 3 + 1) / 2)
