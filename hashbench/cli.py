"""The `hashbench` command line: fetch → split → run → report (and list).

Each command lives in its own module under hashbench/commands/ and records itself with
hashbench.commands.common.command; this module builds the app and collects them (the
commands never import it back). The error rule lives with the commands: a HashbenchError
is printed as one line on stderr with exit status 1, never as a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated

import typer

import hashbench
import hashbench.commands
from hashbench.commands.common import COMMANDS, console

app = typer.Typer(
    name="hashbench",
    help="A benchmark suite for hashing-based recommendation: fetch real datasets, make seeded "
         "splits, train methods that map users and items to binary codes, evaluate Recall/NDCG "
         "from Hamming ranking (tie-exact), and report the paper's tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help text is shown as written: [ray], [n, 2], <dataset> stay
)


def _version(value: bool):
    if value:
        console.print(f"hashbench {hashbench.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Show the version and exit.")] = False):
    pass


def _collect_commands() -> None:
    """Import every module of hashbench.commands; each records its commands in COMMANDS."""
    for info in sorted(pkgutil.iter_modules(hashbench.commands.__path__), key=lambda i: i.name):
        importlib.import_module(f"hashbench.commands.{info.name}")
    for entry in sorted(COMMANDS, key=lambda e: e.name):
        app.command(entry.name, **entry.options)(entry.callback)


_collect_commands()


def main() -> None:
    app()
