import csv
import io
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from hashbench.checks import check_results_dir
from hashbench.commands.common import CacheDir, Mirror, command, console
from hashbench.errors import HashbenchError
from hashbench.files import atomic_write_text, read_npz
from hashbench.splits import DEFAULT_PROTOCOL

PARTS = ("retrieval", "fig2", "lookup")


def _write(out: Path, stem: str, part: str, env: dict, setup: dict, rows: list[dict]) -> list[Path]:
    json_path, csv_path = out / f"{stem}.json", out / f"{stem}.csv"
    atomic_write_text(json_path, json.dumps({"part": part, "setup": setup, "environment": env, "rows": rows},
                                            indent=1) + "\n")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, columns)
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()} for row in rows)
    atomic_write_text(csv_path, table.getvalue())
    return [json_path, csv_path]


def _show(title: str, rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in ("way", "items", "median s", "min-max s", "cpu s", "QPS", "latency ms", "index MiB", "recall"):
        table.add_column(name, justify="left" if name == "way" else "right")
    for r in rows:
        lat = f"{r['latency_ms_median']:.2f}" if "latency_ms_median" in r else ""
        rec = f"{r['recall_vs_exhaustive']:.3f}" if "recall_vs_exhaustive" in r else ""
        table.add_row(r["label"], f"{r['n_items']:,}", f"{r['seconds_median']:.3f}",
                      f"{r['seconds_min']:.3f}-{r['seconds_max']:.3f}", f"{r['cpu_seconds_median']:.2f}",
                      f"{r['qps']:,.0f}", lat, f"{r['index_bytes'] / 2**20:.2f}", rec)
    if console.is_terminal:
        console.print(table)
    else:  # a log file: no wrapping at 80 columns
        from rich.console import Console

        Console(file=console.file, width=150).print(table)


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HashbenchError(f"{flag} expects comma-separated integers (1e6 is fine), got {text!r}") from None


@command("speed")
def speed_command(
    parts: Annotated[str, typer.Option("--parts", help=f"Comma-separated parts to run: {', '.join(PARTS)}.")] =
    ",".join(PARTS),
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="retrieval: the dataset whose sizes and training "
                                                                  "items (masked) are used.")] = "gowalla",
    protocol: Annotated[str, typer.Option("--protocol", help="retrieval: split protocol of the mask.")] =
    DEFAULT_PROTOCOL,
    seed: Annotated[int, typer.Option("--seed", help="Split seed, and seed of the random codes/vectors.")] = 0,
    codes: Annotated[Optional[list[Path]], typer.Option(
        "--codes", help="lookup: trained codes files (.npz with user_codes, item_codes); repeatable "
                        "[default: RESULTS/codes/*.npz].", show_default=False)] = None,
    fig2_users: Annotated[int, typer.Option("--fig2-users", help="fig2: number of users.")] = 1000,
    fig2_items: Annotated[str, typer.Option("--fig2-items", help="fig2: catalogue sizes.")] =
    "1e3,1e4,1e5,1e6,1e7",
    k: Annotated[int, typer.Option("--k", "-k", help="Top K per user.")] = 100,
    bits: Annotated[int, typer.Option("--bits", "-b", help="Code length of the random codes (multiple of 8).")] = 64,
    dim: Annotated[int, typer.Option("--dim", help="Dimension of the float32 vectors.")] = 64,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Threads for numba, torch and faiss "
                                                                    "[default: all cores].", show_default=False)] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls before timing.")] = 1,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed calls (median reported).")] = 7,
    budget: Annotated[float, typer.Option("--budget", help="Stop repeating (after 3) once a measurement has "
                                                           "taken this many seconds.")] = 60.0,
    max_call: Annotated[float, typer.Option("--max-call", help="fig2: skip a way at a catalogue size where one "
                                                                "call would take longer than this (extrapolated "
                                                                "linearly from the size before).")] = 300.0,
    latency_queries: Annotated[int, typer.Option("--latency-queries", help="retrieval: single-user queries "
                                                                            "timed for latency.")] = 200,
    results: Annotated[Path, typer.Option("--results", help="Results directory (codes/ is read from it).")] =
    Path("results"),
    out: Annotated[Optional[Path], typer.Option("--out", help="Where tables and plots go [default: "
                                                              "RESULTS/speed].", show_default=False)] = None,
    no_faiss: Annotated[bool, typer.Option("--no-faiss", help="Skip the faiss rows even if faiss is installed.")] =
    False,
    mirror: Mirror = None,
    cache_dir: CacheDir = None,
):
    """Time top-K retrieval: Hamming engine vs float inner product vs faiss (flat and hash lookup).

    retrieval: all users of DATASET, its training items masked, random codes and vectors of
    its sizes. fig2: the survey's Fig. 2 (random codes vs float32, FIG2_USERS users, growing
    catalogue; time and storage plots). lookup: trained codes, recall of hash-table lookup
    against exhaustive search vs queries per second. Each part writes JSON + CSV (+ PNG).
    """
    import os

    import numpy as np

    from hashbench import speed
    from hashbench.registry import check_bits
    from hashbench.retrieval import Exclusions

    chosen = [p.strip() for p in parts.split(",") if p.strip()]
    for p in chosen:
        if p not in PARTS:
            raise HashbenchError(f"unknown part {p!r}: choose from {', '.join(PARTS)}")
    bits = check_bits(bits)
    if repeats < 1 or warmup < 0 or k < 1:
        raise HashbenchError("--repeats and --k must be at least 1, --warmup at least 0")
    # every argument is checked here, before minutes of timing
    for flag, value, least in (("--threads", threads, 1), ("--fig2-users", fig2_users, 1), ("--dim", dim, 1),
                               ("--latency-queries", latency_queries, 0)):
        if value is not None and value < least:
            raise HashbenchError(f"{flag} must be at least {least}, got {value}")
    for flag, value in (("--budget", budget), ("--max-call", max_call)):
        if not value > 0:
            raise HashbenchError(f"{flag} must be positive (seconds), got {value}")
    if any(n < 1 for n in _ints(fig2_items, "--fig2-items")):
        raise HashbenchError(f"--fig2-items: every catalogue size must be at least 1, got {fig2_items!r}")
    if "retrieval" in chosen:
        from hashbench.commands.run import check_choice
        from hashbench.specs import load_registry
        from hashbench.splits import PROTOCOLS

        check_choice(protocol, PROTOCOLS, "--protocol")
        if dataset not in load_registry():
            raise HashbenchError(f"--dataset {dataset!r} is not a known dataset ({', '.join(load_registry())})")
    for path in codes or []:
        if not Path(path).is_file():
            raise HashbenchError(f"--codes {path}: no such file")
    out = check_results_dir(out or results / "speed", "--out")
    faiss = None if no_faiss else speed.load_faiss()
    if faiss is None:
        console.print("[yellow]faiss is not installed[/] (pip install 'hashbench[faiss]'): timing torch and "
                      "the hashbench engine only; the faiss rows and the lookup part are skipped" if not no_faiss
                      else "--no-faiss: skipping the faiss rows and the lookup part")
    threads_used = speed.pin_threads(threads or os.cpu_count() or 1)
    if faiss is None:
        threads_used.pop("faiss", None)
    timing = dict(warmup=warmup, repeats=repeats, budget_s=budget)
    written: list[Path] = []

    def exhaustive():
        ways = [speed.TorchFloatIP(), speed.HashbenchHamming()]
        return ways + ([speed.FaissFloatIP(), speed.FaissBinaryFlat(), speed.FaissBinaryFlatCounting()] if faiss else [])

    if "retrieval" in chosen:
        from hashbench.datasets import load_dataset
        from hashbench.splits import make_split

        split = make_split(load_dataset(dataset, cache_dir, mirror), protocol, seed)
        mask = Exclusions.from_pairs(split.train, split.n_users, split.n_items)
        case = speed.random_case(f"{dataset} sizes, random codes, train masked", split.n_users, split.n_items,
                                 bits, dim, seed, mask)
        kk = min(k, split.n_items)
        ways = [speed.TorchFloatIP(masked=True), speed.HashbenchHamming(masked=True), *exhaustive()]
        console.print(f"retrieval: {split.n_users:,} users x {split.n_items:,} items, {len(split.train):,} "
                      f"training pairs masked, top-{kk}, threads {threads_used}")
        rows = []
        for way in ways:
            rows.append(speed.time_retriever(way, case, kk, latency_queries=latency_queries, seed=seed, **timing))
            console.print(f"  {way.label():<28} {rows[-1]['seconds_median']:8.3f} s median")
        setup = {"dataset": dataset, "protocol": protocol, "seed": seed, "split_hash": split.hash, "k": kk,
                 "bits": bits, "dim": dim, "masked_pairs": len(split.train), **timing,
                 "faiss_missing": faiss is None}
        _show(f"retrieval, {dataset}", rows)
        written += _write(out, f"retrieval-{dataset}", "retrieval", speed.environment_block(threads_used), setup,
                          rows)

    if "fig2" in chosen:
        rows, skipped, last = [], [], {}
        for n_items in sorted(_ints(fig2_items, "--fig2-items")):
            case = speed.random_case(f"random, {n_items:,} items", fig2_users, n_items, bits, dim, seed)
            for way in exhaustive():
                if way.label() in last:  # exhaustive cost grows linearly with the catalogue
                    prev_n, prev_s = last[way.label()]
                    if prev_s * n_items / prev_n > max_call:
                        skipped.append({"label": way.label(), "n_items": n_items,
                                        "predicted_seconds": prev_s * n_items / prev_n})
                        console.print(f"  fig2 {n_items:>12,} items  {way.label():<26} skipped: one call would "
                                      f"take ~{prev_s * n_items / prev_n:.0f} s > --max-call {max_call:.0f} s")
                        continue
                rows.append(speed.time_retriever(way, case, min(k, n_items), **timing))
                last[way.label()] = (n_items, rows[-1]["seconds_median"])
                console.print(f"  fig2 {n_items:>12,} items  {way.label():<26} {rows[-1]['seconds_median']:9.4f} s")
            del case
        setup = {"users": fig2_users, "items": _ints(fig2_items, "--fig2-items"), "k": k, "bits": bits, "dim": dim,
                 "seed": seed, **timing, "max_call_s": max_call, "skipped": skipped, "faiss_missing": faiss is None}
        _show("fig2", rows)
        written += _write(out, "fig2", "fig2", speed.environment_block(threads_used), setup, rows)
        speed.plot_fig2(rows, out / "fig2.png")
        written.append(out / "fig2.png")

    if "lookup" in chosen and faiss is not None:
        files = codes or sorted((results / "codes").glob("*.npz"))
        if not files:
            raise HashbenchError(f"lookup: no codes files given and none in {results / 'codes'}")
        cases = []
        for path in files:
            z = read_npz(path)
            cases.append(speed.Case(Path(path).stem, z["user_codes"], z["item_codes"],
                                    int(z["bits"]) if "bits" in z else z["user_codes"].shape[1] * 8))
        first = cases[0]
        cases.append(speed.random_case(f"random {first.bits}-bit codes, {first.n_users}x{first.n_items}",
                                       first.n_users, first.n_items, first.bits, seed=seed, floats=False))
        rows = []
        for case in cases:
            kk = min(k, case.n_items)
            exact = speed.HashbenchHamming()
            exact.fit(case)
            kth = exact.query(np.arange(case.n_users), kk)[1][:, -1]
            for way in [speed.HashbenchHamming(), speed.FaissBinaryFlat(), speed.FaissBinaryFlatCounting(), *speed.lookup_grid(case.bits)]:
                rows.append(speed.time_retriever(way, case, kk, exact_kth=kth, **timing))
                console.print(f"  lookup {case.name:<28} {way.label():<44} {rows[-1]['qps']:10,.0f} QPS  "
                              f"recall {rows[-1]['recall_vs_exhaustive']:.3f}")
        setup = {"codes": [str(p) for p in files], "k": k, **timing}
        written += _write(out, "lookup", "lookup", speed.environment_block(threads_used), setup, rows)
        speed.plot_lookup(rows, out / "lookup.png")
        written.append(out / "lookup.png")

    for path in written:
        console.print(f"wrote {path}")
