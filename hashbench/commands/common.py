"""What every command shares: the consoles, the shared options, the one rule for errors, and
the @command decorator that records a command for the app to collect.

Command modules import this module and never hashbench.cli: the app (hashbench/cli.py)
imports every module of this package and adds the commands recorded here, so the layers only
point down.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.text import Text

from hashbench.errors import HashbenchError, HashbenchWarning

err_console = Console(stderr=True)
console = Console()

# Shared options: one definition, used by every command that needs it. Help text is plain
# (rich markup is off), so brackets in it are shown as written.
CacheDir = Annotated[Optional[Path], typer.Option(
    "--cache-dir", envvar="HASHBENCH_CACHE_DIR", help="Where verified downloads and parsed datasets live "
    "[default: ~/.cache/hashbench].", show_default=False)]
Mirror = Annotated[Optional[str], typer.Option(
    "--mirror", envvar="HASHBENCH_MIRROR", help="Directory or URL prefix to download from instead of the "
    "upstream URLs; holds <dataset>/<file> (upstream train.txt/test.txt or the .tsv.gz forms).")]
ResultsDir = Annotated[Path, typer.Option("--results", help="Results directory (runs.jsonl, codes/).")]
FinishBy = Annotated[Optional[str], typer.Option(
    "--finish-by", metavar="HH:MM|DURATION", show_default=False,
    help="Start only the cells expected to end by then (a time of day, 13:50, or a duration from now, 2h30m; "
         "estimated from the records); the rest are left for the next run of the same command, and cells in "
         "flight are never cut off.")]


_warned: set[str] = set()


_show_warning = warnings.showwarning


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A HashbenchWarning is one line on stderr, once per run however often the file is read."""
    if not (isinstance(category, type) and issubclass(category, HashbenchWarning)):
        return _show_warning(message, category, filename, lineno, file, line)
    text = str(message)
    if text not in _warned:
        _warned.add(text)
        err_console.print(Text.assemble(("warning:", "yellow"), f" {text}"), highlight=False, soft_wrap=True)


warnings.showwarning = show_warning


def fail(message: str) -> None:
    """Print the one-line error (no traceback)."""
    err_console.print(Text.assemble(("error:", "bold red"), f" {message}"), highlight=False, soft_wrap=True)


def user_errors(fn: Callable[..., Any], interrupted: str = "interrupted: finished cells are saved; "
                                                             "re-run the same command to resume"):
    """Turn a HashbenchError or a filesystem error into a one-line message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HashbenchError as exc:
            fail(str(exc))
            raise typer.Exit(1) from None
        except OSError as exc:  # a read-only disk, a path that is a file, no space left...
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            fail(f"{exc.strerror or exc}{where}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print(interrupted, markup=False)
            raise typer.Exit(130) from None

    return wrapper


@dataclass(frozen=True)
class CommandEntry:
    name: str
    callback: Callable[..., Any]
    options: dict[str, Any]


COMMANDS: list[CommandEntry] = []


def command(name: str, interrupted: str | None = None, **options):
    """@command("name"): record a function as a subcommand, with the error rule applied."""

    def decorate(fn):
        wrapped = user_errors(fn, interrupted) if interrupted else user_errors(fn)
        COMMANDS.append(CommandEntry(name, wrapped, options))
        return fn

    return decorate
