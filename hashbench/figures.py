"""The report's figures, drawn with matplotlib from what hashbench.figure_data reads out of
Table 1's records:

- learning curves: validation Recall@50 against training seconds, one panel per dataset and
  one colour per method (every seed thin, the lowest seed bold), with where each seed stopped
  and why (a cap-stopped cell is the one Table 1 marks †); rows without a curve (MostPop,
  LSH) are dashed lines at their validation Recall@50;
- accuracy against efficiency: each row's test Recall@50 (mean over seeds, Table 1's cell)
  against the bytes it stores per item and against the measured time to rank all users
  (RESULTS/speed/retrieval-<dataset>.json, written by `hashbench speed --parts retrieval`);
- the papers' evaluation habits: each row's test Recall@50 under hashbench's protocol, under
  every habit of the papers' code measured on the same models at once (Table 7's "all"), and
  the paper's number: how much of each gap the habits explain.

What each plot draws comes from figure_data's pure functions (learning_curve_series,
reference_levels, efficiency_points), tested on synthetic records; the plot functions here
only draw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hashbench.figure_data import (MONITOR, EfficiencyPoint, HabitPoint, SeedCurve, efficiency_points, habit_points,
                                   learning_curve_series, load_rank_timings, reference_levels, stop_label)
from hashbench.files import save_figure
from hashbench.tables import CAP_MARK, PEAKED_CAP_MARK
from hashbench.tables import Table, short

CURVES_FILE, EFFICIENCY_FILE, HABITS_FILE = "learning_curves.png", "accuracy_efficiency.png", "protocol_effects.png"


@dataclass
class Figure:
    title: str
    path: Path | None  # None: not drawn, `caption` says why
    caption: str


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
            Line2D([], [], ls="none", marker="X", color="grey", label=f"stopped on a cap ({CAP_MARK}, {PEAKED_CAP_MARK})"),
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
    fig.suptitle("Accuracy against storage and ranking time (circles: Hamming-ranked codes, squares: "
                 "real-valued rows)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
    plt.close(fig)


# --- the report's figures -------------------------------------------------------------------

def _curves_caption(series, references, metric: str) -> str:
    flat = sorted({m for per in references.values() for m in per})
    return (f"validation {short(metric)} against training seconds (training and validation time, log scale), "
            "one panel per dataset, one colour per method: the lowest seed bold, other seeds thin; a circle where "
            f"a seed stopped by patience (or another rule that is not a cap), a cross where it stopped on its epoch or time cap ({CAP_MARK} or "
            f"{PEAKED_CAP_MARK} in Table 1), a star at the bold seed's selected validation point; each curve starts at "
            "its first validation after training began (epoch 0, the initial state some methods evaluate, is not drawn)"
            + (f"; dashed: rows without a training curve ({', '.join(flat)}), at their validation "
               f"{short(metric)}" if flat else "") + ".")


def plot_habits(points: list[HabitPoint], datasets: list[str], order: list[str], colours: dict[str, tuple],
                path: Path, metric: str = MONITOR) -> None:
    from matplotlib.lines import Line2D

    plt = _pyplot()
    rows = [m for m in order if any(p.method == m for p in points)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 0.45 * len(rows) + 1.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for p in (p for p in points if p.dataset == dataset):
            y, colour = rows.index(p.method), colours[p.method]
            if p.together is not None:
                ax.annotate("", (p.together, y), (p.ours, y),
                            arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.2, "shrinkA": 4, "shrinkB": 4})
                ax.plot(p.together, y, "o", mfc="white", mec=colour, ms=7, zorder=3)
            ax.plot(p.ours, y, "o", color=colour, ms=7, zorder=4)
            if p.paper is not None:
                ax.plot(p.paper, y, "*", color="black", ms=10, zorder=5)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set(xlabel=f"test {short(metric)}", title=dataset)
        ax.grid(True, axis="x", alpha=0.3)
    keys = [Line2D([], [], ls="none", marker="o", color="grey", label="ours (hashbench's protocol)"),
            Line2D([], [], ls="none", marker="o", mfc="white", mec="grey", label="the papers' habits, all at once"),
            Line2D([], [], ls="none", marker="*", color="black", ms=10, label="the paper's number")]
    fig.legend(handles=keys, loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    save_figure(fig, path, dpi=130)
    plt.close(fig)


def _habits_caption(points: list[HabitPoint], metric: str) -> str:
    missing = sorted({p.method for p in points if p.together is None})
    return (f"test {short(metric)} of each Table 1 row under hashbench's protocol (filled circle: the "
            "validation-selected epoch, training items masked, pure Hamming ranking), and of the same trained models "
            "under every evaluation habit of the papers' code measured on that row at once (open circle, arrow: "
            "the epoch with the best test score, training items left in the ranking, real-valued scores where the "
            "row has a real-valued ranking; Table 7's \"all\"), beside the paper's number (star)"
            + (f"; only ours and the paper's number for rows whose habits were not measured ({', '.join(missing)})"
               if missing else "") + ".")


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
    """Draw the figures into `results_dir`; a figure the records cannot support is skipped,
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
    habits = habit_points(cells, table.published, metric)
    if any(p.together is not None for p in habits):
        path = results_dir / HABITS_FILE
        plot_habits(habits, [d for d in table.datasets if any(p.dataset == d for p in habits)], list(table.rows),
                    colours, path, metric)
        figures.append(Figure("The papers' evaluation habits", path, _habits_caption(habits, metric)))
    else:
        figures.append(Figure("The papers' evaluation habits", None, "no row of Table 1 has the evidence of "
                                                                    "its evaluation habits (protocol_evidence)"))
    return figures
