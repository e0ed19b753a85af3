"""The report's figures, drawn from the records Table 1 is made of (Table.records: (method,
dataset) -> the seeds' records), never from training code:

- learning curves: validation Recall@50 against training seconds, one panel per dataset and
  one colour per method (every seed thin, the lowest seed bold), with where each seed stopped
  and why (a cap-stopped cell is the one Table 1 marks †); rows without a curve (MostPop,
  LSH) are dashed lines at their validation Recall@50;
- accuracy against efficiency: each row's test Recall@50 (mean over seeds, Table 1's cell)
  against the bytes it stores per item and against the measured time to rank all users
  (RESULTS/speed/retrieval-<dataset>.json, written by `hashbench speed --parts retrieval`).

What each plot draws comes from a pure function (learning_curve_series, reference_levels,
efficiency_points), tested on synthetic records; the plot functions only draw it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashbench.files import save_figure
from hashbench.report import CAP_MARK, CAP_STOPS
from hashbench.tables import Table, short

MONITOR = "recall@50"
FLOAT32_BYTES = 4
CURVES_FILE, EFFICIENCY_FILE = "learning_curves.png", "accuracy_efficiency.png"
# how hashbench itself ranks each kind of row, as named in the speed files' rows
RANKERS = {"hamming": "hashbench-hamming", "float-ip": "torch-float-ip"}

Records = dict[tuple[str, str], list[dict]]


@dataclass
class Figure:
    title: str
    path: Path | None  # None: not drawn, `caption` says why
    caption: str


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


def seed_curve(record: dict, metric: str = MONITOR) -> SeedCurve | None:
    """One record's validation curve against training seconds, or None without one. A point
    without seconds (DCF's initialisation) or at 0 s (nothing on a log axis) is left out."""
    extras = _extras(record)
    curve = extras.get("curve")
    if not isinstance(curve, list):
        return None
    points = []
    for p in curve:
        if not isinstance(p, dict):
            continue
        seconds, value = p.get("seconds"), (p.get("valid") or {}).get(metric)
        if _number(seconds) and seconds > 0 and _number(value):
            points.append((float(seconds), float(value), p.get("epoch", p.get("iteration"))))  # DCF: iterations
    if not points:
        return None
    points.sort(key=lambda p: p[0])
    best_step = extras.get("best_epoch", extras.get("best_iteration"))
    best = next(((s, v) for s, v, step in points if step is not None and step == best_step), None)
    return SeedCurve(_seed(record), [p[0] for p in points], [p[1] for p in points], extras.get("stopped"), best)


def learning_curve_series(records: Records, metric: str = MONITOR) -> dict[str, dict[str, list[SeedCurve]]]:
    """dataset -> method -> its seeds' curves, lowest seed first, for the cells whose records
    carry a validation curve with training seconds."""
    out: dict[str, dict[str, list[SeedCurve]]] = {}
    for (method, dataset), recs in records.items():
        curves = sorted((c for r in recs if (c := seed_curve(r, metric)) is not None), key=lambda c: c.seed)
        if curves:
            out.setdefault(dataset, {})[method] = curves
    return out


def reference_levels(records: Records, metric: str = MONITOR) -> dict[str, dict[str, float]]:
    """dataset -> method -> validation `metric`, mean over seeds, for the cells without any
    curve (untrained rows: MostPop, LSH): drawn as horizontal lines."""
    out: dict[str, dict[str, float]] = {}
    for (method, dataset), recs in records.items():
        if any(seed_curve(r, metric) is not None for r in recs):
            continue
        values = [v for r in recs if _number(v := ((r.get("metrics") or {}).get("valid") or {}).get(metric))]
        if values:
            out.setdefault(dataset, {})[method] = float(np.mean(values))
    return out


def stop_label(curves: list[SeedCurve]) -> str:
    """'stopped: epochs†' or, when the seeds differ, 'stopped: patience ×2, time† ×1'."""
    counts = Counter(c.stopped or "?" for c in curves)
    return "stopped: " + ", ".join(f"{reason}{CAP_MARK if reason in CAP_STOPS else ''}"
                                   + (f" ×{n}" if len(counts) > 1 else "") for reason, n in counts.items())


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


# --- drawing ------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_colours(methods: list[str]) -> dict[str, tuple]:
    """One colour per method, the same in every figure (Table 1's row order)."""
    palette = _pyplot().get_cmap("tab10" if len(methods) <= 10 else "tab20")
    return {m: palette(i % palette.N) for i, m in enumerate(methods)}


def _log_x(ax) -> None:
    """A log x axis labelled 20, 50, 100, 200 (not 2×10¹, which crowds)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_learning_curves(series: dict[str, dict[str, list[SeedCurve]]], references: dict[str, dict[str, float]],
                         datasets: list[str], colours: dict[str, tuple], path: Path, metric: str = MONITOR) -> None:
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(8.0, 5.6 * len(datasets)), 5.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for method, curves in series.get(dataset, {}).items():
            colour, main = colours[method], curves[0]
            for c in curves[1:]:
                ax.plot(c.seconds, c.values, color=colour, lw=0.8, alpha=0.4)
            ax.plot(main.seconds, main.values, color=colour, lw=1.8, marker=".", ms=4,
                    label=f"{method} ({stop_label(curves)})")
            for c in curves:  # where each seed stopped, and whether on a cap
                ax.plot(c.seconds[-1], c.values[-1], ls="none", marker="X" if c.capped else "o",
                        ms=8 if c is main else 5, mec=colour, mfc=colour if c.capped else "white", zorder=3)
            if main.best is not None:
                ax.plot(*main.best, ls="none", marker="*", ms=11, color=colour, mec="black", mew=0.4, zorder=4)
        for method, value in references.get(dataset, {}).items():
            ax.axhline(value, color=colours[method], ls="--", lw=1.2, label=f"{method} (no training curve)")
        _log_x(ax)
        ax.set(xlabel="training seconds (training + validation, log scale)", ylabel=f"validation {short(metric)}",
               title=dataset)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    keys = [Line2D([], [], color="grey", lw=1.8, label="lowest seed"),
            Line2D([], [], color="grey", lw=0.8, alpha=0.5, label="other seeds"),
            Line2D([], [], ls="none", marker="o", mfc="white", mec="grey", label="stopped (patience…)"),
            Line2D([], [], ls="none", marker="X", color="grey", label=f"stopped on a cap ({CAP_MARK})"),
            Line2D([], [], ls="none", marker="*", ms=11, color="grey", mec="black", mew=0.4,
                   label="selected epoch")]
    fig.legend(handles=keys, loc="upper center", ncol=len(keys), fontsize=8, frameon=False)
    fig.suptitle(f"Learning curves: validation {short(metric)} against training time", fontsize=10, y=0.95)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    save_figure(fig, path, dpi=130)
    plt.close(fig)


def _spread(ys: list[float], gap: float) -> list[float]:
    """Label heights at least `gap` apart, as close to `ys` as a forward pass allows (order kept)."""
    order = sorted(range(len(ys)), key=ys.__getitem__)
    out = list(ys)
    for prev, i in zip(order, order[1:]):
        out[i] = max(out[i], out[prev] + gap)
    shift = float(np.mean([out[i] - ys[i] for i in order])) if ys else 0.0
    return [y - shift for y in out]


def _label_points(ax, points: list[EfficiencyPoint], xs: list[float], gap: float) -> None:
    """Method names right of the points; points at about the same x get labels spread apart."""
    groups: list[list[int]] = []
    for i in sorted(range(len(xs)), key=xs.__getitem__):
        if groups and xs[i] < 1.3 * xs[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    for group in groups:
        heights = _spread([points[i].recall for i in group], gap)
        for i, y in zip(group, heights):
            ax.annotate(points[i].method, (xs[i], points[i].recall), xytext=(xs[i] * 1.35, y), fontsize=7,
                        va="center", arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "grey"})


def plot_efficiency(points: list[EfficiencyPoint], datasets: list[str], colours: dict[str, tuple], path: Path,
                    metric: str = MONITOR) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 4.3 * len(datasets)), squeeze=False)
    panels = (("bytes_per_item", "bytes stored per item (log scale)"),
              ("rank_seconds", "seconds to rank all users (measured, log scale)"))
    for row, dataset in zip(axes, datasets):
        mine = [p for p in points if p.dataset == dataset]
        recalls = [p.recall for p in mine]
        span = (max(recalls) - min(recalls)) or max(recalls) or 1.0
        for ax, (attr, xlabel) in zip(row, panels):
            drawn = [p for p in mine if getattr(p, attr) is not None]
            xs = [float(getattr(p, attr)) for p in drawn]
            for p, x in zip(drawn, xs):
                ax.scatter(x, p.recall, color=colours[p.method], marker="o" if p.hashing else "s", s=36, zorder=3)
            for p in mine:
                if p.bytes_per_item is None and p.rank_seconds is None:  # MostPop: no representation to place
                    ax.axhline(p.recall, color=colours[p.method], ls="--", lw=1.0)
                    ax.annotate(f"{p.method} (no per-item representation)", (0.01, p.recall), fontsize=7,
                                xycoords=("axes fraction", "data"), va="bottom", color=colours[p.method])
            _log_x(ax)
            if drawn:
                _label_points(ax, drawn, xs, 0.06 * span)
                ax.set_xlim(min(xs) / 1.8, max(xs) * 6)
                if attr == "bytes_per_item":
                    ticks = sorted(set(xs))
                    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
                    ax.minorticks_off()
                if attr == "rank_seconds":
                    files = sorted({p.timed_as.split(": ", 1)[0] for p in drawn})
                    ax.text(0.99, 0.01, "measured: " + ", ".join(files) + " (training items masked)",
                            transform=ax.transAxes, ha="right", va="bottom", fontsize=6, color="grey")
            else:
                ax.set_xticks([])
                ax.minorticks_off()
                ax.text(0.5, 0.5, f"no measured ranking time for {dataset}\n(hashbench speed --parts retrieval "
                        f"-d {dataset})", transform=ax.transAxes, ha="center", va="center", fontsize=8)
            ax.set_ylim(min(recalls) - 0.12 * span, max(recalls) + 0.12 * span)
            ax.set(xlabel=xlabel, ylabel=f"test {short(metric)} (mean over seeds)", title=dataset)
            ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Accuracy against storage and ranking time (circles: Hamming-ranked codes, squares: "
                 "real-valued rows)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
    plt.close(fig)


# --- the report's figures -------------------------------------------------------------------

def _curves_caption(series, references, metric: str) -> str:
    flat = sorted({m for per in references.values() for m in per})
    return (f"validation {short(metric)} against training seconds (training and validation time, log scale), "
            "one panel per dataset, one colour per method: the lowest seed bold, other seeds thin; a circle where "
            f"a seed stopped by patience (or another rule that is not a cap), a cross where it stopped on its epoch or time cap ({CAP_MARK} in "
            "Table 1), a star at the selected validation point"
            + (f"; dashed: rows without a training curve ({', '.join(flat)}), at their validation "
               f"{short(metric)}" if flat else "") + ".")


def _efficiency_caption(points: list[EfficiencyPoint], timings: dict[str, dict], metric: str) -> str:
    text = (f"test {short(metric)} of each Table 1 row (mean over seeds) against the bytes it stores per item "
            "(codes: bits / 8; float rows: dim × 4-byte float32; rows with real-valued extras: as the method "
            "counted them) and against the measured time to rank all users, one measurement per representation, "
            "so every code row of a length shares the Hamming engine's time")
    used = []
    for dataset, timing in timings.items():
        timed = [p for p in points if p.dataset == dataset and p.rank_seconds is not None]
        if timed:
            setup, env = timing.get("setup") or {}, timing.get("environment") or {}
            threads = (env.get("threads") or {}).get("numba")
            rows = sorted({p.timed_as.split(": ", 1)[-1] for p in timed})
            used.append(f"{dataset}: {timing['file']}, rows {' and '.join(rows)}, random codes and vectors of the "
                        f"dataset's sizes, top-{setup.get('k')}, median of up to {setup.get('repeats')} calls"
                        + (f", {threads} threads" if threads else "")
                        + (f", measured {str(env['taken_at'])[:10]}" if env.get("taken_at") else ""))
    text += (" (" + "; ".join(used) + ")") if used else " (no measurement in RESULTS/speed)"
    untimed: dict[str, list[str]] = {}
    for p in points:
        if p.rank_seconds is None and p.bytes_per_item is not None:
            untimed.setdefault(p.dataset, []).append(p.method)
    if untimed:
        text += ". Not in the time panel (no measured time): " + "; ".join(
            f"{d}, no speed/retrieval-{d}.json" if d not in timings else f"{d}: {', '.join(ms)}"
            for d, ms in untimed.items())
    if any(p.bytes_per_item is None for p in points):
        text += ". Dashed: rows with no per-item representation (" + ", ".join(
            sorted({p.method for p in points if p.bytes_per_item is None})) + ")"
    return text + "."


def write_figures(table: Table, results_dir: Path, metric: str = MONITOR) -> list[Figure]:
    """Draw both figures into `results_dir`; a figure the records cannot support is skipped,
    its Figure saying why (path None)."""
    results_dir = Path(results_dir)
    colours = method_colours(list(table.rows))
    rank = {m: i for i, m in enumerate(table.rows)}  # legends and captions in Table 1's row order
    cells = dict(sorted(table.records.items(), key=lambda kv: rank.get(kv[0][0], len(rank))))
    figures = []
    series, references = learning_curve_series(cells, metric), reference_levels(cells, metric)
    if series:
        path = results_dir / CURVES_FILE
        plot_learning_curves(series, references, [d for d in table.datasets if d in series or d in references],
                             colours, path, metric)
        figures.append(Figure("Learning curves", path, _curves_caption(series, references, metric)))
    else:
        figures.append(Figure("Learning curves", None, "no record of Table 1 has a validation curve with "
                                                       "training seconds (extras.curve)"))
    timings = load_rank_timings(results_dir)
    points = efficiency_points(cells, timings, metric)
    if any(p.bytes_per_item is not None for p in points):
        path = results_dir / EFFICIENCY_FILE
        plot_efficiency(points, [d for d in table.datasets if any(p.dataset == d for p in points)], colours, path,
                        metric)
        figures.append(Figure("Accuracy against efficiency", path, _efficiency_caption(points, timings, metric)))
    else:
        figures.append(Figure("Accuracy against efficiency", None, "no row of Table 1 records what it stores "
                                                                   "per item"))
    return figures
