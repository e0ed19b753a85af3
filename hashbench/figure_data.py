"""What the report's figures draw, read from the records Table 1 is made of (Table.records:
(method, dataset) -> the seeds' records), never from training code:

- learning curves: each seed's validation Recall@50 against training seconds, where it
  stopped and why (a cap-stopped cell is the one Table 1 marks †); rows without a curve
  (MostPop, LSH) are levels at their validation Recall@50;
- accuracy against efficiency: each row's test Recall@50 (mean over seeds, Table 1's cell)
  with the bytes it stores per item and the measured time to rank all users
  (RESULTS/speed/retrieval-<dataset>.json, written by `hashbench speed --parts retrieval`).

No matplotlib here: hashbench.figures draws what these functions give, so what a figure
shows is tested on synthetic records (the data, not pixels).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashbench import protocol_effects
from hashbench.errors import HashbenchError
from hashbench.registry import method_spec
from hashbench.tables import CAP_MARK, CAP_STOPS, PEAKED_CAP_MARK

MONITOR = "recall@50"
FLOAT32_BYTES = 4
# how hashbench itself ranks each kind of row, as named in the speed files' rows
RANKERS = {"hamming": "hashbench-hamming", "float-ip": "torch-float-ip"}

Records = dict[tuple[str, str], list[dict]]


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _extras(record: dict) -> dict:
    return record.get("extras") or {}


def _seed(record: dict) -> int:
    return int(record.get("seed") or 0)


# --- learning curves --------------------------------------------------------------------------

@dataclass
class SeedCurve:
    seed: int
    seconds: list[float]
    values: list[float]
    stopped: str | None  # extras.stopped: patience, epochs, time, max_iters, ...
    best: tuple[float, float] | None = None  # (seconds, value) of the selected validation point

    @property
    def capped(self) -> bool:
        return self.stopped in CAP_STOPS

    @property
    def peaked(self) -> bool:
        """Its selected point came before its last one (tables.peaked_before_cap, on the curve)."""
        return self.best is not None and self.best[0] < self.seconds[-1]


def seed_curve(record: dict, metric: str = MONITOR) -> SeedCurve | None:
    """One record's validation curve against training seconds, or None without one. Left out: a
    point without seconds or at 0 s (nothing on a log axis), and epoch 0, the state before any
    update, which only some methods evaluate (DCF, after its initialisation; older DCF records
    have it without seconds): every curve starts at its first validation after training began
    (unless epoch 0 was selected: its star stays)."""
    extras = _extras(record)
    curve = extras.get("curve")
    if not isinstance(curve, list):
        return None
    best_step = extras.get("best_epoch", extras.get("best_iteration"))
    points = []
    for p in curve:
        if not isinstance(p, dict):
            continue
        seconds, value = p.get("seconds"), (p.get("valid") or {}).get(metric)
        step = p.get("epoch", p.get("iteration"))  # older DCF records: iterations
        if _number(seconds) and seconds > 0 and _number(value) and (step != 0 or step == best_step):
            points.append((float(seconds), float(value), step))
    if not points:
        return None
    points.sort(key=lambda p: p[0])
    best = next(((s, v) for s, v, step in points if step is not None and step == best_step), None)
    return SeedCurve(_seed(record), [p[0] for p in points], [p[1] for p in points], extras.get("stopped"), best)


def _ranking_variant(method: str) -> bool:
    """A row that ranks another method's model its own way (bgch-scaled: `based_on` bgch)."""
    try:
        return method_spec(method).based_on is not None
    except HashbenchError:  # a record of a method no longer registered
        return False


def learning_curve_series(records: Records, metric: str = MONITOR) -> dict[str, dict[str, list[SeedCurve]]]:
    """dataset -> method -> its seeds' curves, lowest seed first, for the cells whose records
    carry a validation curve with training seconds."""
    out: dict[str, dict[str, list[SeedCurve]]] = {}
    for (method, dataset), recs in records.items():
        if _ranking_variant(method):
            continue  # its model is its base's, trained and validated as the base: the base's line
        curves = sorted((c for r in recs if (c := seed_curve(r, metric)) is not None), key=lambda c: c.seed)
        if curves:
            out.setdefault(dataset, {})[method] = curves
    return out


def reference_levels(records: Records, metric: str = MONITOR) -> dict[str, dict[str, float]]:
    """dataset -> method -> validation `metric`, mean over seeds, for the cells without any
    curve (untrained rows: MostPop, LSH): drawn as horizontal lines."""
    out: dict[str, dict[str, float]] = {}
    for (method, dataset), recs in records.items():
        if _ranking_variant(method) or any(seed_curve(r, metric) is not None for r in recs):
            continue
        values = [v for r in recs if _number(v := ((r.get("metrics") or {}).get("valid") or {}).get(metric))]
        if values:
            out.setdefault(dataset, {})[method] = float(np.mean(values))
    return out


def stop_label(curves: list[SeedCurve]) -> str:
    """'stopped: epochs†' or, when the seeds differ, 'stopped: patience ×2, time† ×1'; a cap's
    mark is Table 1's: ‡ when every seed it stopped had passed its selected point."""
    counts = Counter(c.stopped or "?" for c in curves)

    def mark(reason: str) -> str:
        if reason not in CAP_STOPS:
            return ""
        return PEAKED_CAP_MARK if all(c.peaked for c in curves if c.stopped == reason) else CAP_MARK

    return "stopped: " + ", ".join(f"{reason}{mark(reason)}" + (f" ×{n}" if len(counts) > 1 else "")
                                   for reason, n in counts.items())


