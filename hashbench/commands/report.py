from pathlib import Path
from typing import Annotated, Optional

import typer

from hashbench.cli import ResultsDir, command, console


@command("report")
def report_command(
    fmt: Annotated[str, typer.Option("--format", "-f", help="markdown, latex or csv.")] = "markdown",
    results: ResultsDir = Path("results"),
    bits: Annotated[int, typer.Option("--bits", help="Which code length to tabulate.")] = 64,
    protocol: Annotated[str, typer.Option("--protocol", help="Which split protocol to tabulate.")] = "random-8-1-1",
    out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout.")] = None,
):
    """Print the paper's tables from RESULTS/runs.jsonl.

    Table 1: methods × datasets × Recall/NDCG@50/100 on test, mean ± std over seeds, best
    hashing row bold and second underlined, the paper's published numbers beside ours.
    Table 2: dataset statistics. Table 1b: NDCG with the non-standard hits-based IDCG.
    """
    from hashbench.report import render_report

    text = render_report(results, fmt, bits, protocol)
    if out:
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text)
        tmp.replace(out)
        console.print(f"wrote {out}")
    else:
        print(text, end="")
