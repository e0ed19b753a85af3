"""Help that renders: every command's --help at 80 and 120 columns shows every word of its
docstring and of each option's help, and a flag shows no value placeholder."""

import re

import pytest
import typer
from typer.testing import CliRunner

from hashbench.cli import app

GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)


def _flat(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"(\w)- (\w)", r"\1-\2", text)  # a word broken at its hyphen by the wrapper


def _missing(source: str, shown: str) -> list[str]:
    shown = _flat(shown)
    return [word for word in source.split() if word not in shown]


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_every_word_and_no_placeholder_on_flags(name, width):
    result = CliRunner().invoke(app, [name, "--help"], terminal_width=width)
    assert result.exit_code == 0, result.output
    out = result.output
    assert max(len(line) for line in out.splitlines()) <= width
    command = GROUP.commands[name]
    assert _missing(command.help, out) == []
    for param in command.params:
        if getattr(param, 'help', None) and param.param_type_name == 'option':
            assert _missing(param.help, out) == [], param.name
        if getattr(param, 'is_flag', False):
            opt = max(param.opts, key=len)
            line = next(l for l in out.splitlines() if opt in l)
            # a placeholder follows its option after one space; the help text after two or more
            assert not re.search(rf"{re.escape(opt)} \S", line), line


def test_the_checks_see_a_swallowed_word_and_a_placeholder():
    assert re.search(r"--dry-run \S", "  --dry-run <bool>   List the cells")
    assert not re.search(r"--dry-run \S", "  --dry-run          List the cells")
    assert _missing("datasets live [default: ~/.cache/hashbench].", "datasets live .") != []
    assert _missing("first-seed .. first-seed+N-1", "first-\n seed .. first-seed+N-1") == []