# --- accuracy against efficiency --------------------------------------------------------------

@dataclass
class EfficiencyPoint:
    method: str
    dataset: str
    recall: float  # test Recall@50, mean over seeds: Table 1's cell
    hashing: bool
    bytes_per_item: float | None = None
    stored_as: str = ""  # what those bytes are
    rank_seconds: float | None = None
    timed_as: str = ""  # the measurement used: "<file>: <row label>"


def item_representation(record: dict) -> tuple[float | None, str, tuple[str, int] | None]:
    """(bytes stored per item, what they are, (way, size) of the speed row that times its ranking).

    In order: what the method counted itself (extras bytes_per_item: bgch-scaled's codes plus
    real scales; not timed, as its α-weighted score is none of the measured ways); a hashing
    row's codes (storage_bytes over users + items; else bits / 8); a float row with an
    embedding dimension (params dim, none meaning the run's bits, as lightgcn.toml says): dim
    float32; else nothing (MostPop keeps one popularity list, no per-item representation)."""
    extras, bits = _extras(record), record.get("bits")
    if _number(extras.get("bytes_per_item")):
        return float(extras["bytes_per_item"]), "as counted by the method", None
    if record.get("hashing", True) and _number(bits):
        stats = record.get("dataset_stats") or {}
        nodes = (stats.get("users") or 0) + (stats.get("items") or 0)
        per_item = record["storage_bytes"] / nodes if _number(record.get("storage_bytes")) and nodes else bits / 8
        return float(per_item), f"{bits}-bit code", ("hamming", int(bits))
    params = record.get("params") or {}
    if "dim" in params and _number(dim := params["dim"] or bits):
        return float(FLOAT32_BYTES * dim), f"{dim} float32", ("float-ip", int(dim))
    return None, "", None


def load_rank_timings(results_dir: Path) -> dict[str, dict]:
    """dataset -> its `hashbench speed --parts retrieval` measurement
    (RESULTS/speed/retrieval-<dataset>.json), with "file": the path to cite."""
    out = {}
    for path in sorted((Path(results_dir) / "speed").glob("retrieval-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("part") == "retrieval" and isinstance(data.get("rows"), list):
            dataset = (data.get("setup") or {}).get("dataset") or path.stem.removeprefix("retrieval-")
            out[dataset] = {**data, "file": str(Path(Path(results_dir).name) / "speed" / path.name)}
    return out


def rank_time(record: dict, way: tuple[str, int], timing: dict) -> tuple[float, str] | None:
    """(median seconds, '<file>: <row>') of the measurement that ranks this record's
    representation the way the evaluation does (all users, training items masked), on the
    record's dataset sizes and protocol; None when there is none."""
    setup = timing.get("setup") or {}
    if setup.get("protocol", record.get("protocol")) != record.get("protocol"):
        return None
    stats = record.get("dataset_stats") or {}
    kind, size = way
    for row in timing.get("rows", []):
        if not isinstance(row, dict) or row.get("method") != RANKERS[kind] or not row.get("masked"):
            continue
        if stats and (row.get("n_users"), row.get("n_items")) != (stats.get("users"), stats.get("items")):
            continue
        if kind == "hamming" and row.get("representation") != f"{size}-bit codes":
            continue
        if kind == "float-ip" and (row.get("representation") != "float32" or setup.get("dim") != size):
            continue
        if _number(row.get("seconds_median")):
            return float(row["seconds_median"]), f"{timing['file']}: {row.get('label', RANKERS[kind])}"
    return None


def efficiency_points(records: Records, timings: dict[str, dict] | None = None,
                      metric: str = MONITOR) -> list[EfficiencyPoint]:
    """One point per Table 1 row and dataset: test `metric` (mean over seeds), bytes per item,
    and the measured ranking time where `timings` (load_rank_timings) has one."""
    points = []
    for (method, dataset), recs in records.items():
        values = [v for r in recs if _number(v := ((r.get("metrics") or {}).get("test") or {}).get(metric))]
        if not values:
            continue
        first = min(recs, key=_seed)
        per_item, stored_as, way = item_representation(first)
        point = EfficiencyPoint(method, dataset, float(np.mean(values)), bool(first.get("hashing", True)),
                                per_item, stored_as)
        timing = (timings or {}).get(dataset)
        if way is not None and timing is not None and (found := rank_time(first, way, timing)) is not None:
            point.rank_seconds, point.timed_as = found
        points.append(point)
    return points


# --- the papers' evaluation habits ------------------------------------------------------------

@dataclass
class HabitPoint:
    method: str
    dataset: str
    ours: float  # test metric under hashbench's protocol, mean over seeds (Table 1's cell)
    together: float | None  # the same models with every measured habit of the papers' code at once
    paper: float | None  # the paper's published number


def habit_points(records: Records, published: dict[str, dict[tuple[str, str], float]],
                 metric: str = MONITOR) -> list[HabitPoint]:
    """Per Table 1 row, ours against the papers' habits all together (protocol_effects' "all",
    Table 7) and the paper's number; rows with neither are left out."""
    points = []
    for (method, dataset), row in protocol_effects.effects(records, metric).items():
        if not row["ours"]:
            continue
        ours = float(np.mean(row["ours"]))
        together = protocol_effects.together(row)
        paper = published.get(method, {}).get((dataset, metric))
        if together is not None or paper is not None:
            points.append(HabitPoint(method, dataset, ours, together, paper))
    return points
