"""How much of a whole campaign is recorded (`describe_progress`) and how much is left: the
cells not recorded yet, those not planned yet included (a running study's final cells, the
sweep's baselines, the ablation before its study ends), each costed from what its method's
recorded cells cost on its dataset. `hashbench campaign` prints both, so a user can tell how
many sessions remain."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import median

from hashbench import campaign as cp
from hashbench import records
from hashbench.registry import method_spec
from hashbench.schedule import busy_seconds
from hashbench.splits import DEFAULT_PROTOCOL


NOT_CHOSEN_YET = "sweep baselines not chosen yet"  # the sweep's best baselines, known after the final stage


@dataclass
class TimeLeft:
    cells: int
    seconds: float  # their expected busy seconds
    unknown: list[str]  # the methods of the cells with nothing to go by (one entry per cell)
    borrowed: list[str]  # the methods costed from runs on another protocol
    by_method: dict[str, tuple[int, float]]  # method -> (cells, seconds), the costliest first


def campaign_time_left(c: cp.Campaign, results_dir: Path) -> TimeLeft:
    """What is left of the whole campaign `c` (TimeLeft), the cells not
    known yet included (the final cells of a study still running, the sweep's baselines, the
    ablation before its study ends). A cell left costs what its method's recorded cells on that
    dataset cost, the median: a study's recorded trials (pruned ones included, so its pruning
    rate is in the estimate) for its trials, complete runs for the other stages; a row ranked
    beside its base's training (bgch-scaled) costs nothing. A method with no complete run on the
    campaign's protocol is costed from its complete runs on another (LightGCN's own split: about
    as many training pairs), rather than not at all."""
    latest = records.latest_by_cell(results_dir) if (Path(results_dir) / records.RUNS_FILE).exists() else {}
    ok = [r for r in latest.values() if r.get("status") == "ok" and r.get("bits") == c.bits]
    complete = [r for r in ok if (r.get("extras") or {}).get("stopped", "patience") == "patience"]
    left: list[tuple[str, float | None]] = []
    borrowed: set[str] = set()

    def cost(method: str, dataset: str) -> float | None:
        if method_spec(method).based_on in c.methods:
            return 0.0
        mine = [r for r in complete if r["method"] == method]
        ours = [r for r in mine if r.get("protocol", DEFAULT_PROTOCOL) == DEFAULT_PROTOCOL]
        if mine and not ours:
            borrowed.add(method)
        mine = ours or mine
        costs = [busy_seconds(r) for r in mine if r["dataset"] == dataset] or [busy_seconds(r) for r in mine]
        return median(costs) if costs else None

    for m in c.tune_methods:
        for d in c.tune_datasets:
            trials = [rec for _, rec in cp.study_trials(c, m, d, latest) if rec is not None]
            spent = [busy_seconds(rec) for rec in trials if rec.get("status") == "ok"]
            left += [(m, median(spent) if spent else cost(m, d))] * (c.trials - len(trials))
    finals: dict[tuple[str, str], int] = {}
    for cell in cp.final_cells(c, results_dir, ready_only=True):
        done = (latest.get(cell.config_hash()) or {}).get("status") == "ok"
        finals[(cell.method, cell.dataset)] = finals.get((cell.method, cell.dataset), 0) + done
    for m in c.methods:
        for d in c.datasets:
            # a study still running will give its winning trial as the row's tuning-seed cell
            done = finals.get((m, d), int(m in c.tune_methods and d in c.tune_datasets))
            left += [(m, cost(m, d))] * (c.seeds - done)
    other_bits = [b for b in c.sweep_bits if b != c.bits]  # a sweep cell at the campaign's bits is a final cell
    swept = [cell for cell in cp.sweep_cells(c, results_dir, ready_only=True) if cell.bits != c.bits]
    left += [(cell.method, cost(cell.method, cell.dataset)) for cell in swept
             if (latest.get(cell.config_hash()) or {}).get("status") != "ok"]
    swept_main = sum(cell.method == c.ablation_method for cell in swept)  # the sweep's method is the ablation's
    left += [(c.ablation_method, cost(c.ablation_method, c.sweep_dataset))] * (len(other_bits) - swept_main)
    baselines = [x for m in c.tune_methods if m != c.ablation_method and (x := cost(m, c.sweep_dataset)) is not None]
    not_chosen_yet = c.sweep_baselines * len(other_bits) - (len(swept) - swept_main)
    left += [(NOT_CHOSEN_YET, median(baselines) if baselines else None)] * not_chosen_yet
    ablation = cp.ablation_cells(c, results_dir, ready_only=True)
    done = sum((latest.get(cell.config_hash()) or {}).get("status") == "ok" for _, cell in ablation)
    left += [(c.ablation_method, cost(c.ablation_method, c.ablation_dataset))] * (len(c.variants) - done)
    by_method: dict[str, tuple[int, float]] = {}
    for m, x in left:
        cells, seconds = by_method.get(m, (0, 0.0))
        by_method[m] = (cells + 1, seconds + (x or 0.0))
    return TimeLeft(len(left), float(sum(x for _, x in left if x is not None)), [m for m, x in left if x is None],
                    sorted(borrowed), dict(sorted(by_method.items(), key=lambda kv: -kv[1][1])))


def describe_time_left(c: cp.Campaign, results_dir: Path, jobs: int) -> str:
    """'about 48 cell-hours in 102 cells left in the whole campaign (~24 h at --jobs 2), ...; most of
    it: proposed 19 cells ~17 h, ...' (the three costliest methods: where a speed-up would pay)."""
    left = campaign_time_left(c, results_dir)
    if not left.cells:
        return "nothing left in the campaign"
    hours, unknown, borrowed = left.seconds / 3600, left.unknown, left.borrowed
    text = (f"about {hours:.0f} cell-hours in {left.cells} cells left in the whole campaign (~{hours / jobs:.0f} h "
            f"at --jobs {jobs}), from what each method's recorded cells cost on each dataset")
    if borrowed:
        text += f" ({', '.join(borrowed)}: from its runs on another protocol)"
    costliest = [f"{m} {n} cells ~{x / 3600:.0f} h" for m, (n, x) in left.by_method.items() if x > 0][:3]
    if costliest:
        text += "; most of it: " + ", ".join(costliest)
    if unknown:  # e.g. a row whose every recorded run stopped on a cap: its cost is not known yet
        text += (f"; not counted: {len(unknown)} cells with no complete run of their method to go by "
                 f"({', '.join(sorted(set(unknown)))})")
    return text


