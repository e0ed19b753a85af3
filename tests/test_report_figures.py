"""The report's figures: what the learning curves and the accuracy-efficiency plot draw,
read from synthetic records (the data, not pixels), and `report --write` writing them."""

import json

import pytest
from typer.testing import CliRunner

from hashbench import records
from hashbench.cli import app
from hashbench.figure_data import (efficiency_points, item_representation, learning_curve_series, load_rank_timings,
                                   reference_levels, stop_label)

STATS = {"dataset": "synthetic", "users": 30, "items": 50, "interactions": 400, "density": 0.27}


def record(method, seed, recall, curve=None, stopped=None, hashing=True, bits=32, params=None, **extras):
    if curve is not None:
        extras["curve"] = curve
    if stopped is not None:
        extras["stopped"] = stopped
    rec = {"config_hash": f"{method}-{seed}", "status": "ok", "method": method, "dataset": "synthetic",
           "bits": bits, "seed": seed, "protocol": "random-8-1-1", "params": params or {}, "ks": [50, 100],
           "hashing": hashing, "finished_at": "2026-12-01T00:00:00+00:00", "dataset_stats": STATS,
           "extras": extras,
           "metrics": {on: {m: recall + (0.01 if on == "valid" else 0.0) for m in
                            ("recall@50", "recall@100", "ndcg@50", "ndcg@100", "ndcg_retrieved@50",
                             "ndcg_retrieved@100")} for on in ("valid", "test")}}
    if hashing:
        rec["storage_bytes"] = (STATS["users"] + STATS["items"]) * bits // 8
    return rec


def curve(*points, key="epoch"):
    """(step, seconds, valid recall@50) -> the records' extras.curve; seconds None: not recorded."""
    return [{key: step, "loss": 1.0, **({} if s is None else {"seconds": s}), "valid": {"recall@50": v}}
            for step, s, v in points]


def cells(*recs):
    out = {}
    for r in recs:
        out.setdefault((r["method"], r["dataset"]), []).append(r)
    return out


def test_learning_curves_are_each_seeds_validation_recall_against_seconds():
    recs = cells(
        record("proposed", 1, 0.3, curve((1, 12.0, 0.2), (2, 20.0, 0.25)), "epochs", best_epoch=2),
        record("proposed", 0, 0.3, curve((1, 10.0, 0.1), (2, 20.0, 0.3), (3, 30.0, 0.28)), "patience", best_epoch=2),
        # older DCF records count iterations, and their initial state (iteration 0) has no seconds;
        # newer ones time it: either way every curve starts at its first validation after training began
        record("dcf", 0, 0.2, curve((0, None, 0.01), (1, 5.0, 0.15), (2, 7.5, 0.2), key="iteration"), "max_iters",
               best_iteration=2),
        record("dcf", 1, 0.2, curve((0, 4.0, 0.01), (1, 5.0, 0.15), (2, 7.5, 0.2)), "patience", best_epoch=2),
        record("mostpop", 0, 0.05), record("mostpop", 1, 0.07),
    )
    series = learning_curve_series(recs)
    proposed = series["synthetic"]["proposed"]
    assert [c.seed for c in proposed] == [0, 1]  # the lowest seed first: the one drawn bold
    assert proposed[0].seconds == [10.0, 20.0, 30.0] and proposed[0].values == [0.1, 0.3, 0.28]
    assert proposed[0].best == (20.0, 0.3) and not proposed[0].capped
    assert proposed[1].capped and proposed[1].stopped == "epochs"
    dcf = series["synthetic"]["dcf"][0]
    assert dcf.seconds == [5.0, 7.5] and dcf.best == (7.5, 0.2) and dcf.capped
    assert series["synthetic"]["dcf"][1].seconds == [5.0, 7.5]
    assert "mostpop" not in series["synthetic"]
    # rows without a curve: a horizontal line at their validation recall, mean over seeds
    assert reference_levels(recs) == {"synthetic": {"mostpop": pytest.approx(0.07)}}
    assert stop_label(proposed) == "stopped: patience ×1, epochs† ×1"
    assert stop_label(proposed[:1]) == "stopped: patience"
    assert stop_label(series["synthetic"]["dcf"][:1]) == "stopped: max_iters†"  # its selected point is its last
    peaked = cells(record("hashgnn", 0, 0.1, curve((1, 5.0, 0.2), (2, 9.0, 0.1)), "epochs", best_epoch=1))
    assert stop_label(learning_curve_series(peaked)["synthetic"]["hashgnn"]) == "stopped: epochs‡"


