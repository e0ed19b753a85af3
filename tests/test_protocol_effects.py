"""Protocol effects: the evidence is recorded during training but decides nothing, and each
habit moves the metric in the direction it must on planted cases."""


import numpy as np
import pytest

from hashbench import seeds
from hashbench.evaluate import evaluate_split_codes
from hashbench.protocol_effects import effect_rows, effects
from hashbench.registry import FitContext, TrainData, get_method
from hashbench.method_eval import evaluate_method, protocol_evidence

SMALL = {"epochs": 9, "eval_every": 3, "patience": 10, "batch_users": 128}


def fit_proposed(split, evidence):
    ctx = FitContext(seed=seeds.seed_sequence(0, "method"), evidence=evidence,
                     validate=lambda m: evaluate_method(m, split, "valid", (50,)))
    method = get_method("proposed")(32, ctx, **SMALL)
    method.fit(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid))
    return method


def test_test_evidence_is_recorded_at_every_validation_but_selects_nothing(split, one_thread):
    real = fit_proposed(split, protocol_evidence(split))
    rng = np.random.default_rng(0)
    noise = fit_proposed(split, lambda m: {"test": {"recall@50": float(rng.random())}})
    assert [p["epoch"] for p in real.evidence_curve()] == [3, 6, 9]
    # N*@50 over the hits of the top 50 and of the released codes' lists (HashGNN's 100, BGCH's 1000)
    for point in real.evidence_curve():
        for which in ("test", "test_unmasked"):
            assert {"ndcg_retrieved@50", "ndcg_retrieved_top100@50", "ndcg_retrieved_top1000@50"} <= set(point[which])
    assert real.result.best_epoch == noise.result.best_epoch
    assert all(np.array_equal(a, b) for a, b in zip(real.codes(), noise.codes()))
    # the curve's point at the selected epoch is the selected model's test metric
    at_best = next(p for p in real.evidence_curve() if p["epoch"] == real.result.best_epoch)
    final = evaluate_method(real, split, "test", (50,))
    assert at_best["test"]["recall@50"] == pytest.approx(final["recall@50"])


def record(seed, ours, curve=(), unmasked=None, method="m", retrieved=None, model_of=None):
    test = {"recall@50": ours, "ndcg@50": ours / 2, "ndcg_retrieved@50": retrieved if retrieved else ours / 2}
    final = {"test": test, "test_unmasked": {"recall@50": unmasked, "ndcg@50": unmasked / 2,
                                             "ndcg_retrieved@50": unmasked / 2}} if unmasked else {}
    return {"method": method, "dataset": "d", "seed": seed, "metrics": {"test": test}, "config_hash": f"{method}{seed}",
            "extras": {"model_of": model_of} if model_of else {},
            "protocol_evidence": {"curve": [{"epoch": e, "test": {"recall@50": v, "ndcg@50": v / 2},
                                             "test_unmasked": {"recall@50": v - 0.1, "ndcg@50": v / 2,
                                                               "ndcg_retrieved@50": v / 2}}
                                            for e, v in curve], "final": final}}


def test_best_test_epoch_is_never_below_the_selected_one():
    # a noisy test curve: its maximum is at least the value at the selected epoch
    recs = [record(0, 0.30, [(1, 0.2), (2, 0.30), (3, 0.34)]), record(1, 0.31, [(1, 0.31), (2, 0.29)])]
    row = effects({("m", "d"): recs}, "recall@50")[("m", "d")]
    assert row["test-epoch"] == pytest.approx([0.04, 0.0])
    assert min(row["test-epoch"]) >= 0


