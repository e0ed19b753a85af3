"""A cell whose training stopped on a cap (epochs, time) is marked in every table format;
one that stopped by patience is not."""

from hashbench import records
from hashbench.report import build_table, render_report
from hashbench.tables import CAP_MARK, cap_marker, stopped_on_cap


def record(method, seed, stopped, recall):
    return {"config_hash": f"{method}-{seed}", "status": "ok", "method": method, "dataset": "synthetic",
            "bits": 32, "seed": seed, "protocol": "random-8-1-1", "params": {}, "ks": [50, 100],
            "hashing": True, "finished_at": "2026-12-01T00:00:00+00:00",
            "extras": {"stopped": stopped} if stopped else {},
            "metrics": {on: {"recall@50": recall, "recall@100": recall, "ndcg@50": recall, "ndcg@100": recall,
                             "ndcg_retrieved@50": recall, "ndcg_retrieved@100": recall}
                        for on in ("valid", "test")}}


def test_stop_reasons_that_are_caps():
    assert stopped_on_cap({"extras": {"stopped": "epochs"}}) and stopped_on_cap({"extras": {"stopped": "time"}})
    assert not stopped_on_cap({"extras": {"stopped": "patience"}})
    assert not stopped_on_cap({"extras": {"stopped": "converged"}}) and not stopped_on_cap({})
    # one capped seed is enough to mark the cell
    assert cap_marker([{"extras": {"stopped": "patience"}}, {"extras": {"stopped": "time"}}]) == CAP_MARK
    assert cap_marker([{"extras": {"stopped": "patience"}}, {}]) == ""


def test_capped_cells_are_marked_in_the_report(tmp_path):
    for rec in (record("capped", 0, "patience", 0.3), record("capped", 1, "epochs", 0.31),
                record("converged", 0, "patience", 0.2), record("converged", 1, "patience", 0.21),
                record("untrained", 0, None, 0.1)):
        records.append_record(tmp_path, rec)
    table = build_table(tmp_path, bits=32, datasets=["synthetic"])
    assert set(table.rows) == {"capped", "converged", "untrained"}
    md = render_report(tmp_path, "markdown", bits=32, datasets=["synthetic"])
    table1 = md.split("### Table 2")[0]
    rows = {line.split("|")[1].strip(): line for line in table1.splitlines() if line.startswith("| ")}
    assert CAP_MARK in rows["capped"] and CAP_MARK not in rows["converged"] and CAP_MARK not in rows["untrained"]
    assert "stopped on its epoch or time cap" in md  # the footnote says what the mark means
    tex = render_report(tmp_path, "latex", bits=32, datasets=["synthetic"])
    assert r"$^\dagger$" in tex and CAP_MARK not in tex


def test_a_row_mark_in_the_records_labels_the_row(tmp_path):
    rec = record("bgch-scaled", 0, "patience", 0.3)
    rec["hashing"] = False
    rec["extras"]["row_mark"] = "real-valued scales, not pure Hamming"
    records.append_record(tmp_path, rec)
    records.append_record(tmp_path, record("bgch", 0, "patience", 0.2))
    md = render_report(tmp_path, "markdown", bits=32, datasets=["synthetic"])
    assert "bgch-scaled (real-valued scales, not pure Hamming)" in md


def test_a_seed_recorded_twice_with_the_same_configuration_counts_once_the_latest(tmp_path):
    # a first campaign's plain run and the converged campaign's tuning trial can share parameters and seed
    old = {**record("dcf", 0, "patience", 0.10), "config_hash": "plain-run", "finished_at": "2026-11-22T00:00:00+00:00"}
    for rec in (old, record("dcf", 0, "patience", 0.30), record("dcf", 1, "patience", 0.31),
                record("dcf", 2, "patience", 0.32)):
        records.append_record(tmp_path, rec)
    cell = build_table(tmp_path, bits=32, datasets=["synthetic"]).rows["dcf"][("synthetic", "recall@50")]
    assert sorted(cell.values) == [0.30, 0.31, 0.32]
