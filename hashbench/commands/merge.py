"""`hashbench merge`: results computed on another machine, brought into this results directory."""

from pathlib import Path
from typing import Annotated

import typer

from hashbench.commands.common import ResultsDir, command, console


@command("merge")
def merge_command(
    source: Annotated[Path, typer.Argument(help="A results directory, or a .tar of one (what "
                                                "scripts/device-run.sh sends back from a GPU machine).")],
    results: ResultsDir = Path("results"),
):
    """Append another machine's records, and copy the files they name, into RESULTS.

    Only cells RESULTS has no finished record of are taken (a cell both machines ran keeps the
    record already here); a record already here is not added twice, so merging again is harmless.
    An archive is unpacked safely: nothing in it can write outside a temporary folder.
    """
    from hashbench.checks import check_results_dir
    from hashbench.merge import merge

    check_results_dir(results, write=True)
    plan = merge(source, results)
    console.print(f"merged {len(plan.records)} records and {len(plan.files)} files into {results}; skipped "
                  f"{plan.finished_here} of cells finished here and {plan.already_here} already here",
                  highlight=False)
