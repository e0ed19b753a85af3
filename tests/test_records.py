import json
import multiprocessing

from hashbench.records import append_record, latest_by_cell, read_records


def test_a_line_cut_by_a_kill_is_skipped_and_the_next_append_is_intact(tmp_path):
    append_record(tmp_path, {"config_hash": "a", "status": "ok"})
    with open(tmp_path / "runs.jsonl", "a") as fh:
        fh.write('{"config_hash": "b", "sta')  # killed mid-write
    append_record(tmp_path, {"config_hash": "c", "status": "ok"})
    import warnings

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert [r["config_hash"] for r in read_records(tmp_path)] == ["a", "c"]


def test_newest_record_of_a_cell_wins(tmp_path):
    append_record(tmp_path, {"config_hash": "a", "status": "failed"})
    append_record(tmp_path, {"config_hash": "a", "status": "ok"})
    assert latest_by_cell(tmp_path)["a"]["status"] == "ok"


def _writer(args):
    directory, worker = args
    for i in range(50):
        append_record(directory, {"config_hash": f"{worker}-{i}", "payload": "x" * 2000})


def test_concurrent_writers_never_interleave_lines(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_writer, [(tmp_path, w) for w in range(4)])
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 200
    assert len({json.loads(line)["config_hash"] for line in lines}) == 200