def progress(c: cp.Campaign, results_dir: Path) -> list[tuple[str, int, int]]:
    """(stage, cells recorded, cells the stage will have) for each stage, from the spec and the
    records: a study's trials count once recorded (a failed or pruned one too: the study has
    moved on), the other stages' cells once recorded ok. The totals count cells not known yet
    (the final cells of a study still running, the sweep's baselines), so they say how much of
    the whole campaign is done; a sweep cell that is also a final cell counts in both."""
    latest = records.latest_by_cell(results_dir)
    trials = sum(rec is not None for d in c.tune_datasets for m in c.tune_methods
                 for _, rec in cp.study_trials(c, m, d, latest))

    def ok(cells) -> int:
        return sum((latest.get(cell.config_hash()) or {}).get("status") == "ok" for cell in cells)

    return [("tune", trials, len(c.tune_datasets) * len(c.tune_methods) * c.trials),
            ("final", ok(cp.final_cells(c, results_dir, ready_only=True)), len(c.datasets) * len(c.methods) * c.seeds),
            ("sweep", ok(cp.sweep_cells(c, results_dir, ready_only=True)), (1 + c.sweep_baselines) * len(c.sweep_bits)),
            ("ablation", ok(cell for _, cell in cp.ablation_cells(c, results_dir, ready_only=True)), len(c.variants))]


def describe_progress(c: cp.Campaign, results_dir: Path) -> str:
    """One line: 'recorded so far: tune 35/96 trials, final 13/66, sweep 1/12, ablation 0/7'."""
    parts = [f"{stage} {done}/{total}{' trials' if stage == 'tune' else ''}"
             for stage, done, total in progress(c, results_dir)]
    return "recorded so far: " + ", ".join(parts)