def test_a_curve_without_seconds_counts_as_no_curve():
    recs = cells(record("old", 0, 0.1, curve((1, None, 0.1))), record("broken", 0, 0.1, "not a list"))
    assert learning_curve_series(recs) == {}
    assert set(reference_levels(recs)["synthetic"]) == {"old", "broken"}


def test_bytes_per_item_come_from_the_record():
    assert item_representation(record("lsh", 0, 0.1, bits=64)) == (8.0, "64-bit code", ("hamming", 64))
    no_storage = record("lsh", 0, 0.1)
    del no_storage["storage_bytes"]
    assert item_representation(no_storage)[0] == 4.0  # 32 bits / 8
    # a float row stores dim float32 per item; dim unset means the run's bits
    assert item_representation(record("lightgcn", 0, 0.2, hashing=False, bits=64, params={"dim": None})) == (
        256.0, "64 float32", ("float-ip", 64))
    assert item_representation(record("lightgcn", 0, 0.2, hashing=False, params={"dim": 16}))[0] == 64.0
    # what the method counted itself wins: codes plus real-valued scales, not timed
    scaled = record("bgch-scaled", 0, 0.2, hashing=False, bits=64, bytes_per_item=20)
    assert item_representation(scaled) == (20.0, "as counted by the method", None)
    assert item_representation(record("mostpop", 0, 0.05, hashing=False)) == (None, "", None)


def write_timing(results, dim=32, n_items=STATS["items"], bits=32):
    speed = results / "speed"
    speed.mkdir(parents=True, exist_ok=True)
    rows = [{"method": method, "label": f"{method}{' masked' if masked else ''}", "masked": masked,
             "representation": rep, "n_users": STATS["users"], "n_items": n_items, "seconds_median": seconds}
            for method, rep, masked, seconds in (
                ("torch-float-ip", "float32", True, 2.0), ("hashbench-hamming", f"{bits}-bit codes", True, 0.1),
                ("torch-float-ip", "float32", False, 1.9), ("hashbench-hamming", f"{bits}-bit codes", False, 0.09),
                ("faiss-binary-flat", f"{bits}-bit codes", False, 0.5))]
    (speed / "retrieval-synthetic.json").write_text(json.dumps({
        "part": "retrieval", "rows": rows, "environment": {"threads": {"numba": 2}, "taken_at": "2026-11-22T00:00Z"},
        "setup": {"dataset": "synthetic", "protocol": "random-8-1-1", "k": 50, "bits": bits, "dim": dim,
                  "repeats": 3}}))


