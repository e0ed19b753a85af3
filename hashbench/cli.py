"""The `hashbench` command line: fetch → split → run → report (and list).

Each command lives in its own module under hashbench/commands/; this module only builds
the app, the shared options and the one rule for errors: a HashbenchError is printed as
one line on stderr with exit status 1, never as a traceback.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

import hashbench
from hashbench.errors import HashbenchError

err_console = Console(stderr=True)
console = Console()

app = typer.Typer(
    name="hashbench",
    help="A benchmark suite for hashing-based recommendation: fetch real datasets, make seeded "
         "splits, train methods that map users and items to binary codes, evaluate Recall/NDCG "
         "from Hamming ranking (tie-exact), and report the paper's tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

# Shared options: one definition, used by every command that needs it.
CacheDir = Annotated[Optional[Path], typer.Option(
    "--cache-dir", envvar="HASHBENCH_CACHE_DIR", help="Where verified downloads and parsed datasets live "
    "[default: ~/.cache/hashbench].", show_default=False)]
Mirror = Annotated[Optional[str], typer.Option(
    "--mirror", envvar="HASHBENCH_MIRROR", help="Directory or URL prefix to download from instead of the "
    "upstream URLs; holds <dataset>/<file> (upstream train.txt/test.txt or the .tsv.gz forms).")]
ResultsDir = Annotated[Path, typer.Option("--results", help="Results directory (runs.jsonl, codes/).")]


def user_errors(fn):
    """Turn a HashbenchError into a one-line message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HashbenchError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: finished cells are saved; re-run the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


def command(name: str | None = None, **kwargs):
    """@command(): register a function as a subcommand with the error rule applied."""

    def decorate(fn):
        return app.command(name, **kwargs)(user_errors(fn))

    return decorate


def _version(value: bool):
    if value:
        console.print(f"hashbench {hashbench.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Show the version and exit.")] = False):
    pass


# The commands register themselves on import.
from hashbench.commands import campaign, fetch, list_, report, run, speed, split  # noqa: E402,F401


def main() -> None:
    app()
