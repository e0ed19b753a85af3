"""`hashbench verify`: every recorded metric re-checked from its exported codes."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from hashbench.commands.common import CacheDir, Mirror, ResultsDir, command, console


@command("verify")
def verify_command(
    results: ResultsDir = Path("results"),
    datasets: Annotated[Optional[str], typer.Option("--datasets", "-d", help="Comma-separated datasets to check "
                                                    "(default: all with records).", show_default=False)] = None,
    methods: Annotated[Optional[str], typer.Option("--methods", "-m", help="Comma-separated methods to check "
                                                   "(default: all with records).", show_default=False)] = None,
    history: Annotated[bool, typer.Option("--history", help="Also check records whose files were pruned, reading "
                                          "their codes back from the git history of RESULTS (nothing is written "
                                          "to the work tree).")] = False,
    mirror: Mirror = None,
    cache_dir: CacheDir = None,
):
    """Re-evaluate every hashing record from its exported codes and the data alone.

    For the latest record of each cell with a codes file (results/codes/*.npz), the split is
    rebuilt from the dataset, protocol and seed; the codes must be of that split, and ranking
    by Hamming distance must give back every recorded test metric (and validation metric, for
    a run that is not a refit) and the stored per-user values. Exit status 1 if any differs.
    Records of float rows have no codes to check; pruned files are counted, not failed (git
    history keeps them), or read back from that history and checked like the others (the
    history option).
    """
    from hashbench.checks import check_results_dir
    from hashbench.datasets import load_dataset
    from hashbench.errors import HashbenchError
    from hashbench.splits import make_split
    from hashbench.verify import summary, verify

    check_results_dir(results, write=False)
    if not (results / "runs.jsonl").is_file():
        raise HashbenchError(f"{results}/runs.jsonl does not exist: nothing to verify")
    wanted_d = set(datasets.split(",")) if datasets else None
    wanted_m = set(methods.split(",")) if methods else None

    def keep(rec: dict) -> bool:
        return (wanted_d is None or rec.get("dataset") in wanted_d) and (wanted_m is None or rec.get("method") in wanted_m)

    loaded: dict[str, object] = {}  # each dataset parsed once, whatever its protocols and seeds

    def load_split(dataset: str, protocol: str, seed: int):
        console.print(f"split {dataset} · {protocol} · seed {seed}", highlight=False)
        if dataset not in loaded:
            loaded[dataset] = load_dataset(dataset, cache_dir, mirror)
        return make_split(loaded[dataset], protocol, seed)

    def report(check) -> None:
        where = " (codes from git history)" if check.restored else ""
        if check.outcome == "match":
            console.print(f"  [green]match[/] {check.label}{where}", highlight=False)
        else:
            console.print(f"  [red]MISMATCH[/] {check.label}{where}: " + "; ".join(check.problems), highlight=False,
                          soft_wrap=True)

    checks = verify(results, load_split, keep, report, history)
    counts = summary(checks)
    restored = sum(check.restored for check in checks)
    console.print(f"{counts['match']} records re-checked from their codes match, {counts['mismatch']} do not"
                  + (f" ({restored} of them read back from git history)" if history else "")
                  + f"; {counts['pruned']} with pruned codes"
                  + (" not in git history" if history else " (git history has them: --history checks them)")
                  + f", {counts['no codes']} float or real-valued rows without codes", highlight=False, soft_wrap=True)
    if counts["mismatch"]:
        raise typer.Exit(1)
