from pathlib import Path
from typing import Annotated

import typer

from hashbench.commands.common import CacheDir, Mirror, command, console
from hashbench.errors import HashbenchError
from hashbench.splits import DEFAULT_PROTOCOL, PROTOCOLS


@command("split")
def split_command(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the split (.npz with int64 arrays "
                                                   "train, valid, test of shape [n, 2] = (user, item)); its "
                                                   "directory must exist.")],
    seed: Annotated[int, typer.Option("--seed", help="Split seed.")] = 0,
    protocol: Annotated[str, typer.Option("--protocol", help=f"One of: {', '.join(PROTOCOLS)}.")] = DEFAULT_PROTOCOL,
    mirror: Mirror = None,
    cache_dir: CacheDir = None,
):
    """Make a seeded train/valid/test split and print its content hash (same inputs, same hash)."""
    from hashbench.checks import check_out_file
    from hashbench.datasets import load_dataset
    from hashbench.specs import get_dataset_spec
    from hashbench.splits import make_split

    get_dataset_spec(name)
    if protocol not in PROTOCOLS:
        raise HashbenchError(f"unknown protocol {protocol!r}; one of: {', '.join(PROTOCOLS)}")
    if seed < 0:
        raise HashbenchError(f"--seed must be at least 0, got {seed}")
    check_out_file(out)  # before the work: no parents are created, a directory is not a file name
    split = make_split(load_dataset(name, cache_dir, mirror), protocol, seed)
    split.save(out)
    sizes = split.sizes()
    console.print(f"{name} {protocol} seed {seed}: train {sizes['train']:,}  valid {sizes['valid']:,}  "
                  f"test {sizes['test']:,}  -> {out}")
    console.print(f"split hash {split.hash}")