@pytest.mark.parametrize("pure_name, variant_name", [("hashgnn", "hashgnn-rerank"), ("bgch", "bgch-scaled")])
def test_real_valued_rows_pair_by_model_and_records_without_evidence_show_a_dash(pure_name, variant_name):
    """A ranking variant (registered based_on its method) is that method's real-valued habit,
    measured on the very model the pure row's record trained (extras.model_of), not on another
    model of the same seed (a tuned configuration's, while the row shows an earlier one's)."""
    pure = [record(0, 0.20, unmasked=0.15, method=pure_name), record(1, 0.22, unmasked=0.16, method=pure_name)]
    scaled = [record(1, 0.30, method=variant_name, model_of=f"{pure_name}1"),
              record(0, 0.25, method=variant_name, model_of=f"{pure_name}0"),
              record(0, 0.90, method=variant_name, model_of="another-model-of-seed-0")]
    old = [{"method": "old", "dataset": "d", "seed": 0, "metrics": {"test": {"recall@50": 0.1, "ndcg@50": 0.05}}}]
    by_cell = {(pure_name, "d"): pure, (variant_name, "d"): scaled, ("old", "d"): old}
    table = effects(by_cell, "recall@50")
    assert set(table) == {(pure_name, "d"), ("old", "d")}  # the variant row is a habit, not a row
    assert table[(pure_name, "d")]["real-valued"] == pytest.approx([0.05, 0.08])
    assert table[(pure_name, "d")]["unmasked"] == pytest.approx([-0.05, -0.06])
    header, body = effect_rows(by_cell, "recall@50", {pure_name: {("d", "recall@50"): 0.4}})
    old_row = next(r for r in body if r[0] == "old")
    assert old_row[header.index("Δ test-epoch")] == "–" and old_row[-1] == "–"
    assert header[-2:] == ["all", "paper"]
    assert next(r for r in body if r[0] == pure_name)[-1] == "0.4000"


def test_all_habits_together_needs_every_habit_of_the_seed_and_is_averaged_over_the_same_seeds():
    """hashgnn has a real-valued ranking row: a seed whose hashgnn-rerank record is missing (a
    pruned trial's, a failed ranking) has no "all" (without real-valued scores it is not every
    habit), and the mean under all habits is over the seeds that have it, not ours over every
    seed plus the change over fewer."""
    from hashbench.protocol_effects import together

    curve = [(1, 0.2), (2, 0.3)]  # unmasked test curve: 0.1, 0.2
    pure = [record(0, 0.10, curve, unmasked=0.1, method="hashgnn"),
            record(1, 0.30, curve, unmasked=0.1, method="hashgnn")]
    scaled = [record(0, 0.20, [(1, 0.4), (2, 0.5)], method="hashgnn-rerank", model_of="hashgnn0")]
    row = effects({("hashgnn", "d"): pure, ("hashgnn-rerank", "d"): scaled}, "recall@50")[("hashgnn", "d")]
    assert row["all"] == pytest.approx([0.30])  # seed 0 only: the re-ranked model's best unmasked point 0.4
    assert together(row) == pytest.approx(0.40)  # not mean(ours) 0.20 + 0.30
    # a row without a real-valued ranking needs none
    assert effects({("m", "d"): [record(0, 0.25, curve)]}, "recall@50")[("m", "d")]["all"] == pytest.approx([-0.05])


def test_all_habits_keeps_training_items_masked_where_the_released_code_masks_them():
    """BGCH's code scores training items -1024 (methods.md E2): its "all" is the α-scaled model's
    best masked test point, not its unmasked one; HashGNN's code does not mask, so its "all" is
    the re-ranked model's best unmasked point. A variant curve that covers part of its base's
    run only (added at a resume) gives no "all"."""
    curve = [(1, 0.2), (2, 0.3)]  # masked test 0.2, 0.3; unmasked 0.1, 0.2
    for method, variant, expected in (("bgch", "bgch-scaled", 0.30), ("hashgnn", "hashgnn-rerank", 0.20)):
        pure = [record(0, 0.10, curve, unmasked=0.1, method=method)]
        ranked = [record(0, 0.25, curve, method=variant, model_of=f"{method}0")]
        row = effects({(method, "d"): pure, (variant, "d"): ranked}, "recall@50")[(method, "d")]
        assert row["together"] == pytest.approx([expected]), method
        late = [record(0, 0.25, curve[1:], method=variant, model_of=f"{method}0")]
        assert "all" not in effects({(method, "d"): pure, (variant, "d"): late}, "recall@50")[(method, "d")]


