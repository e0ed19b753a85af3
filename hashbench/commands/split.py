from pathlib import Path
from typing import Annotated

import typer

from hashbench.commands.common import CacheDir, Mirror, command, console
from hashbench.splits import PROTOCOLS


@command("split")
def split_command(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the split (.npz with int64 arrays "
                                                   "train, valid, test of shape [n, 2] = (user, item)).")],
    seed: Annotated[int, typer.Option("--seed", help="Split seed.")] = 0,
    protocol: Annotated[str, typer.Option("--protocol", help=f"One of: {', '.join(PROTOCOLS)}.")] = "random-8-1-1",
    mirror: Mirror = None,
    cache_dir: CacheDir = None,
):
    """Make a seeded train/valid/test split and print its content hash (same inputs, same hash)."""
    from hashbench.datasets import load_dataset
    from hashbench.splits import make_split

    split = make_split(load_dataset(name, cache_dir, mirror), protocol, seed)
    split.save(out)
    sizes = split.sizes()
    console.print(f"{name} {protocol} seed {seed}: train {sizes['train']:,}  valid {sizes['valid']:,}  "
                  f"test {sizes['test']:,}  -> {out}")
    console.print(f"split hash {split.hash}")
