from typing import Annotated

import typer

from hashbench.commands.common import CacheDir, Mirror, command, console
from hashbench.specs import get_dataset_spec


@command("fetch", interrupted="interrupted: nothing half-downloaded is kept; run the same command again "
                            "to fetch what is missing")
def fetch_command(
    names: Annotated[list[str], typer.Argument(help="Dataset names (see `hashbench list`), e.g. gowalla yelp2018.")],
    mirror: Mirror = None,
    cache_dir: CacheDir = None,
    force: Annotated[bool, typer.Option("--force", help="Download and verify again even if cached.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Download, verify (sha256 / git blob), cache and parse datasets; print their statistics."""
    from hashbench import synthetic
    from hashbench.fetch import fetch, stats_table

    specs = [get_dataset_spec(n) for n in names]  # all names checked before any download
    tables = []
    for spec in specs:
        if spec.builtin:
            tables.append(synthetic.generate(spec))
        else:
            tables.append(fetch(spec, cache_dir=cache_dir, mirror=mirror, quiet=quiet, force=force, console=console))
    console.print(stats_table(tables))