def test_a_refit_measures_no_test_epoch_habit_and_a_run_without_the_cut_off_is_left_out():
    """A refit's recorded curve is its selection run's, another model: picking a test epoch on it
    would compare two models. A run evaluated at other cut-offs has no value to compare."""
    refit = {**record(0, 0.30, [(1, 0.2), (2, 0.25)], unmasked=0.2), "refit": True}
    other_ks = {**record(1, 0.0), "metrics": {"test": {"recall@20": 0.1}}}
    row = effects({("m", "d"): [refit, other_ks]}, "recall@50")[("m", "d")]
    assert row["ours"] == [0.30] and "test-epoch" not in row and "all" not in row
    assert row["unmasked"] == pytest.approx([-0.10])


def test_masking_only_helps_and_hurts_a_model_that_ranks_training_items_first(split):
    rng = np.random.default_rng(0)
    users = rng.integers(0, 2, size=(split.n_users, 64), dtype=np.uint8)
    items = rng.integers(0, 2, size=(split.n_items, 64), dtype=np.uint8)
    # each user's code is that of one of its training items: training items rank first
    first_train_item = {u: i for u, i in split.train[::-1]}
    for u, i in first_train_item.items():
        users[u] = items[i]
    user_codes, item_codes = np.packbits(users, axis=1), np.packbits(items, axis=1)
    masked = evaluate_split_codes(user_codes, item_codes, split, "test", (50,)).metrics
    unmasked = evaluate_split_codes(user_codes, item_codes, split, "test-unmasked", (50,)).metrics
    assert unmasked["recall@50"] < masked["recall@50"]
    # removing items that are never relevant can only move relevant ones up, for any codes
    other = np.packbits(rng.integers(0, 2, size=(split.n_users, 64), dtype=np.uint8), axis=1)
    assert (evaluate_split_codes(other, item_codes, split, "test-unmasked", (50,)).metrics["recall@50"]
            <= evaluate_split_codes(other, item_codes, split, "test", (50,)).metrics["recall@50"] + 1e-12)


def test_the_hits_idcg_never_lowers_ndcg(split):
    rng = np.random.default_rng(1)
    codes = [np.packbits(rng.integers(0, 2, size=(n, 64), dtype=np.uint8), axis=1)
             for n in (split.n_users, split.n_items)]
    metrics = evaluate_split_codes(*codes, split, "test", (50,)).metrics
    assert metrics["ndcg_retrieved@50"] >= metrics["ndcg@50"]
    table = effects({("m", "d"): [record(0, 0.2, retrieved=0.15)]}, "ndcg@50")[("m", "d")]
    assert table["hits IDCG"] == pytest.approx([0.05])