def test_efficiency_points_use_the_measured_masked_ranking_time(tmp_path):
    write_timing(tmp_path)
    timings = load_rank_timings(tmp_path)
    assert timings["synthetic"]["file"] == f"{tmp_path.name}/speed/retrieval-synthetic.json"
    recs = cells(record("proposed", 0, 0.3), record("proposed", 1, 0.34),
                 record("lightgcn", 0, 0.4, hashing=False, params={"dim": None}),
                 record("wide", 0, 0.41, hashing=False, params={"dim": 128}),  # no measurement at dim 128
                 record("bgch-scaled", 0, 0.35, hashing=False, bytes_per_item=12),
                 record("mostpop", 0, 0.05, hashing=False))
    points = {p.method: p for p in efficiency_points(recs, timings)}
    assert points["proposed"].recall == pytest.approx(0.32)  # Table 1's cell: mean over seeds
    assert (points["proposed"].bytes_per_item, points["proposed"].rank_seconds) == (4.0, 0.1)
    assert points["proposed"].timed_as.endswith("retrieval-synthetic.json: hashbench-hamming masked")
    assert (points["lightgcn"].bytes_per_item, points["lightgcn"].rank_seconds) == (128.0, 2.0)
    assert points["wide"].bytes_per_item == 512.0 and points["wide"].rank_seconds is None
    assert points["bgch-scaled"].bytes_per_item == 12.0 and points["bgch-scaled"].rank_seconds is None
    assert points["mostpop"].bytes_per_item is None and points["mostpop"].rank_seconds is None
    # no measurement for the dataset, or one of other sizes: no time, never a guess
    assert all(p.rank_seconds is None for p in efficiency_points(recs, {}))
    write_timing(tmp_path, n_items=999)
    assert all(p.rank_seconds is None for p in efficiency_points(recs, load_rank_timings(tmp_path)))


def report_write(results):
    return CliRunner().invoke(app, ["report", "--results", str(results), "--bits", "32", "--datasets", "synthetic",
                                    "--no-campaign", "--write"])


def test_report_write_draws_both_figures_and_links_them(tmp_path):
    results = tmp_path / "results"
    for rec in (record("proposed", 0, 0.3, curve((1, 10.0, 0.2), (2, 20.0, 0.3)), "patience", best_epoch=2),
                record("proposed", 1, 0.31, curve((1, 11.0, 0.22), (2, 21.0, 0.31)), "epochs", best_epoch=2),
                record("lightgcn", 0, 0.4, curve((1, 30.0, 0.4)), "time", hashing=False, params={"dim": None}),
                record("lsh", 0, 0.1), record("mostpop", 0, 0.05, hashing=False)):  # no curves: reference lines
        records.append_record(results, rec)
    write_timing(results)
    result = report_write(results)
    assert result.exit_code == 0, result.output
    for name in ("learning_curves.png", "accuracy_efficiency.png"):
        assert (results / name).stat().st_size > 1000
        assert f"wrote {results / name}" in result.output.replace("\n", "")
    md = (results / "table1.md").read_text()
    table1, rest = md.split("### Table 2")
    assert "![Learning curves](learning_curves.png)" in table1 and "](accuracy_efficiency.png)" in table1
    assert "speed/retrieval-synthetic.json" in table1  # the timing's source is cited
    assert ".png" not in (results / "table1.tex").read_text()


def test_report_write_without_any_curve_skips_that_figure_in_one_line(tmp_path):
    results = tmp_path / "results"
    for rec in (record("lsh", 0, 0.1), record("mostpop", 0, 0.05, hashing=False)):
        records.append_record(results, rec)
    result = report_write(results)
    assert result.exit_code == 0, result.output
    assert "Learning curves: skipped" in result.output and "Traceback" not in result.output
    assert not (results / "learning_curves.png").exists()
    assert (results / "accuracy_efficiency.png").exists()  # bytes per item need no curve; no time panel data
    md = (results / "table1.md").read_text()
    assert "learning_curves.png" not in md and "no speed/retrieval-synthetic.json" in md


def test_a_ranking_variant_has_no_line_of_its_own_its_base_has_its_curve():
    """bgch-scaled is bgch's model (trained and validated as bgch): drawing it would draw bgch's
    training twice, once mislabelled; a curveless variant is not an untrained reference line."""
    recs = cells(record("bgch", 0, 0.1, curve((4, 10.0, 0.08), (8, 20.0, 0.1)), "patience", best_epoch=8),
                 record("bgch-scaled", 0, 0.14, curve((4, 10.0, 0.08), (8, 20.0, 0.1)), "patience", best_epoch=8,
                        hashing=False),
                 record("bgch-scaled", 1, 0.14, hashing=False))
    assert set(learning_curve_series(recs)["synthetic"]) == {"bgch"}
    assert reference_levels(recs) == {}