def test_shuffled_test_curves_change_no_table_1_number(tmp_path):
    import json

    from hashbench.report import build_table

    def write(recs):
        (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        table = build_table(tmp_path)
        return {m: {k: c.values for k, c in cells.items()} for m, cells in table.rows.items()}

    base = {"status": "ok", "bits": 64, "protocol": "random-8-1-1", "params": {}, "ks": [50, 100],
            "finished_at": "2026-12-01T00:00:00+00:00", "hashing": True}
    recs = [{**base, **record(s, 0.2 + s / 100, [(1, 0.1), (2, 0.3), (3, 0.2)], unmasked=0.1),
             "config_hash": f"h{s}"} for s in range(3)]
    before = write(recs)
    for rec in recs:
        curve = rec["protocol_evidence"]["curve"]
        values = [p["test"] for p in curve]
        np.random.default_rng(rec["seed"]).shuffle(values)
        for point, value in zip(curve, values):
            point["test"] = value
    assert write(recs) == before


def test_the_report_shows_the_effects_in_markdown_csv_and_latex_that_compiles(tmp_path):
    import json
    import shutil

    from hashbench.report import render_report

    base = {"status": "ok", "bits": 64, "protocol": "random-8-1-1", "params": {}, "ks": [50, 100],
            "finished_at": "2026-12-01T00:00:00+00:00"}
    recs = []
    for method, hashing, shift in (("proposed", True, 0.0), ("bgch", True, -0.05), ("bgch-scaled", False, 0.0)):
        for seed in (0, 1):
            rec = record(seed, 0.2 + shift + seed / 100, [(5, 0.18 + shift), (10, 0.21 + shift)], unmasked=0.15,
                         method=method, model_of=f"bgch{seed}" if method == "bgch-scaled" else None)
            rec.update(base, dataset="gowalla", hashing=hashing, config_hash=f"{method}{seed}")
            rec["metrics"]["test"].update({"recall@100": 0.3, "ndcg@100": 0.15, "ndcg_retrieved@100": 0.16})
            recs.append(rec)
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    markdown = render_report(tmp_path, "markdown")
    assert "protocol effects on recall@50" in markdown and "protocol effects on ndcg@50" in markdown
    bgch_row = next(l for l in markdown.splitlines() if l.startswith("| bgch ") and "+0.050" in l)
    assert "0.1916" in bgch_row  # the paper's BGCH Gowalla R@50 beside the measured effects
    deviation = next(l for l in markdown.splitlines() if l.startswith("- **bgch, gowalla**"))
    assert "Measured effect of the papers' evaluation habits on R@50" in deviation and "real-valued +0.0500" in deviation
    # how much of the gap to the paper the habits explain, the question the measurement answers
    # (BGCH's code masks training items: its "all" is the α-scaled model's best masked test point)
    assert "all together 0.2100, which closes 150% of the gap from ours (0.1550) to the paper's (0.1916)" in deviation
    csv_text = render_report(tmp_path, "csv")
    assert "protocol:real-valued,bgch,gowalla,recall@50,0.050000" in csv_text
    if shutil.which("pdflatex"):
        from test_latex import compile_tables

        log = compile_tables(render_report(tmp_path, "latex"), tmp_path)
        assert "Overfull \\hbox" not in log and "undefined" not in log.lower()


def test_the_effect_tables_read_in_table_1_order_whatever_order_the_runs_were_made(tmp_path):
    import json

    from hashbench.report import render_report

    base = {"status": "ok", "bits": 64, "protocol": "random-8-1-1", "params": {}, "ks": [50, 100],
            "finished_at": "2026-12-01T00:00:00+00:00", "hashing": True}
    recs = []
    for dataset in ("yelp2018", "gowalla"):  # made in the opposite order to Table 1's
        for method in ("bgch", "proposed"):
            rec = record(0, 0.2, [(5, 0.18), (10, 0.21)], unmasked=0.15, method=method)
            rec.update(base, dataset=dataset, config_hash=f"{method}{dataset}")
            recs.append(rec)
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    markdown = render_report(tmp_path, "markdown")
    section = markdown.split("protocol effects on recall@50")[1].split("###")[0]
    cells = [tuple(c.strip() for c in line.split("|")[1:3]) for line in section.splitlines()
             if line.startswith("| ") and not line.startswith("| method")]
    assert cells == [("proposed", "gowalla"), ("bgch", "gowalla"), ("proposed", "yelp2018"), ("bgch", "yelp2018")]


def test_the_habits_figure_shows_ours_the_habits_all_at_once_and_the_paper(tmp_path):
    from hashbench.figure_data import habit_points
    from hashbench.figures import HABITS_FILE, plot_habits

    by_cell = {("proposed", "d"): [record(s, 0.20 + s / 100, [(5, 0.19), (10, 0.24)], unmasked=0.15,
                                          method="proposed") for s in (0, 1)],
               ("other", "d"): [{**record(0, 0.1, method="other"), "protocol_evidence": {}}]}
    points = habit_points(by_cell, {"proposed": {("d", "recall@50"): 0.3}})
    [p] = points  # "other": no evidence and no paper number, nothing to draw
    assert (p.method, p.dataset, p.paper) == ("proposed", "d", 0.3) and p.ours == pytest.approx(0.205)
    changes = effects(by_cell, "recall@50")[("proposed", "d")]["all"]
    assert p.together == pytest.approx(0.205 + sum(changes) / len(changes))
    plot_habits(points, ["d"], ["proposed"], {"proposed": (0.1, 0.2, 0.3)}, tmp_path / HABITS_FILE)
    assert (tmp_path / HABITS_FILE).stat().st_size > 1000


def test_hits_idcg_counts_the_hits_of_the_list_the_rows_released_code_retrieves():
    """HashGNN's code counts the hits of its top 100 (hashgnn.toml), so its hits-IDCG habit and
    "all" read N*@50 over the top 100; a row whose code declares no list reads the top-50 N*;
    a record made before the longer lists were evaluated shows "–", never the top-50 bound."""
    def with_lists(rec, top100):
        rec["protocol_evidence"]["final"]["test"] = {**rec["metrics"]["test"], "ndcg_retrieved_top100@50": top100,
                                                     "ndcg_retrieved_top1000@50": top100 / 2}
        for point in rec["protocol_evidence"]["curve"]:
            point["test_unmasked"]["ndcg_retrieved_top100@50"] = point["test_unmasked"]["ndcg_retrieved@50"] - 0.01
        return rec

    hashgnn = [with_lists(record(s, 0.2, [(1, 0.2)], unmasked=0.18, method="hashgnn", retrieved=0.16), 0.13)
               for s in (0, 1)]
    # "all" is read from the real-valued ranking of the same model (hashgnn-rerank), unmasked
    rerank = [with_lists(record(s, 0.3, [(1, 0.3)], unmasked=0.28, method="hashgnn-rerank", model_of=f"hashgnn{s}"),
                         0.2) for s in (0, 1)]
    before = [record(0, 0.2, [(1, 0.2)], unmasked=0.18, method="hashgnn", retrieved=0.16)]
    other = [with_lists(record(0, 0.2, [(1, 0.2)], unmasked=0.18, method="m", retrieved=0.16), 0.13)]
    row = effects({("hashgnn", "d"): hashgnn, ("hashgnn-rerank", "d"): rerank, ("m", "d"): other}, "ndcg@50")
    assert row[("hashgnn", "d")]["hits IDCG"] == pytest.approx([0.03, 0.03])  # 0.13 - ours 0.1
    assert row[("hashgnn", "d")]["together"] == pytest.approx([0.14, 0.14])  # rerank's unmasked top-100 N*
    assert row[("m", "d")]["hits IDCG"] == pytest.approx([0.06])  # the top-50 N* (0.16)
    rerank_before = [record(0, 0.3, [(1, 0.3)], unmasked=0.28, method="hashgnn-rerank", model_of="hashgnn0")]
    old = effects({("hashgnn", "d"): before, ("hashgnn-rerank", "d"): rerank_before}, "ndcg@50")[("hashgnn", "d")]
    assert "hits IDCG" not in old and "together" not in old


def test_lightgcns_all_habits_keep_what_its_released_code_does_masking_and_the_standard_ndcg():
    """LightGCN-PyTorch masks training items and its NDCG is the standard one (lightgcn.toml):
    its "all" is the best masked test point, with the standard NDCG, not unmasked N*."""
    rec = record(0, 0.30, [(1, 0.25), (2, 0.32)], unmasked=0.2, method="lightgcn")  # unmasked curve 0.15, 0.22
    by_cell = {("lightgcn", "d"): [rec]}
    assert effects(by_cell, "recall@50")[("lightgcn", "d")]["together"] == pytest.approx([0.32])
    assert effects(by_cell, "ndcg@50")[("lightgcn", "d")]["together"] == pytest.approx([0.16])
    # a row without released code keeps every habit: unmasked, and N* for NDCG
    assert effects({("m", "d"): [rec]}, "recall@50")[("m", "d")]["together"] == pytest.approx([0.22])


def test_a_change_measured_on_fewer_seeds_and_a_row_stopped_on_a_cap_are_marked():
    """A reader must not take a change paired over 2 seeds for one over the row's 3, nor a capped
    row's number for a converged one (Table 1's †)."""
    pure = [record(s, 0.20, unmasked=0.15, method="bgch") for s in range(3)]
    pure[2]["extras"] = {"stopped": "time"}
    scaled = [record(s, 0.25, method="bgch-scaled", model_of=f"bgch{s}") for s in (0, 1)]
    header, body = effect_rows({("bgch", "d"): pure, ("bgch-scaled", "d"): scaled}, "recall@50", {})
    [row] = body
    assert row[header.index("recall@50")] == "0.2000 ± 0.0000†"
    assert row[header.index("Δ real-valued")] == "+0.050 ± 0.000*"  # seeds 0 and 1 of 3
    assert row[header.index("Δ unmasked")] == "-0.050 ± 0.000"  # every seed: no mark
